"""Writing an evaluation: every set scored, the sections of metrics.json assembled, and the output set written
atomically (`scores.jsonl`, `metrics.json`, `review_sample.csv`, `preference_scores.jsonl`, `manifest.json` last) —
the models of `workbench.runfile` (docs/run-folder.md describes them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.evaluate import review
from workbench.evaluate.config import EvalConfig
from workbench.evaluate.judging import with_review
from workbench.evaluate.notes import eval_notes
from workbench.evaluate.scoring import score_set
from workbench.evaluate.sets import TASK, EvalSet
from workbench.evaluate.suite import DEFAULT, load_suite
from workbench.io.jsontext import dumps_json, jsonl_line
from workbench.manifest import build_manifest
from workbench.output import OutputSet
from workbench.runfile.evals import (
    EvalMetrics,
    Overlap,
    PreferenceMetrics,
    ScoreRow,
    SetMetrics,
)
from workbench.runfile.folder import EvalFolder


@dataclass
class EvalResult:
    out_dir: Path
    metrics: EvalMetrics  # what metrics.json holds, typed
    warnings: list[str]


def finish(
    sets: list[EvalSet],
    config: EvalConfig,
    out_dir: Path,
    started: float,
    generation: dict[str, Any],
    overlap: dict[str, Any] | None,
    warnings: list[str],
    inputs_extra: dict[str, str],
    preference: PreferenceMetrics | None = None,
    preference_rows: list[dict[str, Any]] | None = None,
) -> EvalResult:
    """Score every set, assemble metrics.json (with the preference section and the warnings) and write the output
    set into `out_dir`."""
    suite = load_suite(config.suite)
    rows: list[ScoreRow] = []
    task: SetMetrics | None = None
    forgetting: dict[str, SetMetrics] = {}
    for s in sets:
        set_rows, summary, set_warnings = score_set(s, suite if s.kind == TASK else DEFAULT, config.seed)
        rows.extend(set_rows)
        warnings.extend(f"{s.name}: {w}" for w in set_warnings)
        if s.kind == TASK:
            task = summary
        else:
            forgetting[s.name] = summary
    overlap_model = Overlap.model_validate(overlap) if overlap is not None else None
    warnings.extend(eval_notes(task, overlap_model))
    metrics = EvalMetrics(
        task=task,
        forgetting=forgetting,
        overlap=overlap_model,
        preference=preference,
        generation=generation,
        suite=suite.model_dump(mode="json") if task is not None else None,
        warnings=warnings,
    )
    plain_rows = [r.model_dump(mode="json", exclude_none=True) for r in rows]
    if metrics.task is not None and metrics.task.judge is not None:
        reviewed = EvalFolder(out_dir).reviewed_items()
        if reviewed:
            metrics.task.judge = with_review(metrics.task.judge, plain_rows, reviewed)
    folder = EvalFolder(out_dir)
    files = {"scores": folder.scores_path, "metrics": folder.metrics_path}
    review_csv: bytes | None = None
    if preference_rows:
        files["preference_scores"] = folder.preference_scores_path
    if task is not None and any(r["set"] == TASK and "base" in r for r in plain_rows) and config.review_size:
        primary = task.settings.get("primary") or "rouge_l"
        review_csv = review.render_sample(plain_rows, config.review_size, config.seed, primary)
        files["review_sample"] = folder.review_sample_path
    inputs = {"data": config.data} if config.data is not None else {}
    if config.prefs is not None:
        inputs["prefs"] = config.prefs
    # One set: the scores, the metrics and the review sample staged together, the manifest (their sizes and hashes)
    # published last, so `wb report` and `wb gate` can tell a complete evaluation from a torn one.
    with OutputSet(list(files.values()), manifest=folder.manifest_path) as outputs:
        with outputs.open(files["scores"]) as f:
            for row in plain_rows:
                f.write(jsonl_line(row))
        outputs.write(files["metrics"], dumps_json(metrics.model_dump(mode="json", exclude_none=True)))
        if review_csv is not None:
            outputs.write(files["review_sample"], review_csv)
        if preference_rows:
            with outputs.open(files["preference_scores"]) as f:
                for row in preference_rows:
                    f.write(jsonl_line(row))
        manifest = build_manifest(
            command="eval",
            started=started,
            inputs=inputs,
            outputs={name: outputs.entry(path) for name, path in files.items()},
            config=config.model_dump(mode="json"),
            seed=config.seed,
        )
        manifest.update(inputs_extra)
        outputs.publish(manifest)
    return EvalResult(out_dir, metrics, warnings)
