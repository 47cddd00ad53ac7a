"""Each filter rule on records shaped like real data: one that it must drop, one that it must keep."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from workbench.clean.pipeline import clean_frame
from workbench.clean.profile import from_dict, load
from workbench.clean.rule_registry import RULES
from workbench.clean.score_rules import ScoreParams
from workbench.frames import rows_to_frame


def judge(records: list[dict[str, Any]], profile: str = "default") -> list[str | None]:
    """The rule that drops each record (None if kept), in input order."""
    rows = [
        (r["instruction"], r.get("input", ""), r["output"], r.get("system", ""), r.get("history", [])) for r in records
    ]
    cleaned = clean_frame(rows_to_frame(list(range(1, len(rows) + 1)), rows), load(profile))
    dropped = dict(cleaned.dropped.select("_line", "_rule").iter_rows())
    return [dropped.get(i) for i in range(1, len(rows) + 1)]


def rec(instruction: str, output: str, input: str = "") -> dict[str, Any]:
    return {"instruction": instruction, "input": input, "output": output}


CODE_ANSWER = (
    "function reverseString(input) {\n    return input.split('').reverse().join('');\n}\n\n"
    "const output = reverseString('Hello, GPT-3!');\nconsole.log(output);"
)
ZH_ANSWER = "政治（Politics）是一个非常广泛的概念，通常用来描述有关权力、决策、影响和管理的活动。"

# (rule, record it must drop, similar record it must keep)
CASES = [
    ("empty_output", rec("What is 2+2?", "  N/A "), rec("What is 2+2?", "4")),
    ("empty_output", rec("翻译", "<No Output>"), rec("翻译", "无意义的句子")),
    ("empty_instruction", rec("", "An answer with no question."), rec("", "Paris", input="Capital of France?")),
    ("unfilled_placeholder", rec("hi", "I am {{name}}, made by {{author}}."), rec("hi", "I am Qwen, made by Alibaba.")),
    (
        "output_echoes_prompt",
        rec("Repeat after me", "Hello world.", input="hello   world"),
        rec("Repeat after me", "Hello there", input="hello world"),
    ),
    (
        "output_echoes_prompt",
        rec("Fix the bug", "x = 1\nprint(x)", input="x = 1\nprint(x)"),
        rec("Fix the bug", "numbers.forEach(x => f(x));", input="numbers.ForEach(x => f(x));"),
    ),
    (
        "missing_context",
        rec("Summarize the following article.", "Prices rose."),
        rec("Summarize the following article: prices rose sharply in May.", "Prices rose."),
    ),
    (
        "missing_context",
        rec("总结以下文章的主要内容。", "文章讲了经济。"),
        rec("介绍以下“飞花令”。", "飞花令是古人行酒令时的一种文字游戏。"),
    ),
    (
        "missing_context",
        rec("Summarize this page", "It is about cats.", input="https://example.com/cats"),
        rec("Write Python code to fetch JSON from the given URL", CODE_ANSWER, input="https://api.example.com/data"),
    ),
    (
        "missing_context",
        rec("Describe what you see", "A cat.", input="<Picture Attached>"),
        rec("Describe a cat", "A small furry animal."),
    ),
    (
        "merged_instructions",
        rec("Write a haiku", "Autumn moon.\n\n##\n18. Instruction: write another"),
        rec("List steps", "1. Open the file.\n2. Read it."),
    ),
    (
        "refusal",
        rec("Tell me a joke", "As an AI language model, I cannot tell jokes."),
        rec("Tell me a joke", "Why did the chicken cross the road? To get to the other side."),
    ),
    (
        "refusal",
        rec("介绍一下你自己", "作为一个AI语言模型，我无法拥有个人经历。"),
        rec("介绍一下你自己", "我是一个乐于助人的助手，可以回答问题。"),
    ),
    (
        "refusal",
        rec("Help", "I'm sorry, but I cannot assist with that request."),
        rec("Help", "I'm sorry to hear that; here is what you can do."),
    ),
    (
        "truncated_output",
        rec("Print hello", "```python\nprint('hello')\n"),
        rec("Print hello", "```python\nprint('hello')\n```"),
    ),
    ("truncated_output", rec("List fruits", "The fruits are apples, oranges,"), rec("Write JS", CODE_ANSWER)),
    (
        "repeated_lines",
        rec("List colours", "red\nred\nred\nred\nred\nblue"),
        rec("List colours", "red\ngreen\nblue\nyellow\n}\n}\n}"),
    ),
    (
        "repeated_ngrams",
        rec("Explain", "I think that the answer is yes and " * 12),
        rec(
            "Explain",
            "Photosynthesis converts light energy into chemical energy stored in glucose; plants, algae and some bacteria use chlorophyll to capture sunlight, split water, release oxygen and fix carbon dioxide in the Calvin cycle, which builds sugars the organism later burns for growth.",
        ),
    ),
    ("repeated_ngrams", rec("解释", "好的好的好的" * 30), rec("解释", ZH_ANSWER * 1)),
    (
        "symbol_ratio",
        rec("Draw", "ok ==== **** !!!! #### @@@@ $$$$ %%%% ^^^^ &&&& ~~~~ �� ��"),
        rec("Regex for email", r"/\A[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Z]{2,}\z/"),
    ),
]


@pytest.mark.parametrize(("rule", "bad", "good"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rule_drops_the_defect_and_keeps_the_near_miss(rule: str, bad: dict[str, Any], good: dict[str, Any]) -> None:
    assert judge([bad, good]) == [rule, None]


def test_every_registered_rule_is_exercised_and_in_the_default_profile() -> None:
    # Preference rules: test_preference_clean.py; rules over model-based scores need `wb score` output:
    # tests/test_score_rules.py exercises them.
    text_rules = {n for n, r in RULES.items() if "sft" in r.kinds and not issubclass(r.params, ScoreParams)}
    assert {c[0] for c in CASES} | {"length_chars", "length_tokens"} == text_rules
    assert set(load("default").rule_order) == text_rules


def test_length_bounds_count_cjk_characters_as_tokens() -> None:
    profile = from_dict({"name": "t", "rules": {"length_tokens": {"min_output": 5, "max_total": 40}}})
    rows = [
        ("解释", "", "机器学习", "", []),  # 4 tokens: too short
        ("解释", "", "机器学习很有用", "", []),  # 7 tokens: kept
        ("Explain", "", "machine learning " * 30, "", []),  # 61 tokens in total: too long
    ]
    cleaned = clean_frame(rows_to_frame([1, 2, 3], rows), profile)
    reasons = dict(cleaned.dropped.select("_line", "_reason").iter_rows())
    assert reasons == {
        1: "output length in tokens is 4, below the minimum 5",
        3: "record length in tokens is 61, above the maximum 40",
    }


def test_a_100_kb_output_is_measured_in_characters_and_dropped_with_its_size() -> None:
    big = "word " * 20_000  # 100 kB
    profile = from_dict({"name": "t", "rules": {"length_chars": {"max_output": 50_000}}})
    cleaned = clean_frame(rows_to_frame([1], [("Write a lot", "", big, "", [])]), profile)
    assert cleaned.dropped["_reason"].to_list() == ["output length in characters is 99999, above the maximum 50000"]


def test_first_rule_in_profile_order_is_credited() -> None:
    # Empty output also fails the token minimum; empty_output comes first in the profile.
    assert judge([rec("Q", "")]) == ["empty_output"]
    profile = from_dict({"name": "t", "rules": {"length_tokens": {"min_output": 1}, "empty_output": None}})
    cleaned = clean_frame(rows_to_frame([1], [("Q", "", "", "", [])]), profile)
    assert cleaned.dropped["_rule"].to_list() == ["length_tokens"]


def test_placeholder_inputs_become_empty() -> None:
    profile = load("default")
    rows = [("Say hi", inp, "Hi!", "", []) for inp in ("<noinput>", "N/A", "<No Input>", "none", "无", "real input")]
    cleaned = clean_frame(rows_to_frame(list(range(1, 7)), rows), profile)
    assert cleaned.kept["input"].to_list() == ["", "", "", "", "", "real input"]
    assert cleaned.counts["placeholder_input"] == 5


def test_strict_profile_checks_prose_for_a_missing_sentence_end() -> None:
    cut = rec(
        "Describe the water cycle",
        "Water evaporates from oceans and lakes, rises, cools into clouds and then falls back as rain or snow onto the land where rivers carry it back to the",
    )
    whole = rec("Describe the water cycle", cut["output"].removesuffix(" back to the") + " sea.")
    assert judge([cut, whole], profile="strict") == ["truncated_output", None]
    assert judge([cut], profile="default") == [None]


def test_history_and_system_are_normalised_too() -> None:
    rows = [("Q2", "", "A2", "Be\u200b brief.  ", [["Q1\u200b", "A1  "]])]
    cleaned = clean_frame(rows_to_frame([1], rows), load("default"))
    assert cleaned.kept.select("system", "history").row(0) == ("Be brief.", [["Q1", "A1"]])


def test_rules_see_features_only_through_documented_columns() -> None:
    frame = rows_to_frame([1], [("Q", "", "A", "", [])])
    assert frame.schema["history"] == pl.List(pl.List(pl.String))


# --- unfilled_placeholder ---------------------------------------------------------------------------------


def placeholder_verdicts(records: list[dict[str, Any]], **params: Any) -> list[tuple[str | None, str | None]]:
    """(rule, reason) per record under a profile that runs `unfilled_placeholder` alone."""
    profile = from_dict({"name": "t", "rules": {"unfilled_placeholder": params}})
    rows = [(r["instruction"], r.get("input", ""), r["output"], r.get("system", ""), []) for r in records]
    cleaned = clean_frame(rows_to_frame(list(range(1, len(rows) + 1)), rows), profile)
    both = pl.concat([cleaned.kept, cleaned.dropped]).sort("_line")
    return list(both.select("_rule", "_reason").iter_rows())


@pytest.mark.parametrize(
    ("record", "found"),
    [
        (
            {"instruction": "Who are you?", "output": "I am {{name}}, an AI assistant developed by {{author}}."},
            "{{name}}",
        ),
        ({"instruction": "你是谁？", "output": "您好，我是 {{name}}，一个由 {{author}} 开发的 AI 助手。"}, "{{name}}"),
        ({"instruction": "Write to {recipient} about the delay.", "output": "Dear customer, sorry."}, "{recipient}"),
        ({"instruction": "Sign the letter.", "output": "Best regards,\n<YOUR NAME>"}, "<YOUR NAME>"),
        ({"instruction": "Sign the letter.", "output": "Sincerely, [Your Name]"}, "[Your Name]"),
        (
            {"instruction": "Write an ad.", "output": "Visit [INSERT COMPANY WEBSITE] today!"},
            "[INSERT COMPANY WEBSITE]",
        ),
        ({"instruction": "写一封邀请函。", "output": "尊敬的【填写姓名】：诚邀您参加年会。"}, "【填写姓名】"),
        ({"instruction": "Greet.", "output": "Hello $USER_NAME, welcome back."}, "$USER_NAME"),
    ],
)
def test_unfilled_placeholders_drop_the_record_naming_the_field_and_text(record: dict, found: str) -> None:
    [(rule, reason)] = placeholder_verdicts([record])
    field = "instruction" if found in record["instruction"] else "output"
    assert (rule, reason) == ("unfilled_placeholder", f"{field} holds the unfilled placeholder '{found}'")


@pytest.mark.parametrize(
    "record",
    [
        {"instruction": "Translate to C++: def greet(name): return f'Hello, {name}!'", "output": "```cpp\n}\n```"},
        {"instruction": "Write a Vue template.", "output": "```html\n<p>{{ message }}</p>\n```"},
        {"instruction": "Contact?", "output": "Mail <EMAIL> or call <PHONE>."},  # wb's own redaction tokens
        {"instruction": "Explain HTML.", "output": "Use <b> for bold and <i> for italics; arrays use a[i]."},
        {"instruction": "集合怎么写？", "output": "集合 {1, 2, 3} 包含三个元素，价格是 $5。"},
        {"instruction": "Cite it.", "output": 'As shown in [1] and [Smith 2020], the JSON key is {"a": 1}.'},
    ],
)
def test_code_redaction_tokens_and_ordinary_brackets_are_not_placeholders(record: dict) -> None:
    assert placeholder_verdicts([record]) == [(None, None)]


def test_placeholder_patterns_are_configurable() -> None:
    records = [{"instruction": "hi", "output": "I am NAME, built by AUTHOR."}]  # an older identity.json's shape
    assert placeholder_verdicts(records) == [(None, None)]
    assert placeholder_verdicts(records, patterns=[r"\b(?:NAME|AUTHOR)\b"]) == [
        ("unfilled_placeholder", "output holds the unfilled placeholder 'NAME'")
    ]
    code = [{"instruction": "Fill the template.", "output": "```\nHello {{name}}\n```"}]
    assert placeholder_verdicts(code) == [(None, None)]
    assert placeholder_verdicts(code, in_code=True)[0][0] == "unfilled_placeholder"


IDENTITY = [  # the shape of LLaMA-Factory's data/identity.json: placeholders to fill before training
    {"instruction": "hi", "input": "", "output": "Hello! I am {{name}}, an AI assistant developed by {{author}}."},
    {"instruction": "你好", "input": "", "output": "您好，我是 {{name}}，一个由 {{author}} 开发的 AI 助手。"},
    {"instruction": "What is 2+2?", "input": "", "output": "4"},
]


def test_placeholder_records_are_dropped_by_the_default_profile(tmp_path: Path, wb: Any) -> None:
    src = tmp_path / "identity.json"
    src.write_text(json.dumps(IDENTITY, ensure_ascii=False), encoding="utf-8")
    assert wb("clean", src, "-o", tmp_path / "clean.jsonl").exit_code == 0
    stats = json.loads((tmp_path / "clean.stats.json").read_text(encoding="utf-8"))
    assert stats["dropped_by_rule"]["unfilled_placeholder"] == 2 and stats["kept"] == 1
    dropped = [json.loads(x) for x in (tmp_path / "clean.dropped.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(d["line"], d["reason"]) for d in dropped] == [
        (1, "output holds the unfilled placeholder '{{name}}'"),
        (2, "output holds the unfilled placeholder '{{name}}'"),
    ]


def test_action_report_keeps_the_records_and_lists_them_in_the_stats(tmp_path: Path, wb: Any) -> None:
    src = tmp_path / "identity.json"
    src.write_text(json.dumps(IDENTITY, ensure_ascii=False), encoding="utf-8")
    prof = tmp_path / "p.yaml"
    prof.write_text("name: p\nrules:\n  unfilled_placeholder:\n    action: report\n  empty_output:\n", encoding="utf-8")
    res = wb("clean", src, "-o", tmp_path / "clean.jsonl", "--profile", prof)
    assert res.exit_code == 0
    assert "reported, not dropped: 2 record(s) by unfilled_placeholder" in " ".join(res.output.split())
    stats = json.loads((tmp_path / "clean.stats.json").read_text(encoding="utf-8"))
    assert stats["kept"] == 3 and stats["dropped"] == 0
    assert stats["read"] == stats["kept"] + stats["dropped"] + stats["rejected"]
    assert stats["reported_by_rule"] == {"unfilled_placeholder": 2}
    assert [r["line"] for r in stats["reported"]] == [1, 2] and stats["reported_left_out"] == 0
    assert stats["reported"][1]["reason"] == "output holds the unfilled placeholder '{{name}}'"
