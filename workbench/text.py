"""The one place for Unicode work: normalisation, script detection, CJK-aware tokens and n-grams.

Every pattern here is written so that Python's `re` and polars' Rust regex engine read it the same way, so the
vectorised cleaning code and per-record Python code (metrics, PII checks) count the same tokens.

Tokens: each CJK character (Han, kana, bopomofo) is one token, a run of other word characters is one token,
punctuation and symbols are not tokens. "Hello, 世界!" has three tokens: `Hello`, `世`, `界`.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Literal

import polars as pl

UnicodeForm = Literal["NFC", "NFKC", "NFD", "NFKD", "none"]

# CJK ideographs (incl. extension A and the supplementary planes), compatibility ideographs, kana, bopomofo.
CJK_CHARS = (
    "\u2e80-\u2fdf\u3005\u3007\u3021-\u3029\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
)
CJK_CLASS = f"[{CJK_CHARS}]"
WORD_CLASS = f"[^\\W{CJK_CHARS}]+"
TOKEN_PATTERN = f"{CJK_CLASS}|{WORD_CLASS}"
LATIN_LETTER = "[A-Za-z\u00c0-\u024f]"

_TOKEN_RE = re.compile(TOKEN_PATTERN)
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


def count_cjk(text: str) -> int:
    return len(_CJK_RE.findall(text))


def count_latin(text: str) -> int:
    return len(_LATIN_RE.findall(text))


def script_of(text: str) -> str:
    """The dominant script of a text: `cjk`, `latin`, `other` or `empty` (letters only are counted)."""
    cjk, latin = count_cjk(text), count_latin(text)
    letters = sum(1 for ch in text if ch.isalpha())
    if letters == 0:
        return "empty"
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
        .then(pl.lit("empty"))
        .when((cjk >= latin) & (cjk * 2 >= letters))
        .then(pl.lit("cjk"))
        .when(latin * 2 >= letters)
        .then(pl.lit("latin"))
        .otherwise(pl.lit("other"))
    )


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


def normalize_series(
    series: pl.Series,
    form: UnicodeForm = "NFKC",
    strip_control: bool = True,
    strip_zero_width: bool = True,
    whitespace: bool = True,
) -> pl.Series:
    """`normalize` for a whole column, run only on the values one of its steps may change (one cheap scan
    decides); most records of a clean corpus pass through untouched."""
    idx = series.str.contains(_MAY_CHANGE).fill_null(False).arg_true()
    if idx.len() == 0:
        return series
    subset = pl.DataFrame({"t": series.gather(idx)})
    # Lazy: the optimiser computes the shared part of the prose/code branches once.
    changed = (
        subset.lazy().select(normalize(pl.col("t"), form, strip_control, strip_zero_width, whitespace)).collect()["t"]
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
) -> pl.Expr:
    """Normalise one text column.

    Whitespace: line ends become `\\n`, trailing spaces on each line and leading blank lines go. Prose (no fenced
    or indented code) is also trimmed, runs of spaces/tabs collapse to one, and runs of blank lines to one;
    fields with code keep their spacing (indentation and alignment carry meaning there).
    """
    if form != "none":
        expr = expr.str.normalize(form)
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
