"""Mixtures of training sources: how many examples of each source one epoch holds, drawn deterministically by seed.

Per source (after its `max_samples` cut and its validation hold-out):
- `epochs: e` puts round(e × N) of its N records in an epoch: whole passes over the source in order, plus a seeded
  sample without replacement for the fraction (`epochs: 2.5` = every record twice, a seeded half a third time);
- `weight: w` shares the weighted part of the epoch: the weighted sources together keep as many examples as they
  have records (sum of their N), and source i gets round(total × w_i / sum of w) of them (largest remainder, so the
  counts add up exactly), by whole passes and a seeded sample as above (a small source with a large weight is
  upsampled, a large one with a small weight subsampled);
- neither: `epochs: 1` (every record once; a single source is exactly the plain `data: FILE`).
`replay: r` adds round(r / (1 - r) × M) examples of the replay set to the M examples of the other sources, so that
replay makes up the share r of the epoch.

The counts are exact (no sampling error in the shares); which records fill a fraction is drawn by a random
generator seeded with the recipe's seed and the source's name, so runs with the same seed see the same records and
adding a source does not change what another source draws.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Share:
    """A source's part of the mixture: `weight` or `epochs` (None and None: epochs 1)."""

    name: str
    records: int
    weight: float | None = None
    epochs: float | None = None


def largest_remainder(total: int, weights: Sequence[float]) -> list[int]:
    """Integers proportional to `weights` that add up to `total` (Hamilton's method; ties: the earlier source)."""
    exact = [total * w / sum(weights) for w in weights]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def counts(shares: Sequence[Share], replay: float | None = None, replay_name: str = "replay") -> dict[str, int]:
    """Examples per epoch of each source (the replay source, when `replay`, is named `replay_name` in `shares`)."""
    main = [s for s in shares if not (replay and s.name == replay_name)]
    weighted = [s for s in main if s.weight is not None]
    out: dict[str, int] = {}
    for s in main:
        if s.weight is None:
            out[s.name] = round((s.epochs if s.epochs is not None else 1.0) * s.records)
    if weighted:
        total = sum(s.records for s in weighted)
        for s, n in zip(weighted, largest_remainder(total, [s.weight or 0.0 for s in weighted]), strict=True):
            out[s.name] = n
    if replay:
        out[replay_name] = round(replay / (1 - replay) * sum(out.values()))
    return {s.name: out[s.name] for s in shares}


def draw(size: int, count: int, seed: int, name: str) -> list[int]:
    """`count` indices into a source of `size` records: whole passes in order, then a seeded sample without
    replacement (kept in source order) for the rest."""
    if size == 0:
        return []
    passes, rest = divmod(count, size)
    rng = random.Random(f"{seed}:{name}")
    return [i for _ in range(passes) for i in range(size)] + sorted(rng.sample(range(size), rest))


def hold_out(size: int, share: float, seed: int, name: str) -> set[int]:
    """Indices of a source held out for its validation loss (none for sources under 10 records, as for one file)."""
    n_val = round(size * share) if size >= 10 else 0
    order = list(range(size))
    random.Random(f"{seed}:{name}:val").shuffle(order)
    return set(order[:n_val])
