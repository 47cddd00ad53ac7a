"""The one place for Unicode work: normalisation, script detection, CJK-aware tokens and n-grams.

Every pattern here is written so that Python's `re` and polars' Rust regex engine read it the same way, so the
vectorised cleaning code and per-record Python code (metrics, PII checks) count the same tokens.

Tokens: each CJK character (Han, kana, bopomofo) is one token, a run of other word characters is one token,
punctuation and symbols are not tokens. "Hello, 世界!" has three tokens: `Hello`, `世`, `界`.
"""

from __future__ import annotations

import importlib
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import polars as pl
else:

    class _Polars(ModuleType):
        """polars, imported on first use: `wb report` and `wb gate` use the plain-Python helpers here only and
        start without loading it."""

        def __getattr__(self, name: str) -> Any:
            return getattr(importlib.import_module("polars"), name)

    pl = _Polars("polars")

UnicodeForm = Literal["NFC", "NFKC", "NFD", "NFKD", "none"]
# OpenCC conversions between Chinese scripts: s simplified, t traditional (OpenCC standard), tw Taiwan, hk Hong
# Kong; a trailing p also converts phrases (软件 → 軟體). jp: Japanese shinjitai.
ChineseConversion = Literal[
    "t2s", "s2t", "tw2s", "s2tw", "tw2sp", "s2twp", "hk2s", "s2hk", "hk2sp", "s2hkp", "t2tw", "tw2t", "t2hk", "hk2t"
]

# CJK ideographs (incl. extension A and the supplementary planes), compatibility ideographs, kana, bopomofo.
CJK_CHARS = (
    "\u2e80-\u2fdf\u3005\u3007\u3021-\u3029\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
)
CJK_CLASS = f"[{CJK_CHARS}]"
WORD_CLASS = f"[^\\W{CJK_CHARS}]+"
TOKEN_PATTERN = f"{CJK_CLASS}|{WORD_CLASS}"
LATIN_LETTER = "[A-Za-z\u00c0-\u024f]"

# Diff tokens (the report's word diff): whitespace runs, single CJK characters, words, single other characters.
# Joined, they give the text back.
DIFF_TOKEN_PATTERN = f"\\s+|{CJK_CLASS}|{WORD_CLASS}|[^\\w\\s]"

_TOKEN_RE = re.compile(TOKEN_PATTERN)
_DIFF_TOKEN_RE = re.compile(DIFF_TOKEN_PATTERN)
_CJK_RE = re.compile(CJK_CLASS)
_LATIN_RE = re.compile(LATIN_LETTER)

# Removed by normalisation: C0/C1 control characters except tab and newline, and invisible characters
# that carry no meaning in training text. ZWJ (U+200D) and ZWNJ (U+200C) are kept: emoji sequences and
# Persian/Indic scripts need them.
CONTROL_PATTERN = r"[\x00-\x08\x0b-\x1f\x7f-\x9f]"
ZERO_WIDTH_PATTERN = "[\u200b\u2060\ufeff\u00ad]"
# Bidirectional embedding, override and isolate controls (U+202A-U+202E, U+2066-U+2069): invisible, they reorder
# how text displays (a "Trojan Source" trick); removed with the control characters. LRM/RLM marks are kept.
BIDI_CONTROL_PATTERN = "[\u202a-\u202e\u2066-\u2069]"

# A field "has code" when it holds a fenced block or an indented line; its spacing is then left alone.
CODE_HINT_PATTERN = r"```|~~~|\n(?:    |\t)"


def tokenize(text: str) -> list[str]:
    """Tokens as defined in the module docstring (Python side; same pattern as `token_count`)."""
    return _TOKEN_RE.findall(text)


def diff_tokens(text: str) -> list[str]:
    """Words, single CJK characters, punctuation and whitespace runs; `"".join(diff_tokens(t)) == t`."""
    return _DIFF_TOKEN_RE.findall(text)


def count_cjk(text: str) -> int:
    return len(_CJK_RE.findall(text))


def count_latin(text: str) -> int:
    return len(_LATIN_RE.findall(text))


def script_of(text: str) -> str:
    """The dominant script of a text: `cjk`, `latin`, `other` (letters only are counted), `no_letters` (digits,
    punctuation or symbols only: `42`, `3.14`, `✓`) or `empty` (nothing but whitespace)."""
    cjk, latin = count_cjk(text), count_latin(text)
    letters = sum(1 for ch in text if ch.isalpha())
    if letters == 0:
        return "no_letters" if text.strip() else "empty"
    if cjk >= latin and cjk * 2 >= letters:
        return "cjk"
    if latin * 2 >= letters:
        return "latin"
    return "other"


