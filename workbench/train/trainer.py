"""`wb train` as a library function, built on `transformers.Trainer` and PEFT (no hand-written training loop).

A run folder `runs/<name>/` gets: `recipe.yaml` (the resolved recipe, so `--resume` needs nothing else),
`checkpoints/` (Trainer checkpoints, safetensors), `adapter/` (PEFT adapter) or `model/` (freeze/full),
`trainer_log.jsonl`, `loss.svg`, `sample_losses.jsonl` and `manifest.json`.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbench import io, precision, runfile
from workbench.errors import WbError
from workbench.manifest import build_manifest
from workbench.records import FIELDS
from workbench.train import data as tdata
from workbench.train import guards, methods
from workbench.train.recipe import Recipe

LOG_KEYS = ("loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_second", "epoch")


@dataclass
class Prepared:
    """Tokenised training and validation sets, and what the checks found."""

    template: tdata.Template
    train: list[tdata.Example]
    val: list[tdata.Example]
    warnings: list[str] = field(default_factory=list)


def read_records(
    path: Path, split: str | None = None, prefer: tuple[str, ...] = ("train",)
) -> list[tuple[int, dict[str, Any]]]:
    """Every record of a file or of one split of a dataset folder; a malformed one is a WbError."""
    reader = io.RecordReader(Path(path), split=split, prefer=prefer)
    out: list[tuple[int, dict[str, Any]]] = []
    for batch in reader:
        if batch.rejects:
            r = batch.rejects[0]
            raise WbError(f"{path}:{r.unit} {r.line}: {r.error} (run `wb clean` first)")
        out.extend(
            (line, dict(zip(FIELDS, row, strict=True))) for line, row in zip(batch.lines, batch.rows, strict=True)
        )
        out.extend(batch.conversations)  # tool-calling conversations: {"messages", "tools"}
    out.sort(key=lambda item: item[0])
    if not out:
        raise WbError(f"{path}: no records to train on")
    return out


def prepare(recipe: Recipe, tokenizer: Any, max_positions: int | None) -> Prepared:
    """Read, template, tokenise and check the data; refuse what cannot train."""
    if recipe.data is None:
        raise WbError("recipe: data: no training data given (set data: in the recipe or pass --data FILE)")
    if max_positions is not None and recipe.max_length > max_positions:
        raise WbError(f"max_length: {recipe.max_length} is more than the model supports ({max_positions} positions)")
    template = tdata.choose_template(tokenizer, recipe.template)
    records = read_records(recipe.data, recipe.data_split)[: recipe.max_samples]
    examples = [tdata.encode(tokenizer, r, template, recipe.max_length, recipe.train_on, line) for line, r in records]
    empty = [ex.line for ex in examples if ex.trained_tokens == 0]
    if empty:
        shown = ", ".join(str(n) for n in empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise WbError(
            f"{recipe.data}: {len(empty)} record(s) have no trainable tokens after truncation to max_length "
            f"{recipe.max_length} (lines {shown}); raise max_length or drop them"
        )
    if recipe.eval_data is not None:
        val = [
            tdata.encode(tokenizer, r, template, recipe.max_length, recipe.train_on, line)
            for line, r in read_records(recipe.eval_data)
        ]
        train = examples
    else:
        order = list(range(len(examples)))
        random.Random(recipe.seed).shuffle(order)
        n_val = round(len(examples) * recipe.val_size) if len(examples) >= 10 else 0
        held = set(order[:n_val])
        val = [ex for i, ex in enumerate(examples) if i in held]
        train = [ex for i, ex in enumerate(examples) if i not in held]
    warnings = check_examples(tokenizer, template, train, recipe)
    return Prepared(template, train, val, warnings)


def check_examples(tokenizer: Any, template: str, examples: list[tdata.Example], recipe: Recipe) -> list[str]:
    """Warnings worth reading before a run: untrained end-of-turn tokens and a template mismatch."""
    warnings: list[str] = []
    eos = tokenizer.eos_token_id
    truncated = [ex for ex in examples if ex.truncated]
    if truncated:
        warnings.append(
            f"{len(truncated)} of {len(examples)} examples are longer than max_length {recipe.max_length} and were "
            "cut: their end-of-turn token is not trained"
        )
    whole = [ex for ex in examples if not ex.truncated]
    if eos is not None and whole and not any(eos in [t for t in ex.labels if t != tdata.IGNORE] for ex in whole):
        warnings.append(
            f"the end-of-turn token {tokenizer.eos_token!r} is never trained: the tuned model may not stop generating"
        )
    if template == "alpaca" and getattr(tokenizer, "chat_template", None):
        warnings.append(
            "training with the Alpaca template on a model with a chat template: `wb generate` and `wb eval` must "
            "use template alpaca too"
        )
    return warnings


def inspect(tokenizer: Any, examples: list[tdata.Example], n: int) -> list[list[tuple[str, bool]]]:
    """The first n examples as (text, trained) spans, merged where consecutive tokens agree."""
    out = []
    for ex in examples[:n]:
        spans: list[tuple[str, bool]] = []
        run: list[int] = []
        state: bool | None = None
        for tok, label in zip(ex.input_ids, ex.labels, strict=True):
            trained = label != tdata.IGNORE
            if state is not None and trained != state:
                spans.append((tokenizer.decode(run), state))
                run = []
            run.append(tok)
            state = trained
        if run and state is not None:
            spans.append((tokenizer.decode(run), state))
        out.append(spans)
    return out


def _rows(examples: list[tdata.Example], recipe: Recipe) -> list[dict[str, Any]]:
    if recipe.packing:
        return [
            {"input_ids": p.input_ids, "labels": p.labels, "lengths": p.lengths}
            for p in tdata.pack(examples, recipe.max_length)
        ]
    return [{"input_ids": ex.input_ids, "labels": ex.labels, "length": len(ex.input_ids)} for ex in examples]


class ListDataset:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


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


def _callbacks(log_path: Path, on_log: Callable[[dict[str, Any]], None] | None) -> list[Any]:
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


# Causal LMs whose logits are exactly `lm_head(hidden)`, with nothing applied after the head (no soft-capping, no
# logit scaling, no auxiliary loss; read in transformers 5.24's modeling files): for them wb fuses the output head
# with the loss (`HeadLoss`). Other models get the loss from their own logits, on the trained positions only.
PLAIN_HEAD_MODELS = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "smollm3", "olmo2", "gemma"})
# Logits computed at once by `HeadLoss`: positions per chunk × vocabulary ≤ 2**25 (128 MB in fp32).
HEAD_CHUNK_ELEMENTS = 2**25


def _head_loss_class() -> Any:
    import torch

    class HeadLoss(torch.autograd.Function):
        """Output head and cross-entropy in one step, chunked over positions: sum of the losses / divisor.

        The gradient for the hidden states is computed in the forward pass, chunk by chunk, and kept (positions ×
        hidden, small); the (positions × vocabulary) logits, log-probabilities and their gradients are never held
        in memory all at once, as they are when the model returns logits and a loss is taken from them. Same
        values: logits in fp32, log-sum-exp minus the target logit; gradient softmax − one-hot. The head's weight
        must be frozen (it gets no gradient).
        """

        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, targets: Any, divisor: float) -> Any:
            rows = max(1, HEAD_CHUNK_ELEMENTS // weight.shape[0])
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad = torch.empty_like(hidden)
            for lo in range(0, hidden.shape[0], rows):
                h, t = hidden[lo : lo + rows], targets[lo : lo + rows]
                logits = (h.to(weight.dtype) @ weight.T).float()
                lse = torch.logsumexp(logits, dim=-1)
                total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
                probs = logits.sub_(lse[:, None]).exp_()
                probs[torch.arange(len(t), device=t.device), t] -= 1
                grad[lo : lo + rows] = (probs.to(weight.dtype) @ weight) / divisor
            ctx.save_for_backward(grad)
            return total / divisor

        @staticmethod
        def backward(ctx: Any, grad_output: Any) -> Any:
            (grad,) = ctx.saved_tensors
            return grad * grad_output.to(grad.dtype), None, None, None

    return HeadLoss


def trained_positions_loss(
    model: Any, inputs: dict[str, Any], num_items_in_batch: Any, loss_function: Any, head: Any = None
) -> Any:
    """The causal-LM loss with the output head applied only where a label is trained.

    The output head (vocabulary × hidden, the largest matrix of a small model) and the cross-entropy then skip the
    prompt and padding positions, which carry no loss. Position i predicts label i+1; transformers'
    `logits_to_keep` takes a boolean (batch, length) mask and hands the kept positions, flattened, to the head.
    With `head` (the model's frozen output `Linear`, for a model in PLAIN_HEAD_MODELS) the head's input is taken
    and `HeadLoss` computes the loss from it in chunks; without it the model's logits for the kept positions go
    through the model's own loss function. Either way the loss is the model's over the same targets, with the same
    normalisation (`num_items_in_batch`, else the mean): it equals `model(**inputs).loss`. Returns None when the
    model does not take a boolean `logits_to_keep` (its head sees another shape) or nothing in the batch is trained.
    """
    import torch

    labels = inputs["labels"]
    targets = labels[:, 1:] != tdata.IGNORE
    n = int(targets.sum())
    if n == 0:
        return None
    keep = torch.nn.functional.pad(targets, (0, 1), value=False)
    forward = {k: v for k, v in inputs.items() if k != "labels"}
    if head is None:
        logits = model(**forward, logits_to_keep=keep).logits
        if logits.dim() != 2 or logits.shape[0] != n:
            return None
        return loss_function(
            logits=logits,
            labels=None,
            vocab_size=logits.shape[-1],
            num_items_in_batch=num_items_in_batch,
            shift_labels=labels[:, 1:][targets],
        )
    taken: list[Any] = []

    def take(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        taken.append(args[0])
        return (args[0][:0],)  # the head itself computes nothing

    handle = head.register_forward_pre_hook(take)
    try:
        model(**forward, logits_to_keep=keep)
    finally:
        handle.remove()
    hidden = taken[0] if len(taken) == 1 else None
    if hidden is None or hidden.dim() != 2 or hidden.shape[0] != n:
        return None
    divisor = float(num_items_in_batch) if num_items_in_batch is not None else float(n)
    return _head_loss_class().apply(hidden, head.weight, labels[:, 1:][targets], divisor)


def fusable_head(model: Any) -> Any:
    """The output `Linear` of a model in PLAIN_HEAD_MODELS when it is frozen and has no bias, else None."""
    import torch

    base = _unwrap(model)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    plain = getattr(getattr(base, "config", None), "model_type", None) in PLAIN_HEAD_MODELS
    if plain and type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad:
        return head
    return None


def _trainer_class() -> Any:
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
                loss = trained_positions_loss(model, inputs, num_items, _unwrap(unwrapped).loss_function, head)
                if loss is not None:
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
                and self.accelerator.num_processes == 1
                and self.args.n_gpu <= 1
            )

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            """Length-grouped batches when not packing, re-seeded each epoch so a resumed run sees the same order
            (transformers' own length-grouped sampler draws from the global RNG)."""
            if self.args.train_sampling_strategy != "group_by_length":
                return super()._get_train_sampler(train_dataset)
            dataset: Any = train_dataset if train_dataset is not None else self.train_dataset
            lengths = [row["length"] for row in dataset.rows]
            batch = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps
            return LengthGroupedEpochSampler(lengths, batch, self.args.seed)

        def log(self, logs: dict[str, float], *args: Any, **kw: Any) -> None:
            if "loss" in logs and self.window_start:
                now = time.perf_counter()
                logs["tokens_per_second"] = round(self.window_tokens / max(now - self.window_start, 1e-9), 1)
                self.tokens_seen += self.window_tokens
                self.window_tokens, self.window_start = 0, now
            super().log(logs, *args, **kw)

    return WbTrainer


def _unwrap(model: Any) -> Any:
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


# glibc's mallopt parameter and the size from which allocations get a memory mapping of their own.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20


def return_freed_memory() -> bool:
    """On Linux with glibc, give every allocation of 1 MiB or more a memory mapping of its own (`mallopt`
    M_MMAP_THRESHOLD), which goes back to the system as soon as it is freed. True when set (process-wide, for good).

    glibc's default threshold rises with every large block freed (up to 32 MiB); after that a training step's
    activations (a few MiB each, allocated and freed at every step) are carved from its heap, which fragments, so
    on CPU the peak RSS lies well above the memory in use. With this setting every such block is mapped afresh and
    its pages faulted in at each step. Measured on the embedded model with LoRA, 2 cores: 4 x 512 tokens a step,
    peak RSS 11.3 GB → 7.1 GB, steps 15.3 s → 19.0 s; 2 x 512, 6.2 GB → 4.6 GB, 6.2 s → 7.9 s. Hence off by
    default (recipe key `release_freed_memory`).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _training_args(recipe: Recipe, run_dir: Path, choice: precision.Choice, has_val: bool) -> Any:
    from transformers import TrainingArguments

    # Eval and save on the same schedule (the best checkpoint is kept): both per epoch, or both every N steps.
    eval_steps = recipe.eval_steps or recipe.save_steps
    save_steps = recipe.save_steps or recipe.eval_steps
    interval = "steps" if eval_steps else "epoch"
    evaluate = has_val
    if evaluate and eval_steps and save_steps and save_steps % eval_steps:
        raise WbError(f"save_steps: {save_steps} must be a multiple of eval_steps {eval_steps}")
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
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
        dataloader_pin_memory=_has_cuda(),
        train_sampling_strategy="random" if recipe.packing else "group_by_length",
        report_to=[],
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        save_only_model=False,
    )


def _prompt_learning(model: Any) -> bool:
    """Whether a PEFT model prepends virtual tokens (prompt or prefix tuning)."""
    return bool(getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False))


def sample_losses(
    model: Any, examples: list[tdata.Example], pad_id: int, batch_size: int, choice: precision.Choice | None = None
) -> list[float]:
    """Mean loss over the trained tokens of each example, without packing (one row per example), in the order of
    `examples`. Batches hold examples of similar length (little padding), and where the model allows it the output
    head runs only on the positions whose next token is trained (`logits_to_keep` with a boolean mask). The forward
    passes run under `choice`'s autocast (none when not given); the cross-entropy is fp32 either way."""
    import torch

    collate = tdata.PaddingCollator(pad_id)
    model.eval()
    out = [0.0] * len(examples)
    device = next(model.parameters()).device
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    masked_head = not _prompt_learning(model)
    autocast = choice.autocast if choice is not None else contextlib.nullcontext
    with torch.inference_mode(), autocast():
        for lo in range(0, len(order), batch_size):
            rows = order[lo : lo + batch_size]
            batch = collate([{"input_ids": examples[i].input_ids, "labels": examples[i].labels} for i in rows])
            input_ids, attention = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            labels = batch["labels"].to(device)[:, 1:]
            trained = labels != tdata.IGNORE
            sums = None
            if masked_head and bool(trained.any()):
                keep = torch.nn.functional.pad(trained, (0, 1), value=False)
                logits = model(input_ids=input_ids, attention_mask=attention, logits_to_keep=keep).logits
                if logits.dim() == 2 and logits.shape[0] == int(trained.sum()):
                    token_losses = torch.nn.functional.cross_entropy(
                        logits.float(), labels[trained], reduction="none"
                    )  # kept positions come row by row, as trained.nonzero() lists them
                    sums = torch.zeros(len(rows), device=device).index_add_(0, trained.nonzero()[:, 0], token_losses)
                else:
                    masked_head = False  # the model's logits_to_keep takes no mask
            if sums is None:
                logits = model(input_ids=input_ids, attention_mask=attention).logits
                logits = logits[:, -batch["labels"].shape[1] :]  # prompt tuning prepends virtual-token positions
                sums = torch.nn.functional.cross_entropy(
                    logits[:, :-1].float().transpose(1, 2), labels, ignore_index=tdata.IGNORE, reduction="none"
                ).sum(dim=1)
            counts = trained.sum(dim=1).clamp(min=1)
            for i, loss in zip(rows, (sums / counts).tolist(), strict=True):
                out[i] = loss
    return out


def loss_svg(log: list[dict[str, Any]], width: int = 640, height: int = 320) -> str:
    """A small self-contained SVG of the training and eval loss curves."""
    train = [(r["step"], r["loss"]) for r in log if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in log if "eval_loss" in r]
    points = train + evals
    if not points:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"></svg>'
    max_step = max(s for s, _ in points) or 1
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    span = (hi - lo) or 1.0
    pad = 40

    def xy(step: float, value: float) -> str:
        x = pad + (width - 2 * pad) * step / max_step
        y = height - pad - (height - 2 * pad) * (value - lo) / span
        return f"{x:.1f},{y:.1f}"

    def line(pts: list[tuple[int, float]], colour: str) -> str:
        if not pts:
            return ""
        return (
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(xy(s, v) for s, v in pts)}"/>'
        )

    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        f'font-size="12"><rect width="100%" height="100%" fill="white"/>'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#999"/>'
        f'<text x="{pad}" y="{pad - 10}">loss {hi:.3f}</text>'
        f'<text x="{pad}" y="{height - 10}">{lo:.3f} · step {max_step}</text>'
        f"{line(train, '#1f77b4')}{line(evals, '#d62728')}"
        f'<text x="{width - pad - 140}" y="{pad - 10}" fill="#1f77b4">train</text>'
        f'<text x="{width - pad - 80}" y="{pad - 10}" fill="#d62728">eval</text></svg>\n'
    )


