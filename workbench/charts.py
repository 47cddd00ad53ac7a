"""Charts, drawn one way for every page wb writes: the report (`wb report`), the statistics pages (`wb stats --html`,
`wb score --html`) and a run's `loss.svg`.

Each function takes numbers and labels and returns the finished SVG as an `Svg` string: a line chart (curves by
step, a cumulative distribution), a bar chart (histograms), an interval bar (a forest-plot row around zero), and
`stack` to put charts one above the other in one file. Every piece of data that reaches the markup (labels, titles,
tick texts) is escaped here, so a page inserts an `Svg` as it is: it carries `__html__`, which jinja2's autoescaping
honours instead of escaping the markup a second time. Colours are given twice: a class the report's stylesheet
styles, and inline presentation attributes, so a chart standing alone (loss.svg, the stats pages) looks the same
without a stylesheet (a stylesheet rule overrides a presentation attribute).

Long series are thinned to `MAX_POINTS`, so a page stays the same size whatever the length of a log. Standard
library only, on the bottom floor: any module may draw a chart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

PALETTE = ("#2266cc", "#d9480f", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")
INK = "#1d232a"
MUTED = "#5d6772"
AXIS = "#9aa4ae"
GRID = "#edf0f2"
MARK = "#c9252d"
MAX_POINTS = 600
MAX_DOTS = 60  # a curve with more points is drawn without a dot (and its hover title) per point


class Svg(str):
    """SVG markup whose data was escaped when it was drawn: jinja2 inserts it unescaped (the `__html__` protocol).
    `height` is the chart's height, for `stack`."""

    height: float

    def __new__(cls, markup: str, height: float = 0.0) -> Svg:
        svg = super().__new__(cls, markup)
        svg.height = height
        return svg

    def __html__(self) -> str:
        return str(self)


@dataclass(frozen=True)
class Series:
    """One curve: its legend label and its (x, y) points in order of x."""

    label: str
    points: Sequence[tuple[float, float]]


def fmt(x: Any, digits: int = 3) -> str:
    """A number as the pages print it: integers with thousands separators, floats with `digits` decimals (a tiny
    one in scientific notation), '-' for None or a non-finite float; anything else as text."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x != 0 and abs(x) < 10 ** (-digits):
            return f"{x:.{digits - 1}e}"
        return f"{x:,.{digits}f}"
    return str(x)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) from `lo` to `hi`."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    ticks = []
    t = math.ceil(lo / step) * step
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    return ticks


def thin(points: Sequence[tuple[float, float]], limit: int = MAX_POINTS) -> list[tuple[float, float]]:
    """At most about `limit` evenly strided points, the last one always kept."""
    if len(points) <= limit:
        return list(points)
    stride = math.ceil(len(points) / limit)
    out = list(points[::stride])
    return out if out[-1] == points[-1] else [*out, points[-1]]


def _open(width: float, height: float, label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_n(width)} {_n(height)}" width="{_n(width)}" '
        f'height="{_n(height)}" '
        f'role="img" aria-label="{escape(label)}" font-family="system-ui, sans-serif" font-size="11">'
    )


def _text(x: float, y: float, text: str, anchor: str = "start", fill: str = MUTED, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f'<text{attr} x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}" fill="{fill}">{escape(text)}</text>'


def _line(x1: float, y1: float, x2: float, y2: float, cls: str, stroke: str, extra: str = "") -> str:
    return (
        f'<line class="{cls}" x1="{_n(x1)}" x2="{_n(x2)}" y1="{_n(y1)}" y2="{_n(y2)}" stroke="{stroke}"'
        f' stroke-width="1"{extra}/>'
    )


def _n(v: float) -> str:
    """A coordinate: one decimal, without a trailing `.0`."""
    r = round(float(v), 1)
    return str(int(r)) if r.is_integer() else str(r)


def _x_text(t: float) -> str:
    return fmt(int(t)) if float(t).is_integer() else fmt(t, 1)


def line_chart(
    series: Sequence[Series],
    label: str,
    *,
    x_label: str = "step",
    width: int = 680,
    height: int = 260,
    x_from: float | None = None,
    y_range: tuple[float, float] | None = None,
    y_text: Callable[[float], str] = lambda t: fmt(t, 3),
    marks: Sequence[tuple[float, str]] = (),
    legend: bool = True,
) -> Svg | None:
    """Curves on shared axes, with round ticks and a light grid; None when no series has a point.

    `x_from` starts the x axis there (else at the first point); `y_range` fixes the y axis (else the points' range
    padded by 5%); `marks` are vertical dashed lines with a text, at an x value; `legend` lists each series with its
    last value. A series of at most `MAX_DOTS` points gets a dot per point whose hover title says its value."""
    series = [s for s in series if s.points]
    if not series:
        return None
    left, right, top, bottom = 56, 16, 16, 36
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points]
    x0, x1 = (min(xs) if x_from is None else x_from), max(xs)
    if y_range is None:
        y0, y1 = min(ys), max(ys)
        pad = (y1 - y0) * 0.05 or abs(y1) * 0.05 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    else:
        y0, y1 = y_range
    x1 = x1 if x1 > x0 else x0 + 1
    pw, ph = width - left - right, height - top - bottom
    r_edge, b_edge = width - right, height - bottom

    def px(x: float) -> float:
        return left + pw * (x - x0) / (x1 - x0)

    def py(y: float) -> float:
        return top + ph * (1 - (y - y0) / (y1 - y0))

    parts = [_open(width, height, label)]
    for t in nice_ticks(y0, y1):
        if y0 <= t <= y1:
            parts.append(_line(left, py(t), r_edge, py(t), "grid", GRID))
            parts.append(_text(left - 6, py(t) + 4, y_text(t), "end"))
    parts += [_text(px(t), b_edge + 16, _x_text(t), "middle") for t in nice_ticks(x0, x1)]
    parts.append(_line(left, b_edge, r_edge, b_edge, "axis", AXIS))
    parts.append(_line(left, top, left, b_edge, "axis", AXIS))
    parts.append(_text((left + r_edge) / 2, height - 4, x_label, "middle"))
    for k, s in enumerate(series):
        cls, colour = f"s{k + 1}", PALETTE[k % len(PALETTE)]
        pts = thin(s.points)
        coords = " ".join(f"{_n(px(x))},{_n(py(y))}" for x, y in pts)
        parts.append(f'<polyline class="{cls}" points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>')
        if len(pts) <= MAX_DOTS:
            parts += [
                f'<circle class="{cls}" cx="{_n(px(x))}" cy="{_n(py(y))}" r="2.5" fill="{colour}">'
                f"<title>{escape(s.label)} at {escape(x_label)} {fmt(x, 0)}: {fmt(y, 4)}</title></circle>"
                for x, y in pts
            ]
    for x, text in marks:
        parts.append(_line(px(x), top, px(x), b_edge, "mark", MARK, ' stroke-dasharray="4 3"'))
        parts.append(_text(px(x) + 3, top + 12, text, fill=MARK))
    if legend:
        for k, s in enumerate(series):
            last = f"{s.label} (last {fmt(s.points[-1][1], 4)})"
            parts.append(
                _text(r_edge - 8, top + 14 * (k + 1), last, "end", PALETTE[k % len(PALETTE)], f"legend{k + 1}")
            )
    parts.append("</svg>")
    return Svg("".join(parts), height)


def bar_chart(
    bars: Sequence[tuple[str, float]],
    label: str,
    *,
    width: int = 680,
    height: int = 200,
    title: Callable[[str, float], str] = lambda name, value: f"{name}: {fmt(value)}",
    heading: str = "",
    label_every: int = 1,
    values: bool = False,
) -> Svg | None:
    """Vertical bars from a base line, each with a hover `title`; None without bars. `heading` is a text above the
    bars, else the highest value is written beside the axis; every `label_every`-th bar is labelled under the base
    line, and `values` writes each bar's value above it."""
    if not bars:
        return None
    left, bottom, top = 40, 40, 14
    top_value = max(v for _, v in bars) or 1
    slot = (width - left - 8) / len(bars)
    ph = height - top - bottom
    base = height - bottom
    parts = [_open(width, height, label)]
    parts.append(_text(left, 12, heading) if heading else _text(left - 6, 18, fmt(top_value), "end"))
    parts.append(_line(left, base, width, base, "axis", AXIS))
    for i, (name, value) in enumerate(bars):
        h = round(ph * value / top_value, 1)
        x, cx = left + i * slot + slot * 0.1, left + i * slot + slot / 2
        parts.append(
            f'<rect class="hbar" x="{_n(x)}" y="{_n(top + ph - h)}" width="{_n(slot * 0.8)}" height="{_n(h)}" '
            f'fill="{PALETTE[0]}"><title>{escape(title(name, value))}</title></rect>'
        )
        if i % label_every == 0:
            parts.append(_text(cx, base + 14, name, "middle"))
        if values:
            parts.append(_text(cx, top + ph - h - 3, fmt(value), "middle"))
    parts.append("</svg>")
    return Svg("".join(parts), height)


