"""`wb report` and `wb gate`: a run (or two) as an HTML page with Markdown and JSON beside it, and a run checked
against thresholds with the verdict as the exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from workbench import console
from workbench.commands.options import CleanStatsOpt, QuietOpt, VerboseOpt
from workbench.console import line

VERDICT_STYLE = {"pass": "green", "fail": "bold red", "missing": "bold red", "inconclusive": "bold yellow"}


@console.user_errors
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run folder (runs/NAME); give two to compare them (A B).")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="HTML file (default: reports/<run name>.html); .md and .json beside it."),
    ] = None,
    gate_file: Annotated[
        Path | None, typer.Option("--gate", "-g", help="Threshold file: show the gate verdict at the top.")
    ] = None,
    clean_stats: CleanStatsOpt = None,
) -> None:
    """One self-contained HTML page (plus Markdown and JSON summaries) for a run, or two runs side by side."""
    from workbench.report.html import build_report

    written = build_report(runs, output, gate_file, clean_stats)
    for g in written.gates:
        if g is not None:
            line(f"{g.headline} ({g.run})")
    line(f"wrote {written.html}, {written.markdown}, {written.json}")


@console.user_errors
def gate(
    run: Annotated[Path, typer.Argument(help="Run folder (runs/NAME) or its eval/ folder.")],
    thresholds: Annotated[
        Path, typer.Option("--thresholds", "-t", help="Threshold file (YAML), e.g. pipelines/gate.yaml.")
    ],
    junit: Annotated[Path | None, typer.Option("--junit", help="Also write the checks as JUnit XML.")] = None,
    clean_stats: CleanStatsOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Check a run against thresholds: exit 0 if all pass, 1 if any is missed or missing, 2 on bad input."""
    from workbench.report.check import check_run

    result = check_run(run, thresholds, clean_stats, junit)
    if not quiet:
        title = f"wb gate: {result.run} against {thresholds}"
        table = console.table(title, "check", ("value", "right"), "threshold", "verdict")
        for r in result.results:
            value = "-" if r.value is None else f"{r.value:.4g}"
            verdict = Text(r.verdict, style=VERDICT_STYLE[r.verdict])
            table.add_row(Text(r.check.metric), Text(value), Text(r.check.threshold_text), verdict)
        console.show(table)
        for r in result.results:
            if r.verdict != "pass":
                console.note(f"{r.verdict}{' (allowed)' if r.passed else ''}: {r.check.metric}: {r.message}")
        console.warnings(result.warnings, verbose)
        if junit is not None:
            line(f"wrote {junit}")
    line(result.headline)
    if not result.passed:
        raise typer.Exit(1)
