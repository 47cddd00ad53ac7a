"""Telling an input's format from its content, not its name: JSON Lines, a JSON array (or an object holding one),
or a table format of `workbench.io.formats` (Parquet, Arrow, CSV), each possibly compressed (`workbench.io.streams`
opens the bytes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

from workbench.errors import WbError
from workbench.io.formats import Format, by_magic
from workbench.io.streams import BOM, Compression, open_decompressed, open_raw, sniff_errors
from workbench.records import ALIASES


class EmptyInput(WbError):
    """A file with nothing in it but blank lines (a reader of a few optional objects may take it as none)."""


@dataclass(frozen=True)
class SourceInfo:
    path: Path
    format: Format
    compression: Compression
    encoding: str = "utf-8"

    @property
    def unit(self) -> str:
        """What a record's position is counted in: lines for JSON Lines, items or rows otherwise."""
        return {"jsonl": "line", "json": "item"}.get(self.format, "row")


_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".jsonl.zst", ".ndjson.zst")


def sniff_format(line: bytes, path: Path) -> Format:
    """Tell the format from the first line of the (decompressed) file."""
    table = by_magic(line)
    if table is not None:
        return table
    text = line.removeprefix(BOM).strip()
    if not text:
        raise EmptyInput(f"{path}: file is empty")
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        # A JSON document opens with a lone "{" or with `{"data": [` (on one line or spread over many); JSON
        # Lines opens with a record (complete, or broken and then rejected on its own).
        return "json" if text == b"{" or text.endswith(b"[") or _opens_document(text) else "jsonl"
    # Neither JSON opening: a CSV header, unless the name says JSON Lines (then a bad first line is rejected).
    return "jsonl" if path.name.lower().endswith(_JSONL_SUFFIXES) else "csv"


# Keys that make an object a record (Alpaca fields and their aliases, conversations), not a wrapper of records.
_RECORD_KEYS = frozenset(
    {
        *(n for names in ALIASES.values() for n in names),
        "messages",
        "conversations",
        *("chosen", "rejected", "completions", "prompt_messages", "kto_tag"),  # preference records
    }
)
_WRAPPER_START = re.compile(rb'^\{\s*"((?:[^"\\]|\\.)*)"\s*:\s*\[')


def _opens_document(line: bytes) -> bool:
    """A first line that is a JSON object holding one list of records (`{"data": [...]}`), or begins one."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        start = _WRAPPER_START.match(line)  # `{"data": [{...}, {...},` with the rest on later lines
        return start is not None and start.group(1).decode("utf-8", "replace") not in _RECORD_KEYS
    if not isinstance(obj, dict) or _RECORD_KEYS & obj.keys():
        return False
    return sum(isinstance(v, list) for v in obj.values()) == 1


def first_line(stream: IO[bytes]) -> tuple[bytes, bytes]:
    """The first non-blank line, and every byte read to find it."""
    seen: list[bytes] = []
    while True:
        line = stream.readline()
        seen.append(line)
        if not line or line.removeprefix(BOM).strip() or by_magic(line) is not None:
            return line, b"".join(seen)


def sniff(path: Path) -> SourceInfo:
    raw = open_raw(path)
    with sniff_errors(path):
        stream, compression, encoding = open_decompressed(path, raw)
        with stream:
            first, _ = first_line(stream)
    return SourceInfo(path=path, format=sniff_format(first, path), compression=compression, encoding=encoding)
