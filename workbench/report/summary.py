"""Load a run folder (see docs/run-folder.md) into one summary: the numbers `wb report` shows and `wb gate` checks.

A run folder may hold any part of the pipeline's output: training only (no `eval/`), evaluation only (a
predictions file scored elsewhere: no train manifest, perhaps no base scores), or both. What is absent is listed
in `summary["missing"]` with the reason; what is present but unreadable is a `WbError` naming the file.

The summary is `workbench.runfile.summary.RunSummary` as JSON (its model, and the gate's paths, live there): `clean`
(accounting and fractions), `train` (the manifest's numbers plus first/final losses), `task` and `forgetting.<set>`
(`SetMetrics`: metrics with intervals, corpus scores, degenerate shares, classification), `overlap`, `review`.
A set's metrics are addressed without the `metrics` level in gate paths (`task.rouge_l.tuned`).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from workbench import __version__, metric_specs
from workbench.errors import WbError
from workbench.evaluate import verdicts
from workbench.io.jsontext import read_json
from workbench.output import IncompleteOutput, check_complete
from workbench.runfile.cleaning import CleanStats
from workbench.runfile.evals import EvalMetrics
from workbench.runfile.folder import EvalFolder, locate, read_jsonl, validated
from workbench.runfile.summary import CleanSummary, ReviewSummary, RunInfo, RunSummary, TrainSummary
from workbench.runfile.training import PREFERENCE_LOG_FIELDS, LogRow, TrainManifest


def higher_is_better(metric: str) -> bool:
    return metric_specs.higher_is_better(metric)


def stats_of(section: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The STAT entries of a task or probe-set section, in the registry's reading order."""
    found = (section or {}).get("metrics") or {}
    return {k: found[k] for k in metric_specs.order(found)}


# -- the run ------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """A loaded run folder: the JSON summary plus what the HTML page needs beside it."""

    path: Path
    name: str
    summary: dict[str, Any]
    files: dict[str, Path | None]
    train_manifest: dict[str, Any] | None = None
    eval_manifest: dict[str, Any] | None = None
    clean_manifest: dict[str, Any] | None = None
    log: list[dict[str, Any]] = field(default_factory=list)
    _items: dict[str, list[dict[str, Any]]] | None = field(default=None, repr=False)

    @property
    def has_eval(self) -> bool:
        return self.summary.get("task") is not None or bool(self.summary.get("forgetting"))


def _find_data_file(recorded: str, run_dir: Path) -> Path | None:
    """The cleaned file named in a train manifest: as recorded (relative to where `wb train` ran), relative to
    the folder holding `runs/`, or relative to the run folder itself."""
    p = Path(recorded)
    candidates = [p] if p.is_absolute() else [p, run_dir.parent.parent / p, run_dir / p, run_dir.parent / p]
    for c in candidates:
        if _stats_path(c).is_file() or c.is_file():
            return c
    return None


def _stats_path(data: Path) -> Path:
    stem = data.name.removesuffix(".gz").removesuffix(".zst").removesuffix(".jsonl").removesuffix(".json")
    return data.with_name(f"{stem}.stats.json")


def _fraction(part: Any, whole: Any) -> float | None:
    return (
        round(part / whole, 6) if isinstance(part, int | float) and isinstance(whole, int | float) and whole else None
    )


