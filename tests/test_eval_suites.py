"""Eval suites, correctness metrics per answer type, degenerate answers, and the registry as the one list of metrics.

Predictions files (no model) carry both sides, so every case here is an A/B with paired intervals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import read_jsonl, write_jsonl
from report_fixtures import make_run

from workbench import metric_specs
from workbench.evaluate import scorers
from workbench.evaluate.config import EvalConfig
from workbench.evaluate.forgetting import Item
from workbench.evaluate.scoring import score_set
from workbench.evaluate.sets import EvalSet
from workbench.evaluate.suite import DEFAULT, load_suite
from workbench.models.generate import Answer
from workbench.report import gate as gating
from workbench.report.html import build_report
from workbench.report.summary import load_run
from workbench.runfile.evals import EvalMetrics, ScoreRow
from workbench.runfile.summary import RunSummary


def _eval(wb: Any, tmp_path: Path, rows: list[dict[str, Any]], *args: str) -> tuple[dict[str, Any], list[Any]]:
    preds = write_jsonl(tmp_path / "preds.jsonl", rows)
    out = tmp_path / "ev"
    result = wb("eval", "--predictions", preds, "-o", out, "-q", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads((out / "metrics.json").read_text(encoding="utf-8")), read_jsonl(out / "scores.jsonl")


# The demo's arithmetic items: the reference repeats the prompt ("68+11=" -> "68+11=79").
ARITHMETIC = [
    ("68+11=", "68+11=79", "68+11=", "68+11=79"),  # tuned echoes, base answers
    ("77+85=", "77+85=162", "77+85=162", "The number 77 + 85 is a classic example"),
    ("91-33=", "91-33=58", "91-33=58", "91-33=58"),
    ("12*3=", "12*3=36", "答案：３６", "12*3=35"),  # full-width digits after 答案：
    ("9/4=", "9/4=2.25", "9/4=2.25", "#### 2.25"),
]


def _arith_rows() -> list[dict[str, Any]]:
    return [
        {"id": i, "instruction": q, "reference": ref, "prediction": t, "base_prediction": b}
        for i, (q, ref, t, b) in enumerate(ARITHMETIC)
    ]


def test_an_answer_that_echoes_the_prompt_earns_nothing_and_is_flagged(tmp_path: Path, wb: Any) -> None:
    metrics, rows = _eval(wb, tmp_path, _arith_rows(), "--suite", "math")
    task = metrics["task"]
    assert [r["tuned"]["numeric_match"] for r in rows] == [0, 1, 1, 1, 1]
    assert [r["base"]["numeric_match"] for r in rows] == [1, 0, 1, 0, 1]
    assert task["metrics"]["numeric_match"]["tuned"] == 0.8 and task["metrics"]["numeric_match"]["base"] == 0.6
    assert "mcnemar_p" in task["metrics"]["numeric_match"] and "rouge_l" not in task["metrics"]
    assert rows[0]["tuned"]["flags"] == ["echo"] and rows[0]["scored_reference"] == "79"
    assert task["degenerate"]["echo"] == {"tuned": 0.2, "base": 0.0, "tuned_items": 1, "base_items": 0}
    assert task["settings"] == {"suite": "math", "scored_after_prompt_prefix": 5, "primary": "numeric_match"}
    assert any("1 of 5 tuned answers repeat the prompt instead of answering" in w for w in metrics["warnings"])


def test_the_generic_suite_scores_arithmetic_after_the_shared_prefix(tmp_path: Path, wb: Any) -> None:
    # Before: "68+11=" against "68+11=79" scored ROUGE-L 0.80 and BLEU 0.78. After the shared prefix, nothing.
    metrics, rows = _eval(wb, tmp_path, _arith_rows()[:1])
    assert rows[0]["tuned"]["rouge_l"] == 0.0 and rows[0]["tuned"]["bleu"] == 0.0
    assert rows[0]["base"]["rouge_l"] == 1.0 and rows[0]["base"]["exact_match"] == 1
    assert rows[0]["tuned"]["scored"] == "" and rows[0]["base"]["scored"] == "79"
    assert "numeric_match" not in metrics["task"]["metrics"]  # text answers get the overlap metrics


def test_records_carry_their_own_answer_type_beside_the_suites(tmp_path: Path, wb: Any) -> None:
    rows = _arith_rows()[:2]
    for r in rows:
        r["answer_type"] = "number"
    rows.append(
        {
            "id": "t",
            "instruction": "Say hi",
            "reference": "Hello there",
            "prediction": "Hello there",
            "base_prediction": "Hi",
        }
    )
    metrics, scored = _eval(wb, tmp_path, rows)
    assert metrics["task"]["metrics"]["numeric_match"]["n"] == 2
    assert metrics["task"]["metrics"]["rouge_l"]["n"] == 1
    assert "rouge_l" not in scored[0]["tuned"] and scored[2]["tuned"]["rouge_l"] == 1.0


def test_multiple_choice_reads_letters_markers_and_option_text(tmp_path: Path, wb: Any) -> None:
    options = {"A": "Mercury", "B": "Venus", "C": "Earth", "D": "Mars"}
    rows = [
        {"id": 1, "instruction": "Which planet is hottest?", "reference": "B", "prediction": "(B)", "options": options},
        {"id": 2, "instruction": "哪个行星最热？", "reference": "B", "prediction": "答案是B", "options": options},
        {"id": 3, "instruction": "Which is red?", "reference": "D", "prediction": "It is Mars.", "options": options},
        {"id": 4, "instruction": "Ours?", "reference": "C", "prediction": "A cat is not a planet.", "options": options},
    ]
    for r in rows:
        r["base_prediction"] = "I am not sure."
    metrics, scored = _eval(wb, tmp_path, rows, "--suite", "choice")
    assert [r["tuned"]["choice_accuracy"] for r in scored] == [1, 1, 1, 0]
    stat = metrics["task"]["metrics"]["choice_accuracy"]
    assert stat["tuned"] == 0.75 and stat["base"] == 0.0 and stat["wins"] == 3


def test_labels_get_accuracy_macro_f1_and_a_confusion_matrix(tmp_path: Path, wb: Any) -> None:
    answers = [("urgent", "URGENT."), ("urgent", "This is urgent"), ("non-urgent", "Non-urgent"), ("non-urgent", "??")]
    rows = [
        {"id": i, "instruction": "Triage", "reference": ref, "prediction": pred, "base_prediction": "urgent"}
        for i, (ref, pred) in enumerate(answers)
    ]
    metrics, scored = _eval(wb, tmp_path, rows, "--suite", "classify")
    task = metrics["task"]
    assert [r["tuned"]["label_accuracy"] for r in scored] == [1, 1, 1, 0]
    tuned = task["classification"]["tuned"]
    assert tuned["confusion"]["columns"] == ["urgent", "non-urgent", "(none)"]
    assert tuned["confusion"]["matrix"] == [[2, 0, 0], [0, 1, 1]] and tuned["unparsed"] == 1
    # per class F1: urgent 1.0, non-urgent 2/3 -> macro 0.8333; the base says "urgent" always: 0.5 and 0 -> 0.3333
    macro = task["metrics"]["macro_f1"]
    assert macro["tuned"] == pytest.approx(5 / 6, abs=1e-6) and macro["base"] == pytest.approx(1 / 3, abs=1e-6)
    assert macro["lower"] <= macro["tuned"] <= macro["upper"] and macro["delta_lower"] <= macro["delta"]
    # The run folder reads back, and the page shows the confusion matrix.
    page = build_report([tmp_path / "ev"], tmp_path / "r.html").html.read_text(encoding="utf-8")
    assert 'data-part="confusion"' in page and "non-urgent" in page


def test_json_answers_are_parsed_checked_against_the_schema_and_compared_by_field(tmp_path: Path, wb: Any) -> None:
    suite = tmp_path / "eval-person.yaml"
    schema = {"type": "object", "required": ["name", "age"], "properties": {"age": {"type": "integer"}}}
    suite.write_text(yaml.safe_dump({"name": "person", "answer_type": "json", "json_schema": schema}), "utf-8")
    ref = '{"name": "李雷", "age": 30}'
    rows = [
        {
            "id": 1,
            "instruction": "As JSON",
            "reference": ref,
            "prediction": '```json\n{"name": "李雷", "age": 30}\n```',
        },
        {"id": 2, "instruction": "As JSON", "reference": ref, "prediction": '{"name": "李雷", "age": "30"}'},
        {"id": 3, "instruction": "As JSON", "reference": ref, "prediction": "Name: 李雷, age 30"},
    ]
    metrics, scored = _eval(wb, tmp_path, rows, "--suite", str(suite))
    assert [r["tuned"]["json_valid"] for r in scored] == [1, 1, 0]
    assert [r["tuned"]["json_schema_valid"] for r in scored] == [1, 0, 0]
    assert [r["tuned"]["json_field_f1"] for r in scored] == [1.0, 0.5, 0.0]
    assert metrics["suite"]["name"] == "person"


def test_a_regex_suite_checks_its_pattern(tmp_path: Path, wb: Any) -> None:
    suite = tmp_path / "eval-date.yaml"
    suite.write_text("name: date\nanswer_type: regex\nregex:\n  pattern: '\\d{4}-\\d{2}-\\d{2}'\n", "utf-8")
    rows = [
        {"id": 1, "instruction": "When?", "reference": "2024-05-01", "prediction": "On 2024-05-01."},
        {"id": 2, "instruction": "When?", "reference": "2024-05-01", "prediction": "五月一日"},
    ]
    _, scored = _eval(wb, tmp_path, rows, "--suite", str(suite))
    assert [r["tuned"]["regex_match"] for r in scored] == [1, 0]


@pytest.mark.parametrize(
    ("suite", "expected"),
    [
        ({"name": "x", "metrics": ["rougel"]}, "metrics: unknown metric 'rougel' (metrics: numeric_match,"),
        ({"name": "x", "answer_type": "label", "labels": ["a"]}, "labels: a label task needs its label set"),
        ({"name": "x", "answer_type": "regex", "regex": {"pattern": "("}}, "regex.pattern: not a valid regular"),
        ({"name": "x", "json_schema": {"type": 5}}, "json_schema: not a valid JSON Schema"),
        ({"name": "x", "answer_type": "essay"}, "answer_type: Input should be"),
    ],
)
def test_a_bad_suite_file_is_one_line_and_exit_2(tmp_path: Path, wb: Any, suite: dict[str, Any], expected: str) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite), encoding="utf-8")
    preds = write_jsonl(tmp_path / "p.jsonl", _arith_rows()[:1])
    result = wb("eval", "--predictions", preds, "-o", tmp_path / "ev", "--suite", path)
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {path}: {expected}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bad_record_field_names_the_file_and_line(tmp_path: Path, wb: Any) -> None:
    rows = [*_arith_rows()[:1], {"instruction": "q", "reference": "A", "prediction": "A", "answer_type": "essay"}]
    preds = write_jsonl(tmp_path / "p.jsonl", rows)
    result = wb("eval", "--predictions", preds, "-o", tmp_path / "ev")
    assert result.exit_code == 2 and f"{preds}:line 2: field answer_type: 'essay' is not one of" in result.stderr


def test_both_models_at_zero_is_said_in_words_and_gates_inconclusive(tmp_path: Path, wb: Any) -> None:
    rows = [
        {"id": i, "instruction": "问题", "reference": "北京", "prediction": "I do not know", "base_prediction": "Paris"}
        for i in range(30)
    ]
    metrics, _ = _eval(wb, tmp_path, rows, "--suite", "generic")
    em = metrics["task"]["metrics"]["exact_match"]
    assert em["constant"] is True and em["tuned"] == 0 and em["base"] == 0
    assert any("exact_match: both models score 0 on every item" in w for w in metrics["warnings"])
    assert any("30 of 30 tuned answers are in another language" in w for w in metrics["warnings"])
    gate = tmp_path / "gate.yaml"
    gate.write_text("checks:\n  - task.exact_match.delta_lower >= -0.05\n", encoding="utf-8")
    result = wb("gate", tmp_path / "ev", "-t", gate)
    assert result.exit_code == 1 and "inconclusive: task.exact_match.delta_lower" in result.stderr


def _set(predictions: list[str], answers: list[Answer], items: list[Item]) -> EvalSet:
    s = EvalSet("task", "task", items, predictions={"tuned": predictions}, generated={"tuned": answers})
    s.max_new_tokens = 8
    return s


def test_answers_cut_at_the_limit_warn_beside_length_sensitive_metrics() -> None:
    items = [Item(id=i, instruction=f"Explain item {i}", reference="A long explanation " * 10) for i in range(10)]
    cut = [Answer("A long explanation", 8, False)] * 3 + [Answer("A long explanation " * 10, 5, True)] * 7
    rows, summary, warnings = score_set(_set([a.text for a in cut], cut, items), DEFAULT, seed=0)
    assert summary.degenerate["cut_off"].tuned == 0.3 and rows[0].tuned.flags == ["cut_off"]
    assert rows[0].tuned.generated_tokens == 8 and rows[0].tuned.finished is False
    assert any("30% of tuned answers stopped at the 8-token limit" in w and "brevity penalty" in w for w in warnings)
    fine = [Answer("A long explanation " * 10, 5, True)] * 10
    _, _, warnings = score_set(_set([a.text for a in fine], fine, items), DEFAULT, seed=0)
    assert not any("token limit" in w for w in warnings)


@pytest.fixture
def extra_metric() -> Iterator[str]:
    def shouts(prediction: str, ctx: scorers.ItemContext) -> int:
        return int(prediction.isupper())

    metric_specs.register_metric("all_caps", "the answer is written in capitals", ["text"], binary=True, score=shouts)
    yield "all_caps"
    metric_specs.unregister_metric("all_caps")


def test_a_metric_added_to_the_registry_is_scored_reported_and_gated(
    extra_metric: str, tmp_path: Path, wb: Any
) -> None:
    rows = [
        {"id": i, "instruction": "Shout", "reference": "HI", "prediction": "HI", "base_prediction": "hi"}
        for i in range(5)
    ]
    metrics, scored = _eval(wb, tmp_path, rows)
    assert scored[0]["tuned"][extra_metric] == 1 and metrics["task"]["metrics"][extra_metric]["delta"] == 1.0
    page = build_report([tmp_path / "ev"], tmp_path / "r.html").html.read_text(encoding="utf-8")
    assert f'<code title="the answer is written in capitals">{extra_metric}</code>' in page
    assert gating.path_problem(f"task.{extra_metric}.delta_lower") is None
    result = gating.evaluate(
        gating.GateFile.model_validate({"checks": [f"task.{extra_metric}.delta_lower >= 0.5"]}),
        load_run(tmp_path / "ev").summary,
    )
    assert result.passed
    metric_specs.unregister_metric(extra_metric)
    assert "unknown metric 'all_caps'" in str(gating.path_problem(f"task.{extra_metric}.tuned"))


def test_every_shipped_suite_loads_and_matches_its_schema() -> None:
    import jsonschema

    from workbench import schemas

    schema = json.loads((schemas.SCHEMA_DIR / "eval-suite.schema.json").read_text())
    for name in ("generic", "math", "choice", "classify", "json"):
        suite = load_suite(name)
        assert suite.name == name and suite.metrics_for(suite.answer_type)
        jsonschema.validate(
            yaml.safe_load((schemas.SCHEMA_DIR.parent / "pipelines" / f"eval-{name}.yaml").read_text()), schema
        )
    assert EvalConfig().suite == "generic"


def test_run_files_written_by_eval_validate_against_the_run_schema(tmp_path: Path, wb: Any) -> None:
    metrics, rows = _eval(wb, tmp_path, _arith_rows(), "--suite", "math")
    EvalMetrics.model_validate(metrics)
    for row in rows:
        ScoreRow.model_validate(row)
    run = make_run(tmp_path / "w")
    RunSummary.model_validate(load_run(run).summary)
