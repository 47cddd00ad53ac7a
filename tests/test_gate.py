"""`wb gate`: threshold files, verdicts, exit codes 0/1/2, interval warnings, JUnit XML."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO
from report_fixtures import make_run

from workbench import schemas
from workbench.errors import WbError
from workbench.report import gate as gating
from workbench.report.summary import load_run

SHIPPED = REPO / "pipelines" / "gate.yaml"


def thresholds(tmp_path: Path, checks: list[Any], name: str = "gate.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"checks": checks}, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path / "w")


def test_all_checks_passing_exits_0_and_prints_the_table(run: Path, tmp_path: Path, wb: Any) -> None:
    gate = thresholds(
        tmp_path,
        [
            {"metric": "task.rouge_l.tuned", "min": 0.3},
            "task.n >= 40",  # inclusive: exactly at the threshold passes
            {"metric": "clean.dropped_fraction", "max": 0.2},
            {"metric": "train.final_loss", "max": 1.5},
        ],
    )
    result = wb("gate", run, "--thresholds", gate)
    assert result.exit_code == 0, result.output
    for text in ("task.rouge_l.tuned", "clean.dropped_fraction", ">= 40", "pass", "gate passed: 4 of 4 checks pass"):
        assert text in result.stdout


def test_a_missed_threshold_exits_1_and_names_the_check(run: Path, tmp_path: Path, wb: Any) -> None:
    gate = thresholds(tmp_path, [{"metric": "task.rouge_l.tuned", "min": 0.99}, "task.n >= 10"])
    result = wb("gate", run, "-t", gate)
    assert result.exit_code == 1
    assert "gate failed: 1 of 2 checks pass, 1 fail\n" in result.stdout
    assert "fail: task.rouge_l.tuned: 0.6581 < min 0.99" in result.stderr


def test_a_metric_the_run_lacks_fails_with_the_reason(tmp_path: Path, wb: Any) -> None:
    preds = make_run(tmp_path / "p", name="preds", train=False, base=False)
    gate = thresholds(
        tmp_path,
        [
            "task.rouge_l.tuned >= 0.1",
            "task.rouge_l.delta_lower >= -0.05",
            "forgetting.general_en.accuracy.delta_lower >= -0.05",
            "clean.dropped_fraction <= 0.2",
        ],
    )
    result = wb("gate", preds, "-t", gate)
    assert result.exit_code == 1
    assert "missing: task.rouge_l.delta_lower: " in result.stderr and "no base-model scores" in result.stderr
    assert "missing: forgetting.general_en.accuracy.delta_lower: " in result.stderr
    assert "missing: clean.dropped_fraction: no train manifest" in result.stderr
    assert "gate failed: 1 of 4 checks pass, 3 missing\n" in result.stdout


def test_a_run_without_eval_fails_eval_checks_and_says_to_run_wb_eval(tmp_path: Path, wb: Any) -> None:
    trained = make_run(tmp_path / "t", name="t", evaluate=False)
    result = wb("gate", trained, "-t", thresholds(tmp_path, ["task.rouge_l.tuned >= 0.1"]))
    assert result.exit_code == 1
    assert "wb eval" in result.stderr


def test_an_unknown_probe_set_lists_the_sets_there_are(run: Path) -> None:
    summary = load_run(run).summary
    value, why = gating.resolve(summary, "forgetting.general_fr.accuracy.tuned")
    assert value is None and "general_fr" in why and "general_en, general_text_en, general_text_zh, general_zh" in why


@pytest.mark.parametrize(
    ("checks", "expected"),
    [
        (
            [{"metric": "task.rouge_l.tunde", "min": 0.3}],
            "checks.0.metric: 'task.rouge_l.tunde': task.rouge_l has no 'tunde' (it has: tuned, lower, upper,",
        ),
        (
            [{"metric": "task.rougel.tuned", "min": 0.3}],
            "checks.0.metric: 'task.rougel.tuned': unknown metric 'rougel' (metrics: numeric_match,",
        ),
        ([{"metric": "task.rouge_l", "min": 0.3}], "checks.0.metric: 'task.rouge_l': not a number; continue the path"),
        ([{"metric": "task.rouge_l.tuned", "min": float("nan")}], "checks.0.min: Input should be a finite number"),
        ([{"metric": "task.rouge_l.tuned", "max": float("inf")}], "checks.0.max: Input should be a finite number"),
        ([{"metric": "tsk.rouge_l.tuned", "min": 0.3}], "checks.0.metric: 'tsk.rouge_l.tuned': unknown section 'tsk'"),
        ([{"metric": "task.rouge_l.tuned", "minimum": 0.3}], "checks.0.minimum: Extra inputs are not permitted"),
        ([{"metric": "task.rouge_l.tuned", "min": "0.3"}], "checks.0.min: Input should be a valid number"),
        ([{"metric": "task.rouge_l.tuned"}], "checks.0: give min, max or both"),
        ([{"metric": "task.n", "min": 5, "max": 1}], "checks.0: min 5.0 is above max 1.0"),
        (["task.n > 5"], "checks.0: 'task.n > 5': expected 'PATH >= NUMBER' or 'PATH <= NUMBER'"),
        ([], "checks: List should have at least 1 item"),
    ],
)
def test_a_bad_threshold_file_exits_2_naming_the_file_and_field(
    run: Path, tmp_path: Path, wb: Any, checks: list[Any], expected: str
) -> None:
    gate = thresholds(tmp_path, checks)
    result = wb("gate", run, "-t", gate)
    assert result.exit_code == 2
    assert result.stderr.strip().startswith(f"error: {gate}: {expected}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_bad_inputs_exit_2_with_one_line(run: Path, tmp_path: Path, wb: Any) -> None:
    gate = thresholds(tmp_path, ["task.n >= 1"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("checks:\n  - metric: task.n\n    min: [1\n", encoding="utf-8")
    not_a_mapping = tmp_path / "list.yaml"
    not_a_mapping.write_text("- task.n >= 1\n", encoding="utf-8")
    cases = [
        (("gate", run, "-t", tmp_path / "nope.yaml"), "nope.yaml: threshold file not found"),
        (("gate", run, "-t", broken), "broken.yaml: line 4: not valid YAML"),
        (("gate", run, "-t", not_a_mapping), "list.yaml: a threshold file must be a YAML mapping"),
        (("gate", tmp_path / "no-run", "-t", gate), "no-run: no such run folder"),
        (("gate", tmp_path, "-t", gate), "neither manifest.json from `wb train` nor eval/metrics.json"),
    ]
    for args, message in cases:
        result = wb(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr, (message, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1


def test_corrupt_run_files_exit_2_naming_the_file(run: Path, tmp_path: Path, wb: Any) -> None:
    gate = thresholds(tmp_path, ["task.n >= 1"])
    metrics = run / "eval" / "metrics.json"
    good = metrics.read_text(encoding="utf-8")
    metrics.write_text(good[: len(good) // 2], encoding="utf-8")
    result = wb("gate", run, "-t", gate)
    assert result.exit_code == 2 and f"{metrics}: eval metrics is not valid JSON" in result.stderr

    doc = json.loads(good)
    doc["task"]["metrics"]["rouge_l"]["tuned"] = "high"
    metrics.write_text(json.dumps(doc), encoding="utf-8")
    result = wb("gate", run, "-t", gate)
    assert result.exit_code == 2
    assert (
        f"{metrics}: field task.metrics.rouge_l.tuned: Input should be a valid number (found 'high')" in result.stderr
    )

    for bad, message in ((True, "Input should be a valid integer"), (40.0, "Input should be a valid integer")):
        doc = json.loads(good)
        doc["task"]["n"] = bad
        metrics.write_text(json.dumps(doc), encoding="utf-8")
        result = wb("gate", run, "-t", gate)
        assert result.exit_code == 2 and f"{metrics}: field task.n: {message}" in result.stderr, result.stderr

    doc = json.loads(good)
    doc["task"]["metrics"]["rouge_l"]["tuned"] = 1
    metrics.write_text(json.dumps(doc).replace('"tuned": 1', '"tuned": NaN', 1), encoding="utf-8")
    result = wb("gate", run, "-t", gate)
    assert result.exit_code == 2 and f"{metrics}: eval metrics is not valid JSON" in result.stderr

    metrics.write_text(good, encoding="utf-8")
    log = run / "trainer_log.jsonl"
    lines = log.read_text(encoding="utf-8").splitlines()
    log.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n", encoding="utf-8")
    result = wb("gate", run, "-t", gate)
    assert result.exit_code == 2 and f"{log}:2: trainer log line is not valid JSON" in result.stderr


def test_the_short_string_form_means_the_same_as_the_mapping() -> None:
    short = gating.GateFile.model_validate({"checks": ["task.rouge_l.tuned >= 0.35", "clean.dropped_fraction<=2e-1"]})
    long = gating.GateFile.model_validate(
        {"checks": [{"metric": "task.rouge_l.tuned", "min": 0.35}, {"metric": "clean.dropped_fraction", "max": 0.2}]}
    )
    assert short.resolved() == long.resolved()


def test_an_interval_wider_than_the_margin_is_inconclusive_not_pass(run: Path, tmp_path: Path, wb: Any) -> None:
    # The fixture's probe sets have 30 items: the paired accuracy interval is 0.4 wide ([-0.233, 0.167]).
    gate = thresholds(tmp_path, ["forgetting.general_en.accuracy.delta_lower >= -0.5"])
    result = wb("gate", run, "-t", gate)
    assert result.exit_code == 0 and "inconclusive" not in result.stdout + result.stderr
    # -0.233 passes -0.3, but the interval is wider than that margin: the set cannot tell.
    gate = thresholds(tmp_path, ["forgetting.general_en.accuracy.delta_lower >= -0.3"])
    result = wb("gate", run, "-t", gate)
    assert result.exit_code == 1 and "gate failed: 0 of 1 checks pass, 1 inconclusive\n" in result.stdout
    assert "inconclusive: forgetting.general_en.accuracy.delta_lower: -0.2333: the paired 95% interval" in result.stderr
    assert "wider than the margin 0.3: 30 items are too few to decide" in result.stderr
    # A missed threshold stays a failure, with the width as a warning.
    gate = thresholds(tmp_path, ["forgetting.general_en.accuracy.delta_lower >= -0.02"])
    result = wb("gate", run, "-t", gate)
    assert (
        result.exit_code == 1
        and "fail: forgetting.general_en.accuracy.delta_lower: -0.2333 < min -0.02" in result.stderr
    )
    assert "warning: forgetting.general_en.accuracy.delta_lower: the paired 95% interval" in result.stderr


def test_allow_inconclusive_turns_an_undecidable_check_into_a_warning(run: Path, tmp_path: Path, wb: Any) -> None:
    check = {"metric": "forgetting.general_en.accuracy.delta_lower", "min": -0.3, "allow_inconclusive": True}
    out = tmp_path / "gate.xml"
    result = wb("gate", run, "-t", thresholds(tmp_path, [check]), "--junit", out)
    assert result.exit_code == 0, result.output
    assert "inconclusive (allowed): forgetting.general_en.accuracy.delta_lower" in result.stderr
    assert result.stderr.count("forgetting.general_en.accuracy.delta_lower") == 1  # said once, not again as a warning
    assert "gate passed: 0 of 1 checks pass, 1 inconclusive (1 allowed)\n" in result.stdout
    suite = ET.parse(out).getroot().find("testsuite")
    assert suite is not None and suite.get("skipped") == "1" and suite.get("failures") == "0"
    skipped = suite.find("testcase/skipped")
    assert skipped is not None and "inconclusive (allowed)" in (skipped.get("message") or "")


def test_the_terminal_and_the_page_give_one_count_and_each_check_is_printed_once(
    run: Path, tmp_path: Path, wb: Any
) -> None:
    undecidable = ["forgetting.general_en.accuracy.delta_lower", "forgetting.general_en.f1.delta_lower"]
    gate = thresholds(
        tmp_path,
        [
            *({"metric": m, "min": -0.3, "allow_inconclusive": True} for m in undecidable),  # 0.4 wide: cannot tell
            "task.n >= 40",
            "task.rouge_l.tuned >= 0.3",
            "task.bleu.tuned >= 0",
            "task.chrf.tuned >= 0",
            "task.f1.tuned >= 0",
            "task.exact_match.tuned >= 0",
            "clean.dropped_fraction <= 0.2",
            "train.final_loss <= 1.5",
        ],
    )
    tally = "8 of 10 checks pass, 2 inconclusive (2 allowed)"
    result = wb("gate", run, "-t", gate)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == f"gate passed: {tally}"
    for metric in undecidable:  # one line each, the verdict with its reason; no second "warning:" line repeating it
        assert result.stderr.count(metric) == 1, result.stderr
        assert f"inconclusive (allowed): {metric}: " in result.stderr
    reported = wb("report", run, "-o", tmp_path / "r.html", "--gate", gate)
    assert reported.exit_code == 0 and f"gate passed: {tally} (" in reported.stdout
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert f"Gate passed: {tally}</div>" in page
    assert page.count("(allowed)</span>") == 2
    assert f"**Gate: ✅ passed**: {tally} (" in (tmp_path / "r.md").read_text(encoding="utf-8")


def _with_task_items(run: Path, tuned: list[int], base: list[int]) -> None:
    """Rewrite the fixture's task metrics with one 0/1 metric computed by wb's own statistics."""
    from workbench.evaluate.compare import stat

    metrics = run / "eval" / "metrics.json"
    doc = json.loads(metrics.read_text(encoding="utf-8"))
    doc["task"]["n"] = len(tuned)
    doc["task"]["metrics"]["numeric_match"] = stat(tuned, base, seed=0, binary=True)
    metrics.write_text(json.dumps(doc), encoding="utf-8")


def test_both_models_at_zero_on_every_item_is_inconclusive(run: Path, tmp_path: Path, wb: Any) -> None:
    _with_task_items(run, [0] * 40, [0] * 40)
    gate = thresholds(tmp_path, ["task.numeric_match.delta_lower >= -0.1", "task.numeric_match.tuned <= 0.5"])
    result = wb("gate", run, "-t", gate)
    assert result.exit_code == 1, result.output
    assert "inconclusive: task.numeric_match.delta_lower: 0: both models score 0 on every one of the 40 items" in (
        result.stderr
    )
    assert (
        "gate failed: 1 of 2 checks pass, 1 inconclusive\n" in result.stdout
    )  # the tuned-only check still decides (0 <= 0.5)
    # One item answered right by tuned: the comparison carries information again.
    _with_task_items(run, [1] + [0] * 39, [0] * 40)
    result = wb("gate", run, "-t", gate)
    assert result.exit_code == 0, result.output


def test_a_set_smaller_than_min_n_is_inconclusive(run: Path, tmp_path: Path, wb: Any) -> None:
    gate = thresholds(tmp_path, [{"metric": "task.rouge_l.tuned", "min": 0.3, "min_n": 41}])
    result = wb("gate", run, "-t", gate)
    assert result.exit_code == 1 and "the set has 40 items, fewer than this check's min_n 41" in result.stderr
    gate = thresholds(tmp_path, [{"metric": "task.rouge_l.tuned", "min": 0.3, "min_n": 40}])
    assert wb("gate", run, "-t", gate).exit_code == 0


def test_a_threshold_inside_the_interval_warns_that_the_verdict_could_flip(run: Path) -> None:
    summary = load_run(run).summary
    stat = summary["task"]["metrics"]["rouge_l"]
    inside = (stat["lower"] + stat["upper"]) / 2
    result = gating.evaluate(gating.GateFile.model_validate({"checks": [f"task.rouge_l.tuned >= {inside}"]}), summary)
    assert any("lies inside the 95% interval" in w and "gate on lower" in w for w in result.results[0].warnings)


def test_junit_xml_has_one_testcase_per_check_and_matching_counts(run: Path, tmp_path: Path, wb: Any) -> None:
    gate = thresholds(
        tmp_path,
        [
            "task.rouge_l.tuned >= 0.3",
            "task.rouge_l.tuned <= 0.1",
            "forgetting.general_xx.accuracy.delta_lower >= -0.02",
            "forgetting.general_en.accuracy.delta_lower >= -0.02",
        ],
    )
    out = tmp_path / "ci" / "gate.xml"
    result = wb("gate", run, "-t", gate, "--junit", out)
    assert result.exit_code == 1
    root = ET.parse(out).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    cases = suites[0].findall("testcase")
    failures = [c for c in cases if c.find("failure") is not None]
    assert len(cases) == 4 and int(suites[0].get("tests", "")) == 4 and int(root.get("tests", "")) == 4
    assert int(suites[0].get("failures", "")) == len(failures) == int(root.get("failures", "")) == 3
    assert suites[0].get("errors") == "0"
    assert [c.get("name") for c in cases][1] == "task.rouge_l.tuned <= 0.1"  # '<' escaped in the file, intact here
    kinds = [c.find("failure").get("type") for c in failures]  # type: ignore[union-attr]
    assert kinds == ["threshold", "missing", "threshold"]
    assert "too few to decide" in (cases[3].findtext("system-out") or "")
    assert b"<=" not in out.read_bytes().split(b"?>", 1)[1]  # every '<' inside values is escaped


def test_junit_xml_validates_against_the_common_junit_schema(run: Path, tmp_path: Path) -> None:
    etree = pytest.importorskip(
        "lxml.etree", reason="lxml validates XML Schema; without it the structure test above runs"
    )
    from workbench.report import junit

    summary = load_run(run).summary
    checks = [
        "task.rouge_l.tuned >= 0.3",
        "task.n >= 1000",
        {"metric": "forgetting.x\u0007<y>.accuracy.tuned", "min": 0},
    ]
    result = gating.evaluate(gating.GateFile.model_validate({"checks": checks}), summary, 'gate <&> "file".yaml')
    xml = junit.to_xml(result)
    schema = etree.XMLSchema(etree.parse(str(REPO / "tests" / "data" / "junit.xsd")))
    doc = etree.fromstring(xml)
    assert schema.validate(doc), schema.error_log
    assert doc.find("testsuite/properties/property").get("value") == 'gate <&> "file".yaml'


def test_the_shipped_gate_file_loads_and_validates_against_the_published_schema() -> None:
    import jsonschema

    gate = gating.load(SHIPPED)
    assert {c.metric for c in gate.resolved()} >= {
        "task.json_valid.delta_lower",
        "task.degenerate.echo.tuned",
        "task.n",
        "forgetting.general_en.accuracy.delta_lower",
        "forgetting.general_zh.accuracy.delta_lower",
        "forgetting.general_text_en.loss.delta_upper",
        "forgetting.general_text_zh.loss.delta_upper",
        "clean.dropped_fraction",
    }
    schema = json.loads((schemas.SCHEMA_DIR / "gate.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(yaml.safe_load(SHIPPED.read_text(encoding="utf-8")), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"checks": [{"metric": "task.n", "min": 1, "extra": 2}]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"checks": ["task.n > 1"]}, schema)


def test_the_shipped_gate_runs_on_a_full_run(run: Path, wb: Any) -> None:
    result = wb("gate", run, "-t", SHIPPED)
    assert result.exit_code in (0, 1)  # the verdict depends on the numbers; the file and every path are valid
    assert "missing" not in result.stdout


def test_load_names_the_file_for_a_folder(tmp_path: Path) -> None:
    with pytest.raises(WbError, match="is a folder"):
        gating.load(tmp_path)


def test_gate_starts_without_torch(run: Path, tmp_path: Path) -> None:
    gate = thresholds(tmp_path, ["task.n >= 1"])
    code = (
        "import sys; from workbench.cli import main; "
        f"sys.argv = ['wb', 'gate', {str(run)!r}, '-t', {str(gate)!r}, '-q', '--junit', {str(tmp_path / 'j.xml')!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _edit_metrics(run: Path, edit: Any) -> None:
    """Edit the fixture's eval/metrics.json by hand (its manifest holds no hashes, as an older wb wrote it)."""
    metrics = run / "eval" / "metrics.json"
    doc = json.loads(metrics.read_text(encoding="utf-8"))
    edit(doc)
    metrics.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")


