"""Answer extraction and correctness scores: numbers (GSM8K `####`, `答案：`, full-width digits, thousands separators,
fractions), option letters (markers beat stray letters, ambiguity gives None), labels against a label set, JSON
(fenced blocks, schemas, field F1) and regexes, in English and Chinese, in linear time on runaway answers."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from fractions import Fraction

import pytest

from workbench.evaluate.answer_format import (
    check_schema,
    extract_json,
    flatten_json,
    json_field_f1,
    json_schema_valid,
    json_valid,
    regex_flags,
    regex_match,
)
from workbench.evaluate.answers import NONE_COLUMN, classification_report, label_accuracy, macro_f1_of, normalize_label
from workbench.evaluate.choices import choice_accuracy, extract_choice
from workbench.evaluate.numbers import extract_number, numeric_match

# --- numbers ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Natalia sold 48 clips in April and half as many in May, 48 + 24 = 72. #### 72", 72),
        ("#### 1,234", 1234),
        ("答案：１２３", 123),
        ("答案是 42。", 42),
        ("共有42个苹果", 42),
        ("The answer is 7. Check: 3 + 4 = 7, and 10 more is 17", 7),
        ("So the final answer: 12 apples (plus 3 pears)", 12),
        ("We get \\boxed{\\frac{3}{4}} in the end, not 5", Fraction(3, 4)),
        ("\\boxed{x = 5} and later 9", 5),
        ("It is 68+11=79", 79),
        ("Take 3/4 of it", Fraction(3, 4)),
        ("Take 3 / 4 of it", Fraction(3, 4)),
        ("\\dfrac{-6}{8}", Fraction(-3, 4)),
        ("１２３．５", Fraction(247, 2)),
        ("The rate rose to 50%", 50),
        ("It costs $12,345.50 now", Fraction(2469100, 200)),
        ("1{,}000 people", 1000),
    ],
)
def test_extract_number_reads_the_marked_or_last_number(text: str, expected: int | Fraction) -> None:
    assert extract_number(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x = -5", -5),
        ("答案是-5", -5),
        ("(-5)", -5),
        ("x = \u22123", -3),
        ("68-11", 11),
        ("68 - 11", 11),
        ("x-3", 3),
    ],
)
def test_a_minus_sign_is_a_sign_only_where_it_does_not_follow_an_operand(text: str, expected: int) -> None:
    assert extract_number(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,234", 1234),
        ("1,234,567", 1234567),
        ("1,2", 2),  # a list: 1 and 2
        ("3,4,5", 5),
        ("1,2345", 2345),  # a group of four digits is no thousands group: 1 and 2345
        ("2019,2020", 2020),
        ("1，234", 1234),  # full-width comma
    ],
)
def test_commas_are_thousands_separators_only_before_groups_of_three(text: str, expected: int) -> None:
    assert extract_number(text) == expected


def test_extract_number_is_none_without_a_number() -> None:
    assert extract_number("no digits here, 没有数字") is None
    assert extract_number("") is None


def test_the_hash_marker_beats_a_later_number_and_the_answer_phrase_beats_the_last_number() -> None:
    assert extract_number("#### 5\nThat was 7 steps") == 5
    assert extract_number("#### $-12.5 in total, after 3 steps") == Fraction(-25, 2)
    assert extract_number("#### Step 1\nAdd 2 and 3 to get 5") == 5  # a markdown heading is no marker
    assert extract_number("答案：8，验算：2×4=8，共3步") == 8
    # With no number after the last phrase, the phrase before it decides.
    assert extract_number("The answer is 6. The answer is obvious.") == 6


def test_numeric_match_compares_a_prediction_with_a_gsm8k_solution() -> None:
    reference = "Weng earns 12/60 = $0.2 per minute. Working 50 minutes, she earned 0.2 x 50 = $10.\n#### 10"
    assert numeric_match("She earned $10.", reference) == 1
    assert numeric_match("答案：１０", reference) == 1
    assert numeric_match("She earned $10.50", reference) == 0
    assert numeric_match("I do not know", reference) == 0


def test_numeric_match_takes_a_bare_number_reference_and_numbers() -> None:
    assert numeric_match("3/4", "0.75") == 1
    assert numeric_match("\\frac{1}{3}", "0.333333333") == 1  # within the relative tolerance
    assert numeric_match("\\frac{1}{3}", "0.333") == 0
    assert numeric_match("0.75", 0.75) == 1
    assert numeric_match("75", Fraction(3, 4)) == 0


def test_percents_are_read_as_written() -> None:
    assert numeric_match("50%", "50") == 1
    assert numeric_match("50%", "0.5") == 0


def test_numeric_tolerance_is_relative_with_a_tiny_absolute_floor_for_zero() -> None:
    assert numeric_match("1000001", "1000000", rel_tol=1e-6) == 1
    assert numeric_match("1000003", "1000000", rel_tol=1e-6) == 0
    assert numeric_match("0", "0") == 1
    assert numeric_match("0.0000000001", "0") == 1  # 1e-10 is within the absolute 1e-9
    assert numeric_match("0.001", "0") == 0
    assert numeric_match("-5", "5") == 0


def test_numeric_match_raises_on_a_reference_without_a_number() -> None:
    with pytest.raises(ValueError, match="no number"):
        numeric_match("42", "forty-two")


# --- choices ------------------------------------------------------------------------------------------------------

OPTIONS = {"A": "London", "B": "Paris", "C": "Rome", "D": "Berlin"}


@pytest.mark.parametrize(
    "text",
    [
        "B",
        "(B)",
        "B.",
        "B)",
        "B. Paris",
        "(b) Paris",
        "Ｂ",
        "（Ｂ）",
        "答案是B",
        "答案：B",
        "答案：Ｂ",
        "答案为 B 项",
        "选B",
        "故选B。",
        "the answer is (B)",
        "The correct option is B because Paris is the capital.",
        "Answer: B",
        "**Answer: B**",
        "I would pick B here",
        "我认为是B",
    ],
)
def test_extract_choice_reads_the_common_answer_forms(text: str) -> None:
    assert extract_choice(text) == "B"


def test_an_explicit_marker_beats_the_article_a_at_the_start() -> None:
    assert extract_choice("A cat is not a dog, so the answer is C.") == "C"
    assert extract_choice("A cat is not a dog.") is None


def test_a_leading_letter_beats_lone_letters_later() -> None:
    assert extract_choice("B\n\nExplanation: C and D are wrong.") == "B"
    assert extract_choice("(C) Rome, not B") == "C"


def test_an_explicit_marker_beats_a_leading_letter_and_lone_letters() -> None:
    assert extract_choice("B. Wait: 答案是D") == "D"
    assert extract_choice("C looks tempting, but the answer is (A)") == "A"


def test_mentioning_an_option_is_not_choosing_it() -> None:
    assert extract_choice("选项A错误，答案是C") == "C"
    assert extract_choice("Option (A) is incorrect; the correct answer is (C).") == "C"
    assert extract_choice("选项A错误，选项B也错误") is None


def test_a_capital_a_mid_sentence_or_before_a_verb_is_a_choice() -> None:
    assert extract_choice("I think A is right") == "A"
    assert extract_choice("A is correct.") == "A"


def test_lowercase_letters_count_only_in_brackets() -> None:
    assert extract_choice("answer: a dog") is None
    assert extract_choice("the answer is (c)") == "C"


@pytest.mark.parametrize("text", ["B or C", "The answer is B. No, the answer is C.", "答案是B，也可能选C"])
def test_two_letters_of_equal_standing_are_ambiguous(text: str) -> None:
    assert extract_choice(text) is None


def test_the_option_text_maps_to_its_letter_when_no_letter_is_given() -> None:
    assert extract_choice("Paris", OPTIONS) == "B"
    assert extract_choice("It is paris.", OPTIONS) == "B"
    assert extract_choice("paris or rome", OPTIONS) is None
    assert extract_choice("Parisian food", OPTIONS) is None  # not a whole word
    assert extract_choice("Paris", None) is None


def test_an_option_inside_a_longer_found_option_does_not_count() -> None:
    options = {"A": "Paris", "B": "Paris, Texas", "C": "巴黎"}
    assert extract_choice("It is Paris, Texas", options) == "B"
    assert extract_choice("巴黎", options) == "C"


def test_letters_follow_the_options_keys() -> None:
    options = {"A": "1", "B": "2", "C": "3", "D": "4", "E": "5"}
    assert extract_choice("答案：E", options) == "E"
    assert extract_choice("答案：E") is None
    assert extract_choice("E", letters="ABCDE") == "E"


def test_choice_accuracy_against_the_reference_letter() -> None:
    assert choice_accuracy("答案：Ｂ", "B") == 1
    assert choice_accuracy("the answer is (C)", "(B)") == 0
    assert choice_accuracy("Paris", "b", OPTIONS) == 1
    assert choice_accuracy("B or C", "B") == 0
    with pytest.raises(ValueError, match="not one of the option letters"):
        choice_accuracy("B", "F")


# --- labels -------------------------------------------------------------------------------------------------------

URGENCY = ["urgent", "non-urgent"]
URGENCY_ZH = ["紧急", "非紧急"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Urgent.", "urgent"),
        ("urgent", "urgent"),
        ("URGENT", "urgent"),
        ("  Ｕｒｇｅｎｔ！ ", "urgent"),
        ("This is URGENT", "urgent"),
        ("Non-urgent", "non-urgent"),
        ("This case is non-urgent.", "non-urgent"),
        ("Urgent: the patient needs care; it is not non-urgent.", "urgent"),
        ("urgently", None),
        ("I cannot tell", None),
        ("", None),
        ("This could be urgent or non-urgent", None),
    ],
)
def test_normalize_label_reads_the_label_of_an_english_answer(text: str, expected: str | None) -> None:
    assert normalize_label(text, URGENCY) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("紧急", "紧急"),
        ("紧急。", "紧急"),
        ("情况紧急", "紧急"),
        ("非紧急", "非紧急"),
        ("这属于非紧急情况", "非紧急"),
        ("不知道", None),
    ],
)
def test_normalize_label_reads_chinese_labels(text: str, expected: str | None) -> None:
    assert normalize_label(text, URGENCY_ZH) == expected


def test_normalize_label_returns_the_label_as_spelled_in_the_set() -> None:
    assert normalize_label("indemnity clause", ["Indemnity", "Termination"]) == "Indemnity"
    assert normalize_label("这是Termination条款", ["Indemnity", "Termination"]) == "Termination"


def test_label_accuracy_normalises_both_sides() -> None:
    assert label_accuracy("This is URGENT.", "Urgent", URGENCY) == 1
    assert label_accuracy("non-urgent", "urgent", URGENCY) == 0
    assert label_accuracy("maybe", "urgent", URGENCY) == 0
    with pytest.raises(ValueError, match="not one of the labels"):
        label_accuracy("urgent", "critical", URGENCY)


def test_classification_report_by_hand() -> None:
    # refs:  U  U  U  N  N  N ; preds: U  U  N  N  U  (none)
    predictions = ["urgent", "Urgent.", "non-urgent", "Non-urgent", "urgent", "no idea"]
    references = ["urgent", "urgent", "urgent", "non-urgent", "non-urgent", "non-urgent"]
    report = classification_report(predictions, references, URGENCY)
    urgent, non = report["per_class"]["urgent"], report["per_class"]["non-urgent"]
    # urgent: tp 2, predicted 3, support 3 -> P 2/3, R 2/3, F1 2/3
    assert urgent == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    # non-urgent: tp 1, predicted 2, support 3 -> P 1/2, R 1/3, F1 = 2*(1/6)/(5/6) = 0.4
    assert non == pytest.approx({"precision": 0.5, "recall": 1 / 3, "f1": 0.4, "support": 3})
    assert report["macro_f1"] == pytest.approx((2 / 3 + 0.4) / 2)
    assert report["accuracy"] == pytest.approx(3 / 6)
    assert report["unparsed"] == 1
    assert report["confusion"]["rows"] == URGENCY
    assert report["confusion"]["columns"] == [*URGENCY, NONE_COLUMN]
    assert report["confusion"]["matrix"] == [[2, 1, 0], [1, 1, 1]]


def test_macro_f1_leaves_out_labels_that_occur_nowhere() -> None:
    report = classification_report(["urgent", "urgent"], ["urgent", "urgent"], [*URGENCY, "unknown"])
    assert report["macro_f1"] == 1.0
    assert report["per_class"]["unknown"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_classification_report_names_the_item_whose_reference_is_not_a_label() -> None:
    with pytest.raises(ValueError, match=r"item 1"):
        classification_report(["urgent", "urgent"], ["urgent", "critical"], URGENCY)
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        classification_report(["urgent", "urgent"], ["urgent"], URGENCY)


def test_classification_report_on_chinese_labels() -> None:
    report = classification_report(["紧急", "非紧急情况", "紧急"], ["紧急", "非紧急", "非紧急"], URGENCY_ZH)
    assert report["confusion"]["matrix"] == [[1, 0, 0], [1, 1, 0]]
    assert report["per_class"]["紧急"]["precision"] == pytest.approx(0.5)


def test_macro_f1_of_indices_equals_the_report_on_those_items() -> None:
    predictions = ["urgent", "Urgent.", "non-urgent", "Non-urgent", "urgent", "no idea"]
    references = ["urgent", "urgent", "urgent", "non-urgent", "non-urgent", "non-urgent"]
    macro = macro_f1_of(predictions, references, URGENCY)
    assert macro(range(6)) == pytest.approx(classification_report(predictions, references, URGENCY)["macro_f1"])
    picked = [0, 0, 3, 5]
    expected = classification_report([predictions[i] for i in picked], [references[i] for i in picked], URGENCY)
    assert macro(picked) == pytest.approx(expected["macro_f1"])


# --- JSON ---------------------------------------------------------------------------------------------------------


def test_extract_json_reads_the_whole_answer_first() -> None:
    assert extract_json('  {"a": 1, "b": [true, null]}\n') == ({"a": 1, "b": [True, None]}, None)
    assert extract_json("42") == (42, None)
    assert extract_json("null") == (None, None)


def test_extract_json_reads_the_first_json_fenced_block() -> None:
    text = 'Here it is:\n```python\nx = {"no": 1}\n```\nand\n```json\n{"name": "张三", "age": 30}\n```\nDone.'
    assert extract_json(text) == ({"name": "张三", "age": 30}, None)


def test_extract_json_falls_back_to_any_fenced_block_then_to_a_balanced_span() -> None:
    assert extract_json("结果：\n~~~\n[1, 2, 3]\n~~~") == ([1, 2, 3], None)
    assert extract_json('The object {not json} is wrong; use {"ok": "a}b", "n": [1, {"x": 2}]} instead.') == (
        {"ok": "a}b", "n": [1, {"x": 2}]},
        None,
    )
    assert extract_json('[note {"a": 1}') == ({"a": 1}, None)  # an unclosed bracket around it


def test_extract_json_explains_why_there_is_no_json() -> None:
    value, error = extract_json("Sure, here you go!")
    assert value is None and error is not None and error.startswith("not JSON")
    value, error = extract_json('```json\n{"a": 1,}\n```')
    assert value is None and error is not None and error.startswith("fenced block is not JSON")
    assert extract_json("   ")[1] == "the answer is empty"
    assert extract_json("NaN")[1] is not None
    assert extract_json('{"a": Infinity}')[1] is not None


def test_json_valid() -> None:
    assert json_valid('```json\n{"a": 1}\n```') == 1
    assert json_valid("{'a': 1}") == 0  # single quotes are not JSON
    assert json_valid("好的，我会输出JSON。") == 0


SCHEMA = {
    "type": "object",
    "properties": {"label": {"enum": ["urgent", "non-urgent"]}, "score": {"type": "number"}},
    "required": ["label"],
    "additionalProperties": False,
}


def test_json_schema_valid() -> None:
    assert json_schema_valid('{"label": "urgent", "score": 0.9}', SCHEMA) == 1
    assert json_schema_valid('```json\n{"label": "non-urgent"}\n```', SCHEMA) == 1
    assert json_schema_valid('{"label": "紧急"}', SCHEMA) == 0
    assert json_schema_valid('{"score": 1}', SCHEMA) == 0
    assert json_schema_valid('{"label": "urgent", "extra": 1}', SCHEMA) == 0
    assert json_schema_valid("not json", SCHEMA) == 0


def test_json_schema_valid_uses_draft_2020_12() -> None:
    # prefixItems exists in 2020-12 only; under an older draft this tuple check would be ignored.
    schema = {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False}
    assert json_schema_valid('["a", 1]', schema) == 1
    assert json_schema_valid('[1, "a"]', schema) == 0
    assert json_schema_valid('["a", 1, 2]', schema) == 0


def test_an_invalid_schema_raises_a_value_error_naming_the_problem() -> None:
    with pytest.raises(ValueError, match=r"invalid JSON Schema at \$\.properties\.n\.type: 'integr'"):
        json_schema_valid("{}", {"type": "object", "properties": {"n": {"type": "integr"}}})
    with pytest.raises(ValueError, match="invalid JSON Schema"):
        check_schema({"required": "label"})
    check_schema(SCHEMA)


def test_flatten_json_paths_and_canonical_leaves() -> None:
    pairs = flatten_json({"a": {"b": 1.0, "c": [" x ", True]}, "d": {}, "e": None})
    assert pairs == {
        (("a", "b"), ("number", Fraction(1))): 1,
        (("a", "c", 0), ("string", "x")): 1,
        (("a", "c", 1), ("constant", True)): 1,
        (("d",), ("empty", "{}")): 1,
        (("e",), ("constant", None)): 1,
    }


def test_json_field_f1_on_nested_objects_by_hand() -> None:
    reference = '{"patient": {"name": "王伟", "age": 30, "tags": ["fever", "cough"]}, "urgent": true}'
    # Reference pairs: patient.name, patient.age, patient.tags.0, patient.tags.1, urgent (5).
    # Prediction pairs: patient.name (same after NFKC/strip), patient.age 30.0 (== 30), patient.tags.0 "cough"
    # (wrong index), urgent "true" (a string, not the boolean), extra (5); matched: name, age -> P = R = 2/5.
    prediction = (
        '```json\n{"patient": {"name": " 王伟 ", "age": 30.0, "tags": ["cough"]}, "urgent": "true", "extra": 1}\n```'
    )
    assert json_field_f1(prediction, reference) == pytest.approx(0.4)
    assert json_field_f1(reference, reference) == 1.0
    # P = 1 (1 of 1), R = 1/5 -> F1 = 2 * 0.2 / 1.2
    assert json_field_f1('{"urgent": true}', reference) == pytest.approx(1 / 3)


def test_json_field_f1_compares_numbers_numerically_and_booleans_apart() -> None:
    assert json_field_f1('{"n": 1}', '{"n": 1.0}') == 1.0
    assert json_field_f1('{"n": true}', '{"n": 1}') == 0.0
    assert json_field_f1('{"s": "ｆｕｌｌ"}', '{"s": "full"}') == 1.0
    assert json_field_f1('{"s": "Full"}', '{"s": "full"}') == 0.0


def test_json_field_f1_is_zero_without_json_and_raises_on_a_bad_reference() -> None:
    assert json_field_f1("no json", '{"a": 1}') == 0.0
    assert json_field_f1('{"a": 1}', {"a": 1}) == 1.0
    with pytest.raises(ValueError, match="reference is not JSON"):
        json_field_f1('{"a": 1}', "not json")


# --- regex --------------------------------------------------------------------------------------------------------


def test_regex_match_searches_or_matches_the_whole_answer() -> None:
    assert regex_match("The date is 2026-12-01.", r"\d{4}-\d{2}-\d{2}") == 1
    assert regex_match("The date is 2026-12-01.", r"\d{4}-\d{2}-\d{2}", full=True) == 0
    assert regex_match("  2026-12-01\n", r"\d{4}-\d{2}-\d{2}", full=True) == 1
    assert regex_match("答案：是", "答案[:：]是") == 1
    assert regex_match("YES", "yes") == 0
    assert regex_match("YES", "yes", flags="i") == 1
    assert regex_match("YES", "yes", flags=re.IGNORECASE) == 1
    assert regex_match("YES", re.compile("yes", re.IGNORECASE)) == 1


def test_regex_errors_name_the_pattern_or_flag() -> None:
    with pytest.raises(ValueError, match=r"invalid regular expression '\(unclosed'"):
        regex_match("x", "(unclosed")
    with pytest.raises(ValueError, match="unknown regex flag 'q'"):
        regex_flags("iq")
    assert regex_flags("ms") == re.MULTILINE | re.DOTALL


# --- runaway answers ----------------------------------------------------------------------------------------------

RUNAWAY = [
    "1," * 50_000,
    "-" * 100_000 + "5",
    " " * 100_000 + "-5",
    "答案" + " " * 100_000 + "x",
    "answer" + " " * 100_000 + "x",
    "\\boxed{" * 15_000,
    "\\frac{" + " " * 100_000,
    "[" * 100_000,
    "[" * 50_000 + "]" * 50_000,
    '{"a": ' * 15_000,
    "```" + "a" * 100_000,
    "```\n" * 25_000,
    "A " * 50_000,
    "(" * 100_000,
    " " * 100_000 + "B",
    "urgent " * 15_000,
    "紧急" * 50_000,
]


@pytest.mark.parametrize("text", RUNAWAY, ids=[f"runaway{i}" for i in range(len(RUNAWAY))])
def test_every_extractor_finishes_fast_on_a_100kb_answer(text: str) -> None:
    start = time.perf_counter()
    extract_number(text)
    extract_choice(text, OPTIONS)
    normalize_label(text, URGENCY)
    normalize_label(text, URGENCY_ZH)
    extract_json(text)
    json_field_f1(text, '{"a": 1}')
    assert time.perf_counter() - start < 2.0


def test_a_long_answer_is_still_read_correctly() -> None:
    long = "Let me think. " * 7_000 + "#### 1,234"
    assert numeric_match(long, "1234") == 1
    assert extract_choice("x " * 50_000 + "答案：C") == "C"
    assert extract_json("说明 " * 20_000 + '```json\n{"ok": true}\n```')[0] == {"ok": True}


def test_the_answer_and_degenerate_modules_stay_light() -> None:
    code = (
        "import sys, workbench.evaluate.answers, workbench.evaluate.numbers, workbench.evaluate.choices, "
        "workbench.evaluate.answer_format, workbench.evaluate.degenerate; "
        "print(sorted(m for m in ('torch', 'transformers', 'jsonschema') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # jsonschema too is imported only when a schema is first checked
