"""Degenerate-answer flags: the demo's echoed item is caught (and its shared prompt prefix earns nothing), answers cut
at the token limit are told apart from finished ones, loops are found by the clean rules' own detector, and Chinese
answers cut mid-character lose their half character."""

from __future__ import annotations

import time

import polars as pl
import pytest

from workbench import degenerate_kinds, text
from workbench.clean.rule_registry import RULES, features
from workbench.clean.rules import RepeatedLinesParams, RepeatedNgramsParams
from workbench.evaluate.degenerate import (
    broken_text,
    cut_off,
    echo,
    empty,
    flags,
    repetition,
    strip_shared_prefix,
    wrong_language,
)
from workbench.text import echo_key, safe_decode_tail

# --- echo ---------------------------------------------------------------------------------------------------------


def test_the_demo_item_that_repeats_the_prompt_is_an_echo() -> None:
    assert echo("68+11=", "68+11=")


def test_an_answer_that_completes_the_prompt_is_not_an_echo() -> None:
    assert not echo("68+11=79", "68+11=")
    assert not echo("79", "68+11=")


@pytest.mark.parametrize(
    "answer",
    [
        "68+11=\n",
        "  68 + 11 =  ",
        "68+11=。",
        "68+11=...",
        '"68+11="',
        "６８＋１１＝",
        "68+11=68+11=",  # the prompt twice
        "68+11=68+1",  # the prompt, then a copy cut short
        "68+11",  # a prefix holding most of it
    ],
)
def test_the_prompt_again_after_normalisation_is_an_echo(answer: str) -> None:
    assert echo(answer, "68+11=")


def test_echo_ignores_case_width_and_spacing_in_english_and_chinese() -> None:
    assert echo("what is the CAPITAL of France?", "What is the capital of France?")
    assert echo("请把下面的句子翻译成英文:我爱你", "请把下面的句子翻译成英文：我爱你。")
    assert not echo("我爱你 = I love you", "请把下面的句子翻译成英文：我爱你。")


def test_a_short_piece_of_the_prompt_is_not_an_echo() -> None:
    assert not echo("68", "68+11=")  # a third of the prompt
    assert echo("68+1", "68+11=")  # two thirds


def test_a_long_prefix_or_suffix_of_a_long_prompt_is_an_echo() -> None:
    prompt = "Read the passage and answer. " + "The committee met on Tuesday to review the budget. " * 10
    assert echo(prompt[:60], prompt)  # 60 characters: under half the prompt, over 32
    assert echo("The committee met on Tuesday to review the budget.", prompt)  # its last sentence
    assert not echo("The committee met", prompt)


def test_an_empty_answer_is_not_an_echo_but_empty() -> None:
    for answer in ["", "   ", "。"]:
        assert not echo(answer, "68+11=")
        assert empty(answer)


def test_echo_key_normalises_as_documented() -> None:
    assert echo_key(" Ｗhat  IS\t2+2? ") == "whatis2+2"
    assert echo_key("「床前明月光」") == "床前明月光"


# --- shared prompt prefix -----------------------------------------------------------------------------------------


def test_the_demo_items_shared_prefix_is_stripped_so_an_echo_earns_nothing() -> None:
    assert strip_shared_prefix("68+11=", "68+11=79", "68+11=") == ("", "79", True)
    assert strip_shared_prefix("68+11=79", "68+11=79", "68+11=") == ("79", "79", True)
    assert strip_shared_prefix("68 + 11 = 80", "68+11=79", "68+11=") == ("80", "79", True)


def test_a_prediction_that_does_not_repeat_the_prompt_is_left_whole() -> None:
    assert strip_shared_prefix("79", "68+11=79", "68+11=") == ("79", "79", True)
    assert strip_shared_prefix("It is 79", "68+11=79", "68+11=") == ("It is 79", "79", True)


