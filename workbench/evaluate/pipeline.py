"""`wb eval` as a library function: generate (or read) answers, score them, compare base and tuned, write it down.

The entry points (`run`, with its options checked together; `evaluate`, a run or model; `evaluate_predictions`, a
file of answers). The stages are modules of their own: the sets (`workbench.evaluate.sets`), the model runs
(`model_runs`), the judge and human review (`judging`), scoring and aggregation (`scoring`), the warnings (`notes`)
and the output set (`writing`). How the task's answers are judged comes from an eval suite
(`workbench.evaluate.suite`); which metrics exist, from the registry (`workbench.metric_specs`).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from workbench.errors import WbError
from workbench.evaluate.config import EvalConfig, ProgressFn, StatusFn
from workbench.evaluate.judging import judge_task
from workbench.evaluate.model_runs import evaluate_with_model
from workbench.evaluate.sets import read_predictions
from workbench.evaluate.writing import EvalResult, finish
from workbench.runfile.folder import RunFolder


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
        return evaluate_with_model(target_spec, target, config, out_dir, started, on_status, on_progress)


def _out_dir(run_dir: Path | None, out_dir: Path | None) -> Path:
    if out_dir is not None:
        return out_dir
    if run_dir is None:
        raise WbError("not a run folder: say where to write with -o DIR")
    return RunFolder(run_dir).eval_folder.path


def evaluate_predictions(path: Path, config: EvalConfig, out_dir: Path) -> EvalResult:
    """Score a file of existing predictions (`prediction` + `reference`, optional `base_prediction`, `answers`,
    `instruction`, `input`, `id`, `set`) without any model."""
    started = time.time()
    sets = read_predictions(path)
    if config.judge is not None:
        from workbench.models.generate import GenerationCache

        judge_task(sets, config, GenerationCache() if config.cache else None, None, None)
    return finish(sets, config, out_dir, started, {"predictions_file": str(path)}, None, [], {})


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