def _set(path: str, value: Any) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[key]
        node[last] = value

    return edit


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (
            "task.metrics.exact_match.tuned",
            7.0,
            "task.metrics: exact_match.tuned: 7.0 is outside [0, 1] (exact_match is",
        ),
        (
            "forgetting.general_zh.metrics.accuracy.upper",
            1.3,
            "general_zh.metrics: accuracy.upper: 1.3 is outside [0, 1]",
        ),
        ("task.metrics.rouge_l.delta_lower", -1.5, "task.metrics: rouge_l.delta_lower: -1.5 is outside [-1, 1]"),
        ("task.metrics.json_valid.mcnemar_p", 2.0, "task.metrics.json_valid.mcnemar_p"),
        ("task.corpus.bleu.tuned", 231.0, "task.corpus.bleu.tuned"),
        ("preference", {"n": 9, "implicit_accuracy": {"tuned": 7.0}}, "preference.implicit_accuracy: tuned: 7.0 is"),
    ],
)
def test_a_hand_edited_rate_outside_its_range_is_refused_naming_the_field(
    run: Path, tmp_path: Path, wb: Any, path: str, value: Any, field: str
) -> None:
    _edit_metrics(run, _set(path, value))
    result = wb("gate", run, "-t", thresholds(tmp_path, ["task.rouge_l.tuned >= 0.3"]))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith(f"error: {run / 'eval' / 'metrics.json'}: field ") and field in lines[0]
    )


