"""Token n-gram hashes per record, computed in bulk with polars (explode → hash → shifted combine).

Tokens follow `workbench.text`: a CJK character is one token, a run of other word characters is one token.
So n-grams are word n-grams in Latin text and character n-grams in Chinese text, and a record's n is chosen by
its dominant script (`n_cjk` when CJK, else `n_latin`). A record with fewer than n tokens gets one shingle: the
hash of all its tokens (or of its raw text when it has none), so that no record has an empty set.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from workbench import text

# Odd 64-bit multipliers that make the combined n-gram hash depend on token order.
MULTIPLIERS = [
    1,
    0x9E3779B97F4A7C15,
    0xC2B2AE3D27D4EB4F,
    0x165667B19E3779F9,
    0xD6E8FEB86659FD93,
    0xFF51AFD7ED558CCD,
    0xC4CEB9FE1A85EC53,
    0x94D049BB133111EB,
    0xBF58476D1CE4E5B9,
    0x27D4EB2F165667C5,
]


def _multiplier(k: int) -> int:
    if k < len(MULTIPLIERS):
        return MULTIPLIERS[k]
    return (MULTIPLIERS[k % len(MULTIPLIERS)] * (2 * k + 1)) & 0xFFFFFFFFFFFFFFFF | 1


def ngram_hash(token_hash: pl.Expr, group: pl.Expr, n: int) -> pl.Expr:
    """Over exploded tokens (one row per token, `group` the record id, rows of a record contiguous):
    a 64-bit hash of the n-gram that starts at each token, null where fewer than n tokens of the record follow."""
    combined = token_hash
    for k in range(1, n):
        combined = combined ^ (token_hash.shift(-k) * pl.lit(_multiplier(k), dtype=pl.UInt64))
    return pl.when(group.shift(-(n - 1)) == group).then(combined)


def record_ngrams(texts: pl.Series, n_latin: int, n_cjk: int) -> pl.DataFrame:
    """One row per (record, shingle): columns `rec` (u32 position in `texts`) and `h` (u64 hash).

    Rows are sorted by `rec`, and every record has at least one row.
    """
    frame = pl.DataFrame({"t": texts}).with_row_index("rec")
    frame = (
        frame.lazy()
        .with_columns(
            pl.when(text.script_expr(pl.col("t")) == "cjk").then(pl.lit(n_cjk)).otherwise(pl.lit(n_latin)).alias("n"),
            pl.col("t").str.extract_all(text.TOKEN_PATTERN).alias("tok"),
        )
        .collect()
    )
    exploded = frame.select("rec", "n", "tok").explode("tok").with_columns(pl.col("tok").hash(0).alias("th"))
    rec, th = pl.col("rec"), pl.col("th")
    parts = []
    for n in sorted({n_latin, n_cjk}):
        same_n = exploded.filter(pl.col("n") == n) if n_latin != n_cjk else exploded
        parts.append(same_n.select("rec", ngram_hash(th, rec, n).alias("h")).drop_nulls("h"))
    grams = pl.concat(parts)
    # Records too short for one n-gram: the hash of their whole token sequence, or of their raw text.
    covered = grams.select(pl.col("rec").unique())
    short = frame.join(covered, on="rec", how="anti").select(
        "rec",
        pl.when(pl.col("tok").list.len() > 0)
        .then(pl.col("tok").list.join("\x1f").hash(1))
        .otherwise(pl.col("t").hash(2))
        .alias("h"),
    )
    return pl.concat([grams, short]).sort("rec", maintain_order=True)


def to_u32(hashes: np.ndarray) -> np.ndarray:
    """Fold 64-bit hashes into 32 bits (MinHash works on 32-bit values here)."""
    h = hashes.astype(np.uint64, copy=False)
    return ((h >> np.uint64(32)) ^ (h & np.uint64(0xFFFFFFFF))).astype(np.uint32)