def save_recipe(recipe: Recipe, run_dir: Path) -> None:
    with io.atomic_write(run_dir / "recipe.yaml") as f:
        f.write(yaml.safe_dump(json.loads(recipe.model_dump_json()), sort_keys=False, allow_unicode=True).encode())


def train(
    recipe: Recipe,
    resume: bool = False,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    on_status: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train per the recipe into `recipe.run_dir`; with `resume`, continue from its last checkpoint."""
    from workbench.train.model import load_model, load_tokenizer, quiet_libraries

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet_libraries()
    started = time.time()
    import torch
    from transformers import EarlyStoppingCallback, set_seed

    set_seed(recipe.seed)
    # On CPU the activations live in the process heap; release_freed_memory keeps it from fragmenting (slower steps).
    released = recipe.release_freed_memory and not torch.cuda.is_available() and return_freed_memory()
    mmap_threshold = MMAP_THRESHOLD_BYTES if released else None
    run_dir = recipe.run_dir
    checkpoint = str(guards.check_resume(recipe)) if resume else None
    if not resume and (run_dir / "manifest.json").exists():
        raise WbError(f"{run_dir}: a finished run is already there; choose another name or remove it")
    tokenizer = load_tokenizer(recipe.model, on_status)
    choice = precision.for_training(recipe.precision, recipe.method)
    if on_status is not None:
        on_status(f"precision {choice.name} ({choice.reason})")
    dtype = _load_dtype(choice)
    quant = methods.quantization_config(recipe, dtype)
    model = load_model(recipe.model, dtype=dtype, quantization_config=quant)
    prepared = prepare(recipe, tokenizer, getattr(model.config, "max_position_embeddings", None))
    if recipe.packing and getattr(model.config, "_attn_implementation", "sdpa") not in ("sdpa", "flash_attention_2"):
        model.config._attn_implementation = "sdpa"
    if recipe.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()  # frozen embeddings (adapters) must still pass gradients back
        model.config.use_cache = False
    model = methods.apply(model, recipe)
    trainable, total = methods.count_parameters(model)

    io.ensure_dir(run_dir)
    save_recipe(recipe, run_dir)
    log_path = run_dir / "trainer_log.jsonl"
    if not resume and log_path.exists():
        log_path.unlink()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    collator = tdata.PackedCollator(pad_id) if recipe.packing else tdata.PaddingCollator(pad_id)
    callbacks = _callbacks(log_path, on_log)
    if recipe.early_stopping_patience and prepared.val:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=recipe.early_stopping_patience))
    train_rows = _rows(prepared.train, recipe)
    trainer = _trainer_class()(
        model=model,
        args=_training_args(recipe, run_dir, choice, bool(prepared.val)),
        train_dataset=ListDataset(train_rows),
        eval_dataset=ListDataset(_rows(prepared.val, recipe)) if prepared.val else None,
        data_collator=collator,
        callbacks=callbacks,
    )
    from transformers import PrinterCallback, ProgressCallback

    trainer.trained_logits_only = not _prompt_learning(model)  # virtual tokens lengthen the hidden states
    if choice.device == "cpu":
        trainer.cpu_autocast = choice.autocast
    for noisy in (PrinterCallback, ProgressCallback):  # wb prints its own log lines (on_log)
        trainer.remove_callback(noisy)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    cpu_started = time.process_time()
    try:
        output = trainer.train(resume_from_checkpoint=checkpoint)
    except guards.NonFiniteLoss as nan:
        raise WbError(guards.non_finite_message(run_dir, nan)) from None
    train_cpu = time.process_time() - cpu_started

    final = trainer.model
    if recipe.method in methods.PEFT_METHODS:
        final.save_pretrained(run_dir / "adapter", safe_serialization=True)
        tokenizer.save_pretrained(run_dir / "adapter")
    else:
        final.save_pretrained(run_dir / "model", safe_serialization=True)
        tokenizer.save_pretrained(run_dir / "model")
    losses = sample_losses(final, prepared.train, pad_id, recipe.batch_size, choice)
    with io.atomic_write(run_dir / "sample_losses.jsonl") as f:
        for ex, loss in sorted(zip(prepared.train, losses, strict=True), key=lambda p: -p[1]):
            f.write(io.jsonl_line({"line": ex.line, "loss": round(loss, 5), "tokens": ex.trained_tokens}))
    log = [json.loads(x) for x in log_path.read_text(encoding="utf-8").splitlines() if x.strip()]
    with io.atomic_write(run_dir / "loss.svg") as f:
        f.write(loss_svg(log).encode())
    tokens = sum(ex.trained_tokens for ex in prepared.train)
    all_tokens = sum(len(ex.input_ids) for ex in prepared.train)
    runtime = float(output.metrics.get("train_runtime", 0.0)) or 1e-9
    # Real tokens trained on in this process (a resumed run counts from its checkpoint on).
    seen = trainer.tokens_seen + trainer.window_tokens
    manifest = build_manifest(
        command="train",
        started=started,
        inputs={name: path for name, path in (("data", recipe.data), ("eval_data", recipe.eval_data)) if path},
        outputs={"trainer_log": log_path, "sample_losses": run_dir / "sample_losses.jsonl"},
        config=json.loads(recipe.model_dump_json()),
        seed=recipe.seed,
    )
    manifest.update(
        {
            "model": recipe.model,
            "method": recipe.method,
            "template": tdata.template_for_run(recipe.template, prepared.template, run_dir),
            **choice.record(),
            "malloc_mmap_threshold": mmap_threshold,
            "trainable_parameters": trainable,
            "total_parameters": total,
            "examples": {"train": len(prepared.train), "val": len(prepared.val)},
            "tokens": {
                "trained_per_epoch": tokens,
                "all_per_epoch": all_tokens,
                "sequences_per_epoch": len(train_rows),
                "seen": seen,
                "padding_seen": trainer.padding_seen,
                "trained_seen": trainer.trained_seen,
            },
            "train_runtime_seconds": round(runtime, 2),
            "train_cpu_seconds": round(train_cpu, 1),
            "tokens_per_second": round(seen / runtime, 1),
            "global_step": output.global_step,
            "train_loss": output.training_loss,
            "best_checkpoint": trainer.state.best_model_checkpoint,
            "best_eval_loss": trainer.state.best_metric,
            "gpu_peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)
            if torch.cuda.is_available()
            else None,
            "warnings": prepared.warnings,
        }
    )
    if not math.isfinite(output.training_loss):
        manifest["warnings"].append("training loss is not finite: lower lr or check the data")
    runfile.TrainManifest.model_validate(manifest)  # the run schema's numbers: typed and finite, or a bug here
    io.write_json(run_dir / "manifest.json", manifest)
    return TrainResult(run_dir, manifest, log, prepared.warnings)
