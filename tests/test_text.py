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
        ("123 !!", "empty"),
    ],
)
def test_script_detection(value: str, script: str) -> None:
    assert text.script_of(value) == script
    assert pl.DataFrame({"t": [value]}).select(text.script_expr(pl.col("t")).alias("s"))["s"][0] == script


def test_cjk_emoji_and_rtl_pass_through_normalisation_unchanged() -> None:
    for value in ["机器学习是人工智能的一个分支。", "family 👨‍👩‍👧 ok 🎉", "مرحبا بالعالم", "नमस्ते दुनिया"]:
        assert normalized(value) == value


def test_nfkc_folds_fullwidth_latin_but_nfc_keeps_fullwidth_punctuation() -> None:
    assert normalized("ＡＢＣ１２３") == "ABC123"
    assert normalized("你好，世界！", form="NFC") == "你好，世界！"
    assert normalized("你好，世界！", form="NFKC") == "你好,世界!"


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
