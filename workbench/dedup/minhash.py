"""Near-duplicates with MinHash + LSH.

Signatures are datasketch's (`MinHash` with its default `affine32` scheme and the same seed gives the same
values: a test checks it), but computed for a whole batch at once in numpy instead of one Python object per
record. The number of bands and rows is datasketch's optimum for the threshold (`MinHashLSH(threshold,
num_perm, weights).b/.r`, weighted towards recall). Banding, candidate pairs and cluster resolution are
vectorised with numpy/polars; only the candidate pairs (a few per duplicate) are looked at one by one.

LSH candidates are then verified on their exact shingle sets (kept per record as sorted 32-bit hashes), so
the threshold applies to the true Jaccard similarity, not to its estimate.

Resolution is deterministic and greedy: records are visited in keep order (`first`: input order; `longest`:
longest text first, then input order); a record is dropped when its Jaccard similarity to an already kept
record reaches the threshold, and the dropped record names that kept record and the similarity. No chains:
every dropped record is within the threshold of the one it names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from workbench.dedup.shingles import record_ngrams, to_u32
from workbench.records import TEXT_FIELDS, FieldName
from workbench.text import joined_text


class NearConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(
        0.8, gt=0, lt=1, description="Estimated Jaccard similarity at which records are duplicates."
    )
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations (signature length).")
    ngram_latin: int = Field(3, ge=1, le=10, description="Word n-gram length for Latin-script (and other) text.")
    ngram_cjk: int = Field(5, ge=1, le=20, description="Character n-gram length for CJK text.")
    fields: list[FieldName] = Field(default_factory=lambda: list(TEXT_FIELDS), description="Fields compared.")
    keep: Literal["first", "longest"] = Field("first", description="Which record of a duplicate group is kept.")
    seed: int = Field(1, description="MinHash permutation seed (datasketch's default is 1).")
    # Every LSH candidate is verified against the threshold with its signature estimate, so a false positive
    # costs a comparison while a false negative is a missed duplicate: bands are tuned for recall. With
    # 128 permutations at 0.8 this gives 16 bands of 8 rows: a pair at Jaccard 0.8 becomes a candidate with
    # probability 0.95, at 0.85 with 0.99 (datasketch's equal weighting: 0.40 and 0.69).
    false_negative_weight: float = Field(
        0.95, gt=0, lt=1, description="Weight of missed pairs against false candidates when choosing LSH bands."
    )


_MAX_BUCKET_PAIRS = 64  # buckets larger than this are joined to their first member only (star), not all pairs


@cache
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's `affine32` permutations (`MinHash(num_perm, seed).permutations`), drawn the same way from
    `RandomState(seed)` without importing datasketch: its import pulls in scipy, 30 MB of a dedup run's memory."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


@cache
def bands(threshold: float, num_perm: int, false_negative_weight: float) -> tuple[int, int]:
    """datasketch's optimal LSH bands and rows (`MinHashLSH(threshold, num_perm, weights).b/.r`): the (b, r), b*r <=
    num_perm, that minimise the weighted areas of false positives (integral of 1-(1-s^r)^b over [0, threshold]) and
    false negatives ((1-s^r)^b over [threshold, 1]), first minimum in datasketch's loop order. The integrands are
    polynomials of degree b*r, integrated exactly by Gauss-Legendre quadrature (datasketch uses scipy's `quad`; a
    test checks that both choose the same)."""
    x, w = np.polynomial.legendre.leggauss(num_perm // 2 + 1)  # exact up to degree num_perm + 1

    def nodes(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
        return (hi - lo) / 2 * x + (hi + lo) / 2, (hi - lo) / 2 * w

    (s_fp, w_fp), (s_fn, w_fn) = nodes(0.0, threshold), nodes(threshold, 1.0)
    best, opt = float("inf"), (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = float(np.dot(w_fp, 1 - (1 - s_fp ** float(r)) ** float(b)))
            fn = float(np.dot(w_fn, (1 - s_fn ** float(r)) ** float(b)))
            error = fp * (1 - false_negative_weight) + fn * false_negative_weight
            if error < best:
                best, opt = error, (b, r)
    return opt


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser, as datasketch applies it before the affine permutations."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def signatures(hashes: np.ndarray, starts: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures (records × num_perm, uint32) from 32-bit shingle hashes grouped by record.

    `starts[i]` is the index in `hashes` where record i's shingles begin (every record has at least one).
    """
    a, b = permutations(num_perm, seed)
    mixed = fmix32(hashes.astype(np.uint32, copy=False))
    out = np.empty((len(starts), num_perm), dtype=np.uint32)
    permuted = np.empty_like(mixed)
    with np.errstate(over="ignore"):
        for k in range(num_perm):  # one permutation at a time, in place: memory stays at one copy of the hashes
            np.multiply(mixed, a[k], out=permuted)
            np.add(permuted, b[k], out=permuted)
            out[:, k] = np.minimum.reduceat(permuted, starts)
    return out


