"""The run folder's `loss.svg`: training and eval loss curves as a small self-contained SVG, and below them the task
metrics computed during training (`eval_<metric>` rows of trainer_log.jsonl), on their own scale."""

from __future__ import annotations

from typing import Any

METRIC_COLOURS = ("#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
SKIPPED = ("eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


def metric_series(log: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """`eval_<metric>` curves of a training log, by key, in the order they first appear."""
    out: dict[str, list[tuple[int, float]]] = {}
    for r in log:
        for key, value in r.items():
            if key.startswith("eval_") and key not in SKIPPED and isinstance(value, int | float) and "step" in r:
                out.setdefault(key, []).append((r["step"], float(value)))
    return out


def loss_svg(log: list[dict[str, Any]], width: int = 640, height: int = 320) -> str:
    """A small self-contained SVG of the training and eval loss curves (and the task metrics under them)."""
    svg = _loss_panel(log, width, height)
    series = metric_series(log)
    if not series:
        return svg
    panel = _metric_panel(series, width, 240)
    inner = svg.split(">", 1)[1].rsplit("</svg>", 1)[0]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 240}" font-family="sans-serif" '
        f'font-size="12">{inner}<g transform="translate(0,{height})">{panel}</g></svg>\n'
    )


def _metric_panel(series: dict[str, list[tuple[int, float]]], width: int, height: int) -> str:
    points = [p for pts in series.values() for p in pts]
    max_step = max(s for s, _ in points) or 1
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    span = (hi - lo) or 1.0
    pad = 40

    def xy(step: float, value: float) -> str:
        x = pad + (width - 2 * pad) * step / max_step
        y = height - pad - (height - 2 * pad) * (value - lo) / span
        return f"{x:.1f},{y:.1f}"

    parts = [
        '<rect width="100%" height="100%" fill="white"/>',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#999"/>',
        f'<text x="{pad}" y="{pad - 10}">task metrics {hi:.3f}</text>',
        f'<text x="{pad}" y="{height - 10}">{lo:.3f} · step {max_step}</text>',
    ]
    for k, (key, pts) in enumerate(series.items()):
        colour = METRIC_COLOURS[k % len(METRIC_COLOURS)]
        coords = " ".join(xy(s, v) for s, v in pts)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
        for s, v in pts:
            x, y = xy(s, v).split(",")
            parts.append(f'<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>')
        name = key.replace("&", "&amp;").replace("<", "&lt;")
        parts.append(f'<text x="{width - pad - 140}" y="{pad - 10 + 14 * k}" fill="{colour}">{name}</text>')
    return "".join(parts)


def _loss_panel(log: list[dict[str, Any]], width: int, height: int) -> str:
    train = [(r["step"], r["loss"]) for r in log if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in log if "eval_loss" in r]
    points = train + evals
    if not points:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"></svg>'
    max_step = max(s for s, _ in points) or 1
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    span = (hi - lo) or 1.0
    pad = 40

    def xy(step: float, value: float) -> str:
        x = pad + (width - 2 * pad) * step / max_step
        y = height - pad - (height - 2 * pad) * (value - lo) / span
        return f"{x:.1f},{y:.1f}"

    def line(pts: list[tuple[int, float]], colour: str) -> str:
        if not pts:
            return ""
        return (
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(xy(s, v) for s, v in pts)}"/>'
        )

    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        f'font-size="12"><rect width="100%" height="100%" fill="white"/>'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#999"/>'
        f'<text x="{pad}" y="{pad - 10}">loss {hi:.3f}</text>'
        f'<text x="{pad}" y="{height - 10}">{lo:.3f} · step {max_step}</text>'
        f"{line(train, '#1f77b4')}{line(evals, '#d62728')}"
        f'<text x="{width - pad - 140}" y="{pad - 10}" fill="#1f77b4">train</text>'
        f'<text x="{width - pad - 80}" y="{pad - 10}" fill="#d62728">eval</text></svg>\n'
    )
