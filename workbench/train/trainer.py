"""`wb train` as a library function, built on `transformers.Trainer` and PEFT (no hand-written training loop):
`train` runs the SFT methods here and sends the preference methods to TRL's trainers (`trl_trainers.py`).

Both go through the run driver of `session.py` (`begin`, the method's Trainer, `finish`). Data preparation is
`prepare.py` (packing `packing.py`), the Trainer wiring `hf.py`, the training loss wb computes itself `loss.py`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from workbench import output
from workbench.io.jsontext import jsonl_line
from workbench.methods import registry
from workbench.models import templates as tdata
from workbench.models.losses import prompt_learning
from workbench.output import atomic_write
from workbench.runfile.folder import RunFolder
from workbench.train import distributed, hf, packing
from workbench.train.prepare import ListDataset, prepare, rows
from workbench.train.recipe import Recipe
from workbench.train.session import (
    TrainResult,
    apply_method,
    begin,
    bf16_frozen_base,
    finish,
    last_eval_losses,
    lighten_steps,
    per_example_losses,
    quiet,
    read_log,
    release_training_state,
    run,
    save_weights,
    source_counts,
    task_eval,
)


def train(
    recipe: Recipe,
    resume: bool = False,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    on_status: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train per the recipe into `recipe.run_dir`; with `resume`, continue from its last complete checkpoint. The
    run folder is locked while the run writes it (by the main process of a launched run)."""
    with output.locked_run(recipe.run_dir) if distributed.is_main() else contextlib.nullcontext():
        if registry.get(recipe.method).family == "preference":  # TRL's trainers: workbench/train/trl_trainers.py
            from workbench.train import trl_trainers

            return trl_trainers.train(recipe, resume, on_log, on_status)
        return _train_sft(recipe, resume, on_log, on_status)


def _train_sft(
    recipe: Recipe,
    resume: bool,
    on_log: Callable[[dict[str, Any]], None] | None,
    on_status: Callable[[str], None] | None,
) -> TrainResult:
    session = begin(recipe, resume, on_status)  # offline and quiet before transformers is imported
    from transformers import EarlyStoppingCallback

    tokenizer, run_dir = session.tokenizer, session.run_dir
    prepared = prepare(recipe, tokenizer, getattr(session.model.config, "max_position_embeddings", None))
    model = session.model
    if recipe.packing and getattr(model.config, "_attn_implementation", "sdpa") not in ("sdpa", "flash_attention_2"):
        model.config._attn_implementation = "sdpa"
    lighten_steps(model)  # after the packing's sdpa: on CPU each sequence of a batch attended on its own
    apply_method(session)
    bf16_frozen_base(session, session.model, registry.get(recipe.method).bf16_frozen_base)
    model = session.model
    pad_id = session.pad_id
    collator = packing.PackedCollator(pad_id) if recipe.packing else tdata.PaddingCollator(pad_id)
    callbacks = hf.callbacks(session.log_path, on_log, recipe.eval_metrics if prepared.val else ())
    if recipe.early_stopping_patience and prepared.val:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=recipe.early_stopping_patience))
    train_rows = rows(prepared.train, recipe)
    eval_dataset: Any = None
    if prepared.val_sets is not None:  # a mixture: one eval loss per source, eval_<name>_loss
        eval_dataset = {name: ListDataset(rows(val, recipe)) for name, val in prepared.val_sets.items()}
    elif prepared.val:
        eval_dataset = ListDataset(rows(prepared.val, recipe))
    trainer = hf.trainer_class()(
        model=model,
        args=hf.training_args(recipe, run_dir, session.choice, bool(prepared.val)),
        train_dataset=ListDataset(train_rows),
        eval_dataset=eval_dataset,
        data_collator=collator,
        callbacks=callbacks,
    )
    trainer.trained_logits_only = not prompt_learning(model)  # virtual tokens lengthen the hidden states
    trainer.loraplus_lr_ratio = recipe.loraplus_lr_ratio
    hf.place_dashboards(trainer, run_dir)
    if session.choice.device == "cpu":
        trainer.cpu_autocast = session.choice.autocast
    trainer.task_eval = task_eval(session, prepared, prepared.warnings)
    quiet(trainer)
    output, train_cpu = run(session, trainer)

    final = trainer.model
    # Real tokens trained on by all processes (a resumed run counts from its checkpoint on).
    seen, padding_seen, trained_seen = distributed.sum_counts(
        [trainer.tokens_seen + trainer.window_tokens, trainer.padding_seen, trainer.trained_seen]
    )
    save_weights(session, final, trainer)
    release_training_state(session, trainer)
    # Opt-in (`sample_losses`): a forward pass over the whole epoch, about 40 % of the loop's time with LoRA.
    losses = per_example_losses(session, final, prepared.train) if recipe.sample_losses else None
    if not distributed.is_main():  # rank 0 writes the rest of the run folder; wait for it, then read its manifest
        distributed.barrier()
        manifest = RunFolder(run_dir).manifest() or {}
        return TrainResult(run_dir, manifest, read_log(session), prepared.warnings)
    if losses is not None:
        with atomic_write(RunFolder(run_dir).sample_losses_path) as f:
            for ex, loss in sorted(zip(prepared.train, losses, strict=True), key=lambda p: -p[1]):
                f.write(jsonl_line({"line": ex.line, "loss": round(loss, 5), "tokens": ex.trained_tokens}))
    log = read_log(session)
    runtime = float(output.metrics.get("train_runtime", 0.0)) or 1e-9
    fields = {
        "template": tdata.template_for_run(recipe.template, prepared.template, run_dir),
        "template_sha256": tdata.template_fingerprint(tokenizer, prepared.template),
        "examples": {"train": len(prepared.train), "val": len(prepared.val)},
        "tokens": {
            "trained_per_epoch": sum(ex.trained_tokens for ex in prepared.train),
            "all_per_epoch": sum(len(ex.input_ids) for ex in prepared.train),
            "sequences_per_epoch": len(train_rows),
            "seen": seen,
            "padding_seen": padding_seen,
            "trained_seen": trained_seen,
        },
        "processes": distributed.world_size(),
        "tokens_per_second": round(seen / runtime, 1),
    }
    if prepared.sources is not None:
        fields["sources"] = source_counts(prepared.sources, float(trainer.state.epoch or 0.0))
        fields["eval_losses"] = last_eval_losses(log, list(prepared.val_sets or {}))
    outputs = {"sample_losses": RunFolder(run_dir).sample_losses_path} if losses is not None else {}
    manifest = finish(session, trainer, output, train_cpu, fields, outputs, prepared.warnings)
    distributed.barrier()
    return TrainResult(run_dir, manifest, log, prepared.warnings)
