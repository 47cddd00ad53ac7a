import json
from pathlib import Path

import polars as pl
import pytest

from workbench import text


def normalized(value: str, **kwargs: object) -> str:
    return pl.DataFrame({"t": [value]}).select(text.normalize(pl.col("t"), **kwargs))["t"][0]  # type: ignore[arg-type]


def test_each_cjk_character_is_one_token_and_latin_words_are_words() -> None:
    assert text.tokenize("Hello, 世界! don't") == ["Hello", "世", "界", "don", "t"]
    frame = pl.DataFrame({"t": ["Hello, 世界! don't", "", "机器学习 is fun"]})
    assert frame.select(text.token_count(pl.col("t")))["t"].to_list() == [5, 0, 6]


def test_python_and_polars_tokenizers_agree_on_mixed_scripts() -> None:
    samples = ["今天天气很好，我们去公园吧。", "naïve café 東京 タワー 123", "emoji 😀 and 𠀀 ext-B", "한국어 텍스트"]
    counts = pl.DataFrame({"t": samples}).select(text.token_count(pl.col("t")))["t"].to_list()
    assert counts == [len(text.tokenize(s)) for s in samples]


@pytest.mark.parametrize(
    ("value", "script"),
    [
        ("机器学习是人工智能的一个分支", "cjk"),
        ("Machine learning is fun", "latin"),
        ("Машинное обучение", "other"),
        ("123 !!", "no_letters"),
        ("４２", "no_letters"),
        (" \n\t", "empty"),
        ("", "empty"),
    ],
)
def test_script_detection(value: str, script: str) -> None:
    assert text.script_of(value) == script
    assert pl.DataFrame({"t": [value]}).select(text.script_expr(pl.col("t")).alias("s"))["s"][0] == script


def test_cjk_emoji_and_rtl_pass_through_normalisation_unchanged() -> None:
    for value in ["机器学习是人工智能的一个分支。", "family 👨‍👩‍👧 ok 🎉", "مرحبا بالعالم", "नमस्ते दुनिया"]:
        assert normalized(value) == value


def test_nfkc_folds_fullwidth_latin_and_digits_but_keeps_chinese_punctuation_as_written() -> None:
    assert normalized("ＡＢＣ１２３") == "ABC123"
    assert normalized("你好，世界！（测试）：是吗？；好……") == "你好，世界！（测试）：是吗？；好……"
    assert normalized("经理：“早上好，有什么可以帮到您的吗？”") == "经理：“早上好，有什么可以帮到您的吗？”"
    # Per character class in one text: the Latin letters fold, the punctuation beside them does not.
    assert normalized("型号ＡＢＣ１２３，售价￥５０！") == "型号ABC123，售价￥50！"
    assert normalized("ﬁne print") == "fine print"  # ligature and no-break space fold


def test_symbols_whose_form_is_their_meaning_keep_it() -> None:
    for value in ["水温100℃", "面积10㎡", "E = mc²", "H₂O", "①首先②其次", "½ cup", "No. № 5", "‼️ ⁉️ ℹ️ Ⓜ️ 🈚 🅰️ ™️"]:
        assert normalized(value) == value, value
    assert normalized("\uf900") == "\uf900"  # a CJK compatibility ideograph, which even NFC would replace
    assert normalized("\uf900", form="NFC") == "\uf900"


def test_keep_as_written_off_is_plain_nfkc() -> None:
    assert normalized("你好，世界！…", keep_as_written=False) == "你好,世界!..."
    assert normalized("100℃", form="NFKC", keep_as_written=False) == "100°C"
    assert normalized("你好，世界！", form="none") == "你好，世界！"


def test_text_holding_a_standin_character_is_still_normalised() -> None:
    assert normalized("\U00100000ＡＢ") == "\U00100000AB"


def test_python_and_polars_unicode_forms_agree() -> None:
    samples = ["型号ＡＢＣ１２３，售价￥５０！", "水温100℃……", "ﬁ①", "plain", "", "\uf900\u3000x"]
    got = pl.DataFrame({"t": samples}).select(text.unicode_form(pl.col("t"), "NFKC"))["t"].to_list()
    assert got == [text.unicode_text(s, "NFKC") for s in samples]


def test_control_and_zero_width_characters_are_removed() -> None:
    assert normalized("a\u200bb\x07c\ufeffd\u2060e") == "abcde"


