"""`wb eval` as a library function: generate (or read) answers, score them, compare base and tuned, write it down.

Writes into the output folder (default `runs/<name>/eval/`): `scores.jsonl` (every item, both models, every
metric), `metrics.json` (aggregates with intervals, forgetting, overlap, generation settings, warnings),
`review_sample.csv` and `manifest.json` — the formats of docs/run-folder.md.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from workbench import io
from workbench.errors import WbError
from workbench.evaluate import compare, review
from workbench.evaluate.forgetting import SHIPPED, Item, ProbeSet, load_probe_set
from workbench.evaluate.generate import GenerationSettings
from workbench.evaluate.metrics import BINARY_METRICS, METRIC_KEYS, score_items
from workbench.io import sha256_file
from workbench.manifest import build_manifest

ProgressFn = Callable[[str, int, int], None]
StatusFn = Callable[[str], None]

TASK = "task"
SIDES = ("tuned", "base")
LOWER_IS_BETTER = frozenset({"loss", "perplexity"})
QA_METRICS = ("accuracy", "exact_match", "f1", "rouge_l")
TASK_METRICS = ("rouge_l", "rouge1", "rouge2", "bleu", "chrf", "exact_match", "f1", "loss")
REGRESSIONS_KEPT = 50


class EvalConfig(BaseModel):
    """What `wb eval` evaluates and how; every field has a command-line option."""

    model_config = ConfigDict(extra="forbid")

    data: Path | None = Field(None, description="Task eval records (reference = output).")
    split: str | None = Field(None, description="Split of a dataset folder given as data; default test.")
    limit: int | None = Field(None, ge=1, description="Only the first N task records.")
    probes: list[str] = Field(default_factory=lambda: list(SHIPPED), description="Probe sets: shipped names or files.")
    probe_limit: int | None = Field(None, ge=1, description="Only the first N items of each probe set.")
    base: bool = Field(True, description="Also evaluate the base model for the A/B and forgetting comparisons.")
    base_model: str | None = Field(None, description="The base to compare with, when the target is a whole model.")
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    probe_max_new_tokens: int = Field(32, ge=1, description="New tokens for short-answer probes.")
    max_length: int = Field(1024, ge=16, description="Tokens per sequence when computing reference losses.")
    seed: int = Field(0, description="Seed of the bootstrap resampling.")
    review_size: int = Field(50, ge=0, description="Items in review_sample.csv.")
    cache: bool = Field(True, description="Reuse generations from the cache.")


@dataclass
class EvalSet:
    name: str
    kind: str  # task | qa | text
    items: list[Item]
    predictions: dict[str, list[str]] = field(default_factory=dict)  # side -> answers
    losses: dict[str, list[float | None]] = field(default_factory=dict)  # side -> reference losses


@dataclass
class EvalResult:
    out_dir: Path
    metrics: dict[str, Any]
    warnings: list[str]


# ---------------------------------------------------------------------------------------------------------------
# Inputs


def task_items(path: Path, limit: int | None, split: str | None = None) -> list[Item]:
    from workbench.train.trainer import read_records

    records = read_records(path, split, prefer=("test", "validation"))[:limit]
    return [
        Item(
            id=line,
            instruction=r["instruction"],
            input=r.get("input") or "",
            reference=r["output"],
            system=r.get("system") or "",
            history=[list(turn) for turn in r.get("history") or []],
        )
        for line, r in records
    ]


def _sets(config: EvalConfig) -> list[EvalSet]:
    sets: list[EvalSet] = []
    if config.data is not None:
        sets.append(EvalSet(TASK, TASK, task_items(config.data, config.limit, config.split)))
    names: set[str] = set()
    for spec in config.probes:
        probe: ProbeSet = load_probe_set(spec, config.probe_limit)
        if probe.name in names or probe.name == TASK:
            raise WbError(f"probes: two sets are named {probe.name!r}; rename one file")
        names.add(probe.name)
        sets.append(EvalSet(probe.name, probe.kind, probe.items))
    if not sets:
        raise WbError("nothing to evaluate: give --data FILE and/or probe sets")
    return sets


# ---------------------------------------------------------------------------------------------------------------
# With a model


def evaluate(
    target_spec: str | Path,
    config: EvalConfig,
    out_dir: Path | None = None,
    on_status: StatusFn | None = None,
    on_progress: ProgressFn | None = None,
) -> EvalResult:
    """Evaluate a run (or adapter, or model) and, unless `config.base` is off, its base model."""
    from workbench.evaluate.generate import GenerationCache
    from workbench.train.runs import Target, load, resolve_target

    started = time.time()
    target = resolve_target(target_spec)
    out_dir = _out_dir(target.run_dir, out_dir)
    sets = _sets(config)
    warnings: list[str] = []
    cache = GenerationCache() if config.cache else None
    tuned = load([target], on_status=on_status)
    adapter_sha256 = sha256_file(target.adapter / "adapter_model.safetensors") if target.adapter else None
    sides: list[tuple[str, Any, str | None]] = [("tuned", tuned, tuned.active)]
    if config.base:
        if tuned.adapters:  # the same model with its adapters switched off
            sides.append(("base", tuned, None))
        elif config.base_model or target.run_dir is not None:  # a whole model (merged, freeze/full): load the base
            base_spec = config.base_model or _recipe_model(target.run_dir)  # type: ignore[arg-type]
            sides.append(("base", load([Target(base_spec, base_spec, template=tuned.template)]), None))
        else:
            warnings.append(f"{target_spec} is a model, not a run: no base to compare with (give --base-model)")
    for side, loaded, active in sides:
        loaded.use(active)
        for s in sets:
            _run_side(s, side, loaded, config, cache, on_progress)
    generation = {
        "model": target.base,
        "adapter": str(target.adapter) if target.adapter else None,
        "adapter_sha256": adapter_sha256,
        "template": tuned.template,
        **config.generation.model_dump(),
        "probe_max_new_tokens": config.probe_max_new_tokens,
    }
    if cache is not None:
        generation["cache_hits"], generation["cache_misses"] = cache.hits, cache.misses
    overlap = _train_overlap(target.run_dir, config.data) if config.data is not None else None
    return _finish(sets, config, out_dir, started, generation, overlap, warnings, {"target": str(target_spec)})


def _out_dir(run_dir: Path | None, out_dir: Path | None) -> Path:
    if out_dir is not None:
        return out_dir
    if run_dir is None:
        raise WbError("not a run folder: say where to write with -o DIR")
    return run_dir / "eval"


def _recipe_model(run_dir: Path) -> str:
    import yaml

    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8")) or {}
    return str(recipe.get("model") or "embedded")


def _run_side(
    s: EvalSet, side: str, loaded: Any, config: EvalConfig, cache: Any, on_progress: ProgressFn | None
) -> None:
    from workbench.evaluate.generate import generate, prompt_for, reference_losses, text_losses

    label = f"{side} · {s.name}"
    report = (lambda done, total: on_progress(label, done, total)) if on_progress is not None else None
    if s.kind == "text":
        s.losses[side] = text_losses(loaded, [it.reference for it in s.items], config.max_length)
        if report is not None:
            report(len(s.items), len(s.items))
        return
    settings = config.generation
    if s.kind == "qa":
        settings = settings.model_copy(update={"max_new_tokens": config.probe_max_new_tokens})
    prompts = [prompt_for(loaded, it.record()) for it in s.items]
    s.predictions[side] = generate(loaded, prompts, settings, cache, report)
    if s.kind == TASK:
        s.losses[side] = reference_losses(loaded, [it.record() for it in s.items], config.max_length)


def _train_overlap(run_dir: Path | None, eval_data: Path) -> dict[str, Any] | None:
    """Task items sharing a long n-gram with the run's training data (13 tokens / 20 CJK characters)."""
    if run_dir is None or not (run_dir / "manifest.json").is_file():
        return None
    from workbench.dedup.contamination import DecontaminateConfig, EvalIndex
    from workbench.frames import rows_to_frame

    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    data = (manifest.get("inputs", {}).get("data") or {}).get("path")
    if not data or not Path(data).exists():  # a file or a dataset folder
        return None
    index = EvalIndex.from_files([eval_data], DecontaminateConfig())
    for batch in io.RecordReader(Path(data)):
        index.check(rows_to_frame(batch.lines, batch.rows))
    report = index.report(limit=10**9)[str(eval_data)]
    ids = sorted(int(str(item).rsplit(" ", 1)[-1]) for item in report["leaked"])  # type: ignore[attr-defined]
    n = int(report["items"])  # type: ignore[call-overload]
    return {"training_data": data, "items": len(ids), "fraction": round(len(ids) / n, 6) if n else 0.0, "ids": ids}


