"""Load a run folder (see docs/run-folder.md) into one summary: the numbers `wb report` shows and `wb gate` checks.

A run folder may hold any part of the pipeline's output: training only (no `eval/`), evaluation only (a
predictions file scored elsewhere: no train manifest, perhaps no base scores), or both. What is absent is listed
in `summary["missing"]` with the reason; what is present but unreadable is a `WbError` naming the file.

The summary is `workbench.runfile.RunSummary` as JSON (its model, and the gate's paths, live there): `clean`
(accounting and fractions), `train` (the manifest's numbers plus first/final losses), `task` and `forgetting.<set>`
(`SetMetrics`: metrics with intervals, corpus scores, degenerate shares, classification), `overlap`, `review`.
A set's metrics are addressed without the `metrics` level in gate paths (`task.rouge_l.tuned`).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from workbench import __version__, runfile
from workbench.errors import WbError
from workbench.evaluate import registry
from workbench.output import IncompleteOutput, check_complete

M = TypeVar("M", bound=BaseModel)


def higher_is_better(metric: str) -> bool:
    return registry.higher_is_better(metric)


def stats_of(section: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The STAT entries of a task or probe-set section, in the registry's reading order."""
    found = (section or {}).get("metrics") or {}
    return {k: found[k] for k in registry.order(found)}


