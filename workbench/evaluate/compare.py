"""Base vs tuned: bootstrap confidence intervals, paired differences, McNemar's test, wins/ties/losses.

Light on purpose (numpy and the standard library only), so `wb report` and `wb gate` can recompute statistics.

Intervals are percentile bootstraps: resample the items with replacement `n_resamples` times, take the mean of each
resample, and read the (1-confidence)/2 and (1+confidence)/2 quantiles. The difference of two models is bootstrapped
on the per-item differences (a paired bootstrap), which is far tighter than two independent intervals when both
models find the same items hard. A fixed seed gives identical numbers on every run.

Small samples: with no item the mean and its interval are undefined; with one item the mean is that item but an
interval would claim a certainty one item cannot give. The numeric functions return NaN there (n=0: all three;
n=1: the bounds) and `stat` writes null for them in JSON. Missing values (None or NaN, e.g. `loss` without a model)
are left out, pairwise when two models are compared.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

_DECIMALS = 6
_BLOCK_ELEMENTS = 1 << 21  # resample indices drawn per block (16 MiB of int64), whatever the number of items

Values = Sequence[float | int | None] | npt.NDArray[np.floating[Any] | np.integer[Any]]


def bootstrap_mean_ci(
    values: Values, seed: int, n_resamples: int = 10_000, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Mean of `values` and its percentile-bootstrap interval: (mean, lower, upper). NaN where undefined (n < 2)."""
    return _bootstrap_cis(_clean(values)[None, :], seed, n_resamples, confidence)[0]