def test_a_loss_is_not_a_rate_and_may_exceed_1(run: Path, tmp_path: Path, wb: Any) -> None:
    _edit_metrics(run, _set("task.metrics.loss.tuned", 7.0))
    assert wb("gate", run, "-t", thresholds(tmp_path, ["task.loss.tuned <= 8"])).exit_code == 0


@pytest.mark.parametrize(
    ("edit", "check", "why"),
    [
        (_set("task.n", 0), "task.rouge_l.tuned >= 0.3", "the task set has 0 items"),
        (_set("forgetting.general_en.n", 0), "forgetting.general_en.accuracy.tuned >= 0.5", "general_en has 0 items"),
        (
            _set("preference", {"n": 0, "implicit_margin": {"tuned": 0.0, "lower": 0.0, "upper": 0.0}}),
            "pref.implicit_margin.tuned >= 0",
            "scored 0 items",
        ),
    ],
)
def test_a_check_on_a_set_of_0_items_is_missing(
    run: Path, tmp_path: Path, wb: Any, edit: Any, check: str, why: str
) -> None:
    _edit_metrics(run, edit)
    result = wb("gate", run, "-t", thresholds(tmp_path, [check]))
    assert result.exit_code == 1, result.output
    assert f"missing: {check.split()[0]}: " in result.stderr and why in result.stderr
    assert "gate failed: 0 of 1 checks pass, 1 missing" in result.stdout


