"""The command line's printing rules (`workbench.console`): in a pipe tables keep every name whole, a repeated
warning is printed once with its count (every one with -v), long phases print plain progress lines; and the
command modules stay thin."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import write_jsonl

from workbench import console
from workbench.commands.evaluate import print_metrics
from workbench.runfile.evals import EvalMetrics

REPO = Path(__file__).resolve().parent.parent


def _wb_in_a_pipe(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`wb ARGS` in a fresh process whose stdout and stderr are pipes, as in a CI log (COLUMNS says 80)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def _metric(tuned: float, base: float) -> dict[str, Any]:
    return {
        "tuned": tuned, "lower": tuned - 0.1, "upper": tuned + 0.1, "base": base, "delta": tuned - base,
        "delta_lower": -0.2, "delta_upper": 0.3, "wins": 3, "ties": 1, "losses": 2,
    }  # fmt: skip


def test_in_a_pipe_the_eval_table_keeps_similar_metric_names_apart(capsys: pytest.CaptureFixture[str]) -> None:
    names = ["mc_accuracy", "mc_accuracy_norm", "rouge_l", "正确率_accuracy_字符级"]
    metrics = {"forgetting": {"mmlu_中文": {"n": 20, "metrics": {n: _metric(0.5, 0.4) for n in names}}}}
    print_metrics(EvalMetrics.model_validate(metrics))
    printed = capsys.readouterr().out
    assert "…" not in printed
    rows = [line.split()[1] for line in printed.splitlines() if line.startswith("│")]
    assert rows == names  # each metric once, whole and on one line


def test_in_a_pipe_wb_plan_prints_every_method_name_and_number_whole(tmp_path: Path) -> None:
    done = _wb_in_a_pipe(tmp_path, "plan", "--params", "7e9", "--memory", "24GB")
    assert done.returncode == 0, done.stderr
    as_json = _wb_in_a_pipe(tmp_path, "plan", "--params", "7e9", "--memory", "24GB", "--json")
    methods = [e["method"] for e in json.loads(as_json.stdout)["methods"]]
    rows = [line for line in done.stdout.splitlines() if line.startswith("│")]
    assert "…" not in done.stdout
    assert [row.split("│")[1].strip() for row in rows] == methods  # one line per method, none cut or folded


def test_wb_gate_in_a_pipe_prints_long_check_names_whole(tmp_path: Path) -> None:
    from report_fixtures import make_run

    run = make_run(tmp_path / "w")
    checks = [
        "forgetting.general_text_zh.loss.delta_upper",
        "task.degenerate.echo.tuned",
        "train.train_runtime_seconds",
    ]
    gate = tmp_path / "gate.yaml"
    gate.write_text("checks:\n" + "".join(f"  - metric: {c}\n    min: -5\n    max: 1000000\n" for c in checks))
    done = _wb_in_a_pipe(tmp_path, "gate", str(run), "-t", str(gate))
    assert "…" not in done.stdout
    assert [line.split("│")[1].strip() for line in done.stdout.splitlines() if line.startswith("│")] == checks


def test_a_repeated_warning_is_printed_once_with_its_count(capsys: pytest.CaptureFixture[str]) -> None:
    came = ["item 3: empty reference", "the task set has only 20 items: intervals are wide"] * 18
    console.warnings(came)
    assert capsys.readouterr().err.splitlines() == [
        "warning: item 3: empty reference (18 times)",
        "warning: the task set has only 20 items: intervals are wide (18 times)",
    ]
    console.warnings(came, verbose=True)  # -v: every one, in the order they came
    assert capsys.readouterr().err.splitlines() == [f"warning: {w}" for w in came]


def test_wb_stats_v_lists_every_warning_and_without_it_each_once(tmp_path: Path, wb: Any) -> None:
    pairs = [{"prompt": f"问题 {i}", "chosen": "好的回答 " * 8, "rejected": "坏"} for i in range(12)]
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    once = wb("stats", data)
    every = wb("stats", data, "-v")
    assert once.exit_code == 0 and every.exit_code == 0
    warned = [line for line in every.stderr.splitlines() if line.startswith("warning: ")]
    assert warned and len(set(warned)) == len([w for w in once.stderr.splitlines() if w.startswith("warning: ")])


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_in_a_pipe_a_long_phase_prints_a_plain_line_every_few_seconds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = _Clock()
    monkeypatch.setattr(console.time, "monotonic", clock)
    with console.count_progress(quiet=False) as update:
        for done, at in enumerate((0.5, 2.0, 5.5, 7.0, 9.0, 11.0, 11.5), start=1):
            clock.now = 1000.0 + at
            update("generate task", done, 20)
    assert capsys.readouterr().err.splitlines() == ["generate task: 3/20", "generate task: 6/20"]
    with console.progress_bar("clean raw.jsonl", 4000, quiet=False) as (advance, phase):
        clock.now += 6
        advance(1000, 250)
        phase("near-duplicates")
        clock.now += 6
        phase("writing")
    assert capsys.readouterr().err.splitlines() == [
        "clean raw.jsonl: 250 records, 25.0% of the input",
        "clean raw.jsonl: writing: 250 records, 25.0% of the input",
    ]
    with console.count_progress(quiet=True) as update:  # --quiet: nothing at all
        clock.now += 60
        update("generate task", 20, 20)
    assert capsys.readouterr().err == ""


def test_every_command_module_and_the_app_module_is_thin() -> None:
    modules = [*(REPO / "workbench" / "commands").glob("*.py"), REPO / "workbench" / "cli.py"]
    sizes = {m.name: len(m.read_text(encoding="utf-8").splitlines()) for m in modules}
    assert len(sizes) > 10
    assert {name: n for name, n in sizes.items() if n > 200} == {}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workbench.models.base import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny")


def test_inspect_in_a_pipe_marks_trained_tokens_in_plain_text(tmp_path: Path, tiny: Path, wb: Any) -> None:
    records = [{"instruction": "把这句话翻译成英文：你好", "input": "", "output": "Hello there"}]
    data = write_jsonl(tmp_path / "train.jsonl", records)
    result = wb("train", "--data", data, f"model={tiny}", "--inspect", "1", "-q")
    assert result.exit_code == 0, result.stderr
    legend, body = result.stdout.split("\n", 1)
    assert "trained [+ +]" in legend
    marked = body.split("[+", 1)
    assert "你好" in marked[0] and "Hello there" in marked[1].split("+]", 1)[0]  # the prompt masked, the answer trained


def test_inspect_in_a_pipe_marks_chosen_and_rejected_answers(tmp_path: Path, tiny: Path, wb: Any) -> None:
    pairs = [{"prompt": "最好的水果？", "chosen": "Mango, sweet", "rejected": "Rocks"}]
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    result = wb("train", "--data", data, f"model={tiny}", "method=dpo", "--inspect", "1", "-q")
    assert result.exit_code == 0, result.stderr
    assert "[+Mango, sweet" in result.stdout and "[-Rocks" in result.stdout


def test_in_a_pipe_a_silent_phase_says_it_is_still_working(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    monkeypatch.setattr(console, "PLAIN_EVERY", 0.05)
    with console.heartbeat("train", quiet=False):
        time.sleep(0.3)  # saving the adapter, loading a model: no callback to print from
    beats = capsys.readouterr().err.splitlines()
    assert beats and all(re.fullmatch(r"train: still working \(\d+ s\)", b) for b in beats)
    with console.heartbeat("train", quiet=True):
        time.sleep(0.3)
    assert capsys.readouterr().err == ""


def test_a_long_silent_phase_backs_off_instead_of_flooding_the_log(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    # Silences allowed: 0.05, 0.1, 0.2, 0.3, 0.3 ... s, so about 5 lines in 1 s; a fixed 0.05 s would print ~20.
    monkeypatch.setattr(console, "PLAIN_EVERY", 0.05)
    with console.heartbeat("eval", quiet=False):
        time.sleep(1.0)
    beats = capsys.readouterr().err.splitlines()
    assert 1 <= len(beats) <= 7, beats
