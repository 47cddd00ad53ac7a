"""Records as polars frames: the columns every stage works on, and the JSON lines the stages write of them."""

from __future__ import annotations

from typing import IO, Any

import polars as pl

from workbench.records import EXTRA, FIELDS, Row

HISTORY_TYPE = pl.List(pl.List(pl.String))


def rows_to_frame(lines: list[int], rows: list[Row], extras: list[str | None] | None = None) -> pl.DataFrame:
    """A frame with `_line` (source position), the canonical fields and `_extra` (each record's own other fields,
    JSON object text or null), from parsed rows."""
    cols: list[Any] = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in FIELDS]
    data: dict[str, pl.Series] = {"_line": pl.Series("_line", lines, dtype=pl.Int64)}
    for name, values in zip(FIELDS, cols, strict=True):
        if name == "history" and not any(values):  # the common case; converting empty lists one by one is slow
            data[name] = pl.Series(name, [None], dtype=HISTORY_TYPE).clear(len(values)).fill_null([])
        else:
            data[name] = pl.Series(name, values, dtype=HISTORY_TYPE if name == "history" else pl.String)
    data[EXTRA] = pl.Series(EXTRA, extras if extras is not None else [None] * len(lines), dtype=pl.String)
    return pl.DataFrame(data)


def record_json(df: pl.DataFrame) -> pl.Expr:
    """Each record of `df` as JSON object text: the canonical fields, then its extra fields (`_extra`), as read."""
    fields = pl.struct(list(FIELDS)).struct.json_encode()
    if EXTRA not in df.columns:
        return fields
    extra = pl.col(EXTRA)
    # `{"instruction":...,"history":[]}` + `{"id":7}` -> `{"instruction":...,"history":[],"id":7}`
    joined = pl.concat_str([fields.str.head(-1), pl.lit(","), extra.str.tail(-1)])
    return pl.when(extra.is_null()).then(fields).otherwise(joined)


WRITE_CHUNK = 4096  # records encoded to JSON at once: the text exists three times (polars, str, bytes) while written


def write_records(f: IO[bytes], df: pl.DataFrame) -> None:
    """The records of `df` as JSON Lines (`record_json`), `WRITE_CHUNK` records at a time."""
    for start in range(0, df.height, WRITE_CHUNK):
        part = df.slice(start, WRITE_CHUNK)
        f.write((part.select(record_json(part).str.join("\n")).item() + "\n").encode())


def record_lines(df: pl.DataFrame) -> list[bytes]:
    """The lines `write_records` writes, one a record."""
    return [(line + "\n").encode() for line in df.select(record_json(df)).to_series()]


def write_dropped(f: IO[bytes], df: pl.DataFrame, columns: list[pl.Expr]) -> None:
    """Dropped records as JSON Lines: `columns` (line, rule, reason, ...), then the record (`record_json`)."""
    head = pl.struct(columns).struct.json_encode()
    for start in range(0, df.height, WRITE_CHUNK):
        part = df.slice(start, WRITE_CHUNK)
        line = pl.concat_str([head.str.head(-1), pl.lit(',"record":'), record_json(part), pl.lit("}")])
        f.write((part.select(line.str.join("\n")).item() + "\n").encode())