def _clean_section(stats_path: Path) -> dict[str, Any]:
    raw = read_json(stats_path, "cleaning stats")
    if not isinstance(raw, dict):
        raise WbError(f"{stats_path}: cleaning stats must be a JSON object")
    stats = validated(CleanStats, raw, stats_path)
    read, dropped, rejected = stats.read, stats.dropped, stats.rejected
    extra = stats.model_extra or {}
    source = extra.get("input")
    out = CleanSummary(
        read=read,
        kept=stats.kept,
        dropped=dropped,
        rejected=rejected,
        dropped_fraction=_fraction(dropped, read),
        rejected_fraction=_fraction(rejected, read),
        removed_fraction=_fraction(dropped + rejected, read),
        kept_fraction=_fraction(stats.kept, read),
        dropped_by_rule=stats.dropped_by_rule,
        rejected_by_kind=stats.rejected_by_kind,
        invariant_holds=(
            stats.invariant_holds if stats.invariant_holds is not None else read == stats.kept + dropped + rejected
        ),
        modified=extra.get("modified"),
        pii_found=extra.get("pii_found"),
        kept_output_tokens_histogram=extra.get("kept_output_tokens_histogram"),
        contamination=extra.get("contamination"),
        source=str(source["path"]) if isinstance(source, dict) and "path" in source else None,
        preference=stats.preference,
    )
    return out.model_dump(mode="json", exclude_none=True)


def _train_section(manifest: TrainManifest, log: list[LogRow]) -> dict[str, Any]:
    keys = TrainSummary.model_fields.keys() & TrainManifest.model_fields.keys()
    out: dict[str, Any] = {k: getattr(manifest, k) for k in keys}
    out["trainable_fraction"] = _fraction(manifest.trainable_parameters, manifest.total_parameters)
    losses = [r.loss for r in log if r.loss is not None]
    evals = [r.eval_loss for r in log if r.eval_loss is not None]
    out["final_loss"] = losses[-1] if losses else None
    out["final_eval_loss"] = evals[-1] if evals else None
    out["first_loss"] = losses[0] if losses else None
    out["logged_steps"] = len(losses)
    final: dict[str, float] = {}
    for row in log:
        for name in PREFERENCE_LOG_FIELDS.values():
            value = getattr(row, name)
            if value is not None:
                final[name] = value
    out["final_preference"] = final or None
    config = (manifest.model_extra or {}).get("config")
    if isinstance(config, dict):
        out["recipe"] = config
    return TrainSummary(**out).model_dump(mode="json", exclude_none=True)


def _has_base(metrics: EvalMetrics) -> bool:
    sections = [metrics.task, *metrics.forgetting.values()]
    return any(st.base is not None for sec in sections if sec is not None for st in sec.metrics.values())


