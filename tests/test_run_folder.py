"""The run folder has one owner: `workbench/runfile/folder.py` is the only module of the package that names a run folder's
files (`recipe.yaml`, `manifest.json`, `trainer_log.jsonl`, `sample_losses.jsonl`, `loss.svg`) or an evaluation's
(`metrics.json`, `scores.jsonl`, `reviews/`, ...), so every read and write of them goes through `RunFolder` /
`EvalFolder` and their `runfile` models. The names are found in the source with `ast`: a string that is the name, or
a path piece ending or starting with `/name` (`"eval/metrics.json"`, `f"{run}/recipe.yaml"`); docstrings and error
texts that merely mention a file are not reads.

And the object itself: it reads what `wb train` and `wb eval` write, typed, with one-line errors naming the file.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from workbench.errors import WbError
from workbench.runfile import folder
from workbench.runfile.evals import EvalMetrics
from workbench.runfile.folder import EvalFolder, RunFolder, locate
from workbench.runfile.training import TrainManifest

PACKAGE = Path(__file__).resolve().parent.parent / "workbench"
OWNER = PACKAGE / "runfile" / "folder.py"
NAMES = tuple(dict.fromkeys(folder.RUN_FILES + folder.EVAL_FILES))


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                out.add(id(value))
    return out


def run_file_names(source: str) -> list[tuple[int, str]]:
    """(line, file name) of each place `source` spells a run folder file's name as a path (not in a docstring)."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in skip:
            continue
        for name in NAMES:
            text = node.value
            if text == name or text.endswith("/" + name) or text.startswith("/" + name):
                found.append((node.lineno, name))
    return sorted(found)


def test_only_the_run_folder_module_names_run_folder_files() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != OWNER
        for line, name in run_file_names(path.read_text(encoding="utf-8"))
    ]
    assert offenders == [], "read and write run folder files through workbench.runfile.folder:\n" + "\n".join(offenders)


def test_the_scan_finds_a_run_file_opened_outside_the_owner() -> None:
    """The check above fails when a module opens a run folder file itself (and not for a docstring or a message)."""
    source = '''"""Reads recipe.yaml."""
import yaml
def recipe(run):
    """The run's recipe.yaml."""
    return yaml.safe_load((run / "recipe.yaml").read_text())
def log(run):
    return open(f"{run}/trainer_log.jsonl")
def metrics(run):
    return run / "eval/metrics.json"
def fine(stem):
    raise ValueError(f"{stem}.manifest.json: --resume reads the run's own recipe.yaml")
'''
    assert run_file_names(source) == [(5, "recipe.yaml"), (7, "trainer_log.jsonl"), (9, "metrics.json")]
    assert OWNER.is_file() and run_file_names(OWNER.read_text(encoding="utf-8"))  # the owner does spell them


def test_a_run_folder_reads_its_recipe_manifest_and_log_typed(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    assert not run.is_run() and run.manifest() is None and run.train_manifest() is None and run.log().rows == []
    run.write_recipe({"name": "r", "method": "lora", "note": "中文"})
    assert run.is_run() and run.recipe() == {"name": "r", "method": "lora", "note": "中文"}
    run.write_manifest({"command": "train", "global_step": 4, "train_loss": 1.5})
    manifest = run.train_manifest()
    assert isinstance(manifest, TrainManifest) and manifest.global_step == 4 and run.finished()
    run.log_path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.0}\n{"step": 3, "lo', encoding="utf-8")
    warnings: list[str] = []
    log = run.log(warnings)
    assert [r.loss for r in log.typed] == [2.0, 1.0] and log.rows[0] == {"step": 1, "loss": 2.0}
    assert warnings == [f"{run.log_path}:3: last line is incomplete (run interrupted?); ignored"]


def test_run_folder_files_that_cannot_be_read_end_in_one_line_naming_the_file(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    run.recipe_path.write_text("- a\n- list\n", encoding="utf-8")
    with pytest.raises(WbError, match=re.escape("recipe.yaml: a recipe must be a YAML mapping")):
        run.recipe()
    run.recipe_path.write_text("name: [oops\n", encoding="utf-8")
    with pytest.raises(WbError, match=re.escape("recipe.yaml: line 2: not valid YAML")):
        run.recipe()
    run.manifest_path.write_text("[1]", encoding="utf-8")
    with pytest.raises(WbError, match=re.escape("manifest.json: a manifest must be a JSON object")):
        run.manifest()
    run.manifest_path.write_text('{"command": "train", "train_loss": "low"}', encoding="utf-8")
    with pytest.raises(WbError, match=re.escape("manifest.json: field train_loss: ")):
        run.train_manifest()
    run.log_path.write_text('{"step": 1, "loss": "x"}\n', encoding="utf-8")
    with pytest.raises(WbError, match=re.escape("trainer_log.jsonl:1: field loss: ")):
        run.log()


def test_an_eval_folder_is_found_from_the_run_or_itself(tmp_path: Path) -> None:
    evaluation = RunFolder(tmp_path).eval_folder
    evaluation.path.mkdir()
    assert locate(tmp_path) == (RunFolder(tmp_path), None)
    evaluation.write_metrics(EvalMetrics(warnings=["w"]))
    evaluation.write_reviewer("ann", {"verdicts": [{"id": 3, "verdict": "tuned"}, {"verdict": "x"}]})
    evaluation.write_reviewer("bo", {"verdicts": [{"id": 4, "verdict": "tie"}]})
    assert locate(tmp_path) == (RunFolder(tmp_path), evaluation)
    assert locate(evaluation.path) == (RunFolder(tmp_path), evaluation)
    assert evaluation.metrics().warnings == ["w"]
    assert evaluation.reviewed_items() == [
        {"id": 3, "verdict": "tuned", "reviewer": "ann"},
        {"id": 4, "verdict": "tie", "reviewer": "bo"},
    ]
    assert evaluation.reviewer_path("ann").parent == evaluation.review_path
    evaluation.scores_path.write_text(json.dumps({"set": "task", "id": 1, "tuned": {"rouge_l": "high"}}) + "\n")
    with pytest.raises(WbError, match=re.escape("scores.jsonl:1: field tuned.rouge_l: ")):
        list(evaluation.scores())
    assert EvalFolder(tmp_path / "elsewhere").manifest() is None


def test_the_log_keys_the_report_charts_are_typed_fields_of_a_log_row_and_training_keeps_them() -> None:
    from workbench.runfile.training import LOG_KEYS, PREFERENCE_LOG_FIELDS, LogRow, kept_log_keys, shown_log_keys

    row = LogRow.model_validate({k.name: 0.5 for k in LOG_KEYS if k.reported})
    for name, field in PREFERENCE_LOG_FIELDS.items():
        assert getattr(row, field) == 0.5, name  # the name TRL logs reads into its typed field
    kept = kept_log_keys()
    assert all(name in kept and f"eval_{name}" in kept for name in PREFERENCE_LOG_FIELDS)
    assert all(key in kept for key, _ in shown_log_keys() if not key.startswith("eval_"))
