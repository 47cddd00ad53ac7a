"""Distributions of scores for the stats file and the pages: count, quantiles and a histogram per score.

Perplexities span orders of magnitude, so their histogram bins are equal in log10; IFD, losses and rewards get
equal-width bins between their minimum and maximum. Pure Python (no numpy or torch): the stats page and the report
import it, as they do `ScorePaths` (where the scored file's stats and manifest lie beside it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench import score_specs
from workbench.errors import WbError


@dataclass(frozen=True)
class ScorePaths:
    scored: Path
    stats: Path
    manifest: Path

    @classmethod
    def for_output(cls, out: Path) -> ScorePaths:
        out = Path(out)
        stem = out.name.removesuffix(".gz").removesuffix(".jsonl").removesuffix(".json")
        return cls(out, out.with_name(f"{stem}.stats.json"), out.with_name(f"{stem}.manifest.json"))


QUANTILES = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
BINS = 20


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        raise ValueError("no values")
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def histogram(values: Sequence[float], log: bool, bins: int = BINS) -> dict[str, Any]:
    """Bin edges (in the score's own units) and counts; the last bin includes its right edge."""
    xs = [math.log10(v) for v in values] if log else list(values)
    lo, hi = min(xs), max(xs)
    if hi == lo:
        hi = lo + 1.0
    width = (hi - lo) / bins
    counts = [0] * bins
    for x in xs:
        counts[min(bins - 1, int((x - lo) / width))] += 1
    edges = [lo + i * width for i in range(bins + 1)]
    if log:
        edges = [10**e for e in edges]
    return {"edges": [round(e, 6) for e in edges], "counts": counts, "log_scale": log}


def summarise(name: str, values: Sequence[float | None]) -> dict[str, Any]:
    """Count, missing, mean, quantiles and histogram of one score over the records."""
    present = sorted(float(v) for v in values if v is not None and math.isfinite(float(v)))
    out: dict[str, Any] = {"records": len(values), "scored": len(present), "missing": len(values) - len(present)}
    if not present:
        return out
    log = score_specs.is_log_scale(name) and present[0] > 0
    out.update(
        {
            "min": round(present[0], 6),
            "max": round(present[-1], 6),
            "mean": round(sum(present) / len(present), 6),
            "quantiles": {f"p{round(q * 100)}": round(quantile(present, q), 6) for q in QUANTILES},
            "histogram": histogram(present, log),
        }
    )
    if name == "ifd":
        out["at_or_above_1"] = sum(1 for v in present if v >= 1.0)
    return out


def summarise_all(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    return {name: summarise(name, [r.get(name) for r in rows]) for name in names}


def read_stats(path: Path) -> dict[str, Any]:
    """A `wb score` stats file (`<scored>.stats.json`); anything else is one clear error."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise WbError(f"{path}: cannot read the score stats: {e}") from None
    if not isinstance(d, dict) or not isinstance(d.get("scores"), dict) or "ifd_definition" not in d:
        raise WbError(f"{path}: not a wb score stats file (<scored>.stats.json)")
    return d
