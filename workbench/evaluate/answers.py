"""Correctness of an answer: extract what the model answered (a number, an option letter, a label, a JSON value) and
score it against the reference, one value in [0, 1] per item (ints 0/1 for the binary scores).

Light on purpose: the standard library, numpy (`classification_report`, `macro_f1_of`) and jsonschema
(`json_schema_valid`, imported when first used); no torch, no transformers. Every text is NFKC-normalised first, so
full-width digits, letters and marks (`１２３`, `．`, `Ｂ`, `（Ｂ）`, `答案：`) read as their ASCII forms. Every rule
below runs in time linear in the answer's length (no backtracking-prone patterns),
so a 100 kB runaway answer costs milliseconds.

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

Choices (`extract_choice`, `choice_accuracy`). Letters are those of `letters` (default ABCD), or the keys of `options`
when options are given. Precedence, highest first; the first level that names a letter decides, and when that level
names two different letters the answer is ambiguous (None):

1. explicit marker: `答案是B`, `答案为B`, `答案：B`, `选B`, `故选B`, `选择B`, `the answer is (C)`, `answer: D`,
   `final answer: B`, `the correct option is B`, `best choice: B` (the letter may be bracketed, quoted or in
   `**bold**`); "选项A" and "option A" merely mention an option and are no markers;
2. leading letter: the answer starts with a letter followed by `.`, `)`, `]`, `:`, `、`, `,`, a line end or the end
   of the answer, or with a bracketed letter: `B. Paris`, `(B) Paris`, `B)`, `B`, `B\n\nExplanation: ...`, `(b)`;
3. lone letter token: a capital letter not touching another ASCII letter or digit ("I pick C because", "我认为是C");
   a capital `A` that starts a sentence and is followed by a lowercase word other than a verb such as `is` is the
   English article ("A cat is ..."), not a choice ("A is right" and "I think A fits" are);
4. option text: when `options` maps letters to texts, the option whose text (NFKC, casefolded, spaces collapsed,
   end punctuation stripped) is the whole answer, else the only option whose text appears in the answer as a whole
   word or phrase (an option contained in another found option, e.g. "Paris" in "Paris, Texas", does not count).

Lowercase letters count only bracketed (`(b)`), never bare, so "answer: a dog" is not the choice A.

Labels (`normalize_label`, `label_accuracy`, `classification_report`, `macro_f1_of`). Answer and labels are
compared NFKC-normalised, casefolded, with whitespace collapsed and punctuation stripped at both ends. The label is:
the whole answer when it equals a label ("Urgent." / "urgent" / "紧急"); else the label the answer starts with; else
the only label that appears in the answer ("This is URGENT"); None when no label or several different labels appear.
A Latin label must not touch a letter or digit on either side ("urgent" is not found in "urgently"); a CJK label has
no such boundary ("紧急" is found in "情况紧急"). A label found only inside a longer found label ("urgent" inside
"non-urgent") does not count. Known limit: a CJK label inside a negation that is not itself a label ("紧急" in
"不紧急" when the labels are 紧急/非紧急) is read as that label.

`classification_report`: per-class precision, recall, F1 and support (references of that class); precision is 0 for
a class never predicted and recall 0 for a class with no support (scikit-learn's `zero_division=0`). `macro_f1` is the
unweighted mean of the per-class F1 over the labels that occur among the references or the predictions (scikit-learn's
default label set), so a label of the suite that appears nowhere does not pull the mean to 0. The confusion matrix has
one row per reference label and one column per predicted label, plus a last column `(none)` for answers no label
could be read from (they count as wrong). Macro F1 is a property of the whole set, not a mean of per-item values, so it
cannot take the per-item bootstrap of `evaluate/compare.py`; `macro_f1_of` gives it as a function of item indices,
which `compare.set_stat` resamples (recomputing macro F1 on each resample with the same label rule).

JSON (`extract_json`, `json_valid`, `json_schema_valid`, `json_field_f1`). The answer's JSON value is the first of:
the whole answer (stripped) parsed as JSON (any JSON value, scalars included); the first fenced block tagged `json`;
the first fenced block of any tag (``` or ~~~); the first outermost balanced `{...}` or `[...]` span that parses
(brackets inside JSON strings are skipped; spans are tried left to right, outermost only). `NaN` and `Infinity` are
not JSON. Schemas are JSON Schema Draft 2020-12 (`format` is not asserted), checked once per distinct schema; an
invalid schema raises `ValueError` naming the problem and where it is.

Field F1 flattens both values to (path, value) pairs: a path is the list of keys and list indices down to a leaf
(`a.b.0`); leaves are strings (NFKC, stripped, compared exactly), numbers (compared exactly as numbers, so 1 == 1.0;
booleans are not numbers), booleans, null and empty objects or lists; F1 is over the multisets of pairs (precision
over the prediction's pairs, recall over the reference's). A prediction with no JSON scores 0; a reference with no
JSON raises `ValueError` (the caller names the item).

Regex (`regex_match`): `re.search` of the pattern (compiled once per pattern and flags) in the answer, or with
`full=True` `re.fullmatch` on the answer stripped of surrounding whitespace. The pattern comes from the suite: its cost
is the suite author's (Python's `re` backtracks).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np

from workbench.text import CJK_CLASS

ABS_TOL = Fraction(1, 10**9)
NONE_COLUMN = "(none)"


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


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
    text = _nfkc(text).replace("\u2212", "-").replace("{,}", ",")
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


# --- choices ------------------------------------------------------------------------------------------------------

# "选项A" and "option A" only mention an option ("选项A错误，答案是C"): they are no markers.
_MARKER = (
    r"(?:答案\s*+(?:是|为|為|應為|应为|选|選)?|[选選](?:择|擇)?(?![项項]))"
    r"|(?:\b(?:the\s+)?(?:final\s+|correct\s+|right\s+|best\s+)?answer(?:\s+(?:is|would\s+be|should\s+be))?)"
    r"|(?:\b(?:correct|right|best)\s+(?:option|choice)(?:\s+(?:is|would\s+be|should\s+be))?)"
)
# Possessive quantifiers (`*+`) throughout: a run of spaces or quotes is read once, never re-split by backtracking.
_QUOTES = "\"'*“‘「【"
_CLOSE = ")]}\"'*”’」】"


@lru_cache(maxsize=64)
def _choice_patterns(letters: str) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    upper = re.escape(letters.upper())
    both = re.escape(letters.upper() + letters.lower())
    quotes = re.escape(_QUOTES)
    closer = re.escape(_CLOSE)
    letter = rf"[{quotes}]*+\s*+(?:[({{\[]\s*+(?P<b>[{both}])\s*+[)}}\]]|(?P<l>[{upper}]))(?![A-Za-z0-9])"
    marker = re.compile(rf"(?i:{_MARKER})\s*+:?\s*+(?:是|为)?\s*+{letter}")
    ends = rf"[.)\]:、,，\n{closer}]|$"
    leading = re.compile(
        rf"\s*+[{quotes}]*+\s*+(?:[(\[]\s*+(?P<b>[{both}])\s*+[)\]]|(?P<l>[{upper}])(?=[ \t]*+(?:{ends})))"
    )
    lone = re.compile(rf"(?<![A-Za-z0-9])(?P<l>[{upper}])(?![A-Za-z0-9])")
    return marker, leading, lone


def _only(names: set[str]) -> str | None:
    return next(iter(names)) if len(names) == 1 else None


# After a capital A at the start of a sentence, a lowercase word other than these makes it the article.
_A_VERBS = frozenset(
    ["is", "was", "seems", "appears", "looks", "would", "should", "must", "fits", "matches", "and", "or"]
)
_NEXT_WORD_RE = re.compile(r"[ \t]+([a-z]+)")


def _is_article(text: str, start: int, end: int) -> bool:
    """The capital `A` at text[start:end] starts a sentence and is followed by a lowercase word (not a verb)."""
    word = _NEXT_WORD_RE.match(text, end, min(len(text), end + 40))
    if word is None or word[1] in _A_VERBS:
        return False
    i = start - 1
    while i >= 0 and text[i] in " \t":
        i -= 1
    return i < 0 or text[i] in ".!?。！？\n:\"'“‘(["


def _phrase_key(text: str) -> str:
    """NFKC, casefolded, whitespace collapsed, punctuation stripped at both ends."""
    return _strip_punctuation(" ".join(_nfkc(text).casefold().split()))


def _strip_punctuation(text: str) -> str:
    start, end = 0, len(text)
    while start < end and (unicodedata.category(text[start])[0] == "P" or text[start].isspace()):
        start += 1
    while end > start and (unicodedata.category(text[end - 1])[0] == "P" or text[end - 1].isspace()):
        end -= 1
    return text[start:end]


def _is_cjk(ch: str) -> bool:
    return _CJK_ONE.fullmatch(ch) is not None


_CJK_ONE = re.compile(CJK_CLASS)


@lru_cache(maxsize=1024)
def _phrase_pattern(key: str) -> re.Pattern[str]:
    """A pattern finding `key` in a key-normalised text as a whole word or phrase (boundaries only on non-CJK ends)."""
    before = "" if _is_cjk(key[0]) or not key[0].isalnum() else r"(?<![^\W_])"
    after = "" if _is_cjk(key[-1]) or not key[-1].isalnum() else r"(?![^\W_])"
    # A CJK neighbour is a \w character, yet it does not join a Latin word: allow it.
    if before:
        before = rf"(?:(?<={CJK_CLASS})|{before})"
    if after:
        after = rf"(?:(?={CJK_CLASS})|{after})"
    return re.compile(before + re.escape(key) + after)


def _find_phrases(text_key: str, keys: Mapping[str, str]) -> tuple[str | None, set[str], str | None]:
    """For phrases `keys` (name -> key): the name whose key is the whole text, the names found in the text (those
    found only inside a longer found one removed), and the name found at the start of the text."""
    whole = next((name for name, key in keys.items() if key and key == text_key), None)
    spans: list[tuple[int, int, str]] = []
    for name, key in keys.items():
        if not key:
            continue
        spans.extend((m.start(), m.end(), name) for m in _phrase_pattern(key).finditer(text_key))
    # Left to right, longer first at the same start: a span ending within an earlier one lies inside it.
    spans.sort(key=lambda span: (span[0], -span[1]))
    found: set[str] = set()
    leading, reach = None, -1
    for start, end, name in spans:
        if end <= reach:
            continue
        reach = end
        found.add(name)
        if start == 0 and leading is None:
            leading = name
    return whole, found, leading


def extract_choice(text: str, options: Mapping[str, str] | None = None, letters: str = "ABCD") -> str | None:
    """The option letter the answer chooses (uppercase), or None when it names none or is ambiguous. Precedence:
    explicit marker > leading letter > lone letter token > option text (module docstring)."""
    if options is not None:
        letters = "".join(k.strip().upper() for k in options)
    text = _nfkc(text)
    marker, leading, lone = _choice_patterns(letters)
    named = {(m["b"] or m["l"]).upper() for m in marker.finditer(text)}
    if named:
        return _only(named)
    head = leading.match(text)
    if head is not None:
        return (head["b"] or head["l"]).upper()
    tokens = {m["l"] for m in lone.finditer(text) if not (m["l"] == "A" and _is_article(text, m.start(), m.end()))}
    if tokens:
        return _only(tokens)
    if options:
        keys = {k.strip().upper(): _phrase_key(v) for k, v in options.items()}
        whole, found, _ = _find_phrases(_phrase_key(text), keys)
        return whole if whole is not None else _only(found)
    return None


def choice_accuracy(
    prediction: str, reference_letter: str, options: Mapping[str, str] | None = None, letters: str = "ABCD"
) -> int:
    """1 when the chosen letter equals the reference letter (read like a leading letter: "B", "(B)", "B."), else 0.
    Raises ValueError when the reference is not one of the letters."""
    valid = "".join(k.strip().upper() for k in options) if options is not None else letters.upper()
    ref = _strip_punctuation(_nfkc(reference_letter)).upper()
    if len(ref) != 1 or ref not in valid:
        raise ValueError(f"the reference {reference_letter!r} is not one of the option letters {valid}")
    return int(extract_choice(prediction, options, letters) == ref)


# --- labels -------------------------------------------------------------------------------------------------------


def normalize_label(text: str, labels: Sequence[str]) -> str | None:
    """The label of `labels` the answer gives (spelled as in `labels`), or None when no label or several appear."""
    keys = {label: _phrase_key(label) for label in labels}
    whole, found, leading = _find_phrases(_phrase_key(text), keys)
    if whole is not None:
        return whole
    if leading is not None:
        return leading
    return _only(found)


def _reference_label(reference: str, labels: Sequence[str], index: int | None = None) -> str:
    label = normalize_label(reference, labels)
    if label is None:
        where = "" if index is None else f" (item {index})"
        raise ValueError(f"the reference {reference[:80]!r}{where} is not one of the labels {list(labels)}")
    return label


def label_accuracy(prediction: str, reference: str, labels: Sequence[str]) -> int:
    """1 when the answer's label equals the reference's label, else 0. Raises ValueError when the reference is not a
    label."""
    return int(normalize_label(prediction, labels) == _reference_label(reference, labels))


def _codes(
    predictions: Sequence[str], references: Sequence[str], labels: Sequence[str]
) -> tuple[np.ndarray[Any, np.dtype[np.int64]], np.ndarray[Any, np.dtype[np.int64]]]:
    """Reference and prediction label indices (the prediction's `len(labels)` where none was read)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if len(set(labels)) != len(labels) or not labels:
        raise ValueError(f"labels must be distinct and not empty, got {list(labels)}")
    index = {label: i for i, label in enumerate(labels)}
    refs = [index[_reference_label(r, labels, i)] for i, r in enumerate(references)]
    preds = [index.get(normalize_label(p, labels) or "", len(labels)) for p in predictions]
    return np.asarray(refs, dtype=np.int64), np.asarray(preds, dtype=np.int64)


def _confusion(refs: np.ndarray[Any, Any], preds: np.ndarray[Any, Any], k: int) -> np.ndarray[Any, Any]:
    return np.bincount(refs * (k + 1) + preds, minlength=k * (k + 1)).reshape(k, k + 1)


def _per_class(confusion: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], ...]:
    """precision, recall, f1, support and the mask of labels that count for macro F1, from a (k, k+1) matrix."""
    k = confusion.shape[0]
    tp = confusion[np.arange(k), np.arange(k)].astype(np.float64)
    predicted = confusion[:, :k].sum(axis=0).astype(np.float64)
    support = confusion.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(k), where=total > 0)
    return precision, recall, f1, support, (support > 0) | (predicted > 0)


