"""The per-block work of `wb clean --engine ray` (runs in Ray tasks): a record shape's cleaning (`driver.Shape`)
on one block, and the dedup keys of its kept records.

A block comes back as one frame of the schema `SCHEMA`: the kept records (`_kind` `kept`: the shape's columns,
with their exact-duplicate key, LSH band keys and shingle set, computed with the local engine's functions), and a
row per dropped record, reject, tool conversation, reported record, leaked eval item, file-level key (preference
data's contradiction keys) and the block's counts (`meta`), each dropped or rejected one as the JSON line the local
engine writes (`_payload`, bytes).
"""

from __future__ import annotations

import dataclasses
import io as stdio
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa

from workbench.clean import pipeline
from workbench.clean.driver import Shape, ShapeBatch
from workbench.dedup.contamination import EvalIndex
from workbench.dedup.exact import ExactConfig, key_expr
from workbench.dedup.minhash import NearConfig, NearDuplicates
from workbench.dedup.stages import DedupStages
from workbench.frames import HISTORY_TYPE, rows_to_frame
from workbench.io.jsontext import jsonl_line
from workbench.io.options import DuplicateKeys
from workbench.io.reader import RecordReader
from workbench.records import EXTRA

SIDE_KINDS = ("dropped", "reject", "conv", "reported", "leak", "keys", "meta")
SCORE_TYPE = pl.Struct({"name": pl.String, "value": pl.Float64})  # the score that decided a score rule's drop
SCHEMA: dict[str, pl.DataType] = {
    "_kind": pl.String(),
    "_line": pl.Int64(),
    "instruction": pl.String(),
    "input": pl.String(),
    "output": pl.String(),
    "system": pl.String(),
    "history": HISTORY_TYPE,
    "chosen": pl.String(),
    "rejected": pl.String(),
    "label": pl.Boolean(),
    EXTRA: pl.String(),
    "score": SCORE_TYPE,
    "_output_tokens": pl.Int64(),
    "_exact": pl.UInt64(),
    "_size": pl.Int64(),
    "_bands": pl.List(pl.UInt64),
    "_set": pl.List(pl.UInt32),
    "_fwd": pl.UInt64(),
    "_rev": pl.UInt64(),
    "_payload": pl.Binary(),
    "_rule": pl.String(),
}


def frame(kind: str, **cols: Any) -> pl.DataFrame:
    """A frame of the block schema: the given columns, the rest null."""
    height = len(next(iter(cols.values())))
    out = pl.DataFrame(
        {
            name: cols[name] if name in cols else pl.repeat(None, height, dtype=dtype, eager=True)
            for name, dtype in SCHEMA.items()
            if name != "_kind"
        }
    )
    return out.with_columns(pl.lit(kind, dtype=pl.String).alias("_kind")).select(
        pl.col(name).cast(dt) for name, dt in SCHEMA.items()
    )


def concat(parts: list[pl.DataFrame]) -> pa.Table:
    return pl.concat(parts).to_arrow() if parts else frame("meta", _line=[]).to_arrow()


def of_kind(table: pa.Table, kinds: tuple[str, ...], columns: list[str]) -> pa.Table:
    """The rows of a block of the given kinds, with `columns`."""
    out = pl.DataFrame(pl.from_arrow(table))
    return out.filter(pl.col("_kind").is_in(list(kinds))).select(columns).to_arrow()


def dropped_frame(shape: Shape, dropped: pl.DataFrame) -> pl.DataFrame:
    """Dropped records as the lines the local engine writes to `.dropped.jsonl`, with their rule."""
    buf = stdio.BytesIO()
    shape.write_dropped(buf, dropped)
    payload = [line + b"\n" for line in buf.getvalue().split(b"\n") if line]
    return frame("dropped", _line=dropped["_line"], _payload=payload, _rule=dropped["_rule"])


def _list_column(values: np.ndarray, sizes: np.ndarray, dtype: pl.DataType) -> pl.Series:
    offsets = pa.array(np.r_[0, np.cumsum(sizes)].astype(np.int32))
    return pl.Series(pl.from_arrow(pa.ListArray.from_arrays(offsets, pa.array(values)))).cast(dtype)


def side_rows(batch: ShapeBatch, blank_lines: int, counts: Counter[str]) -> list[pl.DataFrame]:
    """Rejects, records dropped while reading, tool conversations and the block's counts (what reading
    found)."""
    parts = []
    if batch.rejects:
        parts.append(
            frame(
                "reject",
                _line=[r.line for r in batch.rejects],
                _payload=[jsonl_line(r.to_json()) for r in batch.rejects],
                _rule=[r.kind for r in batch.rejects],
            )
        )
    if batch.dropped:
        parts.append(
            frame(
                "dropped",
                _line=[0] * len(batch.dropped),
                _payload=[line for line, _ in batch.dropped],
                _rule=[rule for _, rule in batch.dropped],
            )
        )
    if batch.conversations:
        parts.append(
            frame(
                "conv",
                _line=[n for n, _ in batch.conversations],
                _payload=[jsonl_line(c) for _, c in batch.conversations],
            )
        )
    meta = {"read": batch.size, "bytes": batch.nbytes, "blank_lines": blank_lines, "counts": dict(counts)}
    parts.append(frame("meta", _line=[0], _payload=[orjson.dumps(meta)]))
    return parts


