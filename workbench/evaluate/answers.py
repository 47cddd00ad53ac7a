"""Correctness of an answer: extract what the model answered and score it against the reference, one value in [0, 1]
per item (ints 0/1 for the binary scores). This module holds what every answer scorer shares (NFKC reading, the
whole-word search of a phrase in an answer) and the label scorer built on it with its set-level classification report;
numbers are `evaluate.numbers`, option letters `evaluate.choices`, JSON values and regexes `evaluate.answer_format`.

Light on purpose, here and in the three scorer modules: the standard library, numpy (`classification_report`,
`macro_f1_of`) and jsonschema (`json_schema_valid`, imported when first used); no torch, no transformers. Every text
is NFKC-normalised first (`nfkc`), so full-width digits, letters and marks (`１２３`, `．`, `Ｂ`, `（Ｂ）`, `答案：`)
read as their ASCII forms. Every rule runs in time linear in the answer's length (no backtracking-prone patterns),
so a 100 kB runaway answer costs milliseconds.

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
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from workbench.text import CJK_CLASS

NONE_COLUMN = "(none)"


def nfkc(text: str) -> str:
    """The text NFKC-normalised: how every scorer reads an answer and a reference."""
    return unicodedata.normalize("NFKC", text)


def phrase_key(text: str) -> str:
    """NFKC, casefolded, whitespace collapsed, punctuation stripped at both ends."""
    return strip_punctuation(" ".join(nfkc(text).casefold().split()))


def only_one(names: set[str]) -> str | None:
    """The one name of `names`; None when there is none or several (an ambiguous answer)."""
    return next(iter(names)) if len(names) == 1 else None


def strip_punctuation(text: str) -> str:
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


def find_phrases(text_key: str, keys: Mapping[str, str]) -> tuple[str | None, set[str], str | None]:
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


# --- labels -------------------------------------------------------------------------------------------------------


def normalize_label(text: str, labels: Sequence[str]) -> str | None:
    """The label of `labels` the answer gives (spelled as in `labels`), or None when no label or several appear."""
    keys = {label: phrase_key(label) for label in labels}
    whole, found, leading = find_phrases(phrase_key(text), keys)
    if whole is not None:
        return whole
    if leading is not None:
        return leading
    return only_one(found)


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