def _macro(f1: np.ndarray[Any, Any], present: np.ndarray[Any, Any]) -> float:
    return float(f1[present].mean()) if present.any() else math.nan


def _cells_macro_f1(cells: np.ndarray[Any, Any], k: int) -> float:
    """Macro F1 of items given as confusion cells (reference * (k + 1) + prediction)."""
    _, _, f1, _, present = _per_class(np.bincount(cells, minlength=k * (k + 1)).reshape(k, k + 1))
    return _macro(f1, present)


def classification_report(
    predictions: Sequence[str], references: Sequence[str], labels: Sequence[str]
) -> dict[str, Any]:
    """Per-class precision/recall/F1/support, `macro_f1`, `accuracy`, `n`, `unparsed` (answers with no label) and the
    confusion matrix (`rows` = reference labels, `columns` = predicted labels + `(none)`, `matrix` of counts).
    With no items `accuracy` and `macro_f1` are NaN. Raises ValueError when a reference is not a label (naming the
    item) or the lengths differ."""
    refs, preds = _codes(predictions, references, labels)
    k = len(labels)
    confusion = _confusion(refs, preds, k)
    precision, recall, f1, support, present = _per_class(confusion)
    n = len(refs)
    return {
        "labels": list(labels),
        "n": n,
        "accuracy": float((refs == preds).mean()) if n else math.nan,
        "macro_f1": _macro(f1, present),
        "unparsed": int((preds == k).sum()),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion": {
            "rows": list(labels),
            "columns": [*labels, NONE_COLUMN],
            "matrix": confusion.astype(int).tolist(),
        },
    }


