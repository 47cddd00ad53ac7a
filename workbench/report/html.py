"""`wb report`: one self-contained HTML page per run (or pair of runs), plus Markdown and JSON summaries.

The page opens offline: inline CSS, inline SVG charts, no script at all, and a Content-Security-Policy that
forbids loading anything (so even a mistake could not fetch or run something). Every piece of data goes through
jinja2's autoescaping; charts come drawn by `workbench.charts`, which escapes what it writes. Long lists are capped
and say how much was left out, so a run with 10,000 eval items gives a page of the same size as one with 100.

Where the parts live: `summary.py` reads a run folder into a `Run`; `views.py` and `eval_views.py` turn it into
what each section shows; `comparison.py` sets two runs side by side; `markdown.py` writes the Markdown page; this
module renders the template (`templates/report.html.j2`) and publishes the three files together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench import __version__
from workbench.io.jsontext import dumps_json
from workbench.output import OutputSet
from workbench.report import markdown
from workbench.report.comparison import compare_runs, comparison_view
from workbench.report.formatting import html_templates
from workbench.report.gate import GateResult, run_gate
from workbench.report.summary import Run, load_run
from workbench.report.views import run_view

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _env() -> Any:
    return html_templates(TEMPLATES, keep_trailing_newline=True)


def render_html(views: list[dict[str, Any]], comparison: dict[str, Any] | None, title: str) -> str:
    return str(
        _env()
        .get_template("report.html.j2")
        .render(runs=views, comparison=comparison, title=title, version=__version__)
    )


@dataclass
class ReportFiles:
    html: Path
    markdown: Path
    json: Path
    gates: list[GateResult | None]

    @property
    def gate_failed(self) -> bool:
        return any(g is not None and not g.passed for g in self.gates)


def default_output(runs: list[Run], directory: Path = Path("reports")) -> Path:
    name = runs[0].name if len(runs) == 1 else f"{runs[0].name}-vs-{runs[1].name}"
    safe = re.sub(r"[^\w.-]+", "_", name).strip("._") or "report"
    return directory / f"{safe}.html"


def build_report(
    paths: list[Path],
    output: Path | None = None,
    gate_file: Path | None = None,
    clean_stats: Path | None = None,
) -> ReportFiles:
    """Load one or two runs, check them against `gate_file` if given, and write the HTML, Markdown and JSON."""
    from workbench.errors import WbError

    if not 1 <= len(paths) <= 2:
        raise WbError(f"wb report takes one run folder, or two to compare; got {len(paths)}")
    runs = [load_run(p, clean_stats) for p in paths]
    gates = [run_gate(r.summary, gate_file) if gate_file is not None else None for r in runs]
    output = Path(output) if output is not None else default_output(runs)
    if output.suffix.lower() != ".html":
        output = output.with_name(output.name + ".html")
    prefixes = [""] if len(runs) == 1 else ["a-", "b-"]
    views = [run_view(r, g, p) for r, g, p in zip(runs, gates, prefixes, strict=True)]
    rows = compare_runs(runs[0], runs[1]) if len(runs) == 2 else None
    comparison = comparison_view(rows, runs[0], runs[1]) if rows is not None else None
    title = runs[0].name if len(runs) == 1 else f"{runs[0].name} vs {runs[1].name}"
    html = render_html(views, comparison, title)
    md = markdown.render(runs, gates, rows)
    doc = {
        "wb_version": __version__,
        "runs": [{"summary": r.summary, "gate": g.to_json() if g else None} for r, g in zip(runs, gates, strict=True)],
        "comparison": rows,
    }
    md_path, json_path = output.with_suffix(".md"), output.with_suffix(".json")
    with OutputSet([output, md_path, json_path]) as outputs:  # the three pages staged and published together
        outputs.write(output, html.encode("utf-8"))
        outputs.write(md_path, md.encode("utf-8"))
        outputs.write(json_path, dumps_json(doc))
        outputs.publish()
    return ReportFiles(output, md_path, json_path, gates)