@dataclasses.dataclass(frozen=True)
class BlockWork:
    """What a task needs to clean one block: the record shape (with its profile), the eval index, the dedup
    settings, how to read a byte range (SFT records), and whether kept records carry the `score` column."""

    shape: Shape
    evals: EvalIndex | None
    exact: ExactConfig | None
    near: NearConfig | None
    path: str
    overrides: dict[str, str]
    mapping: dict[str, str]
    duplicate_keys: DuplicateKeys
    batch_size: int
    extra_fields: bool = True
    scored: bool = False

    @property
    def kept_columns(self) -> list[str]:
        """The columns of a kept record after the shape's file-level step: what dedup and the writers read."""
        names = [*self.shape.stage_columns, "_output_tokens", *(["score"] if self.scored else [])]
        return list(dict.fromkeys(names))

    def clean(self, records: pl.DataFrame) -> tuple[list[pl.DataFrame], Counter[str]]:
        """The shape's cleaning, `CLEAN_CHUNK` records at a time as the local driver does, then (for a shape without
        a file-level rule) decontamination and the dedup keys of the kept records."""
        parts: list[pl.DataFrame] = []
        counts: Counter[str] = Counter()
        kept: list[pl.DataFrame] = []
        for start in range(0, records.height, pipeline.CLEAN_CHUNK):
            cleaned = self.shape.clean(records.slice(start, pipeline.CLEAN_CHUNK))
            counts.update(cleaned.counts)
            if cleaned.dropped.height:
                parts.append(dropped_frame(self.shape, cleaned.dropped))
            if cleaned.reported.height:
                rep = cleaned.reported
                payload = [orjson.dumps(list(row)) for row in rep.iter_rows()]
                parts.append(frame("reported", _line=rep["_line"], _payload=payload))
            kept.append(cleaned.kept)
        if not kept:
            return parts, counts
        chunk = pl.concat(kept, how="diagonal_relaxed")
        if self.shape.stage_all:
            keys = self.shape.file_keys(chunk)
            if keys is not None and keys.height:
                parts.append(frame("keys", _line=keys["_line"], _fwd=keys["fwd"], _rev=keys["rev"]))
            parts.append(frame("kept", **{c: chunk[c] for c in self.shape.stage_columns}))
        else:
            parts.extend(self.key(chunk))
        return parts, counts

    def key(self, kept: pl.DataFrame) -> list[pl.DataFrame]:
        """Decontamination, then the kept records with their exact key, LSH band keys and shingle set."""
        evals = None
        if self.evals is not None:  # a fresh record of leaks per block: the driver merges them
            evals = dataclasses.replace(self.evals, leaked={k: set() for k in self.evals.leaked})
        kept, contaminated = DedupStages(exact=None, near=None, semantic=None, evals=evals).stream(kept)
        parts = [dropped_frame(self.shape, d) for d in contaminated if d.height]
        if evals is not None:
            items = sorted(i for found in evals.leaked.values() for i in found)
            if items:
                parts.append(frame("leak", _line=[0] * len(items), _payload=[i.encode() for i in items]))
        cols: dict[str, Any] = {c: kept[c] for c in self.kept_columns}
        if self.exact is not None:
            cols["_exact"] = kept.select(key_expr(self.exact).cast(pl.UInt64))[:, 0]
        if self.near is not None and kept.height:
            near = NearDuplicates(self.near)
            near.add(kept)
            keys = np.concatenate(near.keys)
            cols["_bands"] = _list_column(keys.ravel(), np.full(len(keys), keys.shape[1]), pl.List(pl.UInt64))
            cols["_set"] = _list_column(np.concatenate(near.sets), np.concatenate(near.set_sizes), pl.List(pl.UInt32))
            cols["_size"] = pl.Series(np.concatenate(near.sizes).astype(np.int64))
        parts.append(frame("kept", **cols))
        return parts

    def range_block(self, table: pa.Table) -> pa.Table:
        """Read, clean and key one byte range of SFT records (a block of `start`, `end`, `first` rows)."""
        from workbench.clean.sft import SftShape

        assert isinstance(self.shape, SftShape)
        parts: list[pl.DataFrame] = []
        for start, end, first in zip(*(table[c].to_pylist() for c in ("start", "end", "first")), strict=True):
            reader = RecordReader(
                Path(self.path), self.overrides, self.batch_size, self.duplicate_keys, extra_fields=self.extra_fields
            )
            reader.mapping = self.mapping
            for batch in reader.read_range(start, end, first):
                frames, counts = self.clean(rows_to_frame(batch.lines, batch.rows, batch.extras))
                blank, reader.blank_lines = reader.blank_lines, 0
                parts.extend([*frames, *side_rows(self.shape.batch(batch), blank, counts)])
        return concat(parts)

    def frame_block(self, table: pa.Table) -> pa.Table:
        """Clean and key one block of records parsed on the driver (the shape's frame)."""
        frames, counts = self.clean(pl.DataFrame(pl.from_arrow(table)))
        meta = {"read": 0, "bytes": 0, "blank_lines": 0, "counts": dict(counts)}
        return concat([*frames, frame("meta", _line=[0], _payload=[orjson.dumps(meta)])])

    def restage(self, drops: pl.DataFrame | None) -> Callable[[pa.Table], pa.Table]:
        """For a shape with a file-level rule: a block's kept records less the file-level drops (`drops`), then
        decontaminated and keyed."""

        def step(table: pa.Table) -> pa.Table:
            blocks = pl.DataFrame(pl.from_arrow(table))
            kept = blocks.filter(pl.col("_kind") == "kept").select(self.shape.stage_columns)
            kept, dropped = self.shape.before_dedup(kept, drops)
            parts = [dropped_frame(self.shape, dropped)] if dropped.height else []
            return concat([*parts, *self.key(kept)])

        return step