def histogram(
    edges: Sequence[float], counts: Sequence[int], name: str, *, log_scale: bool = False, height: int = 140
) -> Svg | None:
    """The histogram of a score from its bin edges (one more than the counts): a bar per bin, every fourth labelled
    by its lower edge; None when the edges and counts do not fit together."""
    if not counts or len(edges) != len(counts) + 1:
        return None

    def title(lo: str, n: float) -> str:
        return f"{name} from {lo}: {fmt(n)} records"

    bars = [(f"{edges[i]:.3g}", int(c)) for i, c in enumerate(counts)]
    heading = name + (" (log scale)" if log_scale else "")
    return bar_chart(bars, f"{name} histogram", height=height, title=title, heading=heading, label_every=4)


def interval_bar(lo: float, hi: float, mid: float, scale: float, width: int = 160) -> Svg | None:
    """A forest-plot row: the interval [lo, hi] as a line and the point `mid` as a dot, around a dashed zero line,
    on ±`scale` (values beyond it are drawn at the edge). None without a scale."""
    if not scale:
        return None
    pad = 6

    def px(v: float) -> str:
        v = max(-scale, min(scale, v))
        return _n(pad + (width - 2 * pad) * (v + scale) / (2 * scale))

    return Svg(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} 14" width="{width}" height="14" role="img" '
        f'aria-label="interval"><title>scale ±{escape(fmt(scale, 3))}</title>'
        f'<line class="zero" x1="{px(0)}" x2="{px(0)}" y1="0" y2="14" stroke="{MARK}" stroke-dasharray="2 2"/>'
        f'<line class="ci" x1="{px(lo)}" x2="{px(hi)}" y1="7" y2="7" stroke="{INK}" stroke-width="2"/>'
        f'<circle cx="{px(mid)}" cy="7" r="3" fill="{INK}"/></svg>',
        14,
    )


def stack(charts: Sequence[Svg | None], label: str, width: int = 680) -> Svg:
    """Charts one above the other in one SVG (an empty one of `width` by 0 when there is none)."""
    parts, y = [], 0.0
    for chart in charts:
        if chart is not None:
            parts.append(f'<g transform="translate(0,{_n(y)})">{chart}</g>')
            y += chart.height
    return Svg(_open(width, y, label) + "".join(parts) + "</svg>", y)