# --- generation loops -----------------------------------------------------------------------------------
# One detector for the clean rules `repeated_lines` / `repeated_ngrams` (their parameter defaults are these
# constants; the sources of the values are noted there) and the eval's `repetition` flag
# (`workbench.evaluate.degenerate`). The clean rules count the same quantities vectorised with polars; the functions
# below count them for one text, and a test checks that both agree.

REPEATED_LINES_MAX_FRACTION = 0.5
REPEATED_LINES_MIN_LINES = 4
REPEATED_NGRAMS_N = 4
REPEATED_NGRAMS_MAX_FRACTION = 0.6
REPEATED_NGRAMS_MIN_TOKENS = 40


def repeated_line_counts(text: str) -> tuple[int, int]:
    """(lines counted, lines that repeat an earlier one). Lines are split on `\\n` and stripped of whitespace;
    lines with no letter or digit do not count (closing braces, rules of dashes)."""
    counted = [line.strip() for line in text.split("\n")]
    counted = [line for line in counted if any(ch.isalnum() for ch in line)]
    return len(counted), len(counted) - len(set(counted))


def repeated_ngram_counts(text: str, n: int = REPEATED_NGRAMS_N) -> tuple[int, int]:
    """(token n-grams, n-grams that repeat an earlier one), tokens as `tokenize` (CJK counted per character)."""
    tokens = tokenize(text)
    grams = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    total = sum(grams.values())
    return total, total - len(grams)


def is_generation_loop(
    text: str,
    lines_max_fraction: float = REPEATED_LINES_MAX_FRACTION,
    min_lines: int = REPEATED_LINES_MIN_LINES,
    n: int = REPEATED_NGRAMS_N,
    ngrams_max_fraction: float = REPEATED_NGRAMS_MAX_FRACTION,
    min_tokens: int = REPEATED_NGRAMS_MIN_TOKENS,
) -> bool:
    """True where the clean rule `repeated_lines` or `repeated_ngrams` (with these parameters) would drop `text`:
    at least `min_lines` counted lines of which more than `lines_max_fraction` repeat an earlier line, or at least
    `min_tokens` tokens of which more than `ngrams_max_fraction` of the `n`-grams repeat an earlier one."""
    lines, dup_lines = repeated_line_counts(text)
    if lines >= min_lines and dup_lines > lines_max_fraction * lines:
        return True
    if len(_TOKEN_RE.findall(text)) < min_tokens:
        return False
    grams, dup_grams = repeated_ngram_counts(text, n)
    return grams > 0 and dup_grams / grams > ngrams_max_fraction


# --- polars expressions ---------------------------------------------------------------------------------


def token_count(expr: pl.Expr) -> pl.Expr:
    return expr.str.count_matches(TOKEN_PATTERN).cast(pl.Int64)


def cjk_count(expr: pl.Expr) -> pl.Expr:
    return expr.str.count_matches(CJK_CLASS).cast(pl.Int64)


def latin_count(expr: pl.Expr) -> pl.Expr:
    return expr.str.count_matches(LATIN_LETTER).cast(pl.Int64)


def script_expr(expr: pl.Expr) -> pl.Expr:
    """Vectorised `script_of`."""
    cjk, latin = cjk_count(expr), latin_count(expr)
    letters = expr.str.count_matches(r"\p{L}").cast(pl.Int64)
    return (
        pl.when(letters == 0)
        .then(pl.when(expr.str.contains(r"\S")).then(pl.lit("no_letters")).otherwise(pl.lit("empty")))
        .when((cjk >= latin) & (cjk * 2 >= letters))
        .then(pl.lit("cjk"))
        .when(latin * 2 >= letters)
        .then(pl.lit("latin"))
        .otherwise(pl.lit("other"))
    )


def history_text(column: str = "history") -> pl.Expr:
    """A history column (list of [user, assistant] turns) flattened to one text, turns joined by newlines."""
    return pl.col(column).list.eval(pl.element().list.join("\n")).list.join("\n").fill_null("")


def joined_text(fields: Sequence[str]) -> pl.Expr:
    """The fields of a record joined by newlines (history flattened), for hashing, n-grams and embeddings."""
    return pl.concat_str([history_text(f) if f == "history" else pl.col(f) for f in fields], separator="\n")


