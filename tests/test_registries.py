"""Every named thing of an evaluation is registered once, and a new one is one registration: a metric or a kind of
degenerate answer registered from this test module is scored (or flagged) by `wb eval`, printed in its table and
warnings, accepted and checked by `wb gate`, shown in the report and listed in the generated docs; a score registered
here is ranked the way it says by `keep_top_fraction` and listed in the docs; the preference metrics the registry
lists are exactly those the run schema holds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import read_jsonl, write_jsonl

from workbench import degenerate_kinds, metric_specs, schemas, score_specs
from workbench.clean import dispatch
from workbench.clean.profile import from_dict
from workbench.evaluate import scorers
from workbench.report import gate as gating
from workbench.report.html import build_report
from workbench.runfile.evals import PreferenceMetrics, Stat
from workbench.runfile.gate_paths import gate_paths_help

ROWS = [
    {"id": i, "instruction": "Greet", "reference": "HI", "prediction": p, "base_prediction": "hi"}
    for i, p in enumerate(["HI!!!", "HI!!!", "HI!!!", "HI", "HI"])
]


def _eval(wb: Any, tmp_path: Path) -> tuple[dict[str, Any], list[Any], str]:
    preds = write_jsonl(tmp_path / "preds.jsonl", ROWS)
    result = wb("eval", "--predictions", preds, "-o", tmp_path / "ev")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text(encoding="utf-8"))
    return metrics, read_jsonl(tmp_path / "ev" / "scores.jsonl"), result.stdout + result.stderr


def _gate(wb: Any, tmp_path: Path, check: str) -> int:
    thresholds = tmp_path / "gate.yaml"
    thresholds.write_text(f"checks:\n  - {check}\n", encoding="utf-8")
    return int(wb("gate", tmp_path / "ev", "-t", thresholds).exit_code)


def _docs(name: str) -> str:
    """The generated blocks of a docs page as they would be rendered now."""
    return schemas.render_doc((schemas.ROOT / "docs" / name).read_text(encoding="utf-8"))


@pytest.fixture
def toy_metric() -> Iterator[str]:
    def bangs(prediction: str, ctx: scorers.ItemContext) -> int:
        return int(prediction.endswith("!!!"))

    metric_specs.register_metric("ends_in_bangs", "the answer ends in three exclamation marks", ["text"], score=bangs)
    yield "ends_in_bangs"
    metric_specs.unregister_metric("ends_in_bangs")


@pytest.fixture
def toy_kind() -> Iterator[str]:
    def shouting(prediction: str, prompt: str, *_: Any) -> bool:
        return prediction.endswith("!!!")

    degenerate_kinds.register_degenerate_kind(
        "shouting", "The answer ends in three exclamation marks.", "shout (end in !!!)", check=shouting
    )
    yield "shouting"
    degenerate_kinds.unregister_degenerate_kind("shouting")


def test_a_metric_registered_in_a_test_module_is_scored_gated_reported_and_documented(
    toy_metric: str, tmp_path: Path, wb: Any
) -> None:
    metrics, rows, stdout = _eval(wb, tmp_path)
    assert [r["tuned"][toy_metric] for r in rows] == [1, 1, 1, 0, 0]
    assert metrics["task"]["metrics"][toy_metric]["tuned"] == 0.6
    assert toy_metric in stdout  # wb eval's table
    assert gating.path_problem(f"task.{toy_metric}.tuned") is None
    assert _gate(wb, tmp_path, f"task.{toy_metric}.tuned >= 0.5") == 0
    assert _gate(wb, tmp_path, f"task.{toy_metric}.tuned >= 0.7") == 1
    page = build_report([tmp_path / "ev"], tmp_path / "r.html").html.read_text(encoding="utf-8")
    assert f'<code title="the answer ends in three exclamation marks">{toy_metric}</code>' in page
    assert f"| `{toy_metric}` | text | higher |  | the answer ends in three exclamation marks |" in _docs(
        "evaluation.md"
    )
    metric_specs.unregister_metric(toy_metric)
    assert "unknown metric 'ends_in_bangs'" in str(gating.path_problem(f"task.{toy_metric}.tuned"))
    assert _gate(wb, tmp_path, f"task.{toy_metric}.tuned >= 0.5") == 2


def test_a_degenerate_kind_registered_in_a_test_module_is_flagged_gated_reported_and_documented(
    toy_kind: str, tmp_path: Path, wb: Any
) -> None:
    metrics, rows, stdout = _eval(wb, tmp_path)
    assert [r["tuned"]["flags"] for r in rows] == [[toy_kind]] * 3 + [[]] * 2
    assert metrics["task"]["degenerate"][toy_kind] == {"tuned": 0.6, "base": 0.0, "tuned_items": 3, "base_items": 0}
    assert "task: 3 of 5 tuned answers shout (end in !!!) (60%)" in metrics["warnings"]
    assert "shout (end in !!!)" in stdout
    assert f"task.degenerate.<echo|cut_off|repetition|empty|wrong_language|broken_text|{toy_kind}>" in (
        gate_paths_help()
    )
    assert gating.path_problem(f"task.degenerate.{toy_kind}.tuned") is None
    assert _gate(wb, tmp_path, f"task.degenerate.{toy_kind}.tuned <= 0.7") == 0
    assert _gate(wb, tmp_path, f"task.degenerate.{toy_kind}.tuned <= 0.5") == 1
    page = build_report([tmp_path / "ev"], tmp_path / "r.html").html.read_text(encoding="utf-8")
    assert f"<code>{toy_kind}</code>" in page and "The answer ends in three exclamation marks." in page
    assert f"| `{toy_kind}` | The answer ends in three exclamation marks. |" in _docs("evaluation.md")
    assert f"task.degenerate.<echo|cut_off|repetition|empty|wrong_language|broken_text|{toy_kind}>" in _docs("gate.md")


def test_the_registered_preference_metrics_are_the_run_schemas_and_its_rates_are_checked() -> None:
    stats = {
        name
        for name, f in PreferenceMetrics.model_fields.items()
        if Stat in getattr(f.annotation, "__args__", (f.annotation,))
    }
    assert {m.name for m in metric_specs.pref_metrics()} == stats
    for m in metric_specs.pref_metrics():
        over = {"n": 3, m.name: {"tuned": 7.0}}
        if m.rate:
            with pytest.raises(ValueError, match=m.name):
                PreferenceMetrics.model_validate(over)
        else:
            PreferenceMetrics.model_validate(over)


def test_a_score_registered_in_a_test_module_sets_keep_top_fractions_direction_and_is_documented(
    tmp_path: Path,
) -> None:
    rows = [
        {"instruction": f"q{i}", "input": "", "output": f"a{i}", "scores": {"hedging": v}}
        for i, v in enumerate([0.9, 0.1, 0.5, 0.3])
    ]
    data = write_jsonl(tmp_path / "scored.jsonl", rows)
    profile = from_dict({"name": "t", "rules": {"keep_top_fraction": {"score": "hedging", "fraction": 0.5}}})

    def kept() -> list[str]:
        dispatch.run(data, tmp_path / "clean.jsonl", profile)
        return [r["instruction"] for r in read_jsonl(tmp_path / "clean.jsonl")]

    assert kept() == ["q0", "q2"]  # an unregistered score: the highest are best
    score_specs.register_score("hedging", "share of the answer's sentences that hedge", "lm", higher_is_better=False)
    try:
        assert kept() == ["q1", "q3"]
        assert "| `hedging` | lowest | share of the answer's sentences that hedge |" in _docs("scoring.md")
    finally:
        score_specs.unregister_score("hedging")
