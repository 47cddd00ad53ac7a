"""wb's wiring of `transformers.Trainer`: the Trainer subclass (real-token counting, the trained-positions loss,
a NaN guard, length-grouped batches), the JSONL log callback and the TrainingArguments a recipe maps to."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench import precision
from workbench.errors import WbError
from workbench.train import data as tdata
from workbench.train import guards
from workbench.train.loss import fusable_head, trained_positions_loss, unwrap
from workbench.train.recipe import Recipe

LOG_KEYS = ("loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_second", "epoch")


def callbacks(log_path: Path, on_log: Callable[[dict[str, Any]], None] | None) -> list[Any]:
    from transformers import TrainerCallback

    class JsonlLog(TrainerCallback):
        """Appends every log event (step, loss, eval_loss, lr, grad_norm, tokens/s) to trainer_log.jsonl."""

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if not logs or not state.is_world_process_zero:
                return
            row = {"step": state.global_step, **{k: logs[k] for k in LOG_KEYS if k in logs}}
            for k in ("train_runtime", "train_loss"):
                if k in logs:
                    row[k] = logs[k]
            row = guards.finite_row(row)  # trainer_log.jsonl stays JSON: no NaN or Infinity in it
            with log_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row, sort_keys=True, allow_nan=False) + "\n")
            if on_log is not None:
                on_log(row)

    return [JsonlLog()]


class LengthGroupedEpochSampler:
    """Batches of similar length (little padding) in an order fixed by seed and epoch."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size, self.seed, self.epoch = lengths, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Any:
        import torch
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def trainer_class() -> Any:
    from transformers import Trainer

    class WbTrainer(Trainer):
        """Counts the real (non-padding) tokens trained on, for tokens/s in the log, and the padding and trained
        (labelled) tokens, for the manifest; computes the training loss on trained positions only."""

        tokens_seen = 0
        window_tokens = 0
        window_start = 0.0
        padding_seen = 0
        trained_seen = 0
        # Off for methods that prepend virtual tokens (their hidden states are longer than the labels).
        trained_logits_only = True
        # Autocast around every loss computation (training and eval): bf16 on CPU, nothing otherwise.
        cpu_autocast: Callable[[], Any] = contextlib.nullcontext

        def autocast_smart_context_manager(self, cache_enabled: bool | None = True) -> Any:
            return self.cpu_autocast()

        def compute_loss(  # type: ignore[override]
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, **kw: Any
        ) -> Any:
            if model.training:
                mask = inputs["attention_mask"]
                # 2D padding mask: its sum; 4D block-diagonal mask: a real token attends to itself, padding to
                # nothing.
                real = int(mask.sum() if mask.dim() == 2 else mask[:, 0].diagonal(dim1=-2, dim2=-1).sum())
                if not self.window_start:
                    self.window_start = time.perf_counter()
                self.window_tokens += real
                self.padding_seen += inputs["input_ids"].numel() - real
                self.trained_seen += int((inputs["labels"][:, 1:] != tdata.IGNORE).sum())
            if self._fast_loss(model, return_outputs):
                num_items = kw.get("num_items_in_batch") if self.model_accepts_loss_kwargs else None
                unwrapped = self.accelerator.unwrap_model(model)
                head = fusable_head(unwrapped)
                loss = trained_positions_loss(model, inputs, num_items, unwrap(unwrapped).loss_function, head)
                if loss is not None:
                    if self.args.average_tokens_across_devices and num_items is not None:
                        # As Trainer.compute_loss: num_items counts the trained tokens of all processes, and DDP
                        # averages the gradients over them, so each process's share is scaled back up.
                        loss = loss * (self.accelerator.num_processes // self.get_tp_size())
                    return loss
                if int((inputs["labels"][:, 1:] != tdata.IGNORE).sum()):
                    self.trained_logits_only = False  # the model's logits_to_keep takes no mask: the plain way
            return super().compute_loss(model, inputs, return_outputs=return_outputs, **kw)

        def training_step(self, *args: Any, **kw: Any) -> Any:
            """One step's loss; a NaN or infinite one stops the run before the optimiser applies it."""
            loss = super().training_step(*args, **kw)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise guards.NonFiniteLoss(self.state.global_step + 1, value)
            return loss

        def _fast_loss(self, model: Any, return_outputs: bool) -> bool:
            return bool(
                self.trained_logits_only
                and model.training
                and not return_outputs
                and self.label_smoother is None
                and self.compute_loss_func is None
                and self.args.n_gpu <= 1  # DataParallel (several GPUs, one process) splits the batch itself
            )

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            """Length-grouped batches when not packing, re-seeded each epoch so a resumed run sees the same order
            (transformers' own length-grouped sampler draws from the global RNG)."""
            if self.args.train_sampling_strategy != "group_by_length":
                return super()._get_train_sampler(train_dataset)
            dataset: Any = train_dataset if train_dataset is not None else self.train_dataset
            lengths = [row["length"] for row in dataset.rows]
            # Groups of one optimiser step over all processes: a launched run deals them out batch by batch, so
            # N processes at batch b see the batches one process at batch N x b sees.
            batch = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps
            batch *= self.args.world_size
            return LengthGroupedEpochSampler(lengths, batch, self.args.seed)

        def log(self, logs: dict[str, float], *args: Any, **kw: Any) -> None:
            if "loss" in logs and self.window_start:
                now = time.perf_counter()
                logs["tokens_per_second"] = round(self.window_tokens / max(now - self.window_start, 1e-9), 1)
                self.tokens_seen += self.window_tokens
                self.window_tokens, self.window_start = 0, now
            super().log(logs, *args, **kw)

    return WbTrainer


def has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def training_args(recipe: Recipe, run_dir: Path, choice: precision.Choice, has_val: bool) -> Any:
    from transformers import TrainingArguments

    # Eval and save on the same schedule (the best checkpoint is kept): both per epoch, or both every N steps.
    eval_steps = recipe.eval_steps or recipe.save_steps
    save_steps = recipe.save_steps or recipe.eval_steps
    interval = "steps" if eval_steps else "epoch"
    evaluate = has_val
    if evaluate and eval_steps and save_steps and save_steps % eval_steps:
        raise WbError(f"save_steps: {save_steps} must be a multiple of eval_steps {eval_steps}")
    if recipe.deepspeed is not None and importlib.util.find_spec("deepspeed") is None:
        raise WbError(f"deepspeed: {recipe.deepspeed}: DeepSpeed is not installed: pip install 'wb[deepspeed]' (GPUs)")
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        fsdp=recipe.fsdp is not None,  # type: ignore[arg-type]  # transformers 5.24 takes True (its string form is deprecated)
        fsdp_config=recipe.fsdp.trainer_config() if recipe.fsdp is not None else None,
        deepspeed=str(recipe.deepspeed) if recipe.deepspeed is not None else None,
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps or -1,
        per_device_train_batch_size=recipe.batch_size,
        per_device_eval_batch_size=recipe.batch_size,
        gradient_accumulation_steps=recipe.grad_accum,
        learning_rate=recipe.lr,
        lr_scheduler_type=recipe.scheduler,
        warmup_steps=recipe.warmup_ratio,
        weight_decay=recipe.weight_decay,
        max_grad_norm=recipe.max_grad_norm,
        logging_steps=recipe.logging_steps,
        logging_first_step=True,
        eval_strategy=interval if evaluate else "no",
        eval_steps=eval_steps,
        save_strategy=interval,
        save_steps=save_steps or 500,
        save_total_limit=recipe.save_total_limit,
        load_best_model_at_end=evaluate,
        metric_for_best_model="eval_loss" if evaluate else None,
        greater_is_better=False if evaluate else None,
        seed=recipe.seed,
        data_seed=recipe.seed,
        # On a GPU, Trainer's own mixed precision; on a CPU, WbTrainer autocasts itself (its loss included).
        bf16=choice.device != "cpu" and choice.name == "bf16",
        fp16=choice.device != "cpu" and choice.name == "fp16",
        dataloader_pin_memory=has_cuda(),
        # On a CPU, say so: under torchrun / accelerate launch accelerate then sets up DDP over gloo (without it, each
        # process would train alone on all the data).
        use_cpu=choice.device == "cpu",
        train_sampling_strategy="random" if recipe.packing else "group_by_length",
        report_to=[],
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        save_only_model=False,
    )