def batch_shingles(frame: pl.DataFrame, cfg: NearConfig) -> tuple[np.ndarray, np.ndarray]:
    """32-bit shingle hashes of every record, grouped by record: (hashes, starts)."""
    texts = frame.select(joined_text(list(cfg.fields)).alias("t"))["t"]
    grams = record_ngrams(texts, cfg.ngram_latin, cfg.ngram_cjk)
    recs = grams["rec"].to_numpy()
    starts = np.flatnonzero(np.r_[True, recs[1:] != recs[:-1]])
    return to_u32(grams["h"].to_numpy()), starts


def batch_signatures(frame: pl.DataFrame, cfg: NearConfig) -> np.ndarray:
    """Signatures for every record of a frame of canonical records."""
    if frame.height == 0:
        return np.empty((0, cfg.num_perm), dtype=np.uint32)
    hashes, starts = batch_shingles(frame, cfg)
    return signatures(hashes, starts, cfg.num_perm, cfg.seed)


def shingle_sets(hashes: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per record, its distinct shingle hashes in sorted order (concatenated) and where each record begins (every
    record has at least one hash)."""
    counts = np.diff(np.r_[starts, len(hashes)])
    keys = np.repeat(np.arange(len(starts), dtype=np.uint64), counts)  # record << 32 | hash, built in place
    keys <<= np.uint64(32)
    keys |= hashes
    # Sort + mask rather than np.unique: numpy 2.4's unique took 100x longer on 10M keys here.
    keys.sort()
    distinct = np.empty(len(keys), dtype=bool)
    distinct[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=distinct[1:])
    # Sorting by record keeps each record's keys where they were: record i still spans starts[i]:starts[i + 1].
    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(np.add.reduceat(distinct, starts) if len(starts) else [], out=offsets[1:])
    return keys[distinct].astype(np.uint32), offsets


def exact_jaccard(sets: np.ndarray, offsets: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Jaccard similarity of the shingle sets of each pair of records."""
    out = np.empty(len(pairs), dtype=np.float64)
    for k, (i, j) in enumerate(pairs):
        a, b = sets[offsets[i] : offsets[i + 1]], sets[offsets[j] : offsets[j + 1]]
        inter = np.intersect1d(a, b, assume_unique=True).size
        out[k] = inter / max(len(a) + len(b) - inter, 1)
    return out


def keep_order(lines: np.ndarray, sizes: np.ndarray, keep: str) -> np.ndarray:
    """Positions in the order records are considered for keeping: input order, or longest first then input order."""
    return np.lexsort((lines, -sizes)) if keep == "longest" else np.argsort(lines, kind="stable")


SHINGLE_SPILL = "shingles.u32"
VERIFY_CHUNK = 256  # candidate pairs verified per mapping of the spilled shingle sets: a page fault maps up to 64 KB
ADD_CHUNK = 4096  # records shingled at once: 25,000 Chinese records of 1,000 characters took 700 MB, 4,096 ~115 MB


def bucket_pair_codes(order: np.ndarray, sorted_key: np.ndarray) -> np.ndarray:
    """Pairs of record positions that share a key, coded i << 32 | j (i < j): every pair of a bucket of up to
    `_MAX_BUCKET_PAIRS` members, the first member with each other one in a larger bucket (a star).

    `order` sorts the records by key (a stable sort, so a bucket's members are in position order); computed for all
    buckets of one size at a time with numpy, never one Python tuple per pair.
    """
    n = len(sorted_key)
    if n < 2:
        return np.empty(0, dtype=np.uint64)
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    sizes = np.diff(np.r_[starts, n])
    pos = order.astype(np.uint64)
    parts: list[np.ndarray] = []
    for size in np.unique(sizes[sizes > 1]):
        first = starts[sizes == size]
        if size <= _MAX_BUCKET_PAIRS:
            a, b = np.triu_indices(int(size), 1)
            left, right = pos[first[:, None] + a[None, :]], pos[first[:, None] + b[None, :]]
        else:
            others = np.arange(1, int(size))
            left = np.repeat(pos[first], size - 1).reshape(len(first), -1)
            right = pos[first[:, None] + others[None, :]]
        parts.append(((left << np.uint64(32)) | right).ravel())
    return np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.uint64)


