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


def ngrams_hash(token_hash: pl.Expr, group: pl.Expr, n: pl.Expr, n_min: int, n_max: int) -> pl.Expr:
    """`ngram_hash` with each row's own n (`n`, between `n_min` and `n_max`), in one pass over all the rows."""
    combined = token_hash
    for k in range(1, n_max):
        term = token_hash.shift(-k) * pl.lit(_multiplier(k), dtype=pl.UInt64)
        combined = combined ^ (term if k < n_min else pl.when(n > k).then(term).otherwise(pl.lit(0, dtype=pl.UInt64)))
    valid = group.shift(-(n_min - 1)) == group
    for m in range(n_min + 1, n_max + 1):
        valid = pl.when(n == m).then(group.shift(-(m - 1)) == group).otherwise(valid)
    return pl.when(valid).then(combined)


# The token hash of a null text (no list of tokens: it explodes to one null token; an empty list to no row).
_NULL_TOKEN_HASH: int = pl.Series([None], dtype=pl.String).hash(0).item()


def record_ngrams(texts: pl.Series, n_latin: int, n_cjk: int) -> pl.DataFrame:
    """One row per (record, shingle): columns `rec` (u32 position in `texts`) and `h` (u64 hash).

    Rows are sorted by `rec`, and every record has at least one row. Tokens are hashed inside their lists and only
    the hashes exploded (8 bytes a token, not the token text), and both n-gram lengths are computed in one pass: the
    n-grams of long Chinese text (a token a character) are the largest transient of near-duplicate detection.
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
    tokens = pl.col("tok").list.len()
    # Records too short for one n-gram: the hash of their whole token sequence, or of their raw text.
    short = frame.filter(tokens.fill_null(1) < pl.col("n")).select(
        "rec",
        pl.when(tokens > 0).then(pl.col("tok").list.join("\x1f").hash(1)).otherwise(pl.col("t").hash(2)).alias("h"),
    )
    hashes = frame.select("rec", "n", pl.col("tok").list.eval(pl.element().hash(0)).alias("th"))
    del frame
    exploded = hashes.explode("th").with_columns(pl.col("th").fill_null(_NULL_TOKEN_HASH))
    del hashes
    lo, hi = sorted((n_latin, n_cjk))
    grams = exploded.select("rec", ngrams_hash(pl.col("th"), pl.col("rec"), pl.col("n"), lo, hi).alias("h"))
    del exploded
    return pl.concat([grams.drop_nulls("h"), short]).sort("rec", maintain_order=True)


def to_u32(hashes: np.ndarray) -> np.ndarray:
    """Fold 64-bit hashes into 32 bits (MinHash works on 32-bit values here)."""
    h = hashes.astype(np.uint64, copy=False)
    return ((h >> np.uint64(32)) ^ (h & np.uint64(0xFFFFFFFF))).astype(np.uint32)
