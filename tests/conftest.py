"""Shared fixtures: writing real-shaped data files and running the `wb` CLI in-process."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from workbench.cli import app

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
