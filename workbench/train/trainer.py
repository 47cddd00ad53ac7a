"""`wb train` as a library function, built on `transformers.Trainer` and PEFT (no hand-written training loop).

A run folder `runs/<name>/` gets: `recipe.yaml` (the resolved recipe, so `--resume` needs nothing else),
`checkpoints/` (Trainer checkpoints, safetensors), `adapter/` (PEFT adapter) or `model/` (freeze/full),
`trainer_log.jsonl`, `loss.svg`, `sample_losses.jsonl` and `manifest.json`.

The run driver lives here in three parts that every training method shares: `begin` (checks, precision, model
and tokenizer loaded, the method applied, the run folder started), the method's own Trainer, and `finish` (the
weights saved, the loss plot, the manifest). Data preparation is `prepare.py`, the Trainer wiring `hf.py`, the
losses wb computes itself `loss.py`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbench import io, precision, runfile
from workbench.errors import WbError
from workbench.manifest import build_manifest
from workbench.train import data as tdata
from workbench.train import guards, hf, methods
from workbench.train.loss import prompt_learning, sample_losses
from workbench.train.memory import MMAP_THRESHOLD_BYTES, return_freed_memory
from workbench.train.plot import loss_svg
from workbench.train.prepare import ListDataset, prepare, rows
from workbench.train.recipe import Recipe
from workbench.train.task_eval import TaskEval, records_for_eval


def _load_dtype(choice: precision.Choice) -> Any:
    """The dtype the base weights load in: on a GPU the training precision (Trainer's own mixed precision); on a
    CPU always fp32, with bf16 as autocast around the forward pass (master weights stay fp32)."""
    import torch

    if choice.device == "cpu":
        return torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[choice.name]


@dataclass
class TrainResult:
    run_dir: Path
    manifest: dict[str, Any]
    log: list[dict[str, Any]]
    warnings: list[str]


@dataclass
class Session:
    """What `begin` set up for one run: the model with its method applied, the tokenizer, the precision."""

    recipe: Recipe
    run_dir: Path
    tokenizer: Any
    model: Any
    choice: precision.Choice
    checkpoint: str | None
    started: float
    log_path: Path
    trainable: int
    total: int
    mmap_threshold: int | None
    resume: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)


def save_recipe(recipe: Recipe, run_dir: Path) -> None:
    with io.atomic_write(run_dir / "recipe.yaml") as f:
        f.write(yaml.safe_dump(json.loads(recipe.model_dump_json()), sort_keys=False, allow_unicode=True).encode())


def begin(
    recipe: Recipe,
    resume: bool = False,
    on_status: Callable[[str], None] | None = None,
    load: Callable[[Recipe, Any, precision.Choice], Any] | None = None,
) -> Session:
    """Checks, seed, precision, tokenizer and model (`load(recipe, dtype, choice)` where a method loads another
    head), the method applied, and the run folder started (its recipe written, a stale log removed)."""
    from workbench.train.model import load_model, load_tokenizer, quiet_libraries

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet_libraries()
    started = time.time()
    import torch
    from transformers import set_seed

    set_seed(recipe.seed)
    # On CPU the activations live in the process heap; release_freed_memory keeps it from fragmenting (slower steps).
    released = recipe.release_freed_memory and not torch.cuda.is_available() and return_freed_memory()
    run_dir = recipe.run_dir
    checkpoint = str(guards.check_resume(recipe)) if resume else None
    if not resume and (run_dir / "manifest.json").exists():
        raise WbError(f"{run_dir}: a finished run is already there; choose another name or remove it")
    tokenizer = load_tokenizer(recipe.model, on_status)
    choice = precision.for_training(recipe.precision, recipe.method)
    if on_status is not None:
        on_status(f"precision {choice.name} ({choice.reason})")
    dtype = _load_dtype(choice)
    if load is not None:
        model = load(recipe, dtype, choice)
    else:
        quant = methods.quantization_config(recipe, dtype)
        model = load_model(recipe.model, dtype=dtype, quantization_config=quant)
    return Session(
        recipe=recipe,
        run_dir=run_dir,
        tokenizer=tokenizer,
        model=model,
        choice=choice,
        checkpoint=checkpoint,
        started=started,
        log_path=run_dir / "trainer_log.jsonl",
        trainable=0,
        total=0,
        mmap_threshold=MMAP_THRESHOLD_BYTES if released else None,
        resume=resume,
    )


def apply_method(session: Session) -> None:
    """Gradient checkpointing and the recipe's method on the loaded model; the run folder started."""
    recipe, model = session.recipe, session.model
    if recipe.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()  # frozen embeddings (adapters) must still pass gradients back
        model.config.use_cache = False
    session.model = methods.apply(model, recipe)
    session.trainable, session.total = methods.count_parameters(session.model)
    io.ensure_dir(session.run_dir)
    save_recipe(recipe, session.run_dir)
    if not session.resume and session.log_path.exists():
        session.log_path.unlink()


def quiet(trainer: Any) -> None:
    """wb prints its own log lines (on_log): Trainer's printer and progress callbacks go."""
    from transformers import PrinterCallback, ProgressCallback

    for noisy in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(noisy)


def run(session: Session, trainer: Any) -> tuple[Any, float]:
    """`trainer.train()` from the session's checkpoint; a non-finite loss is one line naming the step."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    cpu_started = time.process_time()
    try:
        output = trainer.train(resume_from_checkpoint=session.checkpoint)
    except guards.NonFiniteLoss as nan:
        raise WbError(guards.non_finite_message(session.run_dir, nan)) from None
    return output, time.process_time() - cpu_started


def save_weights(session: Session, final: Any) -> None:
    """The adapter (PEFT methods) or the whole model, with the tokenizer, in safetensors."""
    folder = session.run_dir / ("adapter" if session.recipe.method in methods.PEFT_METHODS else "model")
    final.save_pretrained(folder, safe_serialization=True)
    session.tokenizer.save_pretrained(folder)


def read_log(session: Session) -> list[dict[str, Any]]:
    """trainer_log.jsonl's rows; `loss.svg` drawn from them."""
    path = session.log_path
    log = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()] if path.exists() else []
    with io.atomic_write(session.run_dir / "loss.svg") as f:
        f.write(loss_svg(log).encode())
    return log