# What `echo_key` strips from both ends: Unicode punctuation (general category P: ASCII and CJK marks, brackets,
# quotes, dashes) and the ASCII symbols that wrap text the same way.
END_SYMBOLS = "<>`~"
_END_CHARS = r"[\p{P}" + re.escape(END_SYMBOLS) + "]"


def is_end_punctuation(ch: str) -> bool:
    """A character `echo_key` strips from the ends of a text."""
    return unicodedata.category(ch).startswith("P") or ch in END_SYMBOLS


def echo_key(text: str) -> str:
    """The one normalised form for "is this answer the prompt again" (the clean rule `output_echoes_prompt` and the
    degenerate kind `echo`): NFKC, lowercase, no whitespace, no punctuation at either end (`is_end_punctuation`).
    Punctuation inside is kept: a fixed line of code often differs from the broken one by a `;` alone."""
    key = re.sub(r"\s+", "", unicodedata.normalize("NFKC", text).lower())
    start, end = 0, len(key)
    while start < end and is_end_punctuation(key[start]):
        start += 1
    while end > start and is_end_punctuation(key[end - 1]):
        end -= 1
    return key[start:end]


def echo_key_expr(expr: pl.Expr) -> pl.Expr:
    """`echo_key` of every text of a column, vectorised (the same key: tests/test_text.py compares them)."""
    return (
        expr.str.normalize("NFKC")
        .str.to_lowercase()
        .str.replace_all(r"\s+", "")
        .str.replace_all(f"^{_END_CHARS}+|{_END_CHARS}+$", "")
    )


def duplicate_text(
    fields: Sequence[str],
    ignore_case: bool = True,
    ignore_whitespace: bool = True,
    ignore_punctuation: bool = True,
) -> pl.Expr:
    """The one definition of "the same prompt" (or record): the fields, each normalised, kept apart by a record
    separator (so "ab"+"c" differs from "a"+"bc"). Exact dedup hashes it (`duplicate_key`); `wb stats` groups by
    it, so the duplicate count `wb stats` shows is what dedup drops."""
    parts = []
    for f in fields:
        e = history_text(f) if f == "history" else pl.col(f)
        if ignore_case:
            e = e.str.to_lowercase()
        if ignore_punctuation:
            e = e.str.replace_all(r"[\p{P}\p{S}]+", "")
        if ignore_whitespace:
            e = e.str.replace_all(r"\s+", "")
        parts.append(e)
    return pl.concat_str(parts, separator="\x1e")


def duplicate_key(
    fields: Sequence[str],
    ignore_case: bool = True,
    ignore_whitespace: bool = True,
    ignore_punctuation: bool = True,
) -> pl.Expr:
    """A 64-bit hash of `duplicate_text`."""
    return duplicate_text(fields, ignore_case, ignore_whitespace, ignore_punctuation).hash(7)


def has_code(expr: pl.Expr) -> pl.Expr:
    return expr.str.contains(CODE_HINT_PATTERN)


# Code without fences or indentation: shebangs, statement ends, keywords at line start, shell substitutions.
CODE_LIKE_PATTERN = (
    r"(?m)^#!|[;{}][ \t]*$|^[ \t]*(?:def|class|import|from|return|if|for|while|echo|fi|done|function|const|let|"
    r"var|public|print|#include|SELECT|puts)(?-u:\b)|\$\(|=>|==|\)[ \t]*$"
)


def looks_like_code(expr: pl.Expr) -> pl.Expr:
    """A wider net than `has_code`, for rules that must not judge code as prose."""
    return has_code(expr) | expr.str.contains(CODE_LIKE_PATTERN)


# Text that none of the normalisation steps would change: ASCII without control characters, CR, tabs, runs of
# spaces, trailing spaces or runs of blank lines, and without space at either end.
_MAY_CHANGE = r"[^\x09\x0a\x20-\x7e]|[ \t]\n|[ \t]{2}|\n\n\n|^\s|\s$"


