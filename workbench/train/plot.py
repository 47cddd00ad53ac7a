"""The run folder's `loss.svg`: training and eval loss curves as a small self-contained SVG."""

from __future__ import annotations

from typing import Any


def loss_svg(log: list[dict[str, Any]], width: int = 640, height: int = 320) -> str:
    """A small self-contained SVG of the training and eval loss curves."""
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
