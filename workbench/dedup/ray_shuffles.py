"""Exact and near duplicates across a Ray Data dataset, by shuffles: the decisions of `dedup.exact` and
`dedup.minhash` that need every record, as group-bys on key partitions (`clean.ray_engine` drives them).

1. **exact duplicates** (`exact_drops`): (key, line) rows grouped by key partition; in each group the first line
   of a key is kept, later ones name it.
2. **near duplicates** (`near_drops`): (band, band key, line) rows of the records that survived step 1, grouped by
   key partition; each group emits the candidate pairs of its buckets (`minhash.bucket_pair_codes`, as locally).
   The distinct pairs go to the driver; the shingle sets of the records in a pair are then grouped by pair (a
   second shuffle), each group verifies its pairs on exact Jaccard similarity (`minhash.exact_jaccard`), and the
   driver resolves them with the keep-order greedy pass (`minhash.greedy_drops`) over the verified pairs only.

The blocks hold a `_kind` column (`kept` rows are the candidates), `_line`, `_exact` (the exact key), `_bands`
(LSH band keys), `_set` (shingle set) and `_size`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from workbench.dedup.minhash import NearConfig, bucket_pair_codes, exact_jaccard, greedy_drops


def _with_part(column: str, parts: int) -> Callable[[pa.Table], pa.Table]:
    def add(table: pa.Table) -> pa.Table:
        """A `_part` column: the key modulo the number of partitions the shuffle groups by."""
        return table.append_column("_part", pa.array((table[column].to_numpy() % parts).astype(np.int64)))

    return add


def _first_of_key(table: pa.Table) -> pa.Table:
    """One key partition: every record after the first of its key, with the line it duplicates."""
    frame = pl.DataFrame(pl.from_arrow(table)).sort("_exact", "_line")
    first = pl.col("_line").first().over("_exact").alias("duplicate_of")
    return (
        frame.with_columns(first)
        .filter(pl.col("_line") != pl.col("duplicate_of"))
        .select("_line", "duplicate_of")
        .to_arrow()
    )


def _bucket_pairs(table: pa.Table) -> pa.Table:
    """One key partition of (band, key, line) rows: the candidate pairs of its buckets, coded a << 32 | b (a < b)."""
    frame = pl.DataFrame(pl.from_arrow(table)).sort("_band", "_key", "_line")
    codes = [np.empty(0, dtype=np.uint64)]
    for (_band,), part in frame.group_by("_band", maintain_order=True):
        lines = part["_line"].to_numpy()
        codes.append(bucket_pair_codes(lines, part["_key"].to_numpy()))
    return pa.table({"code": pa.array(np.unique(np.concatenate(codes)), pa.uint64())})


def _verify_pairs(threshold: float) -> Callable[[pa.Table], pa.Table]:
    def verify(table: pa.Table) -> pa.Table:
        """One partition of (pair, line, size, set) rows, two a pair: the pairs at or above the threshold."""
        frame = pl.DataFrame(pl.from_arrow(table)).sort("_pair", "_line")
        sets = frame["_set"]
        offsets = np.r_[0, np.cumsum(sets.list.len().to_numpy())]
        values = sets.explode().to_numpy().astype(np.uint32) if frame.height else np.empty(0, np.uint32)
        n = frame.height // 2
        pairs = np.stack([np.arange(n) * 2, np.arange(n) * 2 + 1], 1)
        sims = exact_jaccard(values, offsets, pairs)
        lines, sizes = frame["_line"].to_numpy(), frame["_size"].to_numpy()
        keep = sims >= threshold
        return pa.table(
            {
                "a": lines[0::2][keep],
                "b": lines[1::2][keep],
                "size_a": sizes[0::2][keep],
                "size_b": sizes[1::2][keep],
                "similarity": sims[keep],
            }
        )

    return verify


def _collect(ds: Any) -> pl.DataFrame:
    tables = [pl.DataFrame(pl.from_arrow(t)) for t in ds.iter_batches(batch_format="pyarrow", batch_size=None)]
    tables = [t for t in tables if t.width]
    return pl.concat(tables) if tables else pl.DataFrame()


def exact_drops(blocks: Any, parts: int) -> pl.DataFrame:
    """`_line`, `duplicate_of` of every kept record after the first of its exact key, in line order."""
    empty = pl.DataFrame(schema={"_line": pl.Int64, "duplicate_of": pl.Int64})

    def keys(table: pa.Table) -> pa.Table:
        frame = pl.DataFrame(pl.from_arrow(table)).filter(pl.col("_kind") == "kept").select("_line", "_exact")
        return _with_part("_exact", parts)(frame.to_arrow())

    keyed = blocks.map_batches(keys, batch_format="pyarrow", batch_size=None)
    found = _collect(keyed.groupby("_part", num_partitions=parts).map_groups(_first_of_key, batch_format="pyarrow"))
    return found.sort("_line") if found.height else empty


def near_drops(ray: Any, blocks: Any, exact_lines: np.ndarray, cfg: NearConfig, parts: int) -> pl.DataFrame:
    """Near-duplicate drops (`_line`, `duplicate_of`, `similarity`) among the kept records not dropped as exact
    duplicates: LSH buckets by shuffle, verification by shuffle, resolution here."""
    empty = pl.DataFrame(schema={"_line": pl.Int64, "duplicate_of": pl.Int64, "similarity": pl.Float64})
    gone = pl.Series(exact_lines, dtype=pl.Int64).implode()

    def survivors(table: pa.Table, columns: list[str]) -> pl.DataFrame:
        frame = pl.DataFrame(pl.from_arrow(table))
        return frame.filter((pl.col("_kind") == "kept") & ~pl.col("_line").is_in(gone)).select(columns)

    def band_rows(table: pa.Table) -> pa.Table:
        frame = survivors(table, ["_line", "_bands"])
        rows = frame.with_columns(pl.int_ranges(pl.col("_bands").list.len()).cast(pl.List(pl.UInt16)).alias("_band"))
        rows = rows.explode("_bands", "_band").rename({"_bands": "_key"})
        return rows.with_columns((pl.col("_key") % parts).cast(pl.Int64).alias("_part")).to_arrow()

    banded = blocks.map_batches(band_rows, batch_format="pyarrow", batch_size=None)
    codes = _collect(banded.groupby("_part", num_partitions=parts).map_groups(_bucket_pairs, batch_format="pyarrow"))
    if codes.height == 0:
        return empty
    code = np.unique(codes["code"].to_numpy().astype(np.uint64))
    a = (code >> np.uint64(32)).astype(np.int64)
    b = (code & np.uint64(0xFFFFFFFF)).astype(np.int64)
    ends = np.r_[a, b]
    pair_of = np.r_[np.arange(len(code)), np.arange(len(code))]
    order = np.argsort(ends, kind="stable")
    ends, pair_of = ends[order], pair_of[order]
    ends_ref = ray.put((ends, pair_of))

    def pair_rows(table: pa.Table) -> pa.Table:
        """Each record in a candidate pair, once per pair it is in, with its shingle set and size."""
        e, p = ray.get(ends_ref)
        frame = survivors(table, ["_line", "_size", "_set"])
        lines = frame["_line"].to_numpy()
        lo, hi = np.searchsorted(e, lines, "left"), np.searchsorted(e, lines, "right")
        count = hi - lo
        take = np.repeat(np.arange(len(lines)), count)
        spans = [np.arange(x, y) for x, y in zip(lo[count > 0], hi[count > 0], strict=True)]
        pos = np.concatenate(spans) if spans else np.empty(0, dtype=np.int64)
        pair = p[pos.astype(np.int64)] if len(pos) else np.empty(0, dtype=np.int64)
        rows = frame.select(pl.all().gather(take)).with_columns(pl.Series("_pair", pair, dtype=pl.Int64))
        return rows.with_columns((pl.col("_pair") % parts).alias("_part")).to_arrow()

    paired = blocks.map_batches(pair_rows, batch_format="pyarrow", batch_size=None)
    verified = _collect(
        paired.groupby("_part", num_partitions=parts).map_groups(_verify_pairs(cfg.threshold), batch_format="pyarrow")
    )
    if verified.height == 0:
        return empty
    lines = np.unique(np.r_[verified["a"].to_numpy(), verified["b"].to_numpy()])
    sizes = np.zeros(len(lines), dtype=np.int64)
    sizes[np.searchsorted(lines, verified["a"].to_numpy())] = verified["size_a"].to_numpy()
    sizes[np.searchsorted(lines, verified["b"].to_numpy())] = verified["size_b"].to_numpy()
    pairs = np.stack(
        [np.searchsorted(lines, verified["a"].to_numpy()), np.searchsorted(lines, verified["b"].to_numpy())], 1
    )
    rows = greedy_drops(lines, sizes, pairs, verified["similarity"].to_numpy(), cfg.keep)
    return pl.DataFrame(rows, schema=empty.schema, orient="row")