def test_a_preference_margin_that_is_the_same_on_every_pair_is_inconclusive(run: Path, tmp_path: Path, wb: Any) -> None:
    from workbench.evaluate.preference_metrics import _accuracy

    # What `wb eval --prefs` computes when the policy equals its reference: every log-ratio 0, margin 0.000 [0, 0].
    accuracy, margin = _accuracy([0.0] * 24, [0.0] * 24, seed=0)
    section = {"n": 24, "implicit_accuracy": accuracy.model_dump(exclude_none=True)}
    section["implicit_margin"] = margin.model_dump(exclude_none=True)
    _edit_metrics(run, _set("preference", section))
    gate = thresholds(tmp_path, ["pref.implicit_margin.tuned >= 0", "pref.implicit_accuracy.tuned <= 0.5"])
    result = wb("gate", run, "-t", gate)
    assert result.exit_code == 1, result.output
    assert "inconclusive: pref.implicit_margin.tuned: 0: every one of the 24 pairs has the same margin" in result.stderr
    assert "inconclusive: pref.implicit_accuracy.tuned: 0: " in result.stderr
    assert "gate failed: 0 of 2 checks pass, 2 inconclusive" in result.stdout
    # Margins that differ between pairs carry information: the same checks decide.
    accuracy, margin = _accuracy([0.5, 0.2, -0.1] * 8, [0.1, 0.3, -0.4] * 8, seed=0)
    section = {"n": 24, "implicit_accuracy": accuracy.model_dump(exclude_none=True)}
    section["implicit_margin"] = margin.model_dump(exclude_none=True)
    _edit_metrics(run, _set("preference", section))
    result = wb("gate", run, "-t", thresholds(tmp_path, ["pref.implicit_margin.tuned >= 0"]))
    assert result.exit_code == 0, result.output
