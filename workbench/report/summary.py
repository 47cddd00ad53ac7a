"""Load a run folder (see docs/run-folder.md) into one summary: the numbers `wb report` shows and `wb gate` checks.

A run folder may hold any part of the pipeline's output: training only (no `eval/`), evaluation only (a
predictions file scored elsewhere: no train manifest, perhaps no base scores), or both. What is absent is listed
in `summary["missing"]` with the reason; what is present but unreadable is a `WbError` naming the file.

The summary is plain JSON. Its sections, addressed by dotted paths in gate files:

- `clean`: `read`, `kept`, `dropped`, `rejected`, `dropped_fraction` (dropped / read), `rejected_fraction`,
  `removed_fraction` ((dropped + rejected) / read), `dropped_by_rule.<rule>`, `rejected_by_kind.<kind>`, ...
- `train`: the train manifest's numbers (`train_loss`, `best_eval_loss`, `trainable_parameters`, ...) plus
  `final_loss` / `final_eval_loss` (the last logged values) and `trainable_fraction`.
- `task`: `n` and one STAT per metric (`task.rouge_l.tuned`, `task.rouge_l.delta_lower`, ...), `corpus`, `regressions`.
- `forgetting.<set>`: `n`, `kind` and one STAT per metric (`forgetting.general_en.accuracy.delta_lower`).
- `overlap`: `items`, `fraction`.
- `review` (after `wb eval --import-review`): `reviewed`, `unreviewed`, `tuned_preferred`, `verdicts.<verdict>`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from workbench import __version__
from workbench.errors import WbError

STAT_FIELDS = (
    "tuned",
    "lower",
    "upper",
    "base",
    "delta",
    "delta_lower",
    "delta_upper",
    "wins",
    "ties",
    "losses",
    "mcnemar_p",
)
LOWER_IS_BETTER = frozenset({"loss", "perplexity"})
TRAIN_KEYS = (
    "method",
    "model",
    "template",
    "precision",
    "trainable_parameters",
    "total_parameters",
    "train_runtime_seconds",
    "tokens_per_second",
    "peak_rss_mb",
    "gpu_peak_memory_mb",
    "train_loss",
    "best_eval_loss",
    "global_step",
    "examples",
    "tokens",
    "wall_seconds",
    "seed",
)
TRAIN_NUMBERS = (
    "trainable_parameters",
    "total_parameters",
    "trainable_fraction",
    "train_runtime_seconds",
    "tokens_per_second",
    "peak_rss_mb",
    "gpu_peak_memory_mb",
    "train_loss",
    "best_eval_loss",
    "final_loss",
    "final_eval_loss",
    "global_step",
    "wall_seconds",
)
CLEAN_NUMBERS = (
    "read",
    "kept",
    "dropped",
    "rejected",
    "dropped_fraction",
    "rejected_fraction",
    "removed_fraction",
    "kept_fraction",
)


METRIC_ORDER = ("rouge_l", "rouge1", "rouge2", "bleu", "chrf", "exact_match", "f1", "accuracy", "loss", "perplexity")
PROBE_ORDER = ("accuracy", "perplexity", "f1", "exact_match", "rouge_l", "loss")  # the first present is the headline


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def stats_of(section: dict[str, Any], order: tuple[str, ...] = METRIC_ORDER) -> dict[str, dict[str, Any]]:
    """The STAT entries of a task or probe-set section, in a reading order (known metrics first, then the rest)."""
    found = {k: v for k, v in section.items() if isinstance(v, dict) and any(f in v for f in STAT_FIELDS)}
    rank = {m: i for i, m in enumerate(order)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


# -- the eval files' shapes (lenient: extra keys are kept, so a newer wb eval still reads) ---------------------


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Stat(_Open):
    tuned: float | None = None
    lower: float | None = None
    upper: float | None = None
    base: float | None = None
    delta: float | None = None
    delta_lower: float | None = None
    delta_upper: float | None = None
    wins: int | None = None
    ties: int | None = None
    losses: int | None = None
    mcnemar_p: float | None = None


class TaskMetrics(_Open):
    n: int
    metrics: dict[str, Stat] = Field(default_factory=dict)
    corpus: dict[str, Any] = Field(default_factory=dict)
    regressions: list[int | str] = Field(default_factory=list)


class ProbeSet(_Open):
    n: int
    kind: str = "qa"
    metrics: dict[str, Stat] = Field(default_factory=dict)


class EvalMetrics(_Open):
    task: TaskMetrics | None = None
    forgetting: dict[str, ProbeSet] = Field(default_factory=dict)
    overlap: dict[str, Any] | None = None
    generation: dict[str, Any] | None = None
    warnings: list[str] = Field(default_factory=list)


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


def _validation_line(path: Path, err: ValidationError) -> str:
    e = err.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in e["loc"] if p not in ("metrics",)) or "(top level)"
    return f"{path}: {loc}: {e['msg']}"


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
    stats = read_json(stats_path, "cleaning stats")
    if not isinstance(stats, dict):
        raise WbError(f"{stats_path}: cleaning stats must be a JSON object")
    for key in ("read", "kept", "dropped", "rejected"):
        if not isinstance(stats.get(key), int):
            raise WbError(f"{stats_path}: {key}: missing or not an integer (not a `wb clean` stats file?)")
    read, dropped, rejected = stats["read"], stats["dropped"], stats["rejected"]
    out: dict[str, Any] = {k: stats[k] for k in ("read", "kept", "dropped", "rejected")}
    out.update(
        dropped_fraction=_fraction(dropped, read),
        rejected_fraction=_fraction(rejected, read),
        removed_fraction=_fraction(dropped + rejected, read),
        kept_fraction=_fraction(stats["kept"], read),
        dropped_by_rule=dict(stats.get("dropped_by_rule") or {}),
        rejected_by_kind=dict(stats.get("rejected_by_kind") or {}),
        invariant_holds=stats.get("invariant_holds", read == stats["kept"] + dropped + rejected),
    )
    for key in ("modified", "pii_found", "kept_output_tokens_histogram", "contamination"):
        if key in stats:
            out[key] = stats[key]
    source = stats.get("input")
    if isinstance(source, dict) and "path" in source:
        out["source"] = source["path"]
    return out


def _train_section(manifest: dict[str, Any], log: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: manifest[k] for k in TRAIN_KEYS if k in manifest}
    out["trainable_fraction"] = _fraction(manifest.get("trainable_parameters"), manifest.get("total_parameters"))
    losses = [r["loss"] for r in log if isinstance(r.get("loss"), int | float)]
    evals = [r["eval_loss"] for r in log if isinstance(r.get("eval_loss"), int | float)]
    out["final_loss"] = losses[-1] if losses else None
    out["final_eval_loss"] = evals[-1] if evals else None
    out["first_loss"] = losses[0] if losses else None
    out["logged_steps"] = len(losses)
    if isinstance(manifest.get("config"), dict):
        out["recipe"] = manifest["config"]
    return out


def _stat_dict(stat: Stat) -> dict[str, Any]:
    return stat.model_dump(exclude_none=True)


def _eval_sections(metrics: EvalMetrics) -> dict[str, Any]:
    out: dict[str, Any] = {"task": None, "forgetting": {}, "overlap": metrics.overlap, "generation": metrics.generation}
    if metrics.task is not None:
        t = metrics.task
        task: dict[str, Any] = {"n": t.n}
        for name, stat in t.metrics.items():
            task[name] = _stat_dict(stat)
        task["corpus"] = t.corpus
        task["regressions"] = t.regressions
        out["task"] = task
    for name, probe in metrics.forgetting.items():
        section: dict[str, Any] = {"n": probe.n, "kind": probe.kind}
        for metric, stat in probe.metrics.items():
            section[metric] = _stat_dict(stat)
        out["forgetting"][name] = section
    return out


def _has_base(metrics: EvalMetrics) -> bool:
    stats = [*(metrics.task.metrics.values() if metrics.task else [])]
    for probe in metrics.forgetting.values():
        stats.extend(probe.metrics.values())
    return any(s.base is not None for s in stats)


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
    log_path = run_dir / "trainer_log.jsonl"
    if train_manifest is not None and log_path.is_file():
        files["trainer_log"] = log_path
        for number, row in read_jsonl(log_path, "trainer log", lenient_tail=True):
            if number < 0:
                warnings.append(f"{log_path}:{-number}: last line is incomplete (run interrupted?); ignored")
                continue
            log.append(row)
    if train_manifest is None:
        missing["train"] = f"no train manifest ({manifest_path} not found): evaluation of predictions made elsewhere?"
    elif not log:
        warnings.append(f"{log_path}: no training log; the loss curve is not shown")

    # cleaning stats
    stats_path: Path | None = Path(clean_stats) if clean_stats is not None else None
    clean_manifest: dict[str, Any] | None = None
    if stats_path is None and train_manifest is not None:
        data = ((train_manifest.get("inputs") or {}).get("data") or {}).get("path")
        if not data:
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

    # evaluation
    eval_manifest: dict[str, Any] | None = None
    sections: dict[str, Any] = {"task": None, "forgetting": {}, "overlap": None, "generation": None}
    has_base = False
    eval_warnings: list[str] = []
    review: dict[str, Any] | None = None
    if eval_dir is None:
        missing["eval"] = f"no evaluation ({run_dir / 'eval' / 'metrics.json'} not found): run `wb eval {run_dir}`"
    else:
        metrics_path = eval_dir / "metrics.json"
        files["metrics"] = metrics_path
        raw = read_json(metrics_path, "eval metrics")
        if not isinstance(raw, dict):
            raise WbError(f"{metrics_path}: eval metrics must be a JSON object")
        try:
            metrics = EvalMetrics.model_validate(raw)
        except ValidationError as err:
            raise WbError(_validation_line(metrics_path, err)) from None
        sections = _eval_sections(metrics)
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
            review = {k: loaded[k] for k in ("reviewed", "unreviewed", "tuned_preferred", "verdicts") if k in loaded}
            files["review"] = review_path
        em = eval_dir / "manifest.json"
        if em.is_file():
            loaded = read_json(em, "eval manifest")
            if isinstance(loaded, dict):
                eval_manifest = loaded
                files["eval_manifest"] = em

    if train_manifest is None and eval_dir is None:
        raise WbError(f"{path}: neither manifest.json from `wb train` nor eval/metrics.json from `wb eval` found")

    name = run_dir.name
    if train_manifest and isinstance(train_manifest.get("config"), dict):
        name = str(train_manifest["config"].get("name") or name)
    train = _train_section(train_manifest, log) if train_manifest is not None else None
    if train_manifest is not None:
        warnings.extend(f"train: {w}" for w in train_manifest.get("warnings") or [])
    warnings.extend(f"eval: {w}" for w in eval_warnings)
    kind = "+".join(k for k, present in (("train", train is not None), ("eval", eval_dir is not None)) if present)
    summary: dict[str, Any] = {
        "wb_version": __version__,
        "run": {"name": name, "path": str(run_dir), "kind": kind},
        "clean": clean,
        "train": train,
        **sections,
        "review": review,
        "has_base": has_base,
        "missing": missing,
        "warnings": warnings,
        "files": {k: str(v) for k, v in files.items() if v is not None},
    }
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
            for _, row in read_jsonl(path, "scores"):
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
