"""wb's wiring of `transformers.Trainer`: the Trainer subclass (real-token counting, the trained-positions loss,
a NaN guard, length-grouped batches, the LoRA+ optimiser, checkpoints of wb's bottleneck adapters), the save hooks
it shares with the TRL trainers (safetensors only, umask modes; checkpoints that appear only when complete), the
JSONL log callback, the dashboards (`report_to`) and the TrainingArguments a recipe maps to."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from workbench import precision
from workbench.errors import WbError
from workbench.methods import registry as method_specs
from workbench.models import adapters
from workbench.models import templates as tdata
from workbench.models.losses import unwrap
from workbench.output import follow_umask
from workbench.runfile.training import kept_log_keys
from workbench.train import guards, row_parallel
from workbench.train.loss import fusable_head, trained_positions_loss
from workbench.train.recipe import Recipe

# GaLore's optimisers by `galore.optimizer` (transformers' OptimizerNames; they need the galore-torch package).
GALORE_OPTIMIZERS = {"adamw": "galore_adamw", "adamw_8bit": "galore_adamw_8bit", "adafactor": "galore_adafactor"}
TENSORBOARD_DIR = "tensorboard"
TRAINING_ARGS_FILE = "training_args.bin"  # transformers' TRAINING_ARGS_NAME: the arguments, pickled by torch.save
CHECKPOINT_STAGE = ".wb-stage"  # checkpoints/.wb-stage/checkpoint-N while Trainer writes it
# The log's interval when the recipe sets none: a fraction of the run's steps (Trainer rounds it up to whole steps),
# so every run has a curve of about 50 points, and one of every step when it has 50 steps or fewer.
AUTO_LOGGING_FRACTION = 0.02


def check_dashboards(recipe: Recipe) -> None:
    """Every dashboard in `report_to` has its package installed, else one line saying what to install."""
    from transformers.integrations import is_mlflow_available, is_tensorboard_available, is_wandb_available

    installed = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available, "mlflow": is_mlflow_available}
    hint = {"tensorboard": "pip install 'wb[dashboards]'", "wandb": "pip install wandb", "mlflow": "pip install mlflow"}
    for name in recipe.report_to:
        if not installed[name]():
            raise WbError(f"report_to: {name} is not installed: {hint[name]} (or remove it from report_to)")


def check_optimizer(recipe: Recipe) -> None:
    """GaLore needs galore-torch (and bitsandbytes for its 8-bit AdamW): one line saying what to install."""
    if method_specs.get(recipe.method).optimizer != "galore":
        return
    try:
        import galore_torch  # noqa: F401
    except ImportError:
        raise WbError("method galore needs galore-torch: pip install 'wb[galore]'") from None
    if recipe.galore.optimizer == "adamw_8bit" and not has_cuda():
        # galore-torch 1.0's 8-bit AdamW calls torch.cuda.synchronize() in every step.
        raise WbError(
            "galore.optimizer: adamw_8bit needs a GPU (bitsandbytes' 8-bit states); on CPU use adamw or adafactor"
        )


def place_dashboards(trainer: Any, run_dir: Path) -> None:
    """TensorBoard writes into the run folder (`tensorboard/`) unless TENSORBOARD_LOGGING_DIR says elsewhere."""
    from transformers.integrations import TensorBoardCallback

    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, TensorBoardCallback) and cb.logging_dir is None:
            cb.logging_dir = str(run_dir / TENSORBOARD_DIR)


SOURCE_EVAL_LOSS = re.compile(r"^eval_[A-Za-z0-9_-]+_loss$")  # a mixture's per-source eval loss


def callbacks(
    log_path: Path, on_log: Callable[[dict[str, Any]], None] | None, eval_metrics: Sequence[str] = ()
) -> list[Any]:
    from transformers import TrainerCallback

    keys = (*kept_log_keys(), *(f"eval_{m}" for m in eval_metrics))

    class JsonlLog(TrainerCallback):
        """Appends every log event (step, loss, eval_loss, eval_<metric>, lr, grad_norm, tokens/s) to
        trainer_log.jsonl."""

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if not logs or not state.is_world_process_zero:
                return
            row = {"step": state.global_step, **{k: logs[k] for k in keys if k in logs}}
            row.update({k: v for k, v in logs.items() if SOURCE_EVAL_LOSS.match(k)})
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


class SafetensorsSaves:
    """Mixed in before the Trainer by wb's SFT trainer and its TRL trainers: whatever `Trainer._save` writes (each
    checkpoint's weights, a sharded model's final save) holds no pickle and follows the umask. Trainer adds its
    arguments there as a pickle (`training_args.bin`) that nothing in wb reads: it goes as soon as it is written."""

    args: Any

    def _save(self, output_dir: str | None = None, state_dict: dict[str, Any] | None = None) -> None:
        parent: Any = super()
        parent._save(output_dir, state_dict)
        if self.args.should_save:
            folder = Path(str(output_dir if output_dir is not None else self.args.output_dir))
            (folder / TRAINING_ARGS_FILE).unlink(missing_ok=True)
            follow_umask(folder)


class StagedCheckpoints:
    """A Trainer mixin (first among the bases): a checkpoint becomes visible only when it is complete.

    `Trainer._save_checkpoint` (transformers 5.25) writes `checkpoint-N` into `_get_output_dir()` file by file (the
    weights, optimizer.pt, scheduler.pt, the RNG states, trainer_state.json last), so a kill in between used to leave
    a `checkpoint-N` that `--resume` took and failed on. Here `_get_output_dir()` answers `checkpoints/.wb-stage`
    while it saves; once every process has written its part, the main process fsyncs the files and renames the
    folder into `checkpoints/`, then removes the checkpoints beyond `save_total_limit` (Trainer's own rotation saw
    the staging folder only). The best checkpoint's path, recorded while staged, is corrected first.
    """

    _staging = False

    def _get_output_dir(self, trial: Any) -> str:
        root: str = super()._get_output_dir(trial)  # type: ignore[misc]
        return os.path.join(root, CHECKPOINT_STAGE) if self._staging else root

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        from transformers.trainer_utils import rotate_checkpoints

        trainer: Any = self
        root = Path(self._get_output_dir(trial))
        name = f"checkpoint-{trainer.state.global_step}"
        staged, final = root / CHECKPOINT_STAGE / name, root / name
        if trainer.args.should_save:
            shutil.rmtree(staged.parent, ignore_errors=True)  # what a save killed before left
            staged.mkdir(parents=True)
        trainer.accelerator.wait_for_everyone()
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)  # type: ignore[misc]
        finally:
            self._staging = False
        if trainer.state.best_model_checkpoint == str(staged):
            trainer.state.best_model_checkpoint = str(final)
        trainer.accelerator.wait_for_everyone()  # every process has written its part (RNG state, shards)
        if trainer.args.should_save:
            trainer.state.save_to_json(str(staged / "trainer_state.json"))  # with the corrected best path
            _publish(staged, final)
            rotate_checkpoints(
                output_dir=str(root),
                save_total_limit=trainer.args.save_total_limit,
                best_model_checkpoint=trainer.state.best_model_checkpoint,
            )
        trainer.accelerator.wait_for_everyone()


def _publish(staged: Path, final: Path) -> None:
    """The staged checkpoint, its files on disk, renamed to `final` (replacing an incomplete one left there)."""
    for path in staged.rglob("*"):
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())
    if final.exists():  # an older wb's checkpoint a kill left incomplete: resume passed it over
        old = final.with_name(f".{final.name}.wb-old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(staged, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    shutil.rmtree(staged.parent, ignore_errors=True)


def trainer_class() -> Any:
    from transformers import Trainer

    class WbTrainer(StagedCheckpoints, SafetensorsSaves, Trainer):
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
        # LoRA+: the B matrices' learning rate is lr × this ratio (None: one learning rate).
        loraplus_lr_ratio: float | None = None

        def create_optimizer(self, model: Any = None) -> Any:
            """AdamW as the Trainer builds it, or with LoRA+ PEFT's LoRA+ parameter groups (weight decay kept)."""
            if self.loraplus_lr_ratio is None or self.optimizer is not None:
                return super().create_optimizer(model)
            import torch
            from peft.optimizers import create_loraplus_optimizer

            args = self.args
            peft_model: Any = self.model if model is None else model
            self.optimizer = create_loraplus_optimizer(
                model=peft_model,
                optimizer_cls=torch.optim.AdamW,
                lr=args.learning_rate,
                loraplus_lr_ratio=self.loraplus_lr_ratio,
                loraplus_weight_decay=args.weight_decay,
                betas=(args.adam_beta1, args.adam_beta2),
                eps=args.adam_epsilon,
            )
            return self.optimizer

        def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
            """GaLore's optimiser state holds a projector object per weight (its rank, gap, scale and projection
            matrix): the Trainer's `torch.load(weights_only=True)` refuses it unless the class is allowlisted."""
            if not self.args.optim.startswith("galore"):
                return super()._load_optimizer_and_scheduler(checkpoint)
            import torch
            from galore_torch.galore_projector import GaLoreProjector

            with torch.serialization.safe_globals([GaLoreProjector]):
                return super()._load_optimizer_and_scheduler(checkpoint)

        def _save(self, output_dir: str | None = None, state_dict: dict[str, Any] | None = None) -> None:
            """A checkpoint of a bottleneck-adapter run holds the adapter only (as PEFT checkpoints do)."""
            if not adapters.has(self.model):
                return super()._save(output_dir, state_dict)
            folder = Path(str(output_dir if output_dir is not None else self.args.output_dir))
            adapters.save(self.model, folder)
            return None

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
            if not adapters.has(self.model):
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            adapters.load_weights(self.model if model is None else model, Path(resume_from_checkpoint))
            return None

        def _load_best_model(self) -> None:
            if not adapters.has(self.model):
                return super()._load_best_model()
            adapters.load_weights(self.model, Path(str(self.state.best_model_checkpoint)))
            return None

        # Task metrics at every eval (`workbench.train.task_eval.TaskEval`): model -> {metric: mean}.
        task_eval: Callable[[Any], dict[str, float]] | None = None

        def evaluation_loop(
            self,
            dataloader: Any,
            description: str,
            prediction_loss_only: bool | None = None,
            ignore_keys: list[str] | None = None,
            metric_key_prefix: str = "eval",
        ) -> Any:
            """The eval loss, plus `<prefix>_<metric>` of answers generated by the model as it is now."""
            output = super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
            if self.task_eval is not None and output.metrics is not None:
                scores = self.task_eval(self.accelerator.unwrap_model(self.model))
                output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in scores.items()})
            return output

        def autocast_smart_context_manager(self, cache_enabled: bool | None = True) -> Any:
            return self.cpu_autocast()

        def count_tokens(self, inputs: dict[str, Any]) -> int:
            """A training batch's real, padding and trained tokens, added to the counts; returns the trained ones."""
            mask = inputs["attention_mask"]
            # 2D padding mask: its sum; 4D block-diagonal mask: a real token attends to itself, padding to nothing.
            real = int(mask.sum() if mask.dim() == 2 else mask[:, 0].diagonal(dim1=-2, dim2=-1).sum())
            if not self.window_start:
                self.window_start = time.perf_counter()
            self.window_tokens += real
            self.padding_seen += inputs["input_ids"].numel() - real
            trained = int((inputs["labels"][:, 1:] != tdata.IGNORE).sum())
            self.trained_seen += trained
            return trained

        def compute_loss(  # type: ignore[override]
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            counted: bool = False,
            **kw: Any,
        ) -> Any:
            """The loss (trained positions only where `_fast_loss`); a training batch's tokens counted unless
            `counted` (a part of a batch whose tokens `row_parallel.step` counted)."""
            if model.training and not counted:
                self.count_tokens(inputs)
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

        def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
            """One step's loss, its batch split over threads where `row_parallel` applies; a NaN or infinite loss
            stops the run before the optimiser applies it."""
            model.train()  # as Trainer.training_step does (the step after an evaluation finds it in eval mode)
            count = row_parallel.parts(self, model, inputs)
            if count > 1:
                loss = row_parallel.step(self, model, inputs, num_items_in_batch, count)
            else:
                loss = super().training_step(model, inputs, num_items_in_batch)
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

        def evaluate(
            self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval"
        ) -> dict[str, float]:
            """With one eval set per source (a dict), Trainer logs `eval_<name>_loss` for each; the pooled
            `eval_loss` (mean over the sets, weighted by their examples) is added, logged and handed to the callbacks,
            so the best checkpoint and early stopping follow the whole mixture."""
            sets: Any = eval_dataset if eval_dataset is not None else self.eval_dataset
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            if not isinstance(sets, dict) or metric_key_prefix != "eval":
                return metrics
            sizes = {name: len(ds) for name, ds in sets.items()}
            pooled = sum(metrics[f"eval_{n}_loss"] * k for n, k in sizes.items()) / max(1, sum(sizes.values()))
            metrics["eval_loss"] = pooled
            self.log({"eval_loss": pooled})
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, {"eval_loss": pooled})
            return metrics

        def log(self, logs: dict[str, float], *args: Any, **kw: Any) -> None:
            if "loss" in logs and self.window_start:
                now = time.perf_counter()
                logs["tokens_per_second"] = round(self.window_tokens / max(now - self.window_start, 1e-9), 1)
                self.tokens_seen += self.window_tokens
                self.window_tokens, self.window_start = 0, now
            super().log(logs, *args, **kw)

    return WbTrainer


