"""Preference record shapes: each reads into the one canonical form, converts back losslessly, and a bad record
names its field (and, read from a file, its line)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from workbench.errors import WbError
from workbench.preference_files import read_preferences
from workbench.preference_records import NoPreference, binarize, convert, from_canonical, to_canonical, to_trl, unpair
from workbench.preference_shapes import ChatMessage, KtoExample, PreferencePair, detect_kind, detect_shape
from workbench.records import RecordError

U = ChatMessage(role="user", content="把这句话翻译成英文：你好")
PAIR = PreferencePair(prompt_messages=[U], chosen="Hello", rejected="你好")


def err(obj: Any) -> RecordError:
    with pytest.raises(RecordError) as exc:
        to_canonical(obj)
    return exc.value


def test_alpaca_ranking_shape_with_system_history_and_input_becomes_one_prompt() -> None:
    rec = {
        "instruction": "Sum the numbers",
        "input": "1 2",
        "chosen": '{"sum": 3}',
        "rejected": "three",
        "system": "Answer in JSON.",
        "history": [["hi", "hello"]],
    }
    pair = to_canonical(rec)
    assert isinstance(pair, PreferencePair)
    assert [(m.role, m.content) for m in pair.prompt_messages] == [
        ("system", "Answer in JSON."),
        ("user", "hi"),
        ("assistant", "hello"),
        ("user", "Sum the numbers\n\n1 2"),
    ]
    assert (pair.chosen, pair.rejected) == ('{"sum": 3}', "three")


def test_trl_standard_and_conversational_shapes_read_alike() -> None:
    standard = {"prompt": "你好", "chosen": "Hello", "rejected": "Hi"}
    conversational = {
        "prompt": [{"role": "user", "content": "你好"}],
        "chosen": [{"role": "assistant", "content": "Hello"}],
        "rejected": [{"role": "assistant", "content": "Hi"}],
    }
    implicit = {
        "chosen": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "Hello"}],
        "rejected": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "Hi"}],
    }
    assert detect_shape(implicit) == "implicit"
    assert to_canonical(standard) == to_canonical(conversational) == to_canonical(implicit)


def test_sharegpt_ranking_shape_with_system_field() -> None:
    rec = {
        "conversations": [{"from": "human", "value": "写一首诗"}],
        "chosen": {"from": "gpt", "value": "春眠不觉晓"},
        "rejected": {"from": "gpt", "value": "不会"},
        "system": "你是诗人",
    }
    pair = to_canonical(rec)
    assert detect_shape(rec) == "conversation"
    assert pair.prompt_messages[0] == ChatMessage(role="system", content="你是诗人")
    assert isinstance(pair, PreferencePair) and pair.chosen == "春眠不觉晓"


def test_messages_prompt_with_responses_as_message_list_and_string() -> None:
    rec = {
        "messages": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": "hey",
    }
    assert to_canonical(rec) == PreferencePair(
        prompt_messages=[ChatMessage(role="user", content="hi")], chosen="Hello!", rejected="hey"
    )


@pytest.mark.parametrize(
    "rec",
    [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "label": False},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}], "kto_tag": False},
        {"prompt": "hi", "completion": "yo", "label": False},
        {"instruction": "hi", "output": "yo", "kto_tag": False},
        {
            "prompt": [{"role": "user", "content": "hi"}],
            "completion": [{"role": "assistant", "content": "yo"}],
            "label": False,
        },
    ],
)
def test_every_kto_shape_reads_to_the_same_example(rec: dict[str, Any]) -> None:
    assert detect_kind(rec) == "kto"
    assert to_canonical(rec) == KtoExample(
        prompt_messages=[ChatMessage(role="user", content="hi")], completion="yo", label=False
    )


def test_label_and_kto_tag_that_disagree_are_refused() -> None:
    assert err({"prompt": "hi", "completion": "x", "label": True, "kto_tag": False}).field == "kto_tag"


def test_scored_completions_take_best_and_worst_first_listed_among_ties() -> None:
    rec = {
        "prompt": "hi",
        "completions": [
            {"text": "mid", "score": 3},
            {"text": "best", "score": 9.5},
            {"response": "best too", "score": 9.5},
            {"text": "worst", "score": 1},
            {"text": "worst too", "score": 1},
        ],
    }
    pair = to_canonical(rec)
    assert isinstance(pair, PreferencePair) and (pair.chosen, pair.rejected) == ("best", "worst")


def test_all_tied_scores_are_no_preference_with_the_score_named() -> None:
    with pytest.raises(NoPreference, match="all 3 completions score 4"):
        to_canonical({"prompt": "p", "completions": [{"text": t, "score": 4} for t in "abc"]})
    with pytest.raises(RecordError, match="at least 2"):
        binarize([("a", 1.0)])


def test_scores_must_be_finite_numbers_not_booleans_or_strings() -> None:
    for bad in (True, "9", float("nan")):
        e = err({"prompt": "p", "completions": [{"text": "a", "score": bad}, {"text": "b", "score": 1}]})
        assert e.field == "completions[0].score"


@pytest.mark.parametrize(
    ("rec", "field", "words"),
    [
        ({"prompt": "hi", "chosen": "a"}, "rejected", "missing"),
        ({"prompt": "hi", "chosen": 5, "rejected": "b"}, "chosen", "expected a string, a message"),
        ({"prompt": "hi", "chosen": {"role": "assistant"}, "rejected": "b"}, "chosen.content", "missing"),
        ({"chosen": "a", "rejected": "b"}, "prompt", "missing"),
        (
            {
                "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
                "chosen": "x",
                "rejected": "y",
            },
            "messages[1]",
            "two user turns in a row",
        ),
        (
            {
                "conversations": [{"from": "human", "value": "a"}],
                "chosen": {"from": "human", "value": "x"},
                "rejected": "y",
            },
            "chosen.from",
            "assistant's",
        ),
        (
            {
                "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                "chosen": "x",
                "rejected": "y",
            },
            "messages[1]",
            "ends with an assistant turn",
        ),
        (
            {
                "prompt": "a",
                "chosen": [{"role": "assistant", "content": "x"}, {"role": "assistant", "content": "y"}],
                "rejected": "z",
            },
            "chosen",
            "list of 2 messages",
        ),
        ({"prompt": "a", "instruction": "b", "chosen": "x", "rejected": "y"}, "instruction", "give one"),
        ({"prompt": "a", "completion": "x", "label": "yes"}, "label", "boolean"),
        ({"instruction": "a", "output": "b"}, "chosen", "not a preference record"),
    ],
)
def test_bad_records_name_the_field(rec: dict[str, Any], field: str, words: str) -> None:
    e = err(rec)
    assert e.field == field
    assert words in str(e)


@pytest.mark.parametrize(
    "rec",
    [
        {"prompt": "你好", "chosen": "您好！", "rejected": "嗯。", "completion": "您好！", "label": True},
        {"instruction": "Hi", "chosen": "Hello!", "rejected": "", "kto_tag": False},
        {"prompt_messages": [{"role": "user", "content": "Hi"}], "chosen": "a", "rejected": "b", "completion": "a"},
    ],
)
def test_a_record_that_is_both_a_pair_and_a_kto_example_is_refused_naming_both(rec: dict[str, Any]) -> None:
    e = err(rec)
    assert e.kind == "ambiguous_shape" and e.field in ("completion", "kto_tag")
    assert "a pair (chosen/rejected) and a KTO example (" in str(e)


def test_a_non_boolean_label_beside_a_pair_is_data_not_a_kto_example() -> None:
    assert to_canonical({"prompt": "Hi", "chosen": "Hello!", "rejected": "Go.", "label": "greeting"}).kind == "pair"


def test_system_field_and_system_message_together_are_refused() -> None:
    rec = {
        "messages": [{"role": "system", "content": "a"}, {"role": "user", "content": "b"}],
        "chosen": "x",
        "rejected": "y",
    }
    assert "two system prompts" in str(err({**rec, "system": "s"}))


@pytest.mark.parametrize("shape", ["alpaca", "sharegpt", "messages", "trl", "canonical"])
def test_every_shape_round_trips_a_multi_turn_pair_and_a_kto_example(shape: Any) -> None:
    prompt = [
        ChatMessage(role="system", content="只用中文回答"),
        ChatMessage(role="user", content="第一问"),
        ChatMessage(role="assistant", content="第一答 🙂"),
        ChatMessage(role="user", content="第二问\n  带缩进"),
    ]
    pair = PreferencePair(prompt_messages=prompt, chosen="好的", rejected="OK")
    kto = KtoExample(prompt_messages=prompt, completion="好的", label=True)
    for ex in (pair, kto):
        written = from_canonical(ex, shape)
        assert to_canonical(json.loads(json.dumps(written, ensure_ascii=False))) == ex
        assert convert(written, "canonical") == ex.model_dump()


def test_to_trl_gives_the_conversational_formats() -> None:
    assert to_trl(PAIR) == {
        "prompt": [{"role": "user", "content": U.content}],
        "chosen": [{"role": "assistant", "content": "Hello"}],
        "rejected": [{"role": "assistant", "content": "你好"}],
    }
    kto = KtoExample(prompt_messages=[U], completion="Hello", label=True)
    assert to_trl(kto) == {
        "prompt": [{"role": "user", "content": U.content}],
        "completion": [{"role": "assistant", "content": "Hello"}],
        "label": True,
    }


def test_sft_records_are_not_preference_data() -> None:
    for rec in (
        {"instruction": "a", "output": "b"},
        {"messages": [{"role": "user", "content": "a"}]},
        {"text": "x", "label": 3},
    ):
        assert detect_kind(rec) is None


def test_read_preferences_handles_bom_crlf_and_chinese(tmp_path: Path) -> None:
    lines = [
        json.dumps({"prompt": "你好", "chosen": "Hello", "rejected": "Hi"}, ensure_ascii=False),
        "",
        json.dumps(from_canonical(PAIR, "sharegpt"), ensure_ascii=False),
    ]
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    got = read_preferences(path)
    assert [n for n, _ in got] == [1, 3]
    assert got[1][1] == PAIR


def test_read_preferences_reads_a_json_array(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps([from_canonical(PAIR, "alpaca"), from_canonical(PAIR, "messages")]), encoding="utf-8")
    assert [ex for _, ex in read_preferences(path)] == [PAIR, PAIR]


def test_read_preferences_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a", "chosen": "x", "rejected": "y"}\n{"prompt": "a", "chosen": "x", "rejected": 3}\n')
    with pytest.raises(WbError, match=r"p\.jsonl:line 2: rejected: expected a string"):
        read_preferences(path)
    path.write_text('{"prompt": "a", "chosen": "x", "rejected": "y"}\n{"prompt": "a", "chosen": \n')
    with pytest.raises(WbError, match=r"p\.jsonl:line 2: bad JSON"):
        read_preferences(path)


def test_read_preferences_refuses_a_file_mixing_pairs_and_kto(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(
        '{"prompt": "a", "chosen": "x", "rejected": "y"}\n{"prompt": "a", "completion": "x", "label": true}\n'
    )
    with pytest.raises(WbError, match="line 2: a kto record in a file of pair records"):
        read_preferences(path)


def test_read_preferences_ties_fail_unless_skipped(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    tied = {"prompt": "t", "completions": [{"text": "a", "score": 1}, {"text": "b", "score": 1}]}
    path.write_text(json.dumps({"prompt": "a", "chosen": "x", "rejected": "y"}) + "\n" + json.dumps(tied) + "\n")
    with pytest.raises(WbError, match="line 2: completions: all 2 completions score 1"):
        read_preferences(path)
    assert [n for n, _ in read_preferences(path, ties="skip")] == [1]


def test_unpair_gives_a_desirable_and_an_undesirable_example() -> None:
    good, bad = unpair(PAIR)
    assert (good.completion, good.label, bad.completion, bad.label) == ("Hello", True, "你好", False)
    assert good.prompt_messages == bad.prompt_messages == PAIR.prompt_messages


SCHEMA_SAMPLES = {
    "pairwise-preference-record": ({"instruction": "你好", "chosen": "Hi", "rejected": "Yo", "history": [["a", "b"]]}, {"prompt": "x", "chosen": 5, "rejected": "y"}),
    "conversation-preference-record": (
        {"conversations": [{"from": "human", "value": "hi"}], "chosen": {"from": "gpt", "value": "a"}, "rejected": "b"},
        {"messages": [{"role": "user"}], "chosen": "a", "rejected": "b"},
    ),
    "implicit-preference-record": (
        {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]},
        {"chosen": "a", "rejected": "b"},
    ),
    "kto-record": ({"prompt": "q", "completion": "a", "label": True}, {"prompt": "q", "completion": "a", "label": "yes"}),
    "scored-completions-record": (
        {"prompt": "q", "completions": [{"text": "a", "score": 1}, {"text": "b", "score": 2.5}]},
        {"prompt": "q", "completions": [{"text": "a", "score": "high"}, {"text": "b", "score": 1}]},
    ),
    "preference-pair": ({"prompt_messages": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}, {"prompt_messages": [{"role": "robot", "content": "q"}], "chosen": "a", "rejected": "b"}),
    "kto-example": ({"prompt_messages": [{"role": "user", "content": "q"}], "completion": "a", "label": False}, {"prompt_messages": [], "completion": "a", "label": False}),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SCHEMA_SAMPLES))
def test_published_schema_accepts_a_record_and_rejects_a_wrong_one(name: str) -> None:
    import jsonschema

    from workbench.schemas import SCHEMA_DIR

    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    good, bad = SCHEMA_SAMPLES[name]
    jsonschema.validate(good, schema)
    to_canonical(good)  # what the schema accepts, wb reads
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