def load_run(path: Path, clean_stats: Path | None = None) -> Run:
    """Read everything a report needs from a run folder. `clean_stats` overrides the stats file that the train
    manifest points to (for runs whose data lives elsewhere now)."""
    path = Path(path)
    run, evaluation = locate(path)
    run_dir = run.path
    missing: dict[str, str] = {}
    warnings: list[str] = []
    files: dict[str, Path | None] = dict.fromkeys(
        (
            "train_manifest",
            "trainer_log",
            "metrics",
            "scores",
            "eval_manifest",
            "review",
            "clean_stats",
            "dropped",
            "data",
        )
    )

    # training
    train_manifest = run.manifest()
    manifest_path = run.manifest_path
    if train_manifest is not None and train_manifest.get("command", "train") != "train":
        train_manifest = None
    if train_manifest is not None:
        files["train_manifest"] = manifest_path
    log = run.log(warnings) if train_manifest is not None else None
    if log is not None and run.log_path.is_file():
        files["trainer_log"] = run.log_path
    if train_manifest is None:
        missing["train"] = f"no train manifest ({manifest_path} not found): evaluation of predictions made elsewhere?"
    elif not (log and log.rows):
        warnings.append(f"{run.log_path}: no training log; the loss curve is not shown")

    # cleaning stats
    stats_path: Path | None = Path(clean_stats) if clean_stats is not None else None
    clean_manifest: dict[str, Any] | None = None
    if stats_path is None and train_manifest is not None:
        inputs = train_manifest.get("inputs") or {}
        data = (inputs.get("data") or {}).get("path")
        sources = [k.removeprefix("data[").removesuffix("]") for k in inputs if k.startswith("data[")]
        if not data and sources:
            missing["clean"] = (
                f"{manifest_path}: the run trained on a mixture of {len(sources)} sources ({', '.join(sources)}): "
                "pass --clean-stats to describe the cleaning of one of them"
            )
        elif not data:
            missing["clean"] = f"{manifest_path}: inputs.data.path not recorded, so the cleaning stats are unknown"
        else:
            found = _find_data_file(str(data), run_dir)
            if found is None or not _stats_path(found).is_file():
                missing["clean"] = (
                    f"cleaning stats for {data} not found ({_stats_path(Path(data))}): "
                    "run `wb report` where `wb train` ran, or pass --clean-stats"
                )
            else:
                files["data"] = found
                stats_path = _stats_path(found)
                _check_data_hash(train_manifest, found, warnings)
    elif stats_path is None:
        missing["clean"] = "no train manifest, so no training data to describe (pass --clean-stats to add it)"
    clean = None
    if stats_path is not None:
        clean = _clean_section(stats_path)
        files["clean_stats"] = stats_path
        stem = stats_path.name.removesuffix(".stats.json")
        dropped = stats_path.with_name(f"{stem}.dropped.jsonl")
        files["dropped"] = dropped if dropped.is_file() else None
        cm = stats_path.with_name(f"{stem}.manifest.json")
        if cm.is_file():
            loaded = read_json(cm, "cleaning manifest")
            clean_manifest = loaded if isinstance(loaded, dict) else None
        try:  # wb clean publishes its files as one set, the manifest last: a torn or edited set is said so
            check_complete(cm)
        except IncompleteOutput as e:
            warnings.append(f"clean: {e}")

    # evaluation
    eval_manifest: dict[str, Any] | None = None
    metrics = EvalMetrics()
    has_base = False
    eval_warnings: list[str] = []
    review: ReviewSummary | None = None
    if evaluation is None:
        missing["eval"] = f"no evaluation ({run.eval_folder.metrics_path} not found): run `wb eval {run_dir}`"
    else:
        metrics_path = evaluation.metrics_path
        files["metrics"] = metrics_path
        metrics = evaluation.metrics()
        has_base = _has_base(metrics)
        eval_warnings = list(metrics.warnings)
        if metrics.task is None:
            missing["task"] = f"{metrics_path}: no task metrics"
        if not metrics.forgetting:
            missing["forgetting"] = f"{metrics_path}: no forgetting probes were run"
        if not has_base:
            missing["base"] = "no base-model scores (predictions without base answers): no deltas, A/B or forgetting"
        scores = evaluation.scores_path
        files["scores"] = scores if scores.is_file() else None
        review = verdicts.review_summary(evaluation)
        if review is not None:
            files["review"] = evaluation.review_path
        eval_manifest = evaluation.manifest()
        if eval_manifest is not None:
            files["eval_manifest"] = evaluation.manifest_path
        written = evaluation.manifest_path.is_file()
        if (not written and scores.is_file()) or (eval_manifest is not None and "outputs" in eval_manifest):
            # wb eval publishes scores, metrics and review sample as one set, its manifest (with their hashes) last:
            # numbers from a torn or edited set are not trusted. A metrics.json made by hand, with no scores file
            # or a manifest naming no outputs beside it, is read as given.
            evaluation.check_complete()

    if train_manifest is None and evaluation is None:
        raise WbError(f"{path}: neither manifest.json from `wb train` nor eval/metrics.json from `wb eval` found")

    name = run_dir.name
    if train_manifest and isinstance(train_manifest.get("config"), dict):
        name = str(train_manifest["config"].get("name") or name)
    train = None
    if train_manifest is not None:
        typed = validated(TrainManifest, train_manifest, manifest_path)
        train = _train_section(typed, log.typed if log is not None else [])
        warnings.extend(f"train: {w}" for w in typed.warnings)
    warnings.extend(f"eval: {w}" for w in eval_warnings)
    kind = "+".join(k for k, present in (("train", train is not None), ("eval", evaluation is not None)) if present)
    summary = RunSummary(
        wb_version=__version__,
        run=RunInfo(name=name, path=str(run_dir), kind=kind),
        clean=clean,
        train=train,
        task=metrics.task,
        forgetting=metrics.forgetting,
        overlap=metrics.overlap,
        pref=metrics.preference,
        generation=metrics.generation,
        suite=metrics.suite,
        review=review,
        has_base=has_base,
        missing=missing,
        warnings=warnings,
        files={k: str(v) for k, v in files.items() if v is not None},
    ).model_dump(mode="json", exclude_none=True)
    return Run(run_dir, name, summary, files, train_manifest, eval_manifest, clean_manifest, log.rows if log else [])