def test_nothing_is_stripped_when_the_reference_does_not_begin_with_the_prompt() -> None:
    assert strip_shared_prefix("68+11=79", "79", "68+11=") == ("68+11=79", "79", False)
    assert strip_shared_prefix("x", "68+1=69", "68+11=") == ("x", "68+1=69", False)
    # A reference that is only the prompt keeps its text: there would be nothing left to score.
    assert strip_shared_prefix("68+11=", "68+11=", "68+11=") == ("68+11=", "68+11=", False)
    assert strip_shared_prefix("a", "b", "") == ("a", "b", False)


def test_the_prompts_end_punctuation_is_stripped_but_a_minus_sign_of_the_answer_kept() -> None:
    assert strip_shared_prefix("What is 2+2? 4", "what is 2+2?  -4", "What is 2+2?") == ("4", "-4", True)


def test_a_chinese_completion_is_scored_on_its_continuation() -> None:
    prompt = "床前明月光，"
    assert strip_shared_prefix("床前明月光，疑是地上霜。", "床前明月光，疑是地上霜。", prompt) == (
        "疑是地上霜。",
        "疑是地上霜。",
        True,
    )
    assert strip_shared_prefix("床前明月光", "床前明月光，疑是地上霜。", prompt) == ("", "疑是地上霜。", True)


# --- cut off ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("generated", "limit", "finished", "expected"),
    [
        (96, 96, False, True),
        (96, 96, None, True),
        (96, 96, True, False),  # the end token was the last one allowed
        (40, 96, False, False),  # stopped early (a stop string), not at the limit
        (40, 96, None, False),
        (None, 96, None, False),
        (96, None, False, False),
    ],
)
def test_cut_off_means_the_limit_was_reached_without_an_end_token(
    generated: int | None, limit: int | None, finished: bool | None, expected: bool
) -> None:
    assert cut_off(generated, limit, finished) is expected


# --- repetition ---------------------------------------------------------------------------------------------------

LOOPS = [
    "The answer is 42.\nThe answer is 42.\nThe answer is 42.\nThe answer is 42.\nThe answer is 42.",
    "I think that the answer is yes and " * 12,
    "好的好的好的" * 30,
    "首先，我们需要计算。" * 20,
]
NOT_LOOPS = [
    "",
    "red\ngreen\nblue\nyellow\n}\n}\n}",
    "Photosynthesis converts light energy into chemical energy stored in glucose; plants, algae and some bacteria use "
    "chlorophyll to capture sunlight, split water, release oxygen and fix carbon dioxide in the Calvin cycle.",
    "政治（Politics）是一个非常广泛的概念，通常用来描述有关权力、决策、影响和管理的活动。",
    "yes yes yes",  # too short to judge
]


@pytest.mark.parametrize("answer", LOOPS)
def test_a_generation_loop_is_flagged(answer: str) -> None:
    assert repetition(answer)


@pytest.mark.parametrize("answer", NOT_LOOPS)
def test_ordinary_answers_are_not_loops(answer: str) -> None:
    assert not repetition(answer)


def _clean_rule_drops(outputs: list[str], name: str) -> list[bool]:
    """Whether the clean rule `name` (default parameters) drops each output, run as `apply_rules` runs it."""
    n = len(outputs)
    df = pl.DataFrame(
        {
            "instruction": ["q"] * n,
            "input": [""] * n,
            "output": outputs,
            "system": [""] * n,
            "history": [[] for _ in range(n)],
        },
        schema_overrides={"history": pl.List(pl.List(pl.String))},
    )
    df = df.with_columns(features()).with_row_index("_i")
    rule = RULES[name]
    check = rule.build(rule.params())
    candidates = df if check.applies is None else df.filter(check.applies)
    if check.prepare is not None and candidates.height:
        candidates = check.prepare(candidates)
    hits = set(candidates.filter(check.drop)["_i"].to_list()) if candidates.height else set()
    return [i in hits for i in range(n)]


