"""What the benchmarks in bench/ share: the provenance of a run (commit, package versions), a process's peak RSS,
plain-text tables and the JSON result file. Imported as `benchlib` (a benchmark runs as `python bench/NAME.py`, so
its folder is on the import path); it never imports wb, so baselines stay free of it."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def git_state(paths: Sequence[str] = ("workbench", "pipelines")) -> dict[str, Any]:
    """The commit measured, and whether the code under `paths` differed from it (uncommitted changes)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else "?"

    dirty = git("status", "--porcelain", "--", *paths)
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_changes": dirty != "" and dirty != "?"}


def versions(packages: Sequence[str]) -> dict[str, str]:
    """Python's version and each package's installed in this interpreter ("?" when it is not installed)."""
    out = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "?"
    return out


def self_peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def table(head: list[str], rows: list[list[str]], left: int = 1) -> str:
    """A plain table: the first `left` columns aligned left, the others right, a rule under the head."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def write_report(path: Path, report: dict[str, Any]) -> Path:
    """Write a benchmark's results as indented JSON (its folder created if needed); returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


@dataclass
class Child:
    """A finished child process: its exit code, its own peak RSS and CPU time (`os.wait4`), its wall time and the
    1-minute load average sampled every 5 s while it ran."""

    exit_code: int
    peak_rss_mb: float
    cpu_seconds: float
    wall_seconds: float
    loads: list[float]


def measure_child(cmd: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path = ROOT) -> Child:
    """Run `cmd` to its end, measuring it alone (not this process)."""
    loads: list[float] = []
    done = threading.Event()

    def sample_load() -> None:
        while not done.wait(5.0):
            loads.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample_load, daemon=True)
    started = time.perf_counter()
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=dict(env) if env is not None else None)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    rss_kb = usage.ru_maxrss / 1024 if sys.platform == "darwin" else usage.ru_maxrss
    return Child(os.waitstatus_to_exitcode(status), rss_kb / 1024, usage.ru_utime + usage.ru_stime, wall, loads)
