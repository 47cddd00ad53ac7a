"""Command-line options about reading input: `--map FIELD=COLUMN` (and the column mapping it overrides),
`--duplicate-keys`, and the default output name a command derives from its input.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from workbench.errors import WbError
from workbench.io.streams import STDIN
from workbench.records import ALIASES, FIELDS, input_as_instruction

DuplicateKeys = Literal["reject", "last"]


def resolve_mapping(keys: Iterable[str], overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Pick a source column for each canonical field: explicit overrides first, then known aliases."""
    present = set(keys)
    mapping: dict[str, str] = {}
    for canon, names in ALIASES.items():
        for name in names:
            if name in present:
                mapping[canon] = name
                break
    for canon, src in (overrides or {}).items():
        if canon not in FIELDS:
            raise WbError(f"--map {canon}={src}: unknown field {canon!r}; fields are {', '.join(FIELDS)}")
        mapping[canon] = src
    mapping = input_as_instruction(mapping, overrides or {})
    taken: dict[str, str] = {}
    for canon, src in mapping.items():
        if src in taken:
            raise WbError(f"--map: column {src!r} is mapped to both {taken[src]} and {canon}")
        taken[src] = canon
    return mapping


def parse_duplicate_keys(value: str) -> DuplicateKeys:
    """`--duplicate-keys reject|last`."""
    if value == "reject":
        return "reject"
    if value == "last":
        return "last"
    raise WbError(f"--duplicate-keys {value!r}: expected reject or last")


def default_output(input_path: Path | str, command: str) -> Path:
    """Where a command writes when no `--output` is given: `./<name>.<command>.jsonl`, `<name>` the input's file name
    up to its first dot (`stdin` for standard input, `data` for a name that starts with a dot)."""
    stem = "stdin" if str(input_path) == STDIN else Path(input_path).name.split(".")[0] or "data"
    return Path(f"{stem}.{command}.jsonl")


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """Parse `--map output=response` options."""
    out: dict[str, str] = {}
    for item in items:
        canon, sep, src = item.partition("=")
        if not sep or not canon.strip() or not src.strip():
            raise WbError(f"--map {item!r}: expected FIELD=COLUMN, e.g. --map output=response")
        out[canon.strip()] = src.strip()
    return out