# ---------------------------------------------------------------------------------------------------------------
# From a predictions file


def evaluate_predictions(path: Path, config: EvalConfig, out_dir: Path) -> EvalResult:
    """Score a file of existing predictions (`prediction` + `reference`, optional `base_prediction`, `answers`,
    `instruction`, `input`, `id`, `set`) without any model."""
    started = time.time()
    sets: dict[str, EvalSet] = {}
    for n, row in io.json_objects(path):
        for key in ("prediction", "reference"):
            if not isinstance(row.get(key), str):
                raise WbError(f"{path}:line {n}: field {key}: missing or not a string")
        if "base_prediction" in row and not isinstance(row["base_prediction"], str):
            raise WbError(f"{path}:line {n}: field base_prediction: not a string")
        name = str(row.get("set") or TASK)
        s = sets.setdefault(name, EvalSet(name, TASK if name == TASK else "qa", []))
        answers: list[Any] = row["answers"] if isinstance(row.get("answers"), list) else []
        s.items.append(
            Item(
                id=row.get("id", n),
                instruction=str(row.get("instruction") or ""),
                input=str(row.get("input") or ""),
                reference=row["reference"],
                answers=[str(a) for a in answers],
            )
        )
        s.predictions.setdefault("tuned", []).append(row["prediction"])
        if "base_prediction" in row:
            s.predictions.setdefault("base", []).append(row["base_prediction"])
    if not sets:
        raise WbError(f"{path}: no predictions in the file")
    for s in sets.values():
        if "base" in s.predictions and len(s.predictions["base"]) != len(s.items):
            raise WbError(f"{path}: set {s.name}: base_prediction is given for some rows only; give it for all or none")
    return _finish(list(sets.values()), config, out_dir, started, {"predictions_file": str(path)}, None, [], {})