def best_metric(recipe: Recipe) -> tuple[str, bool]:
    """(Trainer's metric_for_best_model, greater_is_better) of a recipe's metric_for_best."""
    from workbench import metric_specs

    if recipe.metric_for_best == "eval_loss":
        return "eval_loss", False
    return f"eval_{recipe.metric_for_best}", metric_specs.higher_is_better(recipe.metric_for_best)


def has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def training_args(
    recipe: Recipe,
    run_dir: Path,
    choice: precision.Choice,
    has_val: bool,
    args_class: Any = None,
    **extra: Any,
) -> Any:
    """The recipe as TrainingArguments, or as `args_class` (a TRL config, which subclasses it) with its own `extra`
    keys; TRL's defaults that differ from Trainer's (gradient checkpointing, bf16, lr) are set from the recipe."""
    from transformers import TrainingArguments

    args_class = args_class or TrainingArguments
    # Eval and save on the same schedule (the best checkpoint is kept): both per epoch, or both every N steps.
    eval_steps = recipe.eval_steps or recipe.save_steps
    save_steps = recipe.save_steps or recipe.eval_steps
    interval = "steps" if eval_steps else "epoch"
    evaluate = has_val
    if evaluate and eval_steps and save_steps and save_steps % eval_steps:
        raise WbError(f"save_steps: {save_steps} must be a multiple of eval_steps {eval_steps}")
    best, higher = best_metric(recipe)
    if recipe.deepspeed is not None and importlib.util.find_spec("deepspeed") is None:
        raise WbError(f"deepspeed: {recipe.deepspeed}: DeepSpeed is not installed: pip install 'wb[deepspeed]' (GPUs)")
    galore: dict[str, Any] = {}
    if method_specs.get(recipe.method).optimizer == "galore":
        g = recipe.galore
        galore = {
            "optim": GALORE_OPTIMIZERS[g.optimizer],
            "optim_target_modules": g.target_modules,
            "optim_args": f"rank={g.rank},update_proj_gap={g.update_proj_gap},scale={g.scale}",
        }
    fields: dict[str, Any] = dict(
        output_dir=str(run_dir / "checkpoints"),
        run_name=recipe.name,
        fsdp=recipe.fsdp is not None,  # transformers 5.24 takes True (its string form is deprecated)
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
        logging_steps=recipe.logging_steps or AUTO_LOGGING_FRACTION,
        logging_first_step=True,
        eval_strategy=interval if evaluate else "no",
        eval_steps=eval_steps,
        save_strategy=interval,
        save_steps=save_steps or 500,
        save_total_limit=recipe.save_total_limit,
        load_best_model_at_end=evaluate,
        metric_for_best_model=best if evaluate else None,
        greater_is_better=higher if evaluate else None,
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
        report_to=list(recipe.report_to),
        neftune_noise_alpha=recipe.neftune_noise_alpha,
        **galore,
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        save_only_model=False,
    )
    return args_class(**{**fields, **extra})
