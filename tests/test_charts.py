"""Charts are drawn one way (`workbench.charts`) for the report, the stats and score pages and a run's loss.svg:
every piece of data in them is escaped, a page inserts them as they are, and no other module writes SVG markup."""

from __future__ import annotations

import re
from pathlib import Path
from xml.etree import ElementTree

import jinja2

from workbench import charts
from workbench.stats_page import cdf_chart, scores_section
from workbench.train.plot import loss_svg

PACKAGE = Path(__file__).resolve().parent.parent / "workbench"
EVIL = '<script>alert("x")</script> & "q"'


def _parse(svg: str) -> ElementTree.Element:
    return ElementTree.fromstring(svg)  # well-formed XML: nothing unescaped broke the markup


def test_a_line_chart_escapes_labels_and_draws_one_polyline_per_series() -> None:
    svg = charts.line_chart(
        [charts.Series(EVIL, [(0, 1.0), (1, 0.5)]), charts.Series("eval", [(1, 0.7)]), charts.Series("none", [])],
        EVIL,
        x_label=EVIL,
    )
    assert svg is not None
    assert "<script" not in svg and "&lt;script&gt;" in svg
    root = _parse(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}polyline")) == 2  # the empty series is left out
    assert root.get("aria-label") == EVIL
    titles = [t.text for t in root.iter(f"{ns}title")]
    assert f"{EVIL} at {EVIL} 1: 0.5000" in titles  # a dot per point with its value


def test_nothing_to_draw_gives_none() -> None:
    assert charts.line_chart([charts.Series("a", [])], "x") is None
    assert charts.bar_chart([], "x") is None
    assert charts.histogram([0.0, 1.0], [1, 2], "x") is None  # edges do not fit the counts
    assert charts.interval_bar(-1, 1, 0, 0) is None


def test_long_curves_are_thinned_and_keep_their_last_point() -> None:
    points = [(float(i), float(i % 7)) for i in range(10_001)]
    thinned = charts.thin(points)
    assert len(thinned) <= charts.MAX_POINTS + 1 and thinned[-1] == points[-1]
    svg = charts.line_chart([charts.Series("loss", points)], "loss")
    assert svg is not None and "<circle" not in svg  # too many points for a dot each
    assert len(svg) < 40_000


def test_bars_and_histograms_escape_their_labels_and_titles() -> None:
    svg = charts.bar_chart([(EVIL, 3), ("b", 0)], EVIL, title=lambda name, n: f"{name}: {n}", heading=EVIL)
    assert svg is not None and "<script" not in svg
    assert len(_parse(svg).findall("{http://www.w3.org/2000/svg}rect")) == 2
    hist = charts.histogram([0.0, 0.5, 1.0], [4, 1], EVIL, log_scale=True)
    assert hist is not None and "<script" not in hist and "(log scale)" in hist
    _parse(hist)


def test_an_interval_bar_clamps_to_its_scale() -> None:
    svg = charts.interval_bar(-5.0, 0.2, 0.1, 1.0)
    assert svg is not None
    root = _parse(svg)
    ci = next(e for e in root if e.get("class") == "ci")
    assert float(ci.get("x1") or "nan") == 6  # -5 drawn at the left edge (-1)


def test_jinja_inserts_a_chart_as_it_is_and_escapes_everything_else() -> None:
    env = jinja2.Environment(autoescape=True)
    chart = charts.line_chart([charts.Series(EVIL, [(0, 1.0), (1, 2.0)])], "c")
    page = env.from_string("{{ chart }}{{ text }}").render(chart=chart, text=EVIL)
    # escaped once each: the legend, the two dots' titles, the text beside the chart
    assert page.startswith("<svg") and page.count("&lt;script&gt;") == 4
    assert "<script" not in page and "&amp;lt;" not in page


def test_stacked_charts_make_one_svg_of_their_heights() -> None:
    a = charts.line_chart([charts.Series("a", [(0, 1.0), (1, 2.0)])], "a", height=100)
    b = charts.bar_chart([("x", 1)], "b", height=50)
    svg = charts.stack([a, None, b], "both")
    assert _parse(svg).get("height") == "150" and svg.height == 150


def test_loss_svg_draws_loss_and_the_task_metrics_under_it() -> None:
    log = [
        {"step": 1, "loss": 2.0},
        {"step": 2, "loss": 1.5, "eval_loss": 1.7, "eval_rouge_l": 0.2, "eval_runtime": 3.0},
        {"step": 4, "loss": 1.2, "eval_loss": 1.6, "eval_rouge_l": 0.3},
    ]
    svg = loss_svg(log)
    assert svg.startswith("<svg") and "eval_rouge_l" in svg and "eval_runtime" not in svg
    assert svg.count("<polyline") == 3
    _parse(svg)
    assert _parse(loss_svg([])).get("height") == "0"


def test_the_stats_pages_draw_through_the_chart_module() -> None:
    cdf = cdf_chart({"cdf": [[10, 0.5], [100, 1.0]], "suggested_max_length": 64})
    assert "<polyline" in cdf and ">64</text>" in cdf
    _parse(cdf)
    section = scores_section(
        {
            "model": "m",
            "records": 2,
            "scored": 2,
            "scores": {EVIL: {"scored": 2, "missing": 0, "histogram": {"edges": [0, 1, 2], "counts": [1, 1]}}},
        }
    )
    assert "<svg" in section and "<script" not in section


def test_no_module_but_the_chart_module_writes_svg_markup() -> None:
    drawing = re.compile(r"<(svg|polyline|rect|circle|path)\b")
    found = [
        str(path.relative_to(PACKAGE.parent))
        for path in sorted(PACKAGE.rglob("*"))
        if path.suffix in (".py", ".j2", ".html")
        and path.name != "charts.py"
        and drawing.search(path.read_text(encoding="utf-8"))
    ]
    assert found == []