def validated(model: type[M], data: Any, path: Path, line: int | None = None) -> M:
    """`data` as `model`, or a WbError naming the file, the line and the field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise WbError(_validation_line(path, err, line)) from None


# -- reading files -------------------------------------------------------------------------------------------------


def read_json(path: Path, what: str) -> Any:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise WbError(f"{path}: {what} not found") from None
    except OSError as e:
        raise WbError(f"{path}: cannot read {what} ({e.strerror})") from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise WbError(f"{path}: {what} is not valid JSON ({e}); re-run the stage that wrote it") from None


def read_jsonl(path: Path, what: str, lenient_tail: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line. With `lenient_tail`, a broken last line (a run killed while
    appending) does not fail: it comes out as `(-line number, {})` so the caller can warn about it."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise WbError(f"{path}: {what} not found") from None
    with f:
        pending: tuple[int, bytes, str] | None = None
        for number, line in enumerate(f, 1):
            if pending is not None:
                raise WbError(f"{path}:{pending[0]}: {what} line is not valid JSON ({pending[2]})")
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                if lenient_tail:
                    pending = (number, line, str(e))
                    continue
                raise WbError(f"{path}:{number}: {what} line is not valid JSON ({e})") from None
            if not isinstance(obj, dict):
                raise WbError(f"{path}:{number}: {what} line must be a JSON object, found {type(obj).__name__}")
            yield number, obj
        if pending is not None:
            yield -pending[0], {}


def _validation_line(path: Path, err: ValidationError, line: int | None = None) -> str:
    e = err.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
    where = f"{path}:{line}" if line is not None else str(path)
    got = e.get("input")
    shown = f" (found {got!r})" if isinstance(got, str | int | float | bool) and len(repr(got)) < 60 else ""
    return f"{where}: field {loc}: {e['msg']}{shown}"


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
    stats = validated(runfile.CleanStats, raw, stats_path)
    read, dropped, rejected = stats.read, stats.dropped, stats.rejected
    extra = stats.model_extra or {}
    source = extra.get("input")
    out = runfile.CleanSummary(
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


def _train_section(manifest: runfile.TrainManifest, log: list[runfile.LogRow]) -> dict[str, Any]:
    keys = runfile.TrainSummary.model_fields.keys() & runfile.TrainManifest.model_fields.keys()
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
        for name in runfile.PREFERENCE_LOG_FIELDS.values():
            value = getattr(row, name)
            if value is not None:
                final[name] = value
    out["final_preference"] = final or None
    config = (manifest.model_extra or {}).get("config")
    if isinstance(config, dict):
        out["recipe"] = config
    return runfile.TrainSummary(**out).model_dump(mode="json", exclude_none=True)


def _has_base(metrics: runfile.EvalMetrics) -> bool:
    sections = [metrics.task, *metrics.forgetting.values()]
    return any(st.base is not None for sec in sections if sec is not None for st in sec.metrics.values())


def _locate(path: Path) -> tuple[Path, Path | None]:
    """(run folder, eval folder or None). RUN may be the run folder or its `eval/` folder itself."""
    if not path.exists():
        raise WbError(f"{path}: no such run folder")
    if not path.is_dir():
        raise WbError(f"{path}: not a folder; pass a run folder (runs/<name>) holding manifest.json and/or eval/")
    if (path / "eval" / "metrics.json").is_file():
        return path, path / "eval"
    if (path / "metrics.json").is_file():
        return (path.parent if path.name == "eval" else path), path
    return path, None


def load_run(path: Path, clean_stats: Path | None = None) -> Run:
    """Read everything a report needs from a run folder. `clean_stats` overrides the stats file that the train
    manifest points to (for runs whose data lives elsewhere now)."""
    path = Path(path)
    run_dir, eval_dir = _locate(path)
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
    train_manifest: dict[str, Any] | None = None
    manifest_path = run_dir / "manifest.json"
    if manifest_path.is_file():
        m = read_json(manifest_path, "run manifest")
        if not isinstance(m, dict):
            raise WbError(f"{manifest_path}: a manifest must be a JSON object")
        if m.get("command", "train") == "train":
            train_manifest = m
            files["train_manifest"] = manifest_path
    log: list[dict[str, Any]] = []
    log_rows: list[runfile.LogRow] = []
    log_path = run_dir / "trainer_log.jsonl"
    if train_manifest is not None and log_path.is_file():
        files["trainer_log"] = log_path
        for number, row in read_jsonl(log_path, "trainer log", lenient_tail=True):
            if number < 0:
                warnings.append(f"{log_path}:{-number}: last line is incomplete (run interrupted?); ignored")
                continue
            log_rows.append(validated(runfile.LogRow, row, log_path, number))
            log.append(row)
    if train_manifest is None:
        missing["train"] = f"no train manifest ({manifest_path} not found): evaluation of predictions made elsewhere?"
    elif not log:
        warnings.append(f"{log_path}: no training log; the loss curve is not shown")

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
    metrics = runfile.EvalMetrics()
    has_base = False
    eval_warnings: list[str] = []
    review: runfile.ReviewSummary | None = None
    if eval_dir is None:
        missing["eval"] = f"no evaluation ({run_dir / 'eval' / 'metrics.json'} not found): run `wb eval {run_dir}`"
    else:
        metrics_path = eval_dir / "metrics.json"
        files["metrics"] = metrics_path
        raw = read_json(metrics_path, "eval metrics")
        if not isinstance(raw, dict):
            raise WbError(f"{metrics_path}: eval metrics must be a JSON object")
        metrics = validated(runfile.EvalMetrics, raw, metrics_path)
        has_base = _has_base(metrics)
        eval_warnings = list(metrics.warnings)
        if metrics.task is None:
            missing["task"] = f"{metrics_path}: no task metrics"
        if not metrics.forgetting:
            missing["forgetting"] = f"{metrics_path}: no forgetting probes were run"
        if not has_base:
            missing["base"] = "no base-model scores (predictions without base answers): no deltas, A/B or forgetting"
        scores = eval_dir / "scores.jsonl"
        files["scores"] = scores if scores.is_file() else None
        review_path = eval_dir / "review.json"
        if review_path.is_file():
            loaded = read_json(review_path, "review verdicts")
            if not isinstance(loaded, dict):
                raise WbError(f"{review_path}: review verdicts must be a JSON object")
            fields = runfile.ReviewSummary.model_fields
            review = validated(runfile.ReviewSummary, {k: v for k, v in loaded.items() if k in fields}, review_path)
            files["review"] = review_path
        em = eval_dir / "manifest.json"
        loaded = read_json(em, "eval manifest") if em.is_file() else None
        if isinstance(loaded, dict):
            eval_manifest = loaded
            files["eval_manifest"] = em
        if (loaded is None and scores.is_file()) or (isinstance(loaded, dict) and "outputs" in loaded):
            # wb eval publishes scores, metrics and review sample as one set, its manifest (with their hashes) last:
            # numbers from a torn or edited set are not trusted. A metrics.json made by hand, with no scores file
            # or a manifest naming no outputs beside it, is read as given.
            check_complete(em)

    if train_manifest is None and eval_dir is None:
        raise WbError(f"{path}: neither manifest.json from `wb train` nor eval/metrics.json from `wb eval` found")

    name = run_dir.name
    if train_manifest and isinstance(train_manifest.get("config"), dict):
        name = str(train_manifest["config"].get("name") or name)
    train = None
    if train_manifest is not None:
        typed = validated(runfile.TrainManifest, train_manifest, manifest_path)
        train = _train_section(typed, log_rows)
        warnings.extend(f"train: {w}" for w in typed.warnings)
    warnings.extend(f"eval: {w}" for w in eval_warnings)
    kind = "+".join(k for k, present in (("train", train is not None), ("eval", eval_dir is not None)) if present)
    summary = runfile.RunSummary(
        wb_version=__version__,
        run=runfile.RunInfo(name=name, path=str(run_dir), kind=kind),
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
    return Run(run_dir, name, summary, files, train_manifest, eval_manifest, clean_manifest, log)


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
        if path is not None:
            for number, row in read_jsonl(path, "scores"):
                validated(runfile.ScoreRow, row, path, number)  # numbers are numbers: the page computes with them
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