def finish(
    session: Session,
    trainer: Any,
    output: Any,
    train_cpu: float,
    fields: dict[str, Any],
    outputs: dict[str, Path],
    warnings: list[str],
) -> dict[str, Any]:
    """The manifest: what every method records (inputs, config, precision, parameters, steps, losses, memory,
    time), plus the method's own `fields`; validated against the run schema and written last."""
    import torch

    recipe = session.recipe
    runtime = float(output.metrics.get("train_runtime", 0.0)) or 1e-9
    manifest = build_manifest(
        command="train",
        started=session.started,
        inputs={name: path for name, path in (("data", recipe.data), ("eval_data", recipe.eval_data)) if path},
        outputs={"trainer_log": session.log_path, **outputs},
        config=json.loads(recipe.model_dump_json()),
        seed=recipe.seed,
    )
    manifest.update(
        {
            "model": recipe.model,
            "method": recipe.method,
            **session.choice.record(),
            "malloc_mmap_threshold": session.mmap_threshold,
            "trainable_parameters": session.trainable,
            "total_parameters": session.total,
            **fields,
            "train_runtime_seconds": round(runtime, 2),
            "train_cpu_seconds": round(train_cpu, 1),
            "global_step": output.global_step,
            "train_loss": output.training_loss,
            "best_checkpoint": trainer.state.best_model_checkpoint,
            **_best(recipe, trainer),
            "gpu_peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)
            if torch.cuda.is_available()
            else None,
            "warnings": warnings,
        }
    )
    if not math.isfinite(output.training_loss):
        manifest["warnings"].append("training loss is not finite: lower lr or check the data")
    runfile.TrainManifest.model_validate(manifest)  # the run schema's numbers: typed and finite, or a bug here
    io.write_json(session.run_dir / "manifest.json", manifest)
    return manifest