# ---------------------------------------------------------------------------------------------------------------
# Scoring and writing


def _finish(
    sets: list[EvalSet],
    config: EvalConfig,
    out_dir: Path,
    started: float,
    generation: dict[str, Any],
    overlap: dict[str, Any] | None,
    warnings: list[str],
    inputs_extra: dict[str, str],
) -> EvalResult:
    rows: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {"forgetting": {}}
    for s in sets:
        set_rows, summary, set_warnings = _score_set(s, config.seed)
        rows.extend(set_rows)
        warnings.extend(f"{s.name}: {w}" for w in set_warnings)
        if s.kind == TASK:
            metrics[TASK] = summary
        else:
            metrics["forgetting"][s.name] = summary
    if overlap is not None:
        metrics["overlap"] = overlap
        if overlap["items"]:
            warnings.append(
                f"{overlap['items']} of the task items share a long n-gram with the run's training data "
                f"({overlap['fraction']:.1%}): their scores measure memory, not generalisation"
            )
    metrics["generation"] = generation
    task = metrics.get(TASK)
    if task is not None and task["n"] < 30:
        warnings.append(f"the task set has only {task['n']} items: intervals are wide")
    metrics["warnings"] = warnings
    out_dir.mkdir(parents=True, exist_ok=True)
    with io.atomic_write(out_dir / "scores.jsonl") as f:
        for row in rows:
            f.write(io.jsonl_line(row))
    io.write_json(out_dir / "metrics.json", metrics)
    outputs = {"scores": out_dir / "scores.jsonl", "metrics": out_dir / "metrics.json"}
    if any(r["set"] == TASK and "base" in r for r in rows) and config.review_size:
        review.write_sample(out_dir / "review_sample.csv", rows, config.review_size, config.seed)
        outputs["review_sample"] = out_dir / "review_sample.csv"
    inputs = {"data": config.data} if config.data is not None else {}
    manifest = build_manifest(
        command="eval",
        started=started,
        inputs=inputs,
        outputs=outputs,
        config=config.model_dump(mode="json"),
        seed=config.seed,
    )
    manifest.update(inputs_extra)
    io.write_json(out_dir / "manifest.json", manifest)
    return EvalResult(out_dir, metrics, warnings)


def _score_set(s: EvalSet, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    sides = [side for side in SIDES if side in s.predictions or side in s.losses]
    per_side: dict[str, list[dict[str, Any]]] = {}
    corpus: dict[str, Any] = {}
    warnings: list[str] = []
    for side in sides:
        scores: list[dict[str, Any]] = [{} for _ in s.items]
        if side in s.predictions:
            result = score_items(s.predictions[side], [it.references for it in s.items])
            if side == "tuned":
                warnings.extend(result.warnings)
            for i, (prediction, item_scores) in enumerate(zip(s.predictions[side], result.items, strict=True)):
                scores[i] = {"prediction": prediction, **item_scores}
            for name, score in result.corpus.items():
                corpus.setdefault(name, {})[side] = score.score
                corpus[name]["signature"] = score.signature
        if side in s.losses:
            for i, loss in enumerate(s.losses[side]):
                scores[i]["loss"] = loss
                if s.kind == "text":
                    scores[i]["perplexity"] = round(math.exp(loss), 4) if loss is not None else None
        per_side[side] = scores
    rows = []
    for i, it in enumerate(s.items):
        row: dict[str, Any] = {"set": s.name, "id": it.id, "instruction": it.instruction, "input": it.input}
        row["reference"] = it.reference
        if it.answers and it.answers != [it.reference]:
            row["answers"] = it.answers
        for side in sides:
            row[side] = per_side[side][i]
        rows.append(row)
    keys = {"text": ("loss", "perplexity"), "qa": QA_METRICS, TASK: TASK_METRICS}[s.kind]
    summary: dict[str, Any] = {"n": len(s.items), "kind": s.kind, "metrics": {}}
    for key in keys:
        tuned = [r["tuned"].get(key) for r in rows]
        if all(v is None for v in tuned):
            continue
        base = [r["base"].get(key) for r in rows] if "base" in sides else None
        summary["metrics"][key] = compare.stat(
            tuned, base, seed, binary=key in BINARY_METRICS, higher_is_better=key not in LOWER_IS_BETTER
        )
    if corpus:
        summary["corpus"] = corpus
    if s.kind == TASK and "base" in sides:
        deltas = sorted(
            ((r["tuned"]["rouge_l"] - r["base"]["rouge_l"], n) for n, r in enumerate(rows)), key=lambda p: p[0]
        )
        summary["regressions"] = [rows[n]["id"] for d, n in deltas if d < 0][:REGRESSIONS_KEPT]
    assert set(METRIC_KEYS) >= {k for k in keys if k not in ("loss", "perplexity")}
    return rows, summary, warnings
