"""The table formats wb reads, one entry each: the bytes a file of it starts with, how it is parsed into rows, and
the names its shards carry in a dataset folder. Adding a format is one entry in `TABLES` (and its name in `Format`):
the sniffer, the reader, dataset folders and every command that reads a file (records, preference pairs,
multiple-choice sets, probes, predictions) pick it up.

JSON Lines and JSON are the reader's own (`workbench.io.reader`): JSON Lines streams line by line and both check
duplicate keys, which a table cannot hold. CSV has no magic bytes: it is what a file is when nothing else matches.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from workbench.io.csvrows import check_header, first_row
from workbench.io.streams import BOM

if TYPE_CHECKING:
    import polars as pl

Format = Literal["jsonl", "json", "parquet", "csv", "arrow"]


@dataclass(frozen=True)
class TableFormat:
    name: Format
    magic: tuple[bytes, ...]  # what the (decompressed) file starts with; () for CSV, the format of last resort
    suffixes: tuple[str, ...]  # the names of its files among a dataset folder's shards
    columns_at: str  # where an error about the column names points: the header line, or the columns
    load: Callable[[bytes, Path], pl.DataFrame]  # the whole file's bytes -> rows; may raise WbError or anything


def _parquet(data: bytes, path: Path) -> pl.DataFrame:
    import polars as pl

    return pl.read_parquet(io.BytesIO(data))


def _arrow(data: bytes, path: Path) -> pl.DataFrame:
    """An Arrow IPC file (`ARROW1`) or stream (`datasets`' `.arrow` shards)."""
    import polars as pl

    buf = io.BytesIO(data)
    return pl.read_ipc(buf) if data.startswith(b"ARROW1") else pl.read_ipc_stream(buf)


def _csv(data: bytes, path: Path) -> pl.DataFrame:
    """Every cell as text. A column with no name is refused first: polars would read it as "" or "_duplicated_N"."""
    import polars as pl

    check_header(path, first_row(data[: 1 << 16].removeprefix(BOM).decode("utf-8", "replace")))
    return pl.read_csv(io.BytesIO(data.removeprefix(BOM)), infer_schema=False)


TABLES: dict[str, TableFormat] = {
    t.name: t
    for t in (
        TableFormat("parquet", (b"PAR1",), (".parquet",), "columns", _parquet),
        TableFormat("arrow", (b"ARROW1", b"\xff\xff\xff\xff"), (".arrow",), "columns", _arrow),
        TableFormat("csv", (), (".csv",), "line 1 (the header)", _csv),
    )
}
SHARD_SUFFIXES = tuple(s for t in TABLES.values() for s in t.suffixes)


def by_magic(head: bytes) -> Format | None:
    """The table format whose magic bytes `head` starts with, if any."""
    return next((t.name for t in TABLES.values() if t.magic and head.startswith(t.magic)), None)