def test_crlf_and_trailing_spaces_become_clean_lines() -> None:
    assert normalized("  line one   \r\nline two\r\n\r\n\r\n\r\nline  three  ") == "line one\nline two\n\nline three"


def test_code_keeps_its_indentation_and_inner_spacing() -> None:
    code = "def f(x):\n    y  =  x    # aligned\n\n\n\n    return y"
    assert normalized(code) == code
    fenced = "Example:\n```python\nx  =  1\n```"
    assert normalized(fenced) == fenced


def test_column_normalisation_skips_only_values_that_cannot_change() -> None:
    values = [
        "plain ascii text",
        "tab\t\tinside",
        "ＡＢＣ",
        "trailing \nspace",
        "a\x0bb",
        "  lead",
        "end ",
        "x\n\n\n\ny",
        "zero\u200bwidth",
        "nbsp\u00a0\u00a0here",
        "    def f():\n        return 1",
        "中文，标点！",
        "",
        "\r\nwindows\r\n",
    ]
    series = pl.Series("t", values)
    expected = pl.DataFrame({"t": values}).select(text.normalize(pl.col("t")))["t"].to_list()
    assert text.normalize_series(series).to_list() == expected
    assert series.to_list() == values  # the input column is not modified in place


@pytest.mark.parametrize(
    "value",
    [
        "长城是中国古代的军事防御工程。",
        "The weather, today!",
        "混合 mixed ＡＢＣ 👨‍👩‍👧 한국어\r\n\ttab",
        "",
        "𠀀𠀁 ext-B",
    ],
)
def test_diff_tokens_give_the_text_back_with_each_cjk_character_alone(value: str) -> None:
    toks = text.diff_tokens(value)
    assert "".join(toks) == value
    assert all(len(t) == 1 for t in toks if text.count_cjk(t))


def test_diff_tokens_split_cjk_from_adjacent_latin_words() -> None:
    assert text.diff_tokens("用Python写代码") == ["用", "Python", "写", "代", "码"]


def test_stats_duplicate_prompts_are_what_exact_dedup_drops(tmp_path: Path) -> None:
    from workbench.clean.dispatch import run
    from workbench.clean.profile import load
    from workbench.stats import describe

    records = [
        {"instruction": "What is AI?", "input": "", "output": "a"},
        {"instruction": "what is ai", "input": "", "output": "b"},  # case and punctuation differ: same prompt
        {"instruction": "What is A.I.?", "input": "", "output": "c"},  # inner punctuation too
        {"instruction": "什么是人工智能？", "input": "", "output": "d"},
        {"instruction": "什么是人工智能", "input": "", "output": "e"},
        {"instruction": "ab", "input": "c", "output": "f"},
        {"instruction": "a", "input": "bc", "output": "g"},  # fields kept apart: not the same prompt
    ]
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    dups = describe(src)["duplicate_prompts"]
    profile = load("default").dedup_only()
    profile = profile.model_copy(update={"dedup": profile.dedup.model_copy(update={"near": None})})
    summary = run(src, tmp_path / "out.jsonl", profile).summary
    assert dups["groups"] == 2 and dups["records_in_groups"] == 5
    assert summary["dropped_by_rule"]["exact_duplicate"] == dups["records_in_groups"] - dups["groups"] == 3


ECHO_TEXTS = [
    " Ｗhat  IS\t2+2? ",
    "「床前明月光」",
    "<Hello world>",
    "...x = 1;\nprint(x);",
    "ﬁne — ok!!",
    "《政治》（Politics）。",
    "`code`~",
    "68+11=",
    "",
    "?!",
    "ΣΊΣΥΦΟΣ",
]


@pytest.mark.parametrize("value", ECHO_TEXTS)
def test_the_echo_key_is_one_normalisation_for_python_and_polars(value: str) -> None:
    # the clean rule output_echoes_prompt (polars) and the degenerate kind echo (Python) compare the same key
    assert pl.select(text.echo_key_expr(pl.lit(value))).item() == text.echo_key(value)


def test_the_echo_key_folds_width_and_case_and_strips_end_punctuation_only() -> None:
    assert text.echo_key(" Ｗhat  IS\t2+2? ") == "whatis2+2"
    assert text.echo_key("「床前明月光」") == "床前明月光"
    assert text.echo_key("<x = 1; y = 2;>") == "x=1;y=2"