# --- Unicode forms, decided per character class --------------------------------------------------------
#
# NFKC folds what only looks different (full-width Latin letters and digits `ＡＢＣ１２３` → `ABC123`, ligatures
# `ﬁ` → `fi`, compatibility spaces, half-width katakana), but also characters whose form is the meaning: it turns
# Chinese punctuation into ASCII (`，：？！；（）` → `,:?!;()`), `……` into `......`, `℃` into `°C`, `①` into `1`,
# `x²` into `x2` and the emoji `‼️ ℹ️ Ⓜ️ 🈚` into letters. With `keep_as_written` the character classes below keep
# their written form under every Unicode form (CJK compatibility ideographs too, which even NFC replaces); every
# other character is normalised as asked.
KEEP_AS_WRITTEN_RANGES: tuple[tuple[int, int, str], ...] = (
    (0x3000, 0x303F, "CJK symbols and punctuation: 、。〈〉《》「」『』【】〔〕〜 and the ideographic space"),
    (0xFF01, 0xFF0F, "full-width punctuation ！＂＃＄％＆＇（）＊＋，－．／"),
    (0xFF1A, 0xFF20, "full-width punctuation ：；＜＝＞？＠"),
    (0xFF3B, 0xFF40, "full-width punctuation ［＼］＾＿｀"),
    (0xFF5B, 0xFF64, "full-width brackets and tilde ｛｜｝～｟｠, half-width ideographic punctuation ｡｢｣､"),
    (0xFFE0, 0xFFE6, "full-width signs ￠￡￢￣￤￥￦"),
    (0xFE10, 0xFE1F, "vertical punctuation forms"),
    (0xFE30, 0xFE6F, "CJK compatibility forms and small punctuation variants"),
    (0x2025, 0x2026, "two- and three-dot leaders ‥ … (Chinese ellipsis ……)"),
    (0x203C, 0x203C, "‼ (an emoji)"),
    (0x2047, 0x2049, "⁇ ⁈ ⁉ (⁉ is an emoji)"),
    (0x00B2, 0x00B3, "superscript two and three"),
    (0x00B9, 0x00B9, "superscript one"),
    (0x00BC, 0x00BE, "vulgar fractions ¼ ½ ¾"),
    (0x2070, 0x209F, "superscripts and subscripts"),
    (0x2100, 0x214F, "letterlike symbols: ℃ ℉ № ™ ℹ ℂ ℕ"),
    (0x2150, 0x215F, "vulgar fractions"),
    (0x2460, 0x24FF, "enclosed alphanumerics ① ⑴ ⒈ Ⓜ"),
    (0x3200, 0x33FF, "enclosed CJK letters and CJK compatibility: ㈠ ㊣ ㎡ ㎏"),
    (0xF900, 0xFAFF, "CJK compatibility ideographs"),
    (0x2F800, 0x2FA1F, "CJK compatibility ideographs supplement"),
    (0x1F100, 0x1F2FF, "enclosed alphanumeric and ideographic supplements: 🅰 🈚 🈯 (emoji)"),
)
# Stand-ins used while the rest of a text is normalised: supplementary private use area B, which no form changes.
_STANDIN_BASE = 0x100000
_STANDIN_PATTERN = "[\U00100000-\U0010fffd]"


@cache
def kept_as_written(form: UnicodeForm) -> tuple[str, ...]:
    """The characters of `KEEP_AS_WRITTEN_RANGES` that `form` would change (the only ones that need guarding)."""
    if form == "none":
        return ()
    return tuple(
        ch
        for lo, hi, _ in KEEP_AS_WRITTEN_RANGES
        for ch in map(chr, range(lo, hi + 1))
        if unicodedata.normalize(form, ch) != ch
    )


def unicode_form(expr: pl.Expr, form: UnicodeForm, keep_as_written: bool = True) -> pl.Expr:
    """`form` applied to a text column, with the `KEEP_AS_WRITTEN_RANGES` characters left as they were written.

    Vectorised: guarded characters are swapped for private-use stand-ins, the text is normalised, and the stand-ins
    are swapped back. A text that already holds a stand-in character (never seen in real data) is normalised with
    `form` alone rather than risk changing it.
    """
    if form == "none":
        return expr
    guarded = kept_as_written(form) if keep_as_written else ()
    if not guarded:
        return expr.str.normalize(form)
    standins = [chr(_STANDIN_BASE + i) for i in range(len(guarded))]
    kept = expr.str.replace_many(list(guarded), standins).str.normalize(form).str.replace_many(standins, list(guarded))
    return pl.when(expr.str.contains(_STANDIN_PATTERN)).then(expr.str.normalize(form)).otherwise(kept)