# (text, dropped by repeated_lines, dropped by repeated_ngrams), counted by hand.
EDGE_CASES = [
    (LOOPS[0], True, False),  # 4 of 5 lines repeat; 13 of 17 4-grams, but under 40 tokens
    (LOOPS[1], False, True),
    (LOOPS[2], False, True),
    (NOT_LOOPS[1], False, False),  # the closing braces do not count as lines
    ("a\nb\na\nb", False, False),  # 2 of 4 lines repeat: exactly the 50 % threshold, kept
    ("a\na\na\nb", False, False),
    ("a\na\na\na\nb", True, False),  # 3 of 5 repeat
    ("a\nb\nc\na\nb\nc\na", True, False),  # 4 of 7 repeat
    ("x\n---\n---\n---\ny\n", False, False),  # lines without letters do not count: 2 lines
    (" ".join(f"w{i % 14}" for i in range(40)), False, True),  # 40 tokens in a 14-cycle: 23 of 37 4-grams repeat
    (" ".join(f"w{i % 15}" for i in range(40)), False, False),  # 15-cycle: 22 of 37 repeat (59 %), kept
    (" ".join(f"w{i % 9}" for i in range(39)), False, False),  # 39 tokens: too short for the n-gram rule
    ("".join("天地玄黄宇宙洪荒"[i % 8] for i in range(40)), False, True),  # CJK counted per character
]


def test_repetition_uses_the_clean_rules_detector_and_thresholds() -> None:
    texts = [t for t, _, _ in EDGE_CASES]
    assert _clean_rule_drops(texts, "repeated_lines") == [lines for _, lines, _ in EDGE_CASES]
    assert _clean_rule_drops(texts, "repeated_ngrams") == [ngrams for _, _, ngrams in EDGE_CASES]
    assert [repetition(t) for t in texts] == [lines or ngrams for _, lines, ngrams in EDGE_CASES]


def test_the_clean_rules_take_their_default_thresholds_from_workbench_text() -> None:
    assert RepeatedLinesParams().max_fraction == text.REPEATED_LINES_MAX_FRACTION
    assert RepeatedLinesParams().min_lines == text.REPEATED_LINES_MIN_LINES
    assert RepeatedNgramsParams().n == text.REPEATED_NGRAMS_N
    assert RepeatedNgramsParams().max_fraction == text.REPEATED_NGRAMS_MAX_FRACTION
    assert RepeatedNgramsParams().min_tokens == text.REPEATED_NGRAMS_MIN_TOKENS


def test_repeated_counts_by_hand() -> None:
    assert text.repeated_line_counts("a\n a \n}\nb\na") == (4, 2)
    # tokens w0 w1 w2 w0 w1 w2 w0: 4-grams (w0 w1 w2 w0) (w1 w2 w0 w1) (w2 w0 w1 w2) (w0 w1 w2 w0): one repeats
    assert text.repeated_ngram_counts("w0 w1 w2 w0 w1 w2 w0", 4) == (4, 1)
    assert text.repeated_ngram_counts("好的好的好", 2) == (4, 2)


# --- empty, language, broken text ---------------------------------------------------------------------------------


@pytest.mark.parametrize("answer", ["", " \n\t", "。！？", "...", "\ufffd", "👍👍", "\u3000"])
def test_an_answer_without_letters_digits_or_cjk_is_empty(answer: str) -> None:
    assert empty(answer)


@pytest.mark.parametrize("answer", ["0", "B", "好", "Ｂ", "²"])
def test_one_letter_digit_or_han_character_is_not_empty(answer: str) -> None:
    assert not empty(answer)


@pytest.mark.parametrize(
    ("answer", "prompt", "expected"),
    [
        ("The capital of France is Paris.", "法国的首都是哪里？", True),
        ("法国的首都是巴黎。", "法国的首都是哪里？", False),
        ("巴黎 (Paris)", "法国的首都是哪里？", False),
        ("B", "下列哪项正确？A. 1 B. 2", False),  # a choice letter
        ("42", "计算 6 乘以 7。", False),
        ("6 × 7 = 42", "计算 6 乘以 7。", False),
        ("法国的首都是巴黎。", "What is the capital of France?", True),
        ("The capital is Paris (巴黎).", "What is the capital of France?", False),
        ("Paris", "What is the capital of France?", False),
        ("79", "68+11=", False),  # a prompt with no letters has no language
        ("Столица Франции — Париж.", "What is the capital of France?", False),
    ],
)
def test_wrong_language_compares_the_answers_script_with_the_questions(
    answer: str, prompt: str, expected: bool
) -> None:
    assert wrong_language(answer, prompt) is expected


