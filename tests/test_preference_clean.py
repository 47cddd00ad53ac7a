"""`wb clean` on preference data: every preference rule's defect and near miss, per-side SFT rules, contradictions
naming each other, dedup over prompt + both answers, exact accounting, Chinese, BOM/CRLF, broken lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import read_jsonl, write_jsonl
from workbench.clean import dispatch as cleaning
from workbench.clean.profile import from_dict, load
from workbench.clean.rule_registry import RULES
from workbench.preference_files import read_preferences
from workbench.preference_records import to_canonical, to_trl

REPO = Path(__file__).resolve().parent.parent


def pair(prompt: str, chosen: str, rejected: str, **extra: Any) -> dict[str, Any]:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra}


def clean(tmp_path: Path, records: list[Any], profile: str = "preference", **kw: Any) -> dict[str, Any]:
    src = write_jsonl(tmp_path / "prefs.jsonl", records)
    result = cleaning.run(src, tmp_path / "out.jsonl", load(profile), **kw)
    assert result.summary["invariant_holds"]
    s = result.summary
    assert s["read"] == s["kept"] + s["dropped"] + s["rejected"]
    return s


def dropped(tmp_path: Path) -> dict[int, dict[str, Any]]:
    return {r["line"]: r for r in read_jsonl(tmp_path / "out.dropped.jsonl")}


def verdicts(tmp_path: Path, records: list[Any], profile: str = "preference") -> list[str | None]:
    """The rule that dropped each record (None: kept)."""
    clean(tmp_path, records, profile)
    drops = dropped(tmp_path)
    return [drops[i + 1]["rule"] if i + 1 in drops else None for i in range(len(records))]


GOOD = pair("What is the capital of France? Answer in JSON.", '{"answer": "Paris"}', "The answer is Paris.")

CASES = [
    # (rule, defect, near miss that must be kept)
    ("identical_pair", pair("Say hi", "Hello there!", "Hello there!"), pair("Say hi", "Hello there!", "Hi.")),
    ("identical_pair", pair("Say hi", "Hello  there!", "hello there!"), pair("Say hi", "Hello there!", "Hello there?")),
    ("identical_pair", pair("问好", "你好！", "你好！"), pair("问好", "你好！", "您好！")),
    ("empty_response", pair("2+2?", "4", "N/A"), pair("2+2?", "4", "5")),
    ("empty_response", pair("2+2?", "", "5"), pair("2+2?", "No.", "5")),
    ("empty_response", pair("二加二？", "四", "无"), pair("二加二？", "四", "五")),
    ("format_mismatch", pair("Greet", "Hello!<|im_end|>", "Hi."), pair("Greet", "Hello!<|im_end|>", "Hi.<|im_end|>")),
    ("format_mismatch", pair("Greet", "Hello!", "Hi.</s>"), pair("Greet", "Hello! </s> is a tag", "Hi.")),
    ("format_mismatch", pair("Code", "```python\nprint(1)\n```", "print(1)"), pair("Code", "```py\nx\n```", "```py\ny\n```")),
    ("format_mismatch", pair("Quote", '"To be or not to be"', "To be or not"), pair("Quote", 'He said "be" twice', "be")),
    ("format_mismatch", pair("讲个笑话", "Assistant: 好的", "好的"), pair("讲个笑话", "助手很好", "好的")),
    ("format_mismatch", pair("Motto", "**Carpe diem.**", "Carpe diem."), pair("Motto", "**Carpe** diem.", "Seize it.")),
    ("format_mismatch", pair("Cite", "> To be\n> or not", "To be"), pair("Cite", "> To be\nor not", "To be")),
    ("refusal_chosen", pair("Tell a joke", "I'm sorry, but I cannot help with that.", "Why did the chicken..."),
     pair("Tell a joke", "Why did the chicken...", "I'm sorry, but I cannot help with that.")),
    ("refusal_chosen", pair("介绍你自己", "作为一个AI语言模型，我没有自我。", "我是小助手。"),
     pair("介绍你自己", "我是小助手。", "作为一个AI语言模型，我没有自我。")),
    ("truncated_output", pair("List fruits", "Apples and pears.", "The fruits are apples, oranges,"),
     pair("List fruits", "Apples and pears.", "The fruits are apples and oranges.")),
    ("repeated_lines", pair("Colours", "red\nred\nred\nred\nred\nblue", "red, green"),
     pair("Colours", "red\ngreen\nblue\nyellow", "red, green")),
    ("symbol_ratio", pair("Draw", "ok ==== **** !!!! #### @@@@ $$$$ %%%% ^^^^", "A cat."), pair("Draw", "A cat.", "A dog.")),
    ("empty_instruction", pair("", "a", "b"), pair("?", "a", "b")),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "bad", "good"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rule_drops_the_defect_and_keeps_the_near_miss(
    tmp_path: Path, rule: str, bad: dict[str, Any], good: dict[str, Any]
) -> None:
    assert verdicts(tmp_path, [bad, good]) == [rule, None]


def test_every_preference_rule_is_exercised_and_in_the_preference_profile() -> None:
    pref_rules = {n for n, r in RULES.items() if "sft" not in r.kinds}
    assert pref_rules <= {c[0] for c in CASES} | {"contradictory_pair"}
    assert pref_rules <= set(load("preference").rule_order)


def test_markdown_structure_is_compared_only_when_asked(tmp_path: Path) -> None:
    records = [pair("Steps?", "## Steps\n- mix\n- bake", "Mix, then bake."), pair("Why?", "Because.", "Since.")]
    assert verdicts(tmp_path, records) == [None, None]
    profile = from_dict({"name": "t", "rules": {"format_mismatch": {"markdown_structure": True}}})
    src = write_jsonl(tmp_path / "m.jsonl", records)
    s = cleaning.run(src, tmp_path / "m.out.jsonl", profile).summary
    assert s["dropped_by_rule"]["format_mismatch"] == 1
    row = read_jsonl(tmp_path / "m.out.dropped.jsonl")[0]
    assert row["reason"] == "chosen uses markdown formatting and rejected does not"


def test_per_side_reasons_name_the_side(tmp_path: Path) -> None:
    truncated = pair("List fruits", "Apples and pears.", "The fruits are apples, oranges,")
    clean(tmp_path, [truncated, pair("Code", "```py\nx = 1\n", "x = 1")])
    drops = dropped(tmp_path)
    assert drops[1]["reason"] == "rejected ends on ',', mid-sentence"
    assert drops[2]["rule"] == "truncated_output"
    assert drops[2]["reason"] == "chosen ends inside an unclosed ``` code block"


def test_a_side_reason_keeps_quoted_record_text_as_written(tmp_path: Path) -> None:
    clean(tmp_path, [pair("Fill in", "Hi.", "Your result: {output}.")])
    assert dropped(tmp_path)[1]["reason"] == "rejected holds the unfilled placeholder '{output}'"


def test_contradictory_pairs_are_both_dropped_and_name_each_other(tmp_path: Path) -> None:
    records = [
        pair("Pick a colour", "Blue.", "Red."),
        pair("Pick a colour", "Green.", "Red."),  # a different pair for the same prompt: no contradiction
        pair("pick a colour ", "red", "blue"),  # the opposite preference (same text as dedup compares it)
        pair("选一个颜色", "蓝色", "红色"),
        pair("选一个颜色", "红色", "蓝色"),
        pair("选一个颜色", "红色", "蓝色"),
    ]
    s = clean(tmp_path, records)
    drops = dropped(tmp_path)
    assert drops[1]["rule"] == drops[3]["rule"] == "contradictory_pair"
    assert drops[1]["contradicts"] == [3] and "line 3 states the opposite preference" in drops[1]["reason"]
    assert drops[3]["contradicts"] == [1] and "line 1 " in drops[3]["reason"]
    assert drops[4]["reason"] == "same prompt; lines 5, 6 state the opposite preference"
    assert drops[5]["contradicts"] == drops[6]["contradicts"] == [4]
    assert 2 not in drops
    assert s["dropped_by_rule"]["contradictory_pair"] == 5
    assert drops[1]["record"]["chosen"] == [{"role": "assistant", "content": "Blue."}]


def test_kto_contradiction_is_the_same_completion_labelled_both_ways(tmp_path: Path) -> None:
    records = [
        {"prompt": "Hi", "completion": "Hello!", "label": True},
        {"prompt": "Hi", "completion": "Go away.", "label": False},
        {"prompt": "Hi", "completion": "Hello!", "label": False},
    ]
    s = clean(tmp_path, records)
    drops = dropped(tmp_path)
    assert sorted(drops) == [1, 3] and drops[1]["contradicts"] == [3] and drops[3]["contradicts"] == [1]
    assert drops[1]["reason"] == "same prompt; line 3 labels the same completion the other way"
    assert s["preference"]["labels"] == {"desirable": 0, "undesirable": 1}
    assert set(s["preference"]["rules_not_applicable"]) == {"identical_pair", "format_mismatch"}


def test_kto_refusal_rule_judges_desirable_completions_only(tmp_path: Path) -> None:
    refusal = "I'm sorry, but I cannot help with that."
    records = [
        {"messages": [{"role": "user", "content": "Joke?"}, {"role": "assistant", "content": refusal}], "label": True},
        {"messages": [{"role": "user", "content": "Joke!"}, {"role": "assistant", "content": refusal}], "label": False},
    ]
    assert verdicts(tmp_path, records) == ["refusal_chosen", None]
    assert dropped(tmp_path)[1]["reason"].startswith("completion contains refusal boilerplate")


def test_exact_duplicates_compare_prompt_and_both_answers(tmp_path: Path) -> None:
    records = [
        GOOD,
        {**GOOD, "chosen": '{"answer": "Paris"} '},  # the same after normalisation
        {**GOOD, "rejected": "It is Paris."},  # the same prompt, another pair: kept
        {
            "messages": [{"role": "user", "content": GOOD["prompt"]}],
            "chosen": GOOD["chosen"],
            "rejected": GOOD["rejected"],
        },
    ]
    assert verdicts(tmp_path, records) == [None, "exact_duplicate", None, "exact_duplicate"]
    assert dropped(tmp_path)[2]["reason"] == "exact duplicate of line 1"


def test_normalisation_applies_to_both_answers_before_the_rules(tmp_path: Path) -> None:
    profile = from_dict({"name": "t", "rules": {"identical_pair": {"ignore_case_and_space": False}}})
    src = write_jsonl(tmp_path / "p.jsonl", [pair("Hi", "Ｈｅｌｌｏ\u200b world ", "Hello world")])
    s = cleaning.run(src, tmp_path / "out.jsonl", profile).summary
    assert s["dropped_by_rule"]["identical_pair"] == 1 and s["modified"]["normalized"] == 1


def test_tied_scores_are_dropped_with_the_score_and_scored_records_binarised(tmp_path: Path) -> None:
    records = [
        {"prompt": "Name a fruit", "completions": [{"text": "Apple.", "score": 9}, {"text": "Rock.", "score": 2}]},
        {"prompt": "Name a tree", "completions": [{"text": "Oak.", "score": 5}, {"text": "Pine.", "score": 5}]},
    ]
    s = clean(tmp_path, records)
    assert s["dropped_by_rule"]["tied_scores"] == 1
    assert dropped(tmp_path)[2]["reason"] == "all 2 completions score 5: no preference"
    assert read_jsonl(tmp_path / "out.jsonl")[0]["chosen"] == [{"role": "assistant", "content": "Apple."}]
    assert s["preference"]["shapes"] == {"scored": 2}


def test_broken_lines_sft_records_and_mixed_kinds_are_rejected_with_their_line(tmp_path: Path) -> None:
    records = [
        GOOD,
        '{"prompt": "broken", "chosen": ',
        {"instruction": "an SFT record", "output": "x"},
        {"prompt": "Hi", "completion": "Hello", "label": True},
        pair("Hi", "Hello", 5),
    ]
    s = clean(tmp_path, records)
    rejects = {r["line"]: r for r in read_jsonl(tmp_path / "out.rejects.jsonl")}
    assert {n: r["kind"] for n, r in rejects.items()} == {
        2: "bad_json",
        3: "not_preference",
        4: "mixed_kinds",
        5: "wrong_type",
    }
    assert rejects[5]["field"] == "rejected"
    assert rejects[2]["raw"] == '{"prompt": "broken", "chosen": '
    assert (s["read"], s["kept"], s["rejected"]) == (5, 1, 4)


def test_outputs_are_one_published_set_with_a_manifest(tmp_path: Path) -> None:
    from workbench.output import check_complete

    clean(tmp_path, [GOOD, pair("Hi", "Hello", "Hello")])
    manifest = check_complete(tmp_path / "out.manifest.json")
    assert set(manifest["outputs"]) == {"kept", "dropped", "rejects", "stats"}
    assert manifest["config"]["kind"] == "pair" and manifest["config"]["profile"]["name"] == "preference"


def test_map_is_refused_with_kind_preference(tmp_path: Path, wb: Any) -> None:
    src = write_jsonl(tmp_path / "p.jsonl", [GOOD])
    res = wb("clean", src, "-o", tmp_path / "o.jsonl", "--kind", "preference", "--map", "output=chosen")
    assert res.exit_code == 2 and "--map maps SFT fields" in res.stderr
    res = wb("clean", src, "-o", tmp_path / "o.jsonl", "--map", "output=chosen", "-q")  # SFT on the chosen answers
    assert res.exit_code == 0 and read_jsonl(tmp_path / "o.jsonl")[0]["output"] == GOOD["chosen"]


def test_chinese_bom_crlf_input_survives_and_reads_back_canonical(tmp_path: Path) -> None:
    lines = [
        json.dumps(pair("把“你好”翻译成英文", "Hello 👋", "你好"), ensure_ascii=False),
        json.dumps(
            {
                "conversations": [{"from": "human", "value": "写一句诗。"}],
                "chosen": {"from": "gpt", "value": "床前明月光，疑是地上霜。"},
                "rejected": {"from": "gpt", "value": "不会。"},
                "system": "你是诗人。",
            },
            ensure_ascii=False,
        ),
    ]
    multi_turn = {
        "messages": [
            {"role": "system", "content": "简洁回答。"},
            {"role": "user", "content": "第一问"},
            {"role": "assistant", "content": "第一答"},
            {"role": "user", "content": "第二问"},
        ],
        "chosen": {"role": "assistant", "content": "第二答"},
        "rejected": [{"role": "assistant", "content": "不知道"}],
    }
    lines.append(json.dumps(multi_turn, ensure_ascii=False))
    src = tmp_path / "p.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    s = cleaning.run(src, tmp_path / "out.jsonl", load("preference")).summary
    assert s["kept"] == 3
    kept = read_jsonl(tmp_path / "out.jsonl")
    assert kept[2]["prompt"][0] == {"role": "system", "content": "简洁回答。"}  # TRL's conversational format
    back = [ex for _, ex in read_preferences(tmp_path / "out.jsonl")]
    assert back[0].chosen == "Hello 👋" and back[1].chosen == "床前明月光，疑是地上霜。"
    assert back[1].prompt_messages[0].content == "你是诗人。"
    assert back[2] == to_canonical(multi_turn)  # system, earlier turns and the last question all kept


def test_personal_data_in_an_answer_is_redacted(tmp_path: Path) -> None:
    s = clean(tmp_path, [pair("Contact?", "Write to jane.doe@gmail.com.", "No idea.")])
    assert read_jsonl(tmp_path / "out.jsonl")[0]["chosen"][0]["content"] == "Write to <EMAIL>."
    assert s["modified"]["pii_redacted"] == 1


def test_length_bias_is_measured_and_warned_about(tmp_path: Path) -> None:
    records = [pair(f"Question {i}?", f"A long and careful answer number {i}.", f"No {i}.") for i in range(8)]
    records += [pair("Q?", "Yes.", "Absolutely, yes indeed."), pair("R?", "Same.", "Same!")]
    s = clean(tmp_path, records)
    bias = s["preference"]["length_bias"]
    assert (bias["pairs"], bias["chosen_longer"], bias["rejected_longer"], bias["equal"]) == (10, 8, 1, 1)
    assert bias["chosen_longer_share"] == 0.8 and bias["biased"] is True
    assert any("chosen is the longer answer in 80% of the 10 kept pairs" in w for w in s["warnings"])


def test_a_record_with_pair_and_kto_fields_is_rejected_with_both_named(tmp_path: Path) -> None:
    both = pair("把“你好”翻译成英文", "Hello", "Hi there", completion="Hello", label=True)
    s = clean(tmp_path, [GOOD, both])
    (reject,) = read_jsonl(tmp_path / "out.rejects.jsonl")
    assert (reject["line"], reject["field"], reject["kind"]) == (2, "completion", "ambiguous_shape")
    assert "a pair (chosen/rejected) and a KTO example (completion/label)" in reject["error"]
    assert (s["read"], s["kept"], s["rejected"]) == (2, 1, 1)


def test_equal_length_pairs_are_counted_as_ties_not_as_a_bias(tmp_path: Path, wb: Any) -> None:
    # Equal UTF-8 lengths, in English and Chinese (a CJK character is 3 bytes either way).
    records = [pair(f"Q{i}?", "Yes.", "No!!") for i in range(6)] + [pair("问题？", "是的。", "不是。")]
    records += [pair("Which?", "The longer one.", "Short.")]
    s = clean(tmp_path, records)
    bias = s["preference"]["length_bias"]
    assert (bias["chosen_longer"], bias["rejected_longer"], bias["equal"]) == (1, 0, 7)
    assert bias["biased"] is False and not any("length bias" in w for w in s["warnings"])
    src = write_jsonl(tmp_path / "ties.jsonl", records)
    out = wb("clean", src, "-o", tmp_path / "o.jsonl", "--kind", "preference")
    assert out.exit_code == 0, out.stderr
    assert "length bias: chosen longer in 12% of 8 kept pairs, 7 of equal length, mean" in out.stdout
    assert "warning: length bias" not in out.stderr


def test_a_mostly_shorter_chosen_answer_is_warned_about_with_the_ties_named(tmp_path: Path) -> None:
    records = [pair(f"Q{i}?", "No.", "A much longer answer.") for i in range(8)] + [pair("R?", "Same.", "Same!")]
    s = clean(tmp_path, records)
    assert s["preference"]["length_bias"]["biased"] is True
    warning = next(w for w in s["warnings"] if w.startswith("length bias"))
    assert warning.startswith("length bias: chosen is the shorter answer in 89% of the 9 kept pairs, 1 of equal length")


def test_balanced_lengths_raise_no_warning_and_the_stats_validate(tmp_path: Path) -> None:
    from workbench.runfile.cleaning import CleanStats

    records = [
        pair(f"Q{i}?", "Yes, it is." if i % 2 else "Yes.", "No." if i % 2 else "No, it is not.") for i in range(6)
    ]
    s = clean(tmp_path, records)
    assert s["preference"]["length_bias"]["chosen_longer_share"] == 0.5 and not s["warnings"]
    typed = CleanStats.model_validate(json.loads((tmp_path / "out.stats.json").read_text()))
    assert typed.preference is not None and typed.preference.length_bias is not None
    assert typed.preference.length_bias.chosen_longer == 3


def test_decontamination_against_a_preference_eval_file(tmp_path: Path) -> None:
    leak = "What is the boiling point of water at sea level in degrees Celsius? Answer in JSON please, thank you."
    evals = write_jsonl(tmp_path / "eval.jsonl", [pair(leak, '{"answer": 100}', "It is 100.")])
    s = clean(tmp_path, [GOOD, pair(leak, '{"answer": 100}', "100.")], against=[evals])
    assert s["dropped_by_rule"]["contamination"] == 1
    assert dropped(tmp_path)[2]["eval_item"].endswith("eval.jsonl:line 1")


def test_the_shipped_set_cleans_without_drops_and_without_length_bias(tmp_path: Path) -> None:
    for name in ("prefs.jsonl", "prefs_eval.jsonl"):
        result = cleaning.run(REPO / "data" / "preference" / name, tmp_path / name, load("preference"))
        s = result.summary
        assert s["kept"] == s["read"] and s["read"] >= 50 and not s["warnings"]
    train = read_preferences(REPO / "data" / "preference" / "prefs.jsonl")
    held = read_preferences(REPO / "data" / "preference" / "prefs_eval.jsonl")
    assert len(train) + len(held) >= 150 and len(held) >= 40
    assert not {ex.prompt_messages[-1].content for _, ex in train} & {ex.prompt_messages[-1].content for _, ex in held}
    zh = [ex for _, ex in train + held if any("\u4e00" <= ch <= "\u9fff" for ch in ex.prompt_messages[-1].content)]
    assert len(zh) >= 60


def test_cli_recognises_preference_data_and_an_sft_rule_is_refused(tmp_path: Path, wb: Any) -> None:
    src = write_jsonl(tmp_path / "p.jsonl", [GOOD, pair("Hi", "Hello", "Hello")])
    res = wb("clean", src, "-o", tmp_path / "out.jsonl")
    assert res.exit_code == 0, res.output
    assert "preference data (pairs)" in res.stdout and "dropped: identical_pair" in res.stdout
    assert "read 2 = kept 1 + dropped 1 + rejected 0" in res.stdout
    res = wb("clean", src, "-o", tmp_path / "out2.jsonl", "--profile", "default")
    assert res.exit_code == 2
    assert "rule refusal is for SFT records" in res.stderr
    sft = write_jsonl(tmp_path / "sft.jsonl", [{"instruction": "a", "output": "b"}])
    res = wb("clean", sft, "-o", tmp_path / "out3.jsonl", "--profile", "preference")
    assert res.exit_code == 2 and "is for preference data" in res.stderr


def test_cli_kind_preference_reads_stdin(tmp_path: Path) -> None:
    import subprocess
    import sys

    data = json.dumps(GOOD) + "\n"
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "clean", "-", "-o", str(out), "--kind", "preference", "-q"],
        input=data.encode(),
        capture_output=True,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert read_jsonl(out)[0] == to_trl(to_canonical(GOOD))


def test_stats_describe_pairs_with_length_bias_and_prompts_with_several_pairs(tmp_path: Path, wb: Any) -> None:
    records = [pair("<script>alert(1)</script> 你好?", f"A long and careful answer {i}.", "No.") for i in range(4)]
    records.append({"prompt": "t", "completions": [{"text": "a", "score": 1}, {"text": "b", "score": 1}]})
    records.append('{"broken": ')
    src = write_jsonl(tmp_path / "p.jsonl", records)
    res = wb("stats", src, "--json", "--html", tmp_path / "s.html")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert (d["records"], d["rejected"], d["tied_scores"], d["preference_kind"]) == (4, 1, 1, "pair")
    assert d["length_bias"]["chosen_longer_share"] == 1.0 and d["length_bias"]["biased"]
    assert d["prompts_with_several_records"]["groups"] == 1
    assert d["lengths"]["prompt.tokens"]["max"] == 6  # script, alert, 1, script, 你, 好
    page = (tmp_path / "s.html").read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "Length bias" in page and "Warning:" in page


def test_stats_describe_kto_labels(tmp_path: Path, wb: Any) -> None:
    records = [{"prompt": f"Q{i}", "completion": "A", "label": i % 3 == 0} for i in range(6)]
    res = wb("stats", write_jsonl(tmp_path / "k.jsonl", records), "--json")
    assert json.loads(res.stdout)["labels"] == {"desirable": 2, "undesirable": 4}
    res = wb("stats", tmp_path / "k.jsonl")
    assert "6 preference KTO examples" in res.stdout and "labels: 2 desirable, 4 undesirable" in res.stdout


def test_validate_checks_preference_records_and_names_line_and_field(tmp_path: Path, wb: Any) -> None:
    src = write_jsonl(tmp_path / "p.jsonl", [GOOD, pair("Hi", "Hello", ["not", "a message"]), '{"prompt": '])
    res = wb("validate", src)
    assert res.exit_code == 2
    assert f"{src}:line 2: rejected[0]: Input should be a valid dictionary" in res.stderr
    assert f"{src}:line 3: record: bad JSON" in res.stderr
    assert "2 of 3 records invalid" in res.stderr
    assert wb("validate", REPO / "data" / "preference" / "prefs_eval.jsonl").exit_code == 0


def test_the_gate_can_hold_the_length_bias_from_the_clean_stats(tmp_path: Path) -> None:
    from workbench.report import gate
    from workbench.report.summary import _clean_section

    records = [pair(f"Q{i}?", f"A long and careful answer {i}.", "No.") for i in range(4)]
    clean(tmp_path, records)
    summary = {"clean": _clean_section(tmp_path / "out.stats.json")}
    value, _ = gate.resolve(summary, "clean.preference.length_bias.chosen_longer_share")
    assert value == 1.0
    checks = gate.GateFile.model_validate({"checks": ["clean.preference.length_bias.chosen_longer_share <= 0.7"]})
    assert not gate.evaluate(checks, summary).passed


def test_near_duplicate_pairs_are_dropped_naming_the_kept_one(tmp_path: Path) -> None:
    long_prompt = "Explain in two sentences why the sky looks blue on a clear day and red at sunset, for a child."
    chosen = "Sunlight scatters off air molecules, and blue light scatters the most, so the sky looks blue."
    records = [
        pair(long_prompt, chosen + " At sunset light travels further, so reds remain.", "Because it is."),
        pair(long_prompt, chosen + " At sunset light travels further, so reds remain.", "Because it is so."),
        pair("Explain why grass is green, for a child.", "Chlorophyll reflects green light.", "It just is."),
    ]
    assert verdicts(tmp_path, records) == [None, "near_duplicate", None]
    assert dropped(tmp_path)[2]["duplicate_of"] == 1


def test_runs_are_deterministic_and_wb_dedup_handles_preference_data(tmp_path: Path, wb: Any) -> None:
    src = REPO / "data" / "preference" / "prefs.jsonl"
    outs = []
    for name in ("a", "b"):
        assert wb("clean", src, "-o", tmp_path / f"{name}.jsonl", "-q").exit_code == 0
        outs.append([(tmp_path / f"{name}{ext}").read_bytes() for ext in (".jsonl", ".dropped.jsonl", ".stats.json")])
    assert outs[0] == outs[1]
    dup = write_jsonl(tmp_path / "d.jsonl", [GOOD, GOOD, pair("Hi", "Hello", "Hello")])
    res = wb("dedup", dup, "-o", tmp_path / "dd.jsonl")
    assert res.exit_code == 0, res.output
    assert "read 3 = kept 2 + dropped 1 + rejected 0" in res.stdout  # only the duplicate: dedup runs no rules