def task_eval(session: Session, prepared: Any, warnings: list[str]) -> TaskEval | None:
    """The recipe's eval_metrics as a TaskEval over the first eval_generate_limit validation records, or None."""
    recipe = session.recipe
    if not recipe.eval_metrics:
        return None
    records = records_for_eval(prepared.val_records, recipe.eval_generate_limit) if prepared.val else []
    if not records:
        warnings.append(
            f"eval_metrics {', '.join(recipe.eval_metrics)}: no validation records with an instruction and an answer "
            "(set eval_data or val_size): the metrics are not computed"
        )
        return None
    from workbench.evaluate.generate import GenerationCache

    return TaskEval(
        records=records,
        metrics=list(recipe.eval_metrics),
        tokenizer=session.tokenizer,
        template=prepared.template,
        base=recipe.model,
        precision=session.choice.name,
        max_new_tokens=recipe.eval_max_new_tokens,
        batch_size=max(recipe.batch_size, 8),
        cache=GenerationCache(),
    )


def _best(recipe: Recipe, trainer: Any) -> dict[str, Any]:
    """What picked the best checkpoint and its value, and the best eval loss either way (from the log history)."""
    losses = [float(h["eval_loss"]) for h in trainer.state.log_history if "eval_loss" in h]
    name, _ = hf.best_metric(recipe)
    return {
        "metric_for_best": name,
        "best_metric": trainer.state.best_metric,
        "best_eval_loss": min(losses) if losses else None,
    }


def train(
    recipe: Recipe,
    resume: bool = False,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    on_status: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train per the recipe into `recipe.run_dir`; with `resume`, continue from its last checkpoint."""
    from transformers import EarlyStoppingCallback

    session = begin(recipe, resume, on_status)
    tokenizer, run_dir = session.tokenizer, session.run_dir
    prepared = prepare(recipe, tokenizer, getattr(session.model.config, "max_position_embeddings", None))
    model = session.model
    if recipe.packing and getattr(model.config, "_attn_implementation", "sdpa") not in ("sdpa", "flash_attention_2"):
        model.config._attn_implementation = "sdpa"
    apply_method(session)
    model = session.model
    pad_id = session.pad_id
    collator = tdata.PackedCollator(pad_id) if recipe.packing else tdata.PaddingCollator(pad_id)
    callbacks = hf.callbacks(session.log_path, on_log, recipe.eval_metrics if prepared.val else ())
    if recipe.early_stopping_patience and prepared.val:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=recipe.early_stopping_patience))
    train_rows = rows(prepared.train, recipe)
    trainer = hf.trainer_class()(
        model=model,
        args=hf.training_args(recipe, run_dir, session.choice, bool(prepared.val)),
        train_dataset=ListDataset(train_rows),
        eval_dataset=ListDataset(rows(prepared.val, recipe)) if prepared.val else None,
        data_collator=collator,
        callbacks=callbacks,
    )
    trainer.trained_logits_only = not prompt_learning(model)  # virtual tokens lengthen the hidden states
    if session.choice.device == "cpu":
        trainer.cpu_autocast = session.choice.autocast
    trainer.task_eval = task_eval(session, prepared, prepared.warnings)
    quiet(trainer)
    output, train_cpu = run(session, trainer)

    final = trainer.model
    save_weights(session, final)
    losses = sample_losses(final, prepared.train, pad_id, recipe.batch_size, session.choice)
    with io.atomic_write(run_dir / "sample_losses.jsonl") as f:
        for ex, loss in sorted(zip(prepared.train, losses, strict=True), key=lambda p: -p[1]):
            f.write(io.jsonl_line({"line": ex.line, "loss": round(loss, 5), "tokens": ex.trained_tokens}))
    log = read_log(session)
    runtime = float(output.metrics.get("train_runtime", 0.0)) or 1e-9
    # Real tokens trained on in this process (a resumed run counts from its checkpoint on).
    seen = trainer.tokens_seen + trainer.window_tokens
    fields = {
        "template": tdata.template_for_run(recipe.template, prepared.template, run_dir),
        "examples": {"train": len(prepared.train), "val": len(prepared.val)},
        "tokens": {
            "trained_per_epoch": sum(ex.trained_tokens for ex in prepared.train),
            "all_per_epoch": sum(len(ex.input_ids) for ex in prepared.train),
            "sequences_per_epoch": len(train_rows),
            "seen": seen,
            "padding_seen": trainer.padding_seen,
            "trained_seen": trainer.trained_seen,
        },
        "tokens_per_second": round(seen / runtime, 1),
    }
    outputs = {"sample_losses": run_dir / "sample_losses.jsonl"}
    manifest = finish(session, trainer, output, train_cpu, fields, outputs, prepared.warnings)
    return TrainResult(run_dir, manifest, log, prepared.warnings)
