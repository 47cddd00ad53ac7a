"""`wb eval` as a library function: generate (or read) answers, score them, compare base and tuned, write it down.

Writes into the output folder (default `runs/<name>/eval/`): `scores.jsonl` (every item, both models, every
metric, degenerate-answer flags), `metrics.json` (aggregates with intervals, degenerate shares, forgetting,
overlap, generation settings, warnings), `review_sample.csv` and `manifest.json` — the models of
`workbench.runfile` (docs/run-folder.md describes them), at the paths `workbench.runfile.folder.EvalFolder` names. How
the task's answers are judged comes from an eval suite (`workbench.evaluate.suite`); which metrics exist, from the
registry (`workbench.metric_specs`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from workbench import degenerate_kinds, metric_specs
from workbench.errors import WbError
from workbench.evaluate import compare, degenerate, judge, review, scorers
from workbench.evaluate.config import SHIPPED_MC, SHIPPED_PROBES, EvalConfig
from workbench.evaluate.forgetting import Item, ProbeSet, load_probe_set, probes_dir
from workbench.evaluate.metrics import METRIC_KEYS, score_items
from workbench.evaluate.suite import DEFAULT, EvalSuite, load_suite
from workbench.io.jsontext import dumps_json, jsonl_line
from workbench.io.reader import RecordReader, read_objects
from workbench.manifest import build_manifest
from workbench.methods.registry import scores_only
from workbench.models.generate import Answer
from workbench.output import OutputSet, sha256_file
from workbench.precision import for_model
from workbench.records import EXTRA
from workbench.runfile.evals import (
    ClassReport,
    CorpusScore,
    DegenerateStat,
    EvalMetrics,
    JudgeSummary,
    JudgeVerdict,
    McScores,
    Overlap,
    PreferenceMetrics,
    ScoreRow,
    SetMetrics,
    SideScores,
    Stat,
)
from workbench.runfile.folder import EvalFolder, RunFolder
from workbench.text import count_cjk

if TYPE_CHECKING:
    from workbench.models.targets import Target

ProgressFn = Callable[[str, int, int], None]
StatusFn = Callable[[str], None]

TASK = "task"
SIDES = ("tuned", "base")
REGRESSIONS_KEPT = 50
MC_REJECTS_KEPT = 50  # rejected multiple-choice rows named in metrics.json (all are counted)


@dataclass
class EvalSet:
    name: str
    kind: str  # task | qa | text | mc
    items: list[Item]
    predictions: dict[str, list[str]] = field(default_factory=dict)  # side -> answers
    losses: dict[str, list[float | None]] = field(default_factory=dict)  # side -> reference losses
    generated: dict[str, list[Answer]] = field(default_factory=dict)  # side -> token counts, finished
    max_new_tokens: int | None = None
    mc: dict[str, list[McScores]] = field(default_factory=dict)  # side -> option log-likelihoods
    fewshot: list[Item] = field(default_factory=list)  # multiple choice: examples, not scored
    settings: dict[str, Any] = field(default_factory=dict)  # how the set was read (its metrics.json settings)
    judged: list[JudgeVerdict] = field(default_factory=list)  # the pairwise judge's verdicts (task set)
    judge_settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalResult:
    out_dir: Path
    metrics: EvalMetrics  # what metrics.json holds, typed
    warnings: list[str]


# ---------------------------------------------------------------------------------------------------------------
# Inputs


def task_items(path: Path, limit: int | None, split: str | None = None) -> list[Item]:
    """The task records as eval items. A record may also carry `answer_type` (overriding the suite's) and `options`
    ({"A": "...", ...} for multiple choice), in any file format."""
    from workbench.io.reader import read_records

    records = read_records(path, split, prefer=("test", "validation"), extra_fields=True)[:limit]
    items = []
    for line, r in records:
        extra = _extras(orjson.loads(r[EXTRA]), path, line) if r.get(EXTRA) else {}
        items.append(
            Item(
                id=line,
                instruction=r["instruction"],
                input=r.get("input") or "",
                reference=r["output"],
                system=r.get("system") or "",
                history=[list(turn) for turn in r.get("history") or []],
                answer_type=extra.get("answer_type"),
                options=extra.get("options"),
            )
        )
    return items


def _extras(row: dict[str, Any], path: Path, n: int) -> dict[str, Any]:
    """A record's own `answer_type` and multiple-choice `options`, checked."""
    extra: dict[str, Any] = {}
    answer_type = row.get("answer_type")
    if answer_type is not None:
        if answer_type not in metric_specs.ANSWER_TYPES:
            known = ", ".join(metric_specs.ANSWER_TYPES)
            raise WbError(f"{path}:line {n}: field answer_type: {answer_type!r} is not one of {known}")
        extra["answer_type"] = answer_type
    options = row.get("options")
    if options is not None:
        if not isinstance(options, dict) or not all(isinstance(v, str) for v in options.values()):
            raise WbError(f"{path}:line {n}: field options: expected an object of letter -> option text")
        extra["options"] = {str(k).strip().upper(): v for k, v in options.items()}
    return extra


def _sets(config: EvalConfig) -> list[EvalSet]:
    sets: list[EvalSet] = []
    if config.data is not None:
        sets.append(EvalSet(TASK, TASK, task_items(config.data, config.limit, config.split)))
    names: set[str] = set()

    def add(new: EvalSet) -> None:
        if new.name in names or new.name == TASK:
            raise WbError(f"probes: two sets are named {new.name!r}; rename one file")
        names.add(new.name)
        sets.append(new)

    for spec in config.probes:
        if is_mc_probe(spec):
            add(mc_set(spec, config.fewshot, config.probe_limit))
        else:
            probe: ProbeSet = load_probe_set(spec, config.probe_limit)
            add(EvalSet(probe.name, probe.kind, probe.items))
    for spec in config.mc:
        add(mc_set(spec, config.fewshot, config.mc_limit))
    if not sets and config.prefs is None:
        raise WbError("nothing to evaluate: give --data FILE, probe sets and/or --prefs FILE")
    return sets


def is_mc_probe(spec: str | Path) -> bool:
    """A shipped multiple-choice probe set, or a probe file whose records are multiple-choice items."""
    from workbench.evaluate import mc

    text = str(spec)
    if text in SHIPPED_PROBES:
        return text in SHIPPED_MC
    return Path(text).is_file() and mc.looks_like_mc(Path(text))


def mc_set(spec: str | Path, fewshot: int, limit: int | None) -> EvalSet:
    """A multiple-choice file as a forgetting set: its first `fewshot` items are examples, the rest (up to `limit`)
    are scored; rejected rows are counted and named in the set's settings."""
    from workbench.evaluate import mc

    text = str(spec)
    path = probes_dir() / f"{text}.jsonl" if text in SHIPPED_PROBES else Path(text)
    loaded = mc.load_mc(path)
    if fewshot >= len(loaded.items):
        raise WbError(f"{path}: --fewshot {fewshot} leaves no item to score (the file has {len(loaded.items)})")
    shots, items = loaded.items[:fewshot], loaded.items[fewshot:]
    items = items[:limit] if limit is not None else items
    settings: dict[str, Any] = {
        "source": str(path),
        "shape": loaded.shape,
        "fewshot": fewshot,
        "fewshot_ids": [it.id for it in shots],
        "rejected": len(loaded.rejects),
    }
    if loaded.rejects:
        settings["rejects"] = [r.describe(path) for r in loaded.rejects[:MC_REJECTS_KEPT]]
    return EvalSet(loaded.name, "mc", items, fewshot=shots, settings=settings)


# ---------------------------------------------------------------------------------------------------------------
# With a model


def evaluate(
    target_spec: str | Path,
    config: EvalConfig,
    out_dir: Path | None = None,
    on_status: StatusFn | None = None,
    on_progress: ProgressFn | None = None,
) -> EvalResult:
    """Evaluate a run (or adapter, or model) and, unless `config.base` is off, its base model. A run folder written
    into (its `eval/`, the default) is locked meanwhile: a run still training, or another eval into it, refuses."""
    from workbench.models.targets import resolve_target
    from workbench.output import locked_run

    started = time.time()
    target = resolve_target(target_spec)
    out_dir = _out_dir(target.run_dir, out_dir)
    run_dir = target.run_dir
    into_run = run_dir is not None and out_dir.resolve().is_relative_to(run_dir.resolve())
    with locked_run(run_dir) if run_dir is not None and into_run else contextlib.nullcontext():
        return _evaluate(target_spec, target, config, out_dir, started, on_status, on_progress)


def _evaluate(
    target_spec: str | Path,
    target: Target,
    config: EvalConfig,
    out_dir: Path,
    started: float,
    on_status: StatusFn | None,
    on_progress: ProgressFn | None,
) -> EvalResult:
    from workbench.models.generate import GenerationCache
    from workbench.models.loglik import LoglikCache
    from workbench.models.targets import Target, load

    warnings: list[str] = []
    if scores_only(target.method):  # a reward model answers nothing: it is evaluated on preference pairs alone
        return _evaluate_reward_run(target, config, out_dir, started, warnings)
    sets = _sets(config)
    cache = GenerationCache() if config.cache else None
    ll_cache = LoglikCache(identities=cache) if config.cache and any(s.kind == "mc" for s in sets) else None
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
            _run_side(s, side, loaded, config, ll_cache if s.kind == "mc" else cache, on_progress)
    used = for_model(config.generation.precision, tuned.model)
    if config.judge is not None:
        _judge_task(sets, config, cache, on_status, on_progress)
    generation = {
        "model": target.base,
        "adapter": str(target.adapter) if target.adapter else None,
        "adapter_sha256": adapter_sha256,
        "template": tuned.template,
        **config.generation.model_dump(),
        "probe_max_new_tokens": config.probe_max_new_tokens,
        **used.record(),  # what `auto` became, and why
    }
    if cache is not None:
        generation["cache_hits"], generation["cache_misses"] = cache.hits, cache.misses
    if ll_cache is not None:
        generation["loglik_cache_hits"], generation["loglik_cache_misses"] = ll_cache.hits, ll_cache.misses
    if any(s.kind == "mc" for s in sets):
        generation["mc_prompt"] = config.mc_prompt
    overlap = _train_overlap(target.run_dir, config.data) if config.data is not None else None
    pref, pref_rows = _preference(config, target, tuned, sets, out_dir, warnings, on_status)
    extra = {"target": str(target_spec)}
    return _finish(sets, config, out_dir, started, generation, overlap, warnings, extra, pref, pref_rows)


def _preference(
    config: EvalConfig,
    target: Any,
    tuned: Any,
    sets: list[EvalSet],
    out_dir: Path,
    warnings: list[str],
    on_status: StatusFn | None,
) -> tuple[PreferenceMetrics | None, list[dict[str, Any]]]:
    """`--prefs` / `--reward-model`: the preference section of metrics.json
    (workbench/evaluate/preference_metrics.py) and the per-pair rows of `preference_scores.jsonl`."""
    if config.prefs is None and config.reward_model is None:
        return None, []
    from workbench.evaluate import preference_metrics as pref_eval
    from workbench.models.base import load_adapter

    scorer = None
    if config.reward_model is not None:
        if on_status is not None:
            on_status(f"loading reward model {config.reward_model}")
        scorer = pref_eval.RewardScorer.load(config.reward_model, batch_size=config.generation.batch_size)
    section: dict[str, Any] = {"n": 0}
    settings: dict[str, Any] = {"reward_model": str(config.reward_model) if config.reward_model else None}
    rows: list[dict[str, Any]] = []
    if config.prefs is not None:
        reference: str | None = None
        ref_folder = pref_eval.reference_adapter(target.run_dir)
        if ref_folder is not None and tuned.adapters:
            tuned.model = load_adapter(tuned.model, ref_folder, "wb_reference")
            tuned.adapter_dirs["wb_reference"] = ref_folder
            reference = "wb_reference"
        with_policy = bool(tuned.adapters)
        if not with_policy:
            warnings.append(
                f"{target.name} is a whole model: no adapter to switch off, so no implicit-reward accuracy "
                "(evaluate the run's adapter, not a merged model)"
            )
        settings["reference"] = str(ref_folder) if reference else "base (adapter disabled)"
        settings["max_length"] = config.max_length
        tuned.use(tuned.adapters[0] if tuned.adapters else None)
        section, rows = pref_eval.evaluate_pairs(
            tuned,
            config.prefs,
            reference,
            scorer,
            config.seed,
            config.generation.batch_size,
            config.max_length,
            with_policy,
            warnings,
        )
    task = next((s for s in sets if s.kind == TASK), None)
    if scorer is not None and task is not None and {"tuned", "base"} <= set(task.predictions):
        section |= pref_eval.win_rate(
            scorer, task.items, task.predictions["tuned"], task.predictions["base"], config.seed
        )
        if section.get("n", 0) == 0:
            section["n"] = len(task.items)
    elif scorer is not None and task is not None:
        warnings.append("--reward-model: no base answers to the task prompts, so no win rate (drop --no-base)")
    return PreferenceMetrics.model_validate({**section, "settings": settings}), rows


def _evaluate_reward_run(
    target: Any, config: EvalConfig, out_dir: Path, started: float, warnings: list[str]
) -> EvalResult:
    from workbench.evaluate import preference_metrics as pref_eval

    if config.prefs is None:
        raise WbError(f"{target.name} is a reward model: evaluate it on held-out pairs with --prefs FILE")
    if config.data is not None:
        warnings.append("--data is ignored for a reward model (it scores pairs, it does not answer prompts)")
    assert target.run_dir is not None
    scorer = pref_eval.RewardScorer.load(target.run_dir, batch_size=config.generation.batch_size)
    section, rows = pref_eval.evaluate_pairs(
        None, config.prefs, None, scorer, config.seed, config.generation.batch_size, config.max_length, False, warnings
    )
    pref = PreferenceMetrics.model_validate({**section, "settings": {"reward_model": str(target.run_dir)}})
    empty = config.model_copy(update={"probes": [], "data": None, "mc": []})
    return _finish(
        [], empty, out_dir, started, {"model": target.base}, None, warnings, {"target": str(target.run_dir)}, pref, rows
    )


def _out_dir(run_dir: Path | None, out_dir: Path | None) -> Path:
    if out_dir is not None:
        return out_dir
    if run_dir is None:
        raise WbError("not a run folder: say where to write with -o DIR")
    return RunFolder(run_dir).eval_folder.path


def _recipe_model(run_dir: Path) -> str:
    return str(RunFolder(run_dir).recipe().get("model") or "embedded")


def _run_side(
    s: EvalSet, side: str, loaded: Any, config: EvalConfig, cache: Any, on_progress: ProgressFn | None
) -> None:
    from workbench.models.generate import generate_answers, prompt_for, reference_losses, text_losses

    label = f"{side} · {s.name}"
    report = (lambda done, total: on_progress(label, done, total)) if on_progress is not None else None
    if s.kind == "mc":
        from workbench.evaluate.loglik import score_items

        batch = config.generation.batch_size
        s.mc[side] = score_items(
            loaded,
            s.items,
            s.fewshot,
            config.mc_prompt,
            batch,
            config.max_length,
            cache,
            report,
            config.generation.precision,
        )
        return
    if s.kind == "text":
        s.losses[side] = text_losses(
            loaded, [it.reference for it in s.items], config.max_length, precision=config.generation.precision
        )
        if report is not None:
            report(len(s.items), len(s.items))
        return
    settings = config.generation
    if s.kind == "qa":
        settings = settings.model_copy(update={"max_new_tokens": config.probe_max_new_tokens})
    prompts = [prompt_for(loaded, it.record()) for it in s.items]
    answers = generate_answers(loaded, prompts, settings, cache, report)
    s.generated[side] = answers
    s.predictions[side] = [a.text for a in answers]
    s.max_new_tokens = settings.max_new_tokens
    if s.kind == TASK:
        s.losses[side] = reference_losses(
            loaded, [it.record() for it in s.items], config.max_length, precision=settings.precision
        )


def _train_overlap(run_dir: Path | None, eval_data: Path) -> dict[str, Any] | None:
    """Task items sharing a long n-gram with the run's training data (13 tokens / 20 CJK characters)."""
    manifest = RunFolder(run_dir).manifest() if run_dir is not None else None
    if manifest is None:
        return None
    from workbench.dedup.contamination import DecontaminateConfig, EvalIndex
    from workbench.frames import rows_to_frame

    data = (manifest.get("inputs", {}).get("data") or {}).get("path")
    if not data or not Path(data).exists():  # a file or a dataset folder
        return None
    index = EvalIndex.from_files([eval_data], DecontaminateConfig())
    for batch in RecordReader(Path(data)):
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
    for n, row in read_objects(path):
        for key in ("prediction", "reference"):
            if not isinstance(row.get(key), str):
                raise WbError(f"{path}:line {n}: field {key}: missing or not a string")
        if "base_prediction" in row and not isinstance(row["base_prediction"], str):
            raise WbError(f"{path}:line {n}: field base_prediction: not a string")
        name = str(row.get("set") or TASK)
        s = sets.setdefault(name, EvalSet(name, TASK if name == TASK else "qa", []))
        answers: list[Any] = row["answers"] if isinstance(row.get("answers"), list) else []
        extra = _extras(row, path, n)
        s.items.append(
            Item(
                id=row.get("id", n),
                instruction=str(row.get("instruction") or ""),
                input=str(row.get("input") or ""),
                reference=row["reference"],
                answers=[str(a) for a in answers],
                answer_type=extra.get("answer_type"),
                options=extra.get("options"),
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
    if config.judge is not None:
        from workbench.models.generate import GenerationCache

        _judge_task(list(sets.values()), config, GenerationCache() if config.cache else None, None, None)
    return _finish(list(sets.values()), config, out_dir, started, {"predictions_file": str(path)}, None, [], {})


def _judge_task(
    sets: list[EvalSet],
    config: EvalConfig,
    cache: Any,
    on_status: StatusFn | None,
    on_progress: ProgressFn | None,
) -> None:
    """The pairwise judge on the task set: both answer orders of every item with a base and a tuned answer."""
    task = next((s for s in sets if s.kind == TASK), None)
    if task is None or "base" not in task.predictions or "tuned" not in task.predictions:
        raise WbError("--judge compares base and tuned task answers: give --data (and keep the base model)")
    prompts = judge.load_judge_prompts(config.judge_prompts)
    pairs = [
        judge.Pair(it.prompt, it.reference, tuned, base)
        for it, tuned, base in zip(task.items, task.predictions["tuned"], task.predictions["base"], strict=True)
    ]
    generate, about = judge_generator(str(config.judge), config, cache, on_status, on_progress)
    task.judged = judge.judge_pairs(pairs, prompts, generate)
    task.judge_settings = {
        "model": str(config.judge),
        **about,
        "prompts": {lang: p.name for lang, p in prompts.items()},
        "prompts_folder": str(config.judge_prompts) if config.judge_prompts else "shipped",
        "max_new_tokens": {lang: p.max_new_tokens for lang, p in prompts.items()},
        "languages": {lang: sum(v.language == lang for v in task.judged) for lang in prompts},
    }


def judge_generator(
    spec: str, config: EvalConfig, cache: Any, on_status: StatusFn | None, on_progress: ProgressFn | None
) -> tuple[judge.GenerateFn, dict[str, Any]]:
    """The judge model (a local model folder, a run or `embedded`) as a GenerateFn, and what it ran as."""
    from workbench.models.targets import load, resolve_target

    loaded = load([resolve_target(spec)], on_status=on_status)
    report = (lambda done, total: on_progress("judge", done, total)) if on_progress is not None else None
    about = {"template": loaded.template, **for_model(config.generation.precision, loaded.model).record()}
    return judge.model_generate(loaded, config.generation, cache, report), about


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
    preference: PreferenceMetrics | None = None,
    preference_rows: list[dict[str, Any]] | None = None,
) -> EvalResult:
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
    if overlap_model is not None and overlap_model.items:
        warnings.append(
            f"{overlap_model.items} of the task items share a long n-gram with the run's training data "
            f"({overlap_model.fraction:.1%}): their scores measure memory, not generalisation"
        )
    if task is not None and task.n < 2:
        warnings.append(f"the task set has only {task.n} item: no interval can be computed, and no verdict made")
    elif task is not None and task.n < 30:
        warnings.append(f"the task set has only {task.n} items: intervals are wide")
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


def with_review(summary: JudgeSummary, rows: list[dict[str, Any]], reviewed: list[dict[str, Any]]) -> JudgeSummary:
    """The judge summary with its agreement with the human reviewers (Cohen's kappa over the items both judged)."""
    agreed = judge.agreement(rows, reviewed)
    return summary.model_copy(
        update={"kappa": agreed["kappa"], "kappa_n": agreed["n"], "review_agreement": agreed["agreement"]}
    )


def fold_review_into_judge(eval_dir: Path) -> dict[str, Any] | None:
    """After `--import-review`: the judge's agreement with the reviewers, written into metrics.json's task.judge
    (None when the eval folder has no judge verdicts)."""
    folder = EvalFolder(eval_dir)
    if not folder.metrics_path.is_file() or not folder.scores_path.is_file():
        return None
    metrics = folder.metrics()
    if metrics.task is None or metrics.task.judge is None:
        return None
    rows = list(folder.scores())
    metrics.task.judge = with_review(metrics.task.judge, rows, folder.reviewed_items())
    folder.write_metrics(metrics)
    return {"kappa": metrics.task.judge.kappa, "n": metrics.task.judge.kappa_n}


@dataclass
class ReviewImport:
    folder: Path  # the eval folder the review was written into
    summary: dict[str, Any]  # review.json: verdict counts, reviewed and unreviewed rows
    agreement: dict[str, Any] | None  # the judge's Cohen's kappa with the reviewers (None without a judge)


def import_review_into(filled: Path, target: str | Path | None, out_dir: Path | None = None) -> ReviewImport:
    """`wb eval --import-review`: read a filled review_sample.csv, write it as review.json into the eval folder
    (`out_dir`, else `target`/eval), and fold the reviewers' verdicts into the judge's agreement in metrics.json."""
    from workbench.output import locked_run

    folder = out_dir or (RunFolder(Path(target)).eval_folder.path if target else None)
    if folder is None or not folder.is_dir():
        raise WbError("--import-review: give the run folder (or -o its eval folder) the review belongs to")
    summary = review.import_review(filled)
    with locked_run(Path(target)) if out_dir is None and target else contextlib.nullcontext():  # writes into the run
        EvalFolder(folder).write_review(summary)
        return ReviewImport(folder, summary, fold_review_into_judge(folder))


def run(
    target: str | Path | None,
    config: EvalConfig,
    out_dir: Path | None = None,
    *,
    model: str | None = None,
    predictions: Path | None = None,
    on_status: StatusFn | None = None,
    on_progress: ProgressFn | None = None,
) -> EvalResult:
    """`wb eval` with its options checked together: a run (`target`), a model alone (`model`, written to `out_dir`),
    or a predictions file scored without a model (`predictions`, written to `out_dir`, no probes)."""
    if model is not None:
        if target is not None:
            raise WbError("give a run folder or --model MODEL, not both")
        if out_dir is None:
            raise WbError("--model evaluates a model without a run: say where to write with -o DIR")
        target = model
    if predictions is not None:
        if target is not None or out_dir is None:
            raise WbError("--predictions scores a file without a model: give -o DIR and no run")
        if config.mc:
            raise WbError("--mc scores options with a model; it cannot be combined with --predictions")
        return evaluate_predictions(predictions, config.model_copy(update={"probes": []}), out_dir)
    if target is None:
        raise WbError("give a run folder to evaluate (or --predictions FILE -o DIR)")
    return evaluate(target, config, out_dir, on_status=on_status, on_progress=on_progress)


# ---------------------------------------------------------------------------------------------------------------
# Scoring one set


def _answer_type(s: EvalSet, item: Item, suite: EvalSuite) -> str:
    if s.kind == "text":
        return "lm"
    if s.kind == "qa":
        return "probe"
    if s.kind == "mc":
        return "mc"
    return item.answer_type or suite.answer_type


def _language(text: str) -> str:
    return "zh" if count_cjk(text) else "latin"


def score_set(s: EvalSet, suite: EvalSuite, seed: int) -> tuple[list[ScoreRow], SetMetrics, list[str]]:
    """Per-item scores of every side and their aggregate: metrics with intervals, corpus scores per language,
    degenerate-answer shares, classification reports; plus warnings in words."""
    sides = [side for side in SIDES if side in s.predictions or side in s.losses or side in s.mc]
    n = len(s.items)
    types = [_answer_type(s, it, suite) for it in s.items]
    wanted = [suite.metrics_for(t) for t in types]
    warnings: list[str] = []
    settings: dict[str, Any] = {"suite": suite.name} if s.kind == TASK else dict(s.settings)

    # What is scored: with strip_prompt_prefix, the part after a prefix the reference shares with the prompt.
    refs: list[list[str]] = [list(it.references) for it in s.items]
    scored_preds: dict[str, list[str]] = {side: list(s.predictions[side]) for side in sides if side in s.predictions}
    stripped: list[bool] = [False] * n
    if s.kind == TASK and suite.strip_prompt_prefix:
        for i, it in enumerate(s.items):
            prompt = it.prompt
            if not prompt:
                continue
            _, ref_rest, shared = degenerate.strip_shared_prefix("", it.reference, prompt)
            if shared:
                stripped[i] = True
                refs[i] = [ref_rest]
                for preds in scored_preds.values():
                    preds[i], _, _ = degenerate.strip_shared_prefix(preds[i], it.reference, prompt)
        if any(stripped):
            settings["scored_after_prompt_prefix"] = sum(stripped)
            warnings.append(
                f"{sum(stripped)} of {n} references begin with the prompt text: answers and references are scored "
                "after that shared prefix, so repeating the question earns nothing"
            )

    per_side: dict[str, list[SideScores]] = {}
    corpus: dict[str, CorpusScore] = {}
    flagged: dict[str, list[list[str]]] = {}
    for side in sides:
        values: list[dict[str, float | int | None]] = [{} for _ in range(n)]
        if side in scored_preds:
            preds = scored_preds[side]
            _overlap_scores(s, preds, refs, wanted, values, corpus, side, warnings)
            for i, it in enumerate(s.items):
                ctx = scorers.ItemContext(it.reference if not stripped[i] else refs[i][0], refs[i], it.options, suite)
                for name in wanted[i]:
                    score = scorers.scorer(name)
                    if score is None:
                        continue
                    try:
                        values[i][name] = score(preds[i], ctx)
                    except ValueError as e:
                        raise WbError(f"{s.name} item {it.id}: {name}: {e}") from None
            flagged[side] = _flags(s, side)
        if side in s.losses:
            for i, loss in enumerate(s.losses[side]):
                if "loss" in wanted[i]:
                    values[i]["loss"] = loss
                if s.kind == "text":
                    values[i]["perplexity"] = round(math.exp(loss), 4) if loss is not None else None
        if side in s.mc:
            from workbench.evaluate.loglik import item_metrics

            for i, it in enumerate(s.items):
                values[i].update({k: v for k, v in item_metrics(it, s.mc[side][i]).items() if k in wanted[i]})
        scores = []
        for i in range(n):
            answer = s.generated.get(side, [None] * n)[i] if side in s.generated else None
            prediction = s.predictions[side][i] if side in s.predictions else None
            scored = scored_preds[side][i] if side in scored_preds else None
            scores.append(
                SideScores(
                    prediction=prediction,
                    scored=scored if scored != prediction else None,
                    generated_tokens=answer.generated_tokens if answer is not None else None,
                    finished=answer.finished if answer is not None else None,
                    flags=flagged.get(side, [[]] * n)[i],
                    mc=s.mc[side][i] if side in s.mc else None,
                    **values[i],
                )
            )
        per_side[side] = scores

    rows = []
    for i, it in enumerate(s.items):
        rows.append(
            ScoreRow(
                set=s.name,
                id=it.id,
                instruction=it.instruction,
                input=it.input,
                reference=it.reference,
                answers=it.answers if it.answers and it.answers != [it.reference] else None,
                answer_type=types[i] if s.kind == TASK else None,
                options=it.options if s.kind == "mc" else None,
                scored_reference=refs[i][0] if stripped[i] else None,
                tuned=per_side["tuned"][i] if "tuned" in per_side else SideScores(),
                base=per_side.get("base", [None] * n)[i] if "base" in per_side else None,
                judge=s.judged[i] if s.judged else None,
            )
        )

    metrics = _aggregate(rows, sides, seed)
    classification: dict[str, ClassReport] = {}
    if any(t == "label" for t in types) and "macro_f1" in (suite.metrics or metric_specs.for_answer_type("label")):
        stat, classification = _macro_f1(s, types, suite, sides, seed)
        if stat is not None:
            metrics["macro_f1"] = stat
    metrics = {k: metrics[k] for k in metric_specs.order(metrics)}
    degenerate_stats = _degenerate(flagged, n)
    warnings.extend(_notes(s, metrics, degenerate_stats, corpus, suite, sides))
    if s.kind == "mc":
        warnings.extend(_mc_notes(s, metrics, rows))
    primary = suite.primary if suite.primary in metrics else next(iter(metrics), None)
    if primary is not None and s.kind == TASK:
        settings["primary"] = primary
    regressions: list[int | str] = []
    if s.kind == TASK and "base" in sides and primary is not None:
        sign = 1 if metric_specs.higher_is_better(primary) else -1
        deltas = []
        for k, row in enumerate(rows):
            t, b = _side_value(row.tuned, primary), _side_value(row.base, primary)
            if t is not None and b is not None:
                deltas.append((sign * (t - b), k))
        regressions = [rows[k].id for d, k in sorted(deltas) if d < 0][:REGRESSIONS_KEPT]
    judge_summary = judge.summarise(s.judged, seed, s.judge_settings) if s.judged else None
    if judge_summary is not None:
        warnings.extend(judge.notes(judge_summary))
    summary = SetMetrics(
        judge=judge_summary,
        n=n,
        kind=s.kind,
        metrics=metrics,
        corpus=corpus,
        regressions=regressions,
        degenerate=degenerate_stats,
        classification=classification,
        settings=settings,
    )
    return rows, summary, warnings


def _overlap_scores(
    s: EvalSet,
    preds: list[str],
    refs: list[list[str]],
    wanted: list[list[str]],
    values: list[dict[str, float | int | None]],
    corpus: dict[str, CorpusScore],
    side: str,
    warnings: list[str],
) -> None:
    """ROUGE, BLEU, chrF, EM, F1, accuracy for the items that want them; BLEU and chrF per language group (sacrebleu's
    zh tokenizer for Chinese references, 13a for the rest), corpus scores per group."""
    need = [i for i in range(len(preds)) if any(m in METRIC_KEYS for m in wanted[i])]
    groups: dict[str, list[int]] = {}
    for i in need:
        groups.setdefault(_language(" ".join(refs[i])), []).append(i)
    for language, idx in sorted(groups.items()):
        result = score_items([preds[i] for i in idx], [refs[i] for i in idx])
        if side == "tuned":
            warnings.extend(result.warnings)
        for i, item_scores in zip(idx, result.items, strict=True):
            for name, value in item_scores.items():
                if name in wanted[i]:
                    values[i][name] = value
        if s.kind != TASK:
            continue
        for name, score in result.corpus.items():
            key = name if len(groups) == 1 else f"{name}_{language}"
            entry = corpus.get(key) or CorpusScore(signature=score.signature, n=len(idx), language=language)
            update: dict[str, Any] = {side: score.score}
            if score.brevity_penalty is not None:
                prefix = "" if side == "tuned" else "base_"
                update[f"{prefix}brevity_penalty"] = score.brevity_penalty
                update[f"{prefix}length_ratio"] = score.length_ratio
            corpus[key] = entry.model_copy(update=update)


def _flags(s: EvalSet, side: str) -> list[list[str]]:
    answers = s.generated.get(side)
    out = []
    for i, it in enumerate(s.items):
        answer = answers[i] if answers is not None else None
        found = degenerate.flags(
            s.predictions[side][i],
            it.prompt,
            answer.generated_tokens if answer is not None else None,
            s.max_new_tokens if answer is not None else None,
            answer.finished if answer is not None else None,
        )
        out.append([kind for kind in degenerate_kinds.names() if found.get(kind)])
    return out


def _side_value(scores: SideScores | None, metric: str) -> float | None:
    if scores is None:
        return None
    value = (scores.model_extra or {}).get(metric)
    return float(value) if isinstance(value, int | float) else None


def _aggregate(rows: list[ScoreRow], sides: list[str], seed: int) -> dict[str, Stat]:
    present: set[str] = set()
    for row in rows:
        present.update(k for k, v in (row.tuned.model_extra or {}).items() if v is not None)
    out: dict[str, Stat] = {}
    for name in present:
        tuned = [_side_value(r.tuned, name) for r in rows]
        base = [_side_value(r.base, name) for r in rows] if "base" in sides else None
        stat = compare.stat(
            tuned, base, seed, binary=metric_specs.is_binary(name), higher_is_better=metric_specs.higher_is_better(name)
        )
        have = sum(v is not None for v in tuned)
        if have < len(rows):
            stat["n"] = have
        out[name] = Stat.model_validate(stat)
    return out


def _macro_f1(
    s: EvalSet, types: list[str], suite: EvalSuite, sides: list[str], seed: int
) -> tuple[Stat | None, dict[str, ClassReport]]:
    from workbench.evaluate import answers

    idx = [i for i, t in enumerate(types) if t == "label"]
    refs = [s.items[i].reference for i in idx]
    reports: dict[str, ClassReport] = {}
    preds: dict[str, list[str]] = {}
    for side in sides:
        if side not in s.predictions:
            continue
        preds[side] = [s.predictions[side][i] for i in idx]
        report = answers.classification_report(preds[side], refs, suite.labels)
        reports[side] = ClassReport.model_validate(report)
    if "tuned" not in preds:
        return None, reports

    base = answers.macro_f1_of(preds["base"], refs, suite.labels) if "base" in preds else None
    stat = compare.set_stat(answers.macro_f1_of(preds["tuned"], refs, suite.labels), base, len(idx), seed)
    return Stat.model_validate(stat), reports


def _degenerate(flagged: dict[str, list[list[str]]], n: int) -> dict[str, DegenerateStat]:
    if "tuned" not in flagged or n == 0:
        return {}
    out = {}
    for kind in degenerate_kinds.names():
        tuned = sum(kind in f for f in flagged["tuned"])
        base = sum(kind in f for f in flagged["base"]) if "base" in flagged else None
        out[kind] = DegenerateStat(
            tuned=round(tuned / n, 6),
            base=round(base / n, 6) if base is not None else None,
            tuned_items=tuned,
            base_items=base,
        )
    return out


def _mc_notes(s: EvalSet, metrics: dict[str, Stat], rows: list[ScoreRow]) -> list[str]:
    """Rejected rows, and sides whose accuracy cannot be told from guessing (then the set cannot show forgetting)."""
    out = []
    rejected = int(s.settings.get("rejected") or 0)
    if rejected:
        first = (s.settings.get("rejects") or [""])[0]
        out.append(f"{rejected} rows of {s.settings.get('source')} were rejected, not scored (first: {first})")
    chance = sum(1 / len(it.options or {"": ""}) for it in s.items) / max(1, len(s.items))
    for name in ("mc_accuracy", "mc_accuracy_norm", "mc_letter_accuracy"):
        if name not in metrics:
            continue
        for side in ("tuned", "base"):
            values = [v for r in rows if (v := _side_value(getattr(r, side), name)) is not None]
            if len(values) < 2:
                continue
            mean, lo, hi = compare.bootstrap_mean_ci(values, 0)
            if lo <= chance <= hi:
                out.append(
                    f"{side} {name} {mean:.3f} (95% interval [{lo:.3f}, {hi:.3f}]) includes chance ({chance:.2f}): "
                    "on this set the model is not told apart from guessing"
                )
    return out


def _notes(
    s: EvalSet,
    metrics: dict[str, Stat],
    flags: dict[str, DegenerateStat],
    corpus: dict[str, CorpusScore],
    suite: EvalSuite,
    sides: list[str],
) -> list[str]:
    """What a reader must know before trusting these numbers."""
    out = []
    for name, stat in metrics.items():
        if stat.constant:
            out.append(
                f"{name}: both models score {stat.tuned:g} on every item: this comparison carries no information"
            )
    for kind, st in flags.items():
        for side in ("tuned", "base"):
            share, count = (st.tuned, st.tuned_items) if side == "tuned" else (st.base, st.base_items)
            if count and (what := (k.warning if (k := degenerate_kinds.get(kind)) else None)):
                out.append(f"{count} of {len(s.items)} {side} answers {what} ({share:.0%})")
    cut = flags.get("cut_off")
    length_sensitive = [m for m in metrics if (spec := metric_specs.get(m)) is not None and spec.length_sensitive]
    if cut is not None and length_sensitive:
        for side in ("tuned", "base"):
            share = cut.tuned if side == "tuned" else cut.base
            if share is not None and share > suite.cut_off_warning:
                bp = [
                    f"{k} brevity penalty {v:.2f}"
                    for k, c in corpus.items()
                    if (v := (c.brevity_penalty if side == "tuned" else c.base_brevity_penalty)) is not None
                ]
                out.append(
                    f"{share:.0%} of {side} answers stopped at the {s.max_new_tokens}-token limit: "
                    f"{', '.join(length_sensitive)} measure the limit as much as the model"
                    + (f" ({'; '.join(bp)})" if bp else "")
                    + "; raise --max-new-tokens"
                )
    return out