def unicode_text(value: str, form: UnicodeForm, keep_as_written: bool = True) -> str:
    """`unicode_form` for one Python string (the same result)."""
    if form == "none":
        return value
    guarded = set(kept_as_written(form)) if keep_as_written else set()
    if not guarded or not any(ch in guarded for ch in value):
        return unicodedata.normalize(form, value)
    out: list[str] = []
    run: list[str] = []
    for ch in value:
        if ch in guarded:
            out.append(unicodedata.normalize(form, "".join(run)))
            out.append(ch)
            run = []
        else:
            run.append(ch)
    out.append(unicodedata.normalize(form, "".join(run)))
    return "".join(out)


@cache
def chinese_converter(conversion: ChineseConversion) -> Any:
    """An OpenCC converter (`.convert(str) -> str`); WbError naming the extra to install when OpenCC is missing."""
    from workbench.errors import WbError

    try:
        import opencc
    except ImportError:
        raise WbError(f"normalize.chinese: {conversion} needs OpenCC; install it with pip install 'wb[zh]'") from None
    return opencc.OpenCC(f"{conversion}.json")


def convert_chinese_series(series: pl.Series, conversion: ChineseConversion) -> pl.Series:
    """`conversion` applied to the values of a text column that hold CJK characters (OpenCC only changes those)."""
    converter = chinese_converter(conversion)
    idx = series.str.contains(CJK_CLASS).fill_null(False).arg_true()
    if idx.len() == 0:
        return series
    converted = pl.Series([converter.convert(v) for v in series.gather(idx).to_list()], dtype=pl.String)
    out = series.clone()
    out.scatter(idx, converted)
    return out


def normalize_series(
    series: pl.Series,
    form: UnicodeForm = "NFKC",
    strip_control: bool = True,
    strip_zero_width: bool = True,
    whitespace: bool = True,
    keep_as_written: bool = True,
) -> pl.Series:
    """`normalize` for a whole column, run only on the values one of its steps may change (one cheap scan
    decides); most records of a clean corpus pass through untouched."""
    idx = series.str.contains(_MAY_CHANGE).fill_null(False).arg_true()
    if idx.len() == 0:
        return series
    subset = pl.DataFrame({"t": series.gather(idx)})
    # Lazy: the optimiser computes the shared part of the prose/code branches once.
    changed = (
        subset.lazy()
        .select(normalize(pl.col("t"), form, strip_control, strip_zero_width, whitespace, keep_as_written))
        .collect()["t"]
    )
    out = series.clone()
    out.scatter(idx, changed)
    return out


def normalize(
    expr: pl.Expr,
    form: UnicodeForm = "NFKC",
    strip_control: bool = True,
    strip_zero_width: bool = True,
    whitespace: bool = True,
    keep_as_written: bool = True,
) -> pl.Expr:
    """Normalise one text column.

    Unicode: `form` per character class (see `unicode_form`); with `keep_as_written` off, `form` on everything.

    Whitespace: line ends become `\\n`, trailing spaces on each line and leading blank lines go. Prose (no fenced
    or indented code) is also trimmed, runs of spaces/tabs collapse to one, and runs of blank lines to one;
    fields with code keep their spacing (indentation and alignment carry meaning there).
    """
    expr = unicode_form(expr, form, keep_as_written)
    expr = expr.str.replace_all("\r\n?", "\n")
    if strip_control:
        expr = expr.str.replace_all(CONTROL_PATTERN, "").str.replace_all(BIDI_CONTROL_PATTERN, "")
    if strip_zero_width:
        expr = expr.str.replace_all(ZERO_WIDTH_PATTERN, "")
    if whitespace:
        expr = expr.str.replace_all(r"[ \t\f\v]+\n", "\n").str.replace_all(r"^(?:[ \t]*\n)+", "")
        expr = expr.str.strip_chars_end()
        prose = (
            expr.str.replace_all(r"[ \t\f\v\u00a0\u3000]{2,}", " ").str.replace_all(r"\n{3,}", "\n\n").str.strip_chars()
        )
        expr = pl.when(has_code(expr)).then(expr).otherwise(prose)
    return expr


_MAX_TAIL_REPLACEMENTS = 3  # an incomplete UTF-8 sequence is at most 3 bytes


def safe_decode_tail(text: str) -> str:
    """`text` without the U+FFFD characters (at most 3) at its very end that a decode leaves when generation stopped
    inside a multi-byte character; U+FFFD elsewhere is left for `broken_text` to find."""
    end = len(text)
    while end > 0 and len(text) - end < _MAX_TAIL_REPLACEMENTS and text[end - 1] == "\ufffd":
        end -= 1
    return text[:end]
