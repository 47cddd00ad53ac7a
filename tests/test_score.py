"""`wb score`: IFD and perplexities equal a hand computation with plain transformers, the reward model's score equals
its own forward pass, scores sit beside each record with their distributions in the stats, and the cache answers
a second run without computing."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import read_jsonl, write_jsonl

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from workbench.models.base import load_tokenizer, tiny_model_dir  # noqa: E402
from workbench.score.pipeline import score_file  # noqa: E402

RECORDS = [
    {"instruction": "把这句话翻译成英文：我爱你", "input": "", "output": "I love you."},
    {"instruction": "Add the numbers.", "input": "2 + 3", "output": "2 + 3 = 5"},
    {"instruction": "Name a colour 🎨", "input": "", "output": "蓝色 (blue)", "system": "Answer briefly."},
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WB_CACHE", str(tmp_path / "cache"))


def answer_loss(model: Any, tok: Any, messages: list[dict[str, str]]) -> float:
    """Mean cross-entropy of the assistant turn (its text and end-of-turn token) after the rendered prompt."""
    prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(messages, tokenize=False)
    answer = full[len(prompt) :].rstrip()  # "text<|im_end|>", the newline after it is not trained
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tok(answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + a_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    pred = logits[len(p_ids) - 1 : -1]
    return float(torch.nn.functional.cross_entropy(pred, torch.tensor(a_ids)))


def plain_loss(model: Any, tok: Any, text: str) -> float:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    return float(torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:])))


def test_ifd_and_perplexities_match_a_hand_computation(tmp_path: Path, tiny: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", RECORDS)
    result = score_file(data, tmp_path / "scored.jsonl", model=str(tiny), precision="fp32", batch_size=2)
    rows = read_jsonl(tmp_path / "scored.jsonl")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tiny)).eval()
    tok = load_tokenizer(tiny)
    for rec, row in zip(RECORDS, rows, strict=True):
        user = rec["instruction"] + (f"\n\n{rec['input']}" if rec["input"] else "")
        msgs = [{"role": "system", "content": rec["system"]}] if rec.get("system") else []
        cond = answer_loss(
            model, tok, [*msgs, {"role": "user", "content": user}, {"role": "assistant", "content": rec["output"]}]
        )
        bare = answer_loss(
            model, tok, [{"role": "user", "content": ""}, {"role": "assistant", "content": rec["output"]}]
        )
        s = row["scores"]
        assert s["loss_answer"] == pytest.approx(cond, abs=1e-4)
        assert s["loss_answer_alone"] == pytest.approx(bare, abs=1e-4)
        assert s["ifd"] == pytest.approx(cond / bare, abs=1e-4)
        assert s["ppl_answer"] == pytest.approx(math.exp(cond), rel=1e-4)
        assert s["ppl_prompt"] == pytest.approx(math.exp(plain_loss(model, tok, user)), rel=1e-4)
        assert {k: row[k] for k in ("instruction", "output")} == {k: rec[k] for k in ("instruction", "output")}
    assert result.stats["scored"] == 3 and result.stats["precision"]["precision"] == "fp32"


def test_scores_are_summarised_cached_and_the_output_is_reproducible(tmp_path: Path, tiny: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", RECORDS * 4)
    first = score_file(data, tmp_path / "a.jsonl", model=str(tiny), precision="fp32")
    assert (first.cache_hits, first.cache_misses) == (0, 3)  # each distinct record computed once
    second = score_file(data, tmp_path / "b.jsonl", model=str(tiny), precision="fp32")
    assert (second.cache_hits, second.cache_misses) == (3, 0)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    stats = json.loads((tmp_path / "a.stats.json").read_text(encoding="utf-8"))
    ifd = stats["scores"]["ifd"]
    assert ifd["scored"] == 12 and sum(ifd["histogram"]["counts"]) == 12
    assert ifd["quantiles"]["p1"] <= ifd["quantiles"]["p50"] <= ifd["quantiles"]["p99"]
    assert stats["scores"]["ppl_answer"]["histogram"]["log_scale"] is True
    manifest = json.loads((tmp_path / "a.manifest.json").read_text(encoding="utf-8"))
    assert manifest["command"] == "score" and set(manifest["outputs"]) == {"scored", "stats"}


def test_scored_records_keep_their_own_fields_after_the_scores(tmp_path: Path, tiny: Path) -> None:
    own = [
        {"id": "a-1", "source": "翻译集", "meta": {"难度": 2, "tags": ["zh", "en"]}, "scores": {"human": 5}},
        {"id": "a-2", "source": "翻译集"},  # the same record under another id: scored once
    ]
    data = write_jsonl(tmp_path / "d.jsonl", [{**RECORDS[0], **own[0]}, {**RECORDS[0], **own[1]}, RECORDS[1]])
    result = score_file(data, tmp_path / "s.jsonl", model=str(tiny), precision="fp32")
    assert result.cache_misses == 2  # ids are not part of what is scored
    first, second, third = read_jsonl(tmp_path / "s.jsonl")
    assert list(first) == [*RECORDS[0], "system", "history", "scores", "id", "source", "meta", "original_scores"]
    assert first["meta"] == own[0]["meta"] and first["original_scores"] == {"human": 5}
    assert set(first["scores"]) >= {"ifd", "ppl_answer"}
    assert second["id"] == "a-2" and second["scores"] == first["scores"]
    assert "id" not in third
    score_file(data, tmp_path / "bare.jsonl", model=str(tiny), precision="fp32", extra_fields=False)
    assert all("id" not in r and "original_scores" not in r for r in read_jsonl(tmp_path / "bare.jsonl"))


def test_the_cache_key_follows_the_weights(tmp_path: Path, tiny: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", RECORDS)
    other = tiny_model_dir(tmp_path / "other", seed=1)
    score_file(data, tmp_path / "a.jsonl", model=str(tiny), precision="fp32")
    again = score_file(data, tmp_path / "b.jsonl", model=str(other), precision="fp32")
    assert again.cache_misses == 3
    a, b = read_jsonl(tmp_path / "a.jsonl"), read_jsonl(tmp_path / "b.jsonl")
    assert a[0]["scores"]["ifd"] != b[0]["scores"]["ifd"]


def tiny_reward_model(folder: Path, tiny: Path) -> Path:
    tok = load_tokenizer(tiny)
    config = transformers.LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=1,
        pad_token_id=tok.pad_token_id,
        initializer_range=0.5,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForSequenceClassification(config)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def test_a_reward_model_scores_the_whole_conversation(tmp_path: Path, tiny: Path, wb: Callable[..., Any]) -> None:
    rm_dir = tiny_reward_model(tmp_path / "rm", tiny)
    data = write_jsonl(tmp_path / "d.jsonl", RECORDS)
    res = wb(
        "score",
        data,
        "--model",
        tiny,
        "--reward-model",
        rm_dir,
        "-o",
        tmp_path / "s.jsonl",
        "--precision",
        "fp32",
        "--html",
        tmp_path / "s.html",
    )
    assert res.exit_code == 0, res.output
    rows = read_jsonl(tmp_path / "s.jsonl")
    rm = transformers.AutoModelForSequenceClassification.from_pretrained(str(rm_dir)).eval()
    tok = load_tokenizer(rm_dir)
    for rec, row in zip(RECORDS, rows, strict=True):
        msgs = ([{"role": "system", "content": rec["system"]}] if rec.get("system") else []) + [
            {"role": "user", "content": rec["instruction"] + (f"\n\n{rec['input']}" if rec["input"] else "")},
            {"role": "assistant", "content": rec["output"]},
        ]
        ids = tok(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            want = float(rm(input_ids=torch.tensor([ids])).logits[0, 0])
        assert row["scores"]["reward"] == pytest.approx(want, abs=1e-4)
    assert len({row["scores"]["reward"] for row in rows}) == 3
    page = (tmp_path / "s.html").read_text(encoding="utf-8")
    assert "Model-based scores" in page and "reward" in page and "<svg" in page
    res = wb("stats", data, "--scores", tmp_path / "s.stats.json", "--html", tmp_path / "stats.html")
    assert res.exit_code == 0, res.output
    assert "Model-based scores" in (tmp_path / "stats.html").read_text(encoding="utf-8")
    res = wb("stats", data, "--scores", data)
    assert res.exit_code == 2 and "cannot read the score stats" in res.stderr


def test_bad_inputs_are_one_line_and_exit_2(tmp_path: Path, tiny: Path, wb: Callable[..., Any]) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [RECORDS[0], '{"instruction": "x", "output": '])
    res = wb("score", bad, "--model", tiny, "-o", tmp_path / "s.jsonl")
    assert res.exit_code == 2 and "bad.jsonl" in res.stderr and "line 2" in res.stderr
    good = write_jsonl(tmp_path / "good.jsonl", RECORDS)
    res = wb("score", good, "--model", tiny, "--reward-model", tiny, "-o", tmp_path / "s.jsonl")
    assert res.exit_code == 2 and "not a ...ForSequenceClassification reward model" in res.stderr
    assert not (tmp_path / "s.jsonl").exists()


def test_a_reward_run_with_a_sequence_classification_lora_adapter(tmp_path: Path, tiny: Path) -> None:
    """The shape `wb train method=reward` writes (TRL RewardTrainer + PEFT SEQ_CLS): run folder, recipe, adapter/."""
    from peft import LoraConfig, TaskType, get_peft_model

    torch.manual_seed(1)
    base = transformers.AutoModelForSequenceClassification.from_pretrained(str(tiny), num_labels=1)
    tok = load_tokenizer(tiny)
    base.config.pad_token_id = tok.pad_token_id
    peft_model = get_peft_model(base, LoraConfig(task_type=TaskType.SEQ_CLS, r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a trained adapter is not zero
    run = tmp_path / "runs" / "rm"
    peft_model.save_pretrained(run / "adapter", safe_serialization=True)
    (run / "recipe.yaml").write_text(f"model: {tiny}\nmethod: reward\n", encoding="utf-8")
    rec = RECORDS[0]
    msgs = [{"role": "user", "content": rec["instruction"]}, {"role": "assistant", "content": rec["output"]}]
    ids = tok(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        want = float(peft_model.eval()(input_ids=torch.tensor([ids])).logits[0, 0])
    data = write_jsonl(tmp_path / "d.jsonl", [rec])
    score_file(data, tmp_path / "s.jsonl", model=str(tiny), reward_model=str(run), precision="fp32")
    assert read_jsonl(tmp_path / "s.jsonl")[0]["scores"]["reward"] == pytest.approx(want, abs=1e-4)


def test_a_reward_adapter_saved_as_a_pickle_is_refused(tmp_path: Path, tiny: Path, wb: Callable[..., Any]) -> None:
    """A reward run whose adapter PEFT wrote with torch.save (`safe_serialization=False`): one line, nothing scored."""
    from peft import LoraConfig, TaskType, get_peft_model

    with warnings.catch_warnings():  # PEFT, called here as a user would, uses a transformers name deprecated for v6
        warnings.simplefilter("ignore", FutureWarning)
        base = transformers.AutoModelForSequenceClassification.from_pretrained(str(tiny), num_labels=1)
        config = LoraConfig(task_type=TaskType.SEQ_CLS, r=4, target_modules=["q_proj", "v_proj"])
        peft_model = get_peft_model(base, config)
    run = tmp_path / "runs" / "rm"
    peft_model.save_pretrained(run / "adapter", safe_serialization=False)
    assert (run / "adapter" / "adapter_model.bin").is_file()
    (run / "recipe.yaml").write_text(f"model: {tiny}\nmethod: reward\n", encoding="utf-8")
    data = write_jsonl(tmp_path / "d.jsonl", RECORDS)
    res = wb("score", data, "--model", tiny, "--reward-model", run, "--no-cache", "-o", tmp_path / "s.jsonl", "-q")
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [
        f"error: adapter {run / 'adapter'}: only pickle weights (adapter_model.bin), no adapter_model.safetensors; "
        "wb loads safetensors only — save it with safe_serialization=True, or convert it with a tool you trust"
    ]
    assert not (tmp_path / "s.jsonl").exists()