def _bootstrap_cis(
    rows: npt.NDArray[np.float64], seed: int, n_resamples: int, confidence: float
) -> list[tuple[float, float, float]]:
    """(mean, lower, upper) of each row of a (k, n) array; all rows are resampled with the same item indices, so each
    row gets exactly the numbers `bootstrap_mean_ci` gives it alone."""
    k, n = rows.shape
    if n == 0:
        return [(math.nan, math.nan, math.nan)] * k
    means = rows.mean(axis=1)
    if n == 1:
        return [(float(m), math.nan, math.nan) for m in means]
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    rng = np.random.default_rng(seed)
    resampled = np.empty((k, n_resamples))
    block = max(1, _BLOCK_ELEMENTS // n)  # depends on n only: the same seed draws the same indices for any k
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        for r in range(k):  # row by row: a 2-D gather rows[:, idx] is several times slower
            resampled[r, start:stop] = rows[r][idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    bounds = np.quantile(resampled, [alpha, 1 - alpha], axis=1)
    # With all values equal a quantile can miss the mean in the last bit; keep lower <= mean <= upper.
    return [
        (float(m), min(float(lo), float(m)), max(float(hi), float(m)))
        for m, lo, hi in zip(means, bounds[0], bounds[1], strict=True)
    ]


def paired_bootstrap(
    tuned: Values, base: Values, seed: int, n_resamples: int = 10_000, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Mean of the per-item differences tuned - base and its bootstrap interval: (delta, lower, upper)."""
    t, b = _paired(tuned, base)
    return bootstrap_mean_ci(t - b, seed, n_resamples, confidence)


def mcnemar(tuned01: Values, base01: Values) -> float:
    """Two-sided exact McNemar test of paired 0/1 outcomes: the p-value that tuned and base are right equally often.

    Only the discordant pairs count: b items tuned got right and base wrong, c the reverse. Under the null each
    discordant pair goes either way with probability 1/2, so p = 2 * P(Binomial(b + c, 1/2) <= min(b, c)), capped at
    1 (p = 1 when there is no discordant pair). Computed exactly in integers, so it holds for any b + c; the
    chi-square approximation is not needed.
    """
    t, b = _paired(tuned01, base01)
    for name, arr in (("tuned", t), ("base", b)):
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"mcnemar needs 0/1 outcomes; {name} has other values")
    wins = int(((t == 1) & (b == 0)).sum())
    losses = int(((t == 0) & (b == 1)).sum())
    n, k = wins + losses, min(wins, losses)
    if n == 0:
        return 1.0
    term = tail = 1  # C(n, 0); C(n, i + 1) = C(n, i) * (n - i) / (i + 1), exact in integers
    for i in range(k):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / 2**n)


def win_tie_loss(tuned: Values, base: Values, higher_is_better: bool = True, tol: float = 1e-9) -> tuple[int, int, int]:
    """Per item, does tuned beat base? (wins, ties, losses); differences within `tol` are ties."""
    t, b = _paired(tuned, base)
    diff = t - b if higher_is_better else b - t
    wins = int((diff > tol).sum())
    losses = int((diff < -tol).sum())
    return wins, len(diff) - wins - losses, losses


def stat(
    tuned: Values,
    base: Values | None,
    seed: int,
    binary: bool,
    higher_is_better: bool = True,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """The STAT object of `metrics.json` (docs/run-folder.md) for one metric.

    Always: `tuned` (mean), `lower`, `upper` (its bootstrap interval). With `base`: `base`, `delta` (tuned - base),
    `delta_lower`, `delta_upper` (paired bootstrap), `wins`, `ties`, `losses` (for lower-is-better metrics a lower
    value wins), `mcnemar_p` for 0/1 metrics, and `constant: true` when both models score the same 0 or 1 on every
    item (the comparison then carries no information). Floats are rounded to 6 decimals (the p-value to 6 significant
    digits, so a tiny p does not read as 0); undefined values are None. With `base`, items missing on either side are
    left out of every number, so `delta` is `tuned - base` of the same items.
    """
    if base is None:
        mean, lower, upper = bootstrap_mean_ci(tuned, seed, n_resamples, confidence)
        return {"tuned": _num(mean), "lower": _num(lower), "upper": _num(upper)}
    t, b = _paired(tuned, base)
    (mean, lower, upper), (delta, delta_lower, delta_upper) = _bootstrap_cis(
        np.stack([t, t - b]), seed, n_resamples, confidence
    )
    wins, ties, losses = win_tie_loss(t, b, higher_is_better)
    # Both models give every item the same 0 or 1 (e.g. neither answers any Chinese probe): no decision possible.
    constant = len(t) > 0 and bool(np.all(t == t[0]) and np.all(b == t[0])) and float(t[0]) in (0.0, 1.0)
    return (
        {
            "tuned": _num(mean),
            "lower": _num(lower),
            "upper": _num(upper),
            "base": _num(float(b.mean()) if len(b) else math.nan),
            "delta": _num(delta),
            "delta_lower": _num(delta_lower),
            "delta_upper": _num(delta_upper),
            "wins": wins,
            "ties": ties,
            "losses": losses,
        }
        | ({"mcnemar_p": float(f"{mcnemar(t, b):.6g}")} if binary else {})
        | ({"constant": True} if constant else {})
    )


def set_stat(
    tuned: Callable[[npt.NDArray[np.int64]], float],
    base: Callable[[npt.NDArray[np.int64]], float] | None,
    n: int,
    seed: int,
    n_resamples: int = 2_000,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """The STAT of a set-level metric (macro F1): `tuned(indices)` computes it on a sample of the set's items (an
    index array, repeats allowed). The interval is a percentile bootstrap over items; with `base`, the difference is
    bootstrapped on the same resamples (paired). Fewer resamples than `stat`: each recomputes the metric on a set."""
    everything = np.arange(n)
    value = tuned(everything)
    if n < 2:
        return {"tuned": _num(value), "lower": None, "upper": None}
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, n, size=(n_resamples, n))
    alpha = (1 - confidence) / 2
    t = np.array([tuned(k) for k in samples])
    lo, hi = np.quantile(t, [alpha, 1 - alpha])
    out: dict[str, Any] = {"tuned": _num(value), "lower": _num(min(lo, value)), "upper": _num(max(hi, value))}
    if base is not None:
        base_value = base(everything)
        d = t - np.array([base(k) for k in samples])
        dlo, dhi = np.quantile(d, [alpha, 1 - alpha])
        delta = value - base_value
        out |= {
            "base": _num(base_value),
            "delta": _num(delta),
            "delta_lower": _num(min(dlo, delta)),
            "delta_upper": _num(max(dhi, delta)),
        }
    return out


# --- helpers ------------------------------------------------------------------------------------------------------


def _as_array(values: Values) -> npt.NDArray[np.float64]:
    if isinstance(values, np.ndarray):
        return values.astype(np.float64)
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


def _clean(values: Values) -> npt.NDArray[np.float64]:
    x = _as_array(values)
    return x[~np.isnan(x)]


def _paired(tuned: Values, base: Values) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    t, b = _as_array(tuned), _as_array(base)
    if t.shape != b.shape:
        raise ValueError(f"paired comparison needs the same items: {len(t)} tuned values, {len(b)} base values")
    keep = ~(np.isnan(t) | np.isnan(b))
    return t[keep], b[keep]


def _num(value: float) -> float | None:
    return None if math.isnan(value) else round(value, _DECIMALS)


def change(stat: dict[str, Any], higher_is_better: bool = True) -> str:
    """What a STAT says about tuned vs base, in words: `better` / `worse` when the 95% paired interval excludes 0,
    `no clear change` when it does not, `no information` when both models score the same 0 or 1 on every item, and
    "" without base scores."""
    if stat.get("constant"):
        return "no information"
    lo, hi = stat.get("delta_lower"), stat.get("delta_upper")
    if not isinstance(lo, int | float) or not isinstance(hi, int | float):
        return ""
    if (lo > 0) if higher_is_better else (hi < 0):
        return "better"
    if (hi < 0) if higher_is_better else (lo > 0):
        return "worse"
    return "no clear change"
