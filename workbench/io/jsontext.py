"""JSON text: duplicate keys (which JSON parsers keep silently), deterministic dumping, small JSON Lines files, and
JSON files read with one error line naming the file (`read_json`, `read_json_object`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson

from workbench.errors import WbError
from workbench.output import atomic_write
from workbench.records import RecordError

KEY_TOKEN = re.compile(rb'"\s*:')  # every key of a JSON text ends so (a string value may too: then we look closer)


def count_keys(obj: Any) -> int:
    if isinstance(obj, dict):
        return len(obj) + sum(count_keys(v) for v in obj.values())
    if isinstance(obj, list):
        return sum(count_keys(v) for v in obj)
    return 0


def duplicate_in(value: Any) -> str | None:
    if isinstance(value, _Duplicated):
        return value.duplicate
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return next((d for d in map(duplicate_in, children) if d is not None), None)


class _Duplicated(dict[str, Any]):
    """An object that named a key twice (the stdlib parser's pairs show it; orjson keeps the last silently)."""

    duplicate: str = ""


def json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj and not isinstance(obj, _Duplicated):
            obj = _Duplicated(obj)
            obj.duplicate = key
        obj[key] = value
    return obj


def duplicate_key(raw: bytes, parsed: Any) -> str | None:
    """The first key that an object of the JSON text `raw` names twice, if any; `parsed` is orjson's reading of
    it. Exact, and cheap when there is none: a text with no more key tokens than `parsed` has keys holds none."""
    if len(KEY_TOKEN.findall(raw)) <= count_keys(parsed):
        return None
    return duplicate_in(json.loads(raw, object_pairs_hook=json_pairs))


def duplicate_error(key: str) -> RecordError:
    return RecordError(key, f"key {key!r} appears twice in one object (JSON keeps only the last)", "duplicate_key")


def dumps_json(obj: Any) -> bytes:
    """Deterministic pretty JSON: sorted keys, UTF-8, trailing newline."""
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def write_json(path: Path, obj: Any) -> None:
    with atomic_write(path) as f:
        f.write(dumps_json(obj))


def jsonl_line(obj: Any) -> bytes:
    return orjson.dumps(obj) + b"\n"


def read_json(path: Path, what: str) -> Any:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise WbError(f"{path}: {what} not found") from None
    except OSError as e:
        raise WbError(f"{path}: cannot read {what} ({e.strerror})") from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise WbError(f"{path}: {what} is not valid JSON ({e}); re-run the stage that wrote it") from None


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON file that must hold one object (`{path}: {what} must be a JSON object` otherwise)."""
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise WbError(f"{path}: {what} must be a JSON object")
    return data