@pytest.mark.parametrize("answer", ["半个字\ufffd", "\ud800", "a\x00b", "a\x1bb", "a\x7fb", "a\x85b", "a\x9fb"])
def test_replacement_characters_lone_surrogates_and_control_characters_are_broken_text(answer: str) -> None:
    assert broken_text(answer)


@pytest.mark.parametrize("answer", ["tab\tline\nreturn\r\n", "中文，标点。", "emoji 👍🏽 and zwj 👨‍👩‍👧", ""])
def test_tabs_newlines_and_ordinary_unicode_are_not_broken_text(answer: str) -> None:
    assert not broken_text(answer)


# --- decode tail --------------------------------------------------------------------------------------------------


def test_a_chinese_answer_cut_mid_character_loses_its_half_character() -> None:
    data = "答案是七十九".encode()
    for cut in (1, 2):  # one or two of the last character's three bytes are missing
        decoded = data[:-cut].decode("utf-8", errors="replace")
        assert decoded.endswith("\ufffd")
        assert safe_decode_tail(decoded) == "答案是七十"
        assert not broken_text(safe_decode_tail(decoded))
    # A tokenizer that decodes byte tokens one by one leaves one replacement per byte.
    assert safe_decode_tail("答案是七十\ufffd\ufffd") == "答案是七十"


def test_safe_decode_tail_touches_only_the_very_end() -> None:
    assert safe_decode_tail("a\ufffdb") == "a\ufffdb"
    assert safe_decode_tail("a\ufffd ") == "a\ufffd "
    assert safe_decode_tail("好好") == "好好"
    assert safe_decode_tail("") == ""
    assert safe_decode_tail("x" + "\ufffd" * 5) == "x\ufffd\ufffd"  # at most 3: an incomplete UTF-8 sequence


# --- all flags ----------------------------------------------------------------------------------------------------


def test_flags_have_exactly_the_documented_kinds_in_order() -> None:
    names = list(degenerate_kinds.names())
    assert names == ["echo", "cut_off", "repetition", "empty", "wrong_language", "broken_text"]
    assert all(isinstance(k.description, str) and k.description for k in degenerate_kinds.kinds())
    assert list(flags("x", "y")) == names


def test_the_demo_items_flags() -> None:
    assert flags("68+11=", "68+11=", generated_tokens=7, max_new_tokens=96, finished=True) == {
        "echo": True,
        "cut_off": False,
        "repetition": False,
        "empty": False,
        "wrong_language": False,
        "broken_text": False,
    }


def test_a_chinese_answer_cut_at_the_limit_is_flagged_cut_off_and_broken() -> None:
    answer = ("首先，我们需要计算每个月的费用，然后相加。" * 3).encode()[:-1].decode("utf-8", errors="replace")
    result = flags(answer, "请计算全年的总费用。", generated_tokens=96, max_new_tokens=96, finished=False)
    assert result["cut_off"] and result["broken_text"]
    assert not result["echo"] and not result["wrong_language"] and not result["empty"]
    assert not flags(safe_decode_tail(answer), "请计算全年的总费用。")["broken_text"]


def test_cut_off_is_false_when_token_counts_are_unknown() -> None:
    assert flags("x" * 10, "q")["cut_off"] is False


@pytest.mark.parametrize(
    "answer",
    [
        "68+11=" * 17_000,
        "答案" * 50_000,
        "a\n" * 50_000,
        " " * 100_000,
        "\ufffd" * 100_000,
        " ".join(str(i) for i in range(20_000)),
    ],
    ids=["echo-loop", "zh", "lines", "spaces", "fffd", "numbers"],
)
def test_flags_finish_fast_on_a_100kb_answer(answer: str) -> None:
    prompt = "68+11=" * 10_000
    start = time.perf_counter()
    flags(answer, prompt, 96, 96, False)
    strip_shared_prefix(answer, prompt + "79", prompt)
    safe_decode_tail(answer)
    assert time.perf_counter() - start < 2.0