def macro_f1_of(predictions: Sequence[str], references: Sequence[str], labels: Sequence[str]) -> Callable[[Any], float]:
    """A function of item indices (a numpy array, repeats allowed) giving macro F1 on those items, with the labels
    read once: what `compare.set_stat` resamples for the interval of this set-level metric."""
    refs, preds = _codes(predictions, references, labels)
    k = len(labels)
    cells = refs * (k + 1) + preds

    def macro(indices: Any) -> float:
        return _cells_macro_f1(cells[np.asarray(indices, dtype=np.int64)], k)

    return macro


# --- JSON ---------------------------------------------------------------------------------------------------------

_FENCE_RE = re.compile(r"^[ \t]*+(```|~~~)[ \t]*+([\w+-]*+)[^\n]*+\n", re.MULTILINE)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _fenced_blocks(text: str) -> Iterator[tuple[str, str]]:
    """(tag, content) of each fenced block; an unclosed fence runs to the end of the text."""
    pos = 0
    while True:
        opening = _FENCE_RE.search(text, pos)
        if opening is None:
            return
        fence = opening[1]
        close = re.compile(rf"^[ \t]*{fence}[ \t]*$", re.MULTILINE).search(text, opening.end())
        end = len(text) if close is None else close.start()
        yield opening[2].lower(), text[opening.end() : end]
        if close is None:
            return
        pos = close.end()


