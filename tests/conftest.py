"""Shared fixtures: writing real-shaped data files and running the `wb` CLI in-process; and the switch that makes
every skip a failure where the whole stack is installed.

`WB_NO_SKIPS=1` (set by `make test`, which installs every extra, the embedding model and Chromium): a skipped test,
or a module skipped at collection, fails the run with the reason it was skipped, so a missing package or binary
cannot quietly remove coverage. Without it (a plain `pytest` on a partial install) skips stay skips, listed by -ra.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from workbench.cli import app
from workbench.precision import CPU_BF16_ENV

# The suite gives the same numbers on every CPU: `precision: auto` resolves as on a CPU without native bf16 units
# (fp32), here and in the fresh processes tests start, unless the caller sets WB_CPU_BF16=1 to run the whole suite
# as an AMX / AVX512-BF16 machine would. Tests of bf16 itself ask for it through the `auto_precision` fixture.
os.environ.setdefault(CPU_BF16_ENV, "0")

pytest_plugins = ["pytester"]  # test_no_skips runs pytest on small test files

REPO = Path(__file__).resolve().parent.parent
DEMO_DATA = REPO / "data" / "demo" / "raw.jsonl"


def write_jsonl(path: Path, records: Iterable[Any]) -> Path:
    """Write records (dicts, or raw strings written as-is) one per line."""
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def wb() -> Callable[..., Any]:
    """Run `wb ARGS...` in-process; returns the click Result (exit_code, stdout, stderr)."""
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return run


@pytest.fixture(params=["fp32", "bf16"])
def auto_precision(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """What `precision: auto` resolves to in this test: fp32 (a CPU without bf16 units, e.g. an AVX2 EPYC) and bf16
    (an AMX or AVX512-BF16 Xeon; emulated, so slower, where the CPU has no bf16 units). Precision-sensitive tests take
    it so every machine checks what each kind of machine would compute."""
    monkeypatch.setenv(CPU_BF16_ENV, "1" if request.param == "bf16" else "0")
    return str(request.param)


def counting_casts(counted: Callable[[Any, dict[str, Any]], bool]) -> Any:
    """A torch dispatch mode (a context manager) counting, in `.casts`, the casts (`aten._to_copy`) of a tensor for
    which `counted(tensor, keyword arguments)` holds."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountCasts(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.casts = 0

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if func is torch.ops.aten._to_copy.default and counted(args[0], kwargs):
                self.casts += 1
            return func(*args, **kwargs)

    return CountCasts()


def split_on_two_threads(step: str) -> Iterator[list[int]]:
    """torch on two threads (the suite runs on one) while the generator is suspended, yielding the part counts of
    the steps `workbench.train.row_parallel.<step>` split (`step` or `pair_step`): a fixture's body."""
    import torch

    from workbench.train import row_parallel

    split: list[int] = []
    real = getattr(row_parallel, step)

    def counted(*args: Any) -> Any:
        split.append(args[-1])
        return real(*args)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    setattr(row_parallel, step, counted)
    try:
        yield split
    finally:
        setattr(row_parallel, step, real)
        torch.set_num_threads(before)


def _skips_fail() -> bool:
    return os.environ.get("WB_NO_SKIPS") == "1"


def _reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    return report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if _skips_fail() and report.skipped and not hasattr(report, "wasxfail"):  # an expected failure is no skip
        report.longrepr = f"skipped under WB_NO_SKIPS=1 (make test installs all a test needs): {_reason(report)}"
        report.outcome = "failed"


# A module skipped at collection stays a skip (a collection error would stop the whole run before any test), is
# listed at the end, and fails the run.
_COLLECTION_SKIPS: list[str] = []


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if _skips_fail() and report.skipped:
        _COLLECTION_SKIPS.append(f"{report.nodeid}: {_reason(report)}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _COLLECTION_SKIPS:
        terminalreporter.section("modules skipped under WB_NO_SKIPS=1 (make test installs all a test needs)")
        for line in _COLLECTION_SKIPS:
            terminalreporter.line(line)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    if _COLLECTION_SKIPS and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
