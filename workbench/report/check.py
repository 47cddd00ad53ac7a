"""`wb gate` as one library call: read the threshold file (first, so a bad one is reported before the run is
read), read the run, check it, and write the JUnit XML when asked."""

from __future__ import annotations

from pathlib import Path

from workbench.report import junit
from workbench.report.gate import GateResult, evaluate, load
from workbench.report.summary import load_run


def check_run(
    run: Path, thresholds: Path, clean_stats: Path | None = None, junit_path: Path | None = None
) -> GateResult:
    """The gate verdict of `run` (a run folder or its eval/ folder) against the `thresholds` file."""
    spec = load(thresholds)
    result = evaluate(spec, load_run(run, clean_stats).summary, str(thresholds))
    if junit_path is not None:
        junit.write(junit_path, result)
    return result