def _bracket_spans(text: str) -> Iterator[tuple[int, int]]:
    """Outermost balanced `{...}` / `[...]` spans, left to right, skipping brackets inside JSON strings. One pass: an
    unclosed opener leaves the spans inside it as candidates; a mismatched closer restarts the scan after it."""
    stack: list[int] = []
    closed: list[tuple[int, int]] = []  # completed spans at any depth, in order of their end
    in_string = escaped = False
    pairs = {"}": "{", "]": "["}
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch in "{[":
            stack.append(i)
        elif ch in "}]":
            if stack and text[stack[-1]] == pairs[ch]:
                start = stack.pop()
                while closed and closed[-1][0] > start:
                    closed.pop()  # spans inside this one are not outermost
                closed.append((start, i + 1))
            elif stack:
                stack.clear()
        elif ch == '"' and stack:
            in_string = True
    yield from sorted(closed)


def extract_json(text: str) -> tuple[Any, str | None]:
    """(value, None) for the answer's JSON value (module docstring), or (None, error) saying why none was found.
    JSON `null` is (None, None)."""
    stripped = text.strip()
    if not stripped:
        return None, "the answer is empty"
    try:
        return _loads(stripped), None
    except ValueError as exc:
        whole_error = f"not JSON: {exc}"
    blocks = list(_fenced_blocks(text))
    tagged = [content for tag, content in blocks if tag == "json"]
    chosen = tagged[0] if tagged else (blocks[0][1] if blocks else None)
    if chosen is not None:
        try:
            return _loads(chosen), None
        except ValueError as exc:
            fence_error = f"fenced block is not JSON: {exc}"
    for start, end in _bracket_spans(text):
        try:
            return _loads(text[start:end]), None
        except ValueError:
            continue
    return None, fence_error if chosen is not None else whole_error


