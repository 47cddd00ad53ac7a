"""Answers in a required form: JSON (`extract_json`, `json_valid`, against a JSON Schema `json_schema_valid`, field
by field against a reference `json_field_f1`) and a suite's regular expression (`regex_match`). jsonschema is
imported when first used; `evaluate.answers` says what every answer scorer shares.

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
from collections import Counter
from collections.abc import Iterator, Mapping
from fractions import Fraction
from functools import lru_cache
from typing import Any

from workbench.evaluate.answers import nfkc

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
        return ("string", nfkc(value).strip())
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
            todo.extend(((*path, nfkc(str(k)).strip()), v) for k, v in node.items())
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
