"""The preference numbers of a run in `wb report` and `wb gate`: per-step implicit rewards in the training section,
the Preference section from metrics.json, gate paths `pref.*`, all HTML-escaped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from report_fixtures import make_run

from workbench.report.gate import run_gate
from workbench.report.html import build_report
from workbench.report.summary import load_run
from workbench.runfile.evals import EvalMetrics


def _stat(tuned: float, lower: float, upper: float) -> dict[str, Any]:
    return {"tuned": tuned, "lower": lower, "upper": upper}


def _preference_run(tmp_path: Path, accuracy: tuple[float, float, float]) -> Path:
    run = make_run(tmp_path, name="dpo")
    log = run / "trainer_log.jsonl"
    rows = [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines()]
    for i, row in enumerate(rows):
        if "loss" in row:
            row |= {
                "rewards/chosen": 0.1 * i,
                "rewards/rejected": -0.05 * i,
                "rewards/accuracies": min(1.0, 0.5 + i / 20),
            }
            row |= {"rewards/margins": 0.15 * i}
    log.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    metrics_path = run / "eval" / "metrics.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    metrics["preference"] = {
        "n": 52,
        "source": "<script>alert(1)</script>.jsonl",
        "implicit_accuracy": _stat(*accuracy),
        "implicit_margin": _stat(0.8, 0.5, 1.1),
        "reward_score": {**_stat(0.4, 0.1, 0.7), "base": -0.2, "delta": 0.6, "delta_lower": 0.3, "delta_upper": 0.9,
                         "wins": 30, "ties": 2, "losses": 8},
        "win_rate": 0.775,
        "settings": {"reference": "base (adapter disabled)"},
    }  # fmt: skip
    EvalMetrics.model_validate(metrics)
    metrics_path.write_text(json.dumps(metrics), encoding="utf-8")
    return run


def test_report_shows_the_preference_section_and_the_per_step_rewards(tmp_path: Path) -> None:
    run = _preference_run(tmp_path, (0.83, 0.71, 0.92))
    files = build_report([run], tmp_path / "r.html")
    html = files.html.read_text(encoding="utf-8")
    assert 'data-section="preference"' in html and "pref.implicit_accuracy" in html
    assert "[0.710, 0.920]" in html and "0.775" in html and "30 / 2 / 8" in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert 'data-part="preference-steps"' in html and "rewards/accuracies" in html
    md = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert "**Preference** (52 held-out pairs)" in md and "pref.win_rate" in md


def test_the_gate_reads_preference_paths(tmp_path: Path) -> None:
    gate_file = tmp_path / "gate.yaml"
    gate_file.write_text(
        "checks:\n  - metric: pref.implicit_accuracy.lower\n    min: 0.5\n"
        "  - metric: train.final_preference.rewards_accuracies\n    min: 0.9\n",
        encoding="utf-8",
    )
    good = load_run(_preference_run(tmp_path / "good", (0.83, 0.71, 0.92))).summary
    assert run_gate(good, gate_file).passed
    chance = load_run(_preference_run(tmp_path / "chance", (0.55, 0.41, 0.68))).summary
    result = run_gate(chance, gate_file)
    assert not result.passed
    assert [r.passed for r in result.results] == [False, True]


def test_report_describes_the_cleaned_preference_data_and_its_dropped_pairs(tmp_path: Path) -> None:
    """The Data section of a DPO run: the cleaner's preference findings (kind, shapes, length bias) and dropped
    pairs shown with their prompt and both answers, escaped."""
    from workbench.clean import dispatch as cleaning
    from workbench.clean.profile import load

    records = [
        {"prompt": f"问题 {i}?", "chosen": f"一个很长而且仔细的回答，编号 {i}。", "rejected": f"不 {i}。"}
        for i in range(8)
    ]
    records.append({"prompt": "<b>Q?</b>", "chosen": "I'm sorry, but I cannot help with that.", "rejected": "<i>A</i>"})
    src = tmp_path / "prefs.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    cleaning.run(src, tmp_path / "prefs.clean.jsonl", load("preference"))
    run = _preference_run(tmp_path, (0.83, 0.71, 0.92))
    files = build_report([run], tmp_path / "r.html", clean_stats=tmp_path / "prefs.clean.stats.json")
    html = files.html.read_text(encoding="utf-8")
    assert 'data-part="preference-data"' in html and "pairs (chosen / rejected)" in html
    assert "8 of 8 kept pairs (100.0%" in html and "LENGTH BIAS" in html
    assert "refusal_chosen" in html and "rejected: &lt;i&gt;A&lt;/i&gt;" in html and "&lt;b&gt;Q?&lt;/b&gt;" in html
    assert "<i>A</i>" not in html
    md = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert "length bias" in md


def test_report_describes_cleaned_kto_examples_with_their_labels(tmp_path: Path) -> None:
    from workbench.clean import dispatch as cleaning
    from workbench.clean.profile import load

    records = [
        {"prompt": "Hi", "completion": "Hello!", "label": True},
        {"prompt": "Hi", "completion": "Go away.", "label": False},
        {"prompt": "Hi", "completion": "Hello!", "label": False},  # contradicts line 1: both dropped
        {"prompt": "你好", "completion": "你好！", "label": True},
    ]
    src = tmp_path / "kto.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    cleaning.run(src, tmp_path / "kto.clean.jsonl", load("preference"))
    run = _preference_run(tmp_path, (0.83, 0.71, 0.92))
    html = build_report([run], tmp_path / "r.html", clean_stats=tmp_path / "kto.clean.stats.json").html.read_text()
    assert "KTO examples (labelled completions)" in html and "desirable 1, undesirable 1" in html
    assert "contradictory_pair" in html and "desirable: Hello!" in html and "undesirable: Hello!" in html
