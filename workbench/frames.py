"""Records as polars frames: the columns every stage works on."""

from __future__ import annotations

from typing import Any

import polars as pl

from workbench.records import FIELDS, Row

HISTORY_TYPE = pl.List(pl.List(pl.String))


def rows_to_frame(lines: list[int], rows: list[Row]) -> pl.DataFrame:
    """A frame with `_line` (source position) and the canonical fields, from parsed rows."""
    cols: list[Any] = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in FIELDS]
    data: dict[str, pl.Series] = {"_line": pl.Series("_line", lines, dtype=pl.Int64)}
    for name, values in zip(FIELDS, cols, strict=True):
        if name == "history" and not any(values):  # the common case; converting empty lists one by one is slow
            data[name] = pl.Series(name, [None], dtype=HISTORY_TYPE).clear(len(values)).fill_null([])
        else:
            data[name] = pl.Series(name, values, dtype=HISTORY_TYPE if name == "history" else pl.String)
    return pl.DataFrame(data)