@dataclass
class NearDuplicates:
    """Collects compact state batch by batch, then resolves duplicates across all of it.

    Per record only what resolution needs stays in memory: its LSH band keys (8 bytes a band: 128 bytes for 16
    bands, a quarter of the 128-value signature they are made from), its line, text length and shingle count. The
    shingle sets that verify candidates are appended to a file in `spill_dir` when one is given and read back
    memory-mapped, so only the pages of the few candidates are touched.
    """

    cfg: NearConfig
    spill_dir: Path | None = None
    lines: list[np.ndarray] = field(default_factory=list)
    keys: list[np.ndarray] = field(default_factory=list)
    sizes: list[np.ndarray] = field(default_factory=list)
    sets: list[np.ndarray] = field(default_factory=list)
    set_sizes: list[np.ndarray] = field(default_factory=list)

    def add(self, frame: pl.DataFrame) -> None:
        """Add a batch of records (`_line` plus canonical fields), `ADD_CHUNK` records at a time: the n-grams of
        a chunk (one hash per character 5-gram of Chinese text) are the largest transient of the pipeline."""
        for start in range(0, frame.height, ADD_CHUNK):
            self._add(frame.slice(start, ADD_CHUNK))

    def _add(self, frame: pl.DataFrame) -> None:
        if frame.height == 0:
            return
        self.lines.append(frame["_line"].to_numpy().astype(np.int64))
        hashes, starts = batch_shingles(frame, self.cfg)
        self.keys.append(self.band_keys(signatures(hashes, starts, self.cfg.num_perm, self.cfg.seed)))
        sets, offsets = shingle_sets(hashes, starts)
        if self.spill_dir is not None:
            with (self.spill_dir / SHINGLE_SPILL).open("ab") as f:
                f.write(sets.tobytes())
        else:
            self.sets.append(sets)
        self.set_sizes.append(np.diff(offsets))
        sizes = frame.select(joined_text(list(self.cfg.fields)).str.len_chars().cast(pl.Int64))[:, 0]
        self.sizes.append(sizes.to_numpy())

    def band_keys(self, sig: np.ndarray) -> np.ndarray:
        """One 64-bit key per LSH band and record (records x bands): a hash of the band's rows of the signature."""
        b, r = bands(self.cfg.threshold, self.cfg.num_perm, self.cfg.false_negative_weight)
        keys = np.empty((len(sig), b), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for band in range(b):
                cols = sig[:, band * r : (band + 1) * r].astype(np.uint64)
                key = np.zeros(len(sig), dtype=np.uint64)
                for j in range(r):
                    key = key * np.uint64(0x100000001B3) ^ cols[:, j]
                keys[:, band] = key
        return keys

    def candidate_pairs(self, sig: np.ndarray) -> np.ndarray:
        """Pairs (i, j), i < j, of record positions that share an LSH bucket in at least one band."""
        return self.pairs_of_band_keys(self.band_keys(sig))

    def pairs_of_band_keys(self, keys: np.ndarray) -> np.ndarray:
        """`candidate_pairs` from the band keys of the records.

        Pairs are coded as one uint64 (i << 32 | j) and merged band by band into one sorted array of distinct
        codes, so memory is bounded by the distinct pairs plus one band's, whatever the bucket sizes.
        """
        codes = np.empty(0, dtype=np.uint64)
        for band in range(keys.shape[1]):
            key = np.ascontiguousarray(keys[:, band])
            order = np.argsort(key, kind="stable")
            band_codes = bucket_pair_codes(order, key[order])
            if band_codes.size:
                codes = np.union1d(codes, band_codes)
        return np.stack(
            [(codes >> np.uint64(32)).astype(np.int64), (codes & np.uint64(0xFFFFFFFF)).astype(np.int64)], 1
        )

    def _all_sets(self) -> np.ndarray:
        if self.spill_dir is None:
            return np.concatenate(self.sets) if self.sets else np.empty(0, dtype=np.uint32)
        path = self.spill_dir / SHINGLE_SPILL
        if path.stat().st_size == 0:
            return np.empty(0, dtype=np.uint32)
        return np.memmap(path, dtype=np.uint32, mode="r")

    def resolve(self) -> pl.DataFrame:
        """Dropped records: `_line`, `duplicate_of` (line of the kept record), `similarity`."""
        empty = pl.DataFrame(schema={"_line": pl.Int64, "duplicate_of": pl.Int64, "similarity": pl.Float64})
        if not self.keys:
            return empty
        lines = np.concatenate(self.lines)
        pairs = self.pairs_of_band_keys(np.concatenate(self.keys))
        if len(pairs) == 0:
            return empty
        # Candidates are verified on their exact shingle sets: near the threshold the signature estimate errs
        # by a few hundredths either way (about 0.035 at 128 permutations), which would miss true duplicates.
        offsets = np.r_[0, np.cumsum(np.concatenate(self.set_sizes))]
        sims = np.empty(len(pairs), dtype=np.float64)
        sets = self._all_sets() if self.spill_dir is None else None
        for lo in range(0, len(pairs), VERIFY_CHUNK):
            # The spilled sets are mapped afresh for each chunk of pairs: the pages a chunk touched count in the
            # process's memory until they are unmapped.
            chunk_sets = sets if sets is not None else self._all_sets()
            sims[lo : lo + VERIFY_CHUNK] = exact_jaccard(chunk_sets, offsets, pairs[lo : lo + VERIFY_CHUNK])
            del chunk_sets
        keep_pairs = sims >= self.cfg.threshold
        pairs, sims = pairs[keep_pairs], sims[keep_pairs]
        if len(pairs) == 0:
            return empty
        rows = greedy_drops(lines, np.concatenate(self.sizes), pairs, sims, self.cfg.keep)
        return pl.DataFrame(rows, schema=empty.schema, orient="row")


def greedy_drops(
    lines: np.ndarray, sizes: np.ndarray, pairs: np.ndarray, sims: np.ndarray, keep: str
) -> list[tuple[int, int, float]]:
    """The keep-order resolution over verified pairs (positions into `lines`/`sizes`): (dropped line, kept line,
    similarity), sorted by dropped line. Needs only the records that appear in a pair."""
    rank = keep_order(lines, sizes, keep)
    position = np.empty_like(rank)
    position[rank] = np.arange(len(rank))
    # Orient every pair as (earlier in keep order, later); visit the later ones in keep order.
    a, b = pairs[:, 0], pairs[:, 1]
    swap = position[a] > position[b]
    first = np.where(swap, b, a)
    second = np.where(swap, a, b)
    order = np.lexsort((position[first], position[second]))
    dropped: dict[int, tuple[int, float]] = {}
    for k in order:
        later, earlier = int(second[k]), int(first[k])
        if later in dropped or earlier in dropped:
            continue  # already dropped, or its partner was: a dropped record keeps nothing out
        dropped[later] = (earlier, float(sims[k]))
    return sorted((int(lines[d]), int(lines[e]), s) for d, (e, s) in dropped.items())
