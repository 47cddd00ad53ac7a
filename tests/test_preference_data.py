"""Preference records for training: the shapes `load_pairs` / `load_unpaired` / `load_prompts` read, and the
train-time truncation checks (pairs identical after truncation, prompts with no room for a response)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import write_jsonl

pytest.importorskip("transformers")

from workbench import pairs as pdata
from workbench.errors import WbError
from workbench.models.base import load_tokenizer, tiny_model_dir
from workbench.train import preference_prepare as pprep


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return load_tokenizer(str(tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny")))


def test_every_pair_shape_reads_to_the_same_prompt_and_answers(tmp_path: Path) -> None:
    rows = [
        {"prompt": "用一句话介绍长城。", "chosen": "长城是中国古代的防御工程。", "rejected": "不知道"},
        {
            "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi 👋"}],
            "chosen": [{"role": "assistant", "content": "Hello!"}],
            "rejected": {"role": "assistant", "content": "What do you want"},
        },
        {"instruction": "Translate", "input": "猫", "chosen": "cat", "rejected": "dog", "system": "You translate."},
        {
            "conversations": [{"from": "human", "value": "2+2?"}],
            "chosen": {"from": "gpt", "value": "4"},
            "rejected": {"from": "gpt", "value": "5"},
        },
    ]
    pairs = pdata.load_pairs(write_jsonl(tmp_path / "p.jsonl", rows))
    assert [p.line for p in pairs] == [1, 2, 3, 4]
    assert pairs[0].prompt == ({"role": "user", "content": "用一句话介绍长城。"},)
    assert pairs[1].prompt[0] == {"role": "system", "content": "Be brief."} and pairs[1].chosen == "Hello!"
    assert pairs[1].rejected == "What do you want"
    assert pairs[2].prompt == (
        {"role": "system", "content": "You translate."},
        {"role": "user", "content": "Translate\n\n猫"},
    )
    assert (pairs[3].prompt[-1]["content"], pairs[3].chosen, pairs[3].rejected) == ("2+2?", "4", "5")


def test_a_json_array_file_numbers_its_items(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"prompt": "a", "chosen": "b", "rejected": "c"}] * 2), encoding="utf-8")
    assert [p.line for p in pdata.load_pairs(path)] == [1, 2]


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"prompt": "q", "chosen": "a"}, "rejected"),
        ({"prompt": "q", "chosen": "  ", "rejected": "b"}, "chosen"),
        ({"chosen": "a", "rejected": "b"}, "prompt"),
        ({"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "chosen": "a",
          "rejected": "b"}, "prompt"),
        ({"prompt": "q", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}, "chosen"),
    ],
)  # fmt: skip
def test_a_malformed_pair_names_its_line_and_field(tmp_path: Path, row: dict[str, Any], field: str) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "ok", "chosen": "y", "rejected": "n"}, row])
    with pytest.raises(WbError, match=rf"p\.jsonl:line 2: {field}\b"):
        pdata.load_pairs(path)


def test_kto_reads_labels_and_splits_pairs(tmp_path: Path) -> None:
    rows = [
        {"prompt": "天气如何？", "completion": "今天晴朗。", "label": True},
        {"prompt": "天气如何？", "completion": "滚", "kto_tag": False},
    ]
    ex = pdata.load_unpaired(write_jsonl(tmp_path / "k.jsonl", rows))
    assert [(e.line, e.completion, e.label) for e in ex] == [(1, "今天晴朗。", True), (2, "滚", False)]
    split = pdata.load_unpaired(
        write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Hi", "chosen": "Hello!", "rejected": "No."}])
    )
    assert [(e.line, e.completion, e.label) for e in split] == [(1, "Hello!", True), (1, "No.", False)]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "q", "completion": "a", "label": "yes"}])
    with pytest.raises(WbError, match="line 1: label"):
        pdata.load_unpaired(bad)


def test_prompts_are_deduplicated_and_keep_a_reference(tmp_path: Path) -> None:
    rows = [
        {"prompt": "Give JSON", "chosen": '{"a": 1}', "rejected": "no"},
        {"prompt": "Give JSON", "chosen": '{"b": 2}', "rejected": "never"},
        {"instruction": "数一数", "input": "", "output": "3"},
    ]
    items = pdata.load_prompts(write_jsonl(tmp_path / "p.jsonl", rows))
    assert [(i.line, i.reference) for i in items] == [(1, '{"a": 1}'), (3, "3")]


def _pairs(tmp_path: Path, rows: list[dict[str, Any]]) -> list[pdata.Pair]:
    return pdata.load_pairs(write_jsonl(tmp_path / "p.jsonl", rows))


SHARED = "这是一个很长的共同开头，两个回答在这里完全一样，" * 6


def test_pairs_identical_after_truncation_are_refused_with_their_lines(tmp_path: Path, tokenizer: Any) -> None:
    rows = [
        {"prompt": "短问题", "chosen": "好的回答。", "rejected": "坏"},
        {"prompt": "Explain", "chosen": SHARED + "正确。", "rejected": SHARED + "错误。"},
        {"prompt": "Explain again", "chosen": SHARED + "A", "rejected": SHARED + "B"},
    ]
    pairs = _pairs(tmp_path, rows)
    with pytest.raises(WbError) as err:
        pprep.check_pairs("p.jsonl", tokenizer, "chat", pairs, 64, None, "refuse")
    msg = str(err.value)
    assert "2 pair(s) where chosen and rejected are identical after truncation to max_length 64" in msg
    assert "(lines 2, 3)" in msg and "truncation: drop" in msg
    # With room for the differing end, the same pairs all train.
    assert len(pprep.check_pairs("p.jsonl", tokenizer, "chat", pairs, 512, None, "refuse").pairs) == 3


def test_drop_leaves_them_out_and_counts_them_per_reason(tmp_path: Path, tokenizer: Any) -> None:
    rows = [
        {"prompt": "短问题", "chosen": "好的回答。", "rejected": "坏"},
        {"prompt": "Explain", "chosen": SHARED + "正确。", "rejected": SHARED + "错误。"},
        {"prompt": "长" * 200, "chosen": "a", "rejected": "b"},
    ]
    checked = pprep.check_pairs("p.jsonl", tokenizer, "chat", _pairs(tmp_path, rows), 64, None, "drop")
    assert [ex.line for ex in checked.pairs] == [1]
    assert checked.dropped == {pprep.IDENTICAL: [2], pprep.NO_ROOM: [3]}
    assert checked.counts() == {pprep.IDENTICAL: 1, pprep.NO_ROOM: 1}


def test_max_prompt_length_refuses_long_prompts(tmp_path: Path, tokenizer: Any) -> None:
    rows = [
        {"prompt": "short", "chosen": "a", "rejected": "b"},
        {"prompt": "word " * 80, "chosen": "a", "rejected": "b"},
    ]
    with pytest.raises(WbError, match=r"no room for a response .*max_prompt_length 60 \(lines 2\)"):
        pprep.check_pairs("p.jsonl", tokenizer, "chat", _pairs(tmp_path, rows), 512, 60, "refuse")


def test_completion_tokens_follow_the_prompt_and_end_with_the_end_of_turn(tmp_path: Path, tokenizer: Any) -> None:
    pair = _pairs(tmp_path, [{"prompt": "你好", "chosen": "你好！", "rejected": "嗯"}])[0]
    ex = pprep.encode_pair(tokenizer, "chat", pair)
    assert ex.prompt.endswith("<|im_start|>assistant\n") and ex.chosen == "你好！<|im_end|>"
    assert tokenizer.decode(ex.prompt_ids + ex.chosen_ids) == ex.prompt + ex.chosen
    assert ex.chosen_ids[-1] == tokenizer.eos_token_id


def test_kto_needs_both_labels(tmp_path: Path, tokenizer: Any) -> None:
    ex = pdata.load_unpaired(write_jsonl(tmp_path / "k.jsonl", [{"prompt": "q", "completion": "a", "label": True}]))
    with pytest.raises(WbError, match="every example is desirable"):
        pprep.check_unpaired("k.jsonl", tokenizer, "chat", ex, 128, None, "refuse")