def _check_data_hash(manifest: dict[str, Any], data: Path, warnings: list[str]) -> None:
    """Warn when the cleaned file beside the stats is not the one the run trained on (compares recorded hashes)."""
    trained = ((manifest.get("inputs") or {}).get("data") or {}).get("sha256")
    stem = data.name.removesuffix(".jsonl")
    cm = data.with_name(f"{stem}.manifest.json")
    if not trained or not cm.is_file():
        return
    try:
        cleaned = (orjson.loads(cm.read_bytes()).get("outputs") or {}).get("kept", {}).get("sha256")
    except (orjson.JSONDecodeError, AttributeError, OSError):
        return
    if cleaned and cleaned != trained:
        warnings.append(f"{data} changed after training (hashes differ): the data section may not describe this run")


# -- details for the page: per-item scores and dropped examples (streamed, capped) ---------------------------------


def scored_items(run: Run) -> dict[str, list[dict[str, Any]]]:
    """The rows of eval/scores.jsonl by set (10,000 rows are a few MB); read once per run."""
    if run._items is None:
        path = run.files.get("scores")
        run._items = {}
        if path is not None:  # each row checked as a ScoreRow: numbers are numbers, the page computes with them
            for row in EvalFolder(path.parent).scores():
                run._items.setdefault(str(row.get("set", "task")), []).append(row)
    return run._items


def task_items(run: Run) -> list[dict[str, Any]]:
    return scored_items(run).get("task", [])


def dropped_examples(
    run: Run, per_rule: int = 3, total: int = 30, scan: int = 200_000
) -> tuple[list[dict[str, Any]], int]:
    """Up to `per_rule` dropped records per rule (at most `total`, from the first `scan` lines), and how many
    dropped records were not shown."""
    path = run.files.get("dropped")
    if path is None:
        return [], 0
    shown: list[dict[str, Any]] = []
    per: dict[str, int] = {}
    seen = 0
    for _, row in read_jsonl(path, "dropped records"):
        seen += 1
        rule = str(row.get("rule", "?"))
        if per.get(rule, 0) < per_rule and len(shown) < total:
            per[rule] = per.get(rule, 0) + 1
            shown.append(row)
        if len(shown) >= total or seen >= scan:
            break
    dropped = (run.summary.get("clean") or {}).get("dropped") if run.summary else None
    return shown, max(0, (dropped if isinstance(dropped, int) else seen) - len(shown))


def worst(items: list[dict[str, Any]], metric: str, k: int, regressions: bool = True) -> list[dict[str, Any]]:
    """The k items where tuned lost (or gained) most against base on `metric`."""

    def delta(row: dict[str, Any]) -> float | None:
        t, b = (row.get("tuned") or {}).get(metric), (row.get("base") or {}).get(metric)
        if not isinstance(t, int | float) or not isinstance(b, int | float):
            return None
        d = float(t) - float(b)
        return d if higher_is_better(metric) else -d

    scored = [(d, i, row) for i, row in enumerate(items) if (d := delta(row)) is not None]
    pick = heapq.nsmallest if regressions else heapq.nlargest
    chosen = pick(k, scored, key=lambda x: (x[0], x[1]) if regressions else (x[0], -x[1]))
    return [row for d, _, row in chosen if (d < 0 if regressions else d > 0)]
