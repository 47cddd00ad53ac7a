"""Numeric answers: the number a model answered (`extract_number`) and whether it equals the reference's
(`numeric_match`), for GSM8K-style suites; `evaluate.answers` says what every answer scorer shares.

Numbers (`extract_number`, `numeric_match`). A number is an optional sign, digits and an optional decimal part, read
exactly (a `Fraction`, so 0.1 + 0.2 == 0.3 holds):

- Sign: `-`, `+` or `−` (U+2212) is the number's sign unless it follows (spaces allowed between) an ASCII letter or
  digit, `_` or a closing bracket: "68-11=57" and "68 - 11" hold 68, 11 (and 57), while "x = -5", "答案是-5" and
  "(-5)" hold -5.
- Thousands separators: a comma is a thousands separator only between a first group of 1-3 digits and groups of
  exactly 3 digits, with no digit right after the last group: "1,234" and "12,345.5" are single numbers, while
  "1,2", "3,4,5" and "1,2345" are lists (1 and 2; 3, 4 and 5; 1 and 2345). A full-width `，` is a comma after NFKC.
  LaTeX's `1{,}234` counts as "1,234". Spaces as separators ("1 234") are not read.
- Fractions: `3/4`, `3 / 4` (spaces or tabs around the slash) and LaTeX `\\frac{3}{4}` (also `\\dfrac`, `\\tfrac`,
  signed parts) are 3/4; a zero denominator makes "3/0" the number 3.
- Percents are read as written: "50%" is 50, not 0.5 (a reference "0.5" does not match "50%").
- Not read: scientific notation ("1e5" is 1 and 5), number words ("forty-two", "四十二").

The answer's number: the number right after the last `####` that a number follows (GSM8K's marker; spaces and `$`
may come between, so a markdown heading "#### Step 2" is no marker); else the last number inside the last
`\\boxed{...}`; else the first number after the last answer phrase that is followed by one (`答案是`, `答案为`,
`答案：`, `答案:`, `the answer is`, `final answer`, `answer:`, case-insensitive); else the last number in the text.
A reference may be a whole GSM8K solution ("... #### 42") or a bare number; the same rule reads both. Two numbers
match when `|p - r| <= max(rel_tol * max(|p|, |r|), 1e-9)` (a relative tolerance, plus a tiny absolute one so 0 can
match).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from fractions import Fraction

from workbench.evaluate.answers import nfkc

ABS_TOL = Fraction(1, 10**9)


# --- numbers ------------------------------------------------------------------------------------------------------

_NUM = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+"
_NUMBER_RE = re.compile(rf"(?P<sign>[-+])?(?<![\d.])(?P<num>{_NUM})(?:[ \t]*/[ \t]*(?P<den>{_NUM}))?")
_FRAC_RE = re.compile(r"\\[dt]?frac\s*+\{\s*+([-+]?)\s*+([\d.,]+)\s*+\}\s*+\{\s*+([-+]?)\s*+([\d.,]+)\s*+\}")
_HASH_RE = re.compile(r"####[ \t]*+\$?")
_ANSWER_PHRASE_RE = re.compile(
    r"答案\s*+(?:是|为|為|应为|應為|应是|應是)?\s*+:?|the\s+(?:final\s+)?answer\s+is|final\s+answer|answer\s*:",
    re.IGNORECASE,
)


def _number_text(text: str) -> str:
    """NFKC, the minus sign as `-`, LaTeX's `{,}` as a comma and `\\frac{a}{b}` as `a/b`."""
    text = nfkc(text).replace("\u2212", "-").replace("{,}", ",")
    if "frac" in text:
        text = _FRAC_RE.sub(lambda m: f"{_sign(m[1], m[3])}{m[2]}/{m[4]}", text)
    return text


def _sign(a: str, b: str) -> str:
    return "-" if (a == "-") != (b == "-") else ""


def _is_operator(text: str, sign_at: int) -> bool:
    """A sign right after (spaces, then) an ASCII letter or digit, `_` or a closing bracket is an operator."""
    i = sign_at - 1
    while i >= 0 and text[i] in " \t":
        i -= 1
    return i >= 0 and (text[i] in ")]}_" or (text[i].isascii() and text[i].isalnum()))


def _value(match: re.Match[str]) -> Fraction:
    value = Fraction(match["num"].replace(",", ""))
    den = match["den"]
    if den is not None and Fraction(den.replace(",", "")) != 0:
        value /= Fraction(den.replace(",", ""))
    if match["sign"] == "-" and not _is_operator(match.string, match.start()):
        value = -value
    return value


def _boxed_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of the contents of each `\\boxed{...}`, braces balanced (one linear scan over the text)."""
    spans = []
    pos = text.find("\\boxed")
    while pos != -1:
        brace = text.find("{", pos)
        if brace == -1:
            break
        depth, i = 0, brace
        while i < len(text):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        spans.append((brace + 1, i))
        pos = text.find("\\boxed", i)
    return spans


def extract_number(text: str) -> Fraction | None:
    """The answer's number (the module docstring has the rules), exactly, or None when the text holds no number."""
    text = _number_text(text)
    matches = list(_NUMBER_RE.finditer(text))
    if not matches:
        return None
    starts = [m.start() for m in matches]

    def first_after(pos: int) -> Fraction | None:
        i = bisect_left(starts, pos)
        return _value(matches[i]) if i < len(matches) else None

    if "####" in text:
        by_start = {m.start(): m for m in matches}
        for mark in reversed(list(_HASH_RE.finditer(text))):
            if mark.end() in by_start:  # "#### 72", not a markdown heading "#### Step 2"
                return _value(by_start[mark.end()])
    if "\\boxed" in text:
        for start, end in reversed(_boxed_spans(text)):
            i = bisect_left(starts, end) - 1  # the last number starting inside the box
            if i >= 0 and starts[i] >= start and matches[i].end() <= end:
                return _value(matches[i])
    for phrase in reversed(list(_ANSWER_PHRASE_RE.finditer(text))):
        if (found := first_after(phrase.end())) is not None:
            return found
    return _value(matches[-1])


def numbers_equal(a: Fraction | float, b: Fraction | float, rel_tol: float = 1e-6) -> bool:
    """`|a - b| <= max(rel_tol * max(|a|, |b|), 1e-9)`, computed exactly."""
    fa, fb = Fraction(a), Fraction(b)
    return abs(fa - fb) <= max(Fraction(rel_tol) * max(abs(fa), abs(fb)), ABS_TOL)


def numeric_match(prediction: str, reference: str | float | Fraction, rel_tol: float = 1e-6) -> int:
    """1 when the prediction's number equals the reference's within `rel_tol`, else 0 (also when the prediction has
    no number). Raises ValueError when the reference holds no number."""
    if isinstance(reference, str):
        ref = extract_number(reference)
        if ref is None:
            raise ValueError(f"the reference holds no number: {reference[:80]!r}")
    else:
        ref = Fraction(reference)
    pred = extract_number(prediction)
    return int(pred is not None and numbers_equal(pred, ref, rel_tol))