def json_valid(prediction: str) -> int:
    """1 when a JSON value can be read from the answer (module docstring), else 0."""
    return int(extract_json(prediction)[1] is None)


@lru_cache(maxsize=32)
def _validator(schema_json: str) -> Any:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    schema = json.loads(schema_json)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"invalid JSON Schema at {exc.json_path}: {exc.message}") from None
    return Draft202012Validator(schema)


def check_schema(schema: Mapping[str, Any] | bool) -> None:
    """Raise ValueError naming the problem when `schema` is not a valid Draft 2020-12 JSON Schema."""
    _validator(json.dumps(schema, sort_keys=True))


def json_schema_valid(prediction: str, schema: Mapping[str, Any] | bool) -> int:
    """1 when the answer's JSON value conforms to `schema` (Draft 2020-12), else 0 (also with no JSON)."""
    validator = _validator(json.dumps(schema, sort_keys=True))
    value, error = extract_json(prediction)
    return int(error is None and validator.is_valid(value))


def _leaf(value: Any) -> tuple[str, Any]:
    if isinstance(value, str):
        return ("string", _nfkc(value).strip())
    if isinstance(value, bool) or value is None:
        return ("constant", value)
    if isinstance(value, int):
        return ("number", Fraction(value))
    if isinstance(value, float):
        return ("number", Fraction(value) if math.isfinite(value) else str(value))
    if isinstance(value, dict | list) and not value:
        return ("empty", "{}" if isinstance(value, dict) else "[]")
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def flatten_json(value: Any) -> Counter[tuple[tuple[str | int, ...], tuple[str, Any]]]:
    """The multiset of (path, canonical leaf) pairs of a JSON value (module docstring). Iterative, so deep nesting
    cannot overflow the stack."""
    pairs: Counter[tuple[tuple[str | int, ...], tuple[str, Any]]] = Counter()
    todo: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while todo:
        path, node = todo.pop()
        if isinstance(node, dict) and node:
            todo.extend(((*path, _nfkc(str(k)).strip()), v) for k, v in node.items())
        elif isinstance(node, list) and node:
            todo.extend(((*path, i), v) for i, v in enumerate(node))
        else:
            pairs[(path, _leaf(node))] += 1
    return pairs


