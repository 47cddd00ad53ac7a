"""The run folder's `loss.svg`: training and eval loss curves, and below them the task metrics computed during
training (`eval_<metric>` rows of trainer_log.jsonl) on their own scale, drawn by `workbench.charts` as one
self-contained SVG (the report draws the same curves with the same module)."""

from __future__ import annotations

import math
from typing import Any

from workbench import charts

SKIPPED = ("eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def metric_series(log: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """`eval_<metric>` curves of a training log, by key, in the order they first appear."""
    out: dict[str, list[tuple[float, float]]] = {}
    for r in log:
        for key, value in r.items():
            if key.startswith("eval_") and key not in SKIPPED and _is_num(value) and _is_num(r.get("step")):
                out.setdefault(key, []).append((float(r["step"]), float(value)))
    return out


def _series(log: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    return [(float(r["step"]), float(r[key])) for r in log if _is_num(r.get(key)) and _is_num(r.get("step"))]


def loss_svg(log: list[dict[str, Any]]) -> str:
    """The loss curves (train, eval) and, under them, the task metrics; an empty SVG for a log without either."""
    loss = charts.line_chart(
        [charts.Series("train", _series(log, "loss")), charts.Series("eval", _series(log, "eval_loss"))],
        "training and eval loss by step",
        height=320,
    )
    metrics = charts.line_chart(
        [charts.Series(key, pts) for key, pts in metric_series(log).items()], "task metrics at each eval by step"
    )
    return charts.stack([loss, metrics], "training curves") + "\n"
