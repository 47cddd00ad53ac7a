"""The model runs of `wb eval`: load the tuned model (and its base), answer every set with each (generation, reference
losses, option log-likelihoods), judge, score held-out preference pairs (`--prefs`, `--reward-model`; a reward model
is evaluated on pairs alone), and find task items that overlap the run's training data.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.errors import WbError
from workbench.evaluate.config import EvalConfig, ProgressFn, StatusFn
from workbench.evaluate.judging import judge_task
from workbench.evaluate.sets import TASK, EvalSet, assemble
from workbench.evaluate.writing import EvalResult, finish
from workbench.io.reader import RecordReader
from workbench.methods.registry import scores_only
from workbench.output import sha256_file
from workbench.precision import for_model
from workbench.runfile.evals import (
    PreferenceMetrics,
)
from workbench.runfile.folder import RunFolder

if TYPE_CHECKING:
    from workbench.models.targets import Target


def evaluate_with_model(
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
    sets = assemble(config)
    cache = GenerationCache() if config.cache else None
    ll_cache = LoglikCache(identities=cache) if config.cache and any(s.kind == "mc" for s in sets) else None
    tuned = load([target], on_status=on_status)
    warnings.extend(tuned.warnings)  # a template unlike the one the run or export recorded
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
        judge_task(sets, config, cache, on_status, on_progress)
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
        generation["mc_letters"] = config.mc_letters
    overlap = _train_overlap(target.run_dir, config.data) if config.data is not None else None
    pref, pref_rows = _preference(config, target, tuned, sets, out_dir, warnings, on_status)
    extra = {"target": str(target_spec)}
    return finish(sets, config, out_dir, started, generation, overlap, warnings, extra, pref, pref_rows)


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
    return finish(
        [], empty, out_dir, started, {"model": target.base}, None, warnings, {"target": str(target.run_dir)}, pref, rows
    )


def _recipe_model(run_dir: Path) -> str:
    return str(RunFolder(run_dir).recipe().get("model") or "embedded")


def _run_side(
    s: EvalSet, side: str, loaded: Any, config: EvalConfig, cache: Any, on_progress: ProgressFn | None
) -> None:
    from workbench.models.generate import generate_answers, prompt_for, reference_losses, text_losses

    label = f"{side} · {s.name}"
    report = (lambda done, total: on_progress(label, done, total)) if on_progress is not None else None
    if s.kind == "mc":
        from workbench.evaluate.loglik import SCORING, score_items

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
            config.mc_letters,
        )
        s.settings["scoring"] = SCORING[config.mc_letters]
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