def json_field_f1(prediction: str, reference: Any) -> float:
    """F1 of the (path, value) pairs of the answer's JSON value against the reference's (module docstring). The
    reference is JSON text (read like an answer) or an already parsed value; ValueError when it holds no JSON."""
    if isinstance(reference, str):
        ref_value, error = extract_json(reference)
        if error is not None:
            raise ValueError(f"the reference is not JSON ({error})")
    else:
        ref_value = reference
    pred_value, error = extract_json(prediction)
    if error is not None:
        return 0.0
    pred, ref = flatten_json(pred_value), flatten_json(ref_value)
    overlap = sum((pred & ref).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / sum(pred.values()), overlap / sum(ref.values())
    return 2 * precision * recall / (precision + recall)


# --- regex --------------------------------------------------------------------------------------------------------

_FLAG_LETTERS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE, "a": re.ASCII}


@lru_cache(maxsize=256)
def _compile(pattern: str, flags: int) -> re.Pattern[str]:
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


def regex_flags(flags: int | str) -> int:
    """`re` flags from an int or from letters as in `(?imsxa)` ("i" = IGNORECASE, "m", "s", "x", "a")."""
    if isinstance(flags, int):
        return flags
    value = 0
    for letter in flags.lower():
        if letter not in _FLAG_LETTERS:
            raise ValueError(f"unknown regex flag {letter!r} in {flags!r} (use i, m, s, x, a)")
        value |= _FLAG_LETTERS[letter]
    return value


def regex_match(prediction: str, pattern: str | re.Pattern[str], flags: int | str = 0, full: bool = False) -> int:
    """1 when `pattern` is found in the answer (`re.search`), or with `full=True` matches the whole answer stripped
    of surrounding whitespace (`re.fullmatch`), else 0. A compiled pattern keeps its own flags (`flags` must be 0)."""
    if isinstance(pattern, re.Pattern):
        if regex_flags(flags):
            raise ValueError("flags cannot be added to an already compiled pattern")
        compiled = pattern
    else:
        compiled = _compile(pattern, regex_flags(flags))
    if full:
        return int(compiled.fullmatch(prediction.strip()) is not None)
    return int(compiled.search(prediction) is not None)
