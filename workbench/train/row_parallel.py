"""A training step on a CPU with its batch split by rows over threads: each part's forward and backward pass on a
thread of its own with its share of the cores, the parts' gradients summed in a fixed order.

torch runs one batch's operations one after the other, each spread over every core (intra-op threads). On a few
cores that spreading costs: the products of a small model scale 1.6-1.9x from one core to two, the attention 1.35-1.5x,
the element-wise passes 1.3-1.6x, and the work in Python and numpy (the dropout masks) not at all. Two rows of a
batch on two threads with one core each run at one core's full rate: measured on SmolLM2-135M, LoRA r 16 all-linear,
2 x 512 packed tokens, fp32, 2-core AVX2 EPYC, a step took 6.5-7.7 s against 7.5-9.2 s (alternating, same process),
with 15 % fewer CPU-seconds.

The numbers are the batch's: each part's loss is divided by the trained tokens of the whole batch (as the unsplit
step divides), its gradient taken with `torch.autograd.grad` (nothing accumulates in `.grad` from two threads at
once), and the parts' gradients are added in part order, then to `.grad` (so gradient accumulation sums the same way
every run). A part's dropout masks come from a generator of its own seeded from torch's global one, one draw per part
in order (`lora_linear.masks_from`): a run is deterministic for a seed and a thread count, and resumes as before. The
sums differ from the unsplit step's in float rounding (the products over the batch's rows are split in two), and the
masks differ from the ones a one-thread run draws.

Memory: the parts' activations together are the batch's, and each part holds a gradient of the trained parameters
until they are added (adapters only, so a small copy, made after the activations are freed). What it took to keep
the peak where it was (`wb train`'s malloc arenas, `train.memory.glibc_tunables`; the head's chunks shared,
`loss.shared_head`) is in bench/README.md (`vs_llamafactory.py`, fifth and sixth rounds).

`parts` says when a step is split: a CPU model, at least two threads and two rows, one process, and nothing that
draws random numbers outside wb's masks (no other dropout, NEFTune) or replays the forward pass (gradient
checkpointing), adapters only (each part holds its own gradients: a full fine-tune would hold them twice), and wb's
trained-positions loss (`WbTrainer._fast_loss`). At most `MAX_PARTS` parts: only two cores were measured.

DPO (`pair_parts`, `pair_step`, TRL's `DPOTrainer` with LoRA): its pairs are split, each pair's chosen and rejected
answers in the same part, in two rounds: the parts' reference passes (the model with its adapters switched off, a
switch every thread sees, thrown once around the round), then their policy passes. Its loss is a mean over pairs
(the losses that are: `PAIRWISE_LOSSES`), so each part's mean is weighted by its share of the pairs; the metrics TRL
logs are put back together as the batch's. SmolLM2-135M, 32 pairs, 2 threads of an AMX Xeon: see
bench/README.md (`vs_llamafactory.py`, seventh round).
"""

from __future__ import annotations

import collections
import functools
import itertools
import threading
from collections.abc import Callable
from typing import Any

from workbench.models import templates as tdata
from workbench.train import lora_linear
from workbench.train.loss import shared_head

MAX_PARTS = 2
# At most this share of the model's parameters trained (each part holds a gradient of all of them at once).
MAX_TRAINED_SHARE = 1 / 8


@functools.cache
def _pool() -> Any:
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(MAX_PARTS, thread_name_prefix="wb-rows")


def _rows(inputs: Any) -> int:
    """The batch's rows when it is a dict whose every value is a tensor with them first; 0 otherwise (nothing to split
    by: GRPO's and the reward trainer's batches are lists)."""
    import torch

    if not isinstance(inputs, dict):
        return 0
    values = list(inputs.values())
    if not values or not all(isinstance(v, torch.Tensor) and v.dim() >= 1 for v in values):
        return 0
    rows = values[0].shape[0]
    return rows if all(v.shape[0] == rows for v in values) else 0


def _other_randomness(model: Any) -> bool:
    """Anything in the forward pass drawing from torch's global generator: a dropout module that is not wb's
    (`LoraDropout`) or a dropout probability in the model's config."""
    import torch

    ours = lora_linear._dropout_class()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and module.p > 0 and not isinstance(module, ours):
            return True
    config = getattr(model, "config", None)
    settings = config.to_dict() if config is not None and hasattr(config, "to_dict") else {}
    return any("dropout" in k and isinstance(v, float) and v > 0 for k, v in settings.items())


def _adapters_on_cpu(trainer: Any, model: Any) -> bool:
    """What every split step needs: a CPU model training a small share of its parameters (each part holds a gradient
    of all of them), one process, no gradient checkpointing (its replay would draw other masks) and nothing drawing
    random numbers outside wb's masks."""
    params = list(model.parameters())
    trained = sum(p.numel() for p in params if p.requires_grad)
    args = trainer.args
    return not (
        not params
        or params[0].device.type != "cpu"
        or trained == 0
        or trained > MAX_TRAINED_SHARE * sum(p.numel() for p in params)
        or trainer.accelerator.num_processes != 1
        or args.gradient_checkpointing
        or getattr(model, "is_gradient_checkpointing", False)
        or _other_randomness(model)
    )


def parts(trainer: Any, model: Any, inputs: dict[str, Any]) -> int:
    """How many parts this step's batch is split into (1: the step runs as transformers runs it)."""
    import torch

    threads = torch.get_num_threads()
    rows = _rows(inputs)
    if threads < 2 or rows < 2 or "labels" not in inputs:
        return 1
    if (
        not _adapters_on_cpu(trainer, model)
        or trainer.args.neftune_noise_alpha is not None
        or not trainer.model_accepts_loss_kwargs
        or not trainer._fast_loss(model, False)
    ):
        return 1
    count = min(rows, threads, MAX_PARTS)
    trained_rows = (inputs["labels"][:, 1:] != tdata.IGNORE).sum(-1).tolist()
    if any(sum(trained_rows[lo:hi]) == 0 for lo, hi in itertools.pairwise(_bounds(rows, count))):
        return 1  # a part with nothing to train would take the model's own loss, a mean over no token
    return count


def _bounds(rows: int, count: int) -> list[int]:
    """Where the parts of `rows` rows start and end: contiguous, as even as they go."""
    return [rows * i // count for i in range(count + 1)]


def _prepared(trainer: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """What `Trainer.training_step` does before its forward pass: the optimiser in training mode (schedule-free
    optimisers), the inputs on the model's device."""
    if callable(getattr(trainer.optimizer, "train", None)):
        trainer.optimizer.train()
    result: dict[str, Any] = trainer._prepare_inputs(inputs)
    return result


def step(trainer: Any, model: Any, inputs: dict[str, Any], num_items_in_batch: Any, count: int) -> Any:
    """One training step in `count` parts (see the module): the gradients added to `.grad`, the loss returned as
    `Trainer.training_step` returns it (detached, the batch's)."""
    inputs = _prepared(trainer, inputs)
    trained = trainer.count_tokens(inputs)
    rows = _rows(inputs)
    split = [{k: v[lo:hi] for k, v in inputs.items()} for lo, hi in itertools.pairwise(_bounds(rows, count))]
    scale = 1.0
    if num_items_in_batch is None:  # the unsplit step takes the batch's mean, then divides by the accumulation
        num_items_in_batch = trained
        scale = 1 / trainer.current_gradient_accumulation_steps

    def loss_of(i: int) -> Any:
        loss = trainer.compute_loss(model, split[i], num_items_in_batch=num_items_in_batch, counted=True)
        return loss * scale if scale != 1.0 else loss

    return _trained_in_parts(trainer, model, count, loss_of)


def _on_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """`work(i)` for each part i, at once, each on a thread of the pool with its share of the cores."""
    import torch

    threads = torch.get_num_threads()

    def part(i: int) -> Any:
        torch.set_num_threads(max(1, threads // count))
        return work(i)

    try:
        return list(_pool().map(part, range(count)))
    finally:
        torch.set_num_threads(threads)


def _trained_in_parts(trainer: Any, model: Any, count: int, loss_of: Callable[[int], Any]) -> Any:
    """Each part's loss (`loss_of(i)`, its dropout masks drawn from a generator seeded from torch's in part order,
    under the trainer's autocast) and its gradients, on threads of their own (`_on_threads`); the gradients added to
    `.grad` and the losses summed (`_add_up`)."""
    import torch

    seeds = [int(torch.randint(0, 2**62, (1,))) for _ in range(count)]
    params = [p for p in model.parameters() if p.requires_grad]

    def run(i: int) -> tuple[Any, tuple[Any, ...]]:
        with lora_linear.masks_from(seeds[i]), shared_head(count), trainer.compute_loss_context_manager():
            loss = loss_of(i)
        return loss.detach(), torch.autograd.grad(loss, params, allow_unused=True)

    return _add_up(params, _on_threads(count, run))


def _add_up(params: list[Any], results: list[tuple[Any, tuple[Any, ...]]]) -> Any:
    """The parts' gradients added in part order, then to `.grad`; the parts' losses added (the step's loss)."""
    for n, param in enumerate(params):
        grads = [g[n] for _, g in results if g[n] is not None]
        if not grads:
            continue
        total = grads[0]
        for g in grads[1:]:
            total = total + g
        param.grad = total if param.grad is None else param.grad.add_(total)
    loss = results[0][0]
    for part, _ in results[1:]:
        loss = loss + part
    return loss


# DPO losses that are the mean over the batch's pairs of a term of each pair alone (TRL 1.16,
# `DPOTrainer._compute_loss`; not "aot", which sorts the batch's ratios, nor "sft", a mean over the batch's tokens).
PAIRWISE_LOSSES = frozenset({"sigmoid", "hinge", "ipo", "robust", "exo_pair", "nca_pair", "apo_zero", "apo_down"})
# TRL's DPO metrics that are means over tokens, with the tokens they are over; every other one is a mean over pairs.
_TOKEN_METRICS = {
    "entropy": "completion",
    "logits/chosen": "chosen",
    "logits/rejected": "rejected",
    "mean_token_accuracy": "chosen",
}
_PART = threading.local()  # `index`: which part of a split DPO step this thread runs


def pair_parts(trainer: Any, model: Any, inputs: Any) -> int:
    """How many parts a DPO step's pairs are split into (1: TRL's own step): TRL's `DPOTrainer` with a PEFT policy
    whose reference is the model with its adapters switched (no reference model of its own, none precomputed), a
    loss that is a mean over pairs (`PAIRWISE_LOSSES`), no WPO weighting, no router loss, no activation offloading,
    and what every split step needs (`_adapters_on_cpu`)."""
    import torch

    threads = torch.get_num_threads()
    if threads < 2:
        return 1
    from trl import DPOTrainer

    rows = _rows(inputs)
    needed = ("compute_ref_log_probs", "loss_types", "precompute_ref_logps", "_metrics", "_total_train_tokens")
    if (
        not isinstance(trainer, DPOTrainer)  # KTO's reference and loss are not per pair
        or rows < 4
        or rows % 2
        or "completion_mask" not in inputs
        or not all(hasattr(trainer, name) for name in needed)  # what `pair_step` reads of TRL 1.16's trainer
    ):
        return 1
    if (
        not _adapters_on_cpu(trainer, model)
        or not set(trainer.loss_types) <= PAIRWISE_LOSSES
        or getattr(trainer, "ref_model", None) is not None
        or trainer.precompute_ref_logps
        or getattr(trainer, "use_weighting", False)
        or getattr(trainer, "aux_loss_enabled", False)
        or getattr(trainer.args, "activation_offloading", False)
        or not hasattr(model, "peft_config")
    ):
        return 1
    return min(rows // 2, threads, MAX_PARTS)


class _PartMetrics:
    """Stands in for a TRL trainer's `_metrics` during a split step: each part appends to lists of its own."""

    def __init__(self, count: int) -> None:
        self.parts: list[dict[str, dict[str, list[float]]]] = [{} for _ in range(count)]

    def __getitem__(self, mode: str) -> dict[str, list[float]]:
        return self.parts[_PART.index].setdefault(mode, collections.defaultdict(list))


def pair_step(trainer: Any, model: Any, inputs: dict[str, Any], num_items_in_batch: Any, count: int) -> Any:
    """One DPO step with its pairs split over `count` threads, in two rounds. First each part's reference
    log-probabilities, the parts at once with the adapters switched off for both (TRL's `compute_ref_log_probs`,
    told the model is its own reference: the switch is the model's, which every thread sees, so it is thrown here,
    once, around the round); then each part's policy pass and backward, reading its reference values as TRL reads
    precomputed ones. A part's reference pass runs on the same rows, thread and threads as its policy pass, so with
    the adapter still zero the two give the same numbers to the bit (the first loss is ln 2, as TRL's own step
    gives). Each part's loss is TRL's mean over its pairs weighted by its share of the batch's pairs, so their sum
    is the batch's loss; the gradients are added as `step` adds them; the logged metrics are the batch's (the parts'
    values weighted by their pairs, or by their tokens for the metrics that are means over tokens), and the token
    count is counted once."""
    import torch
    from trl.trainer.utils import use_adapter

    inputs = _prepared(trainer, inputs)
    pairs = _rows(inputs) // 2
    bounds = list(itertools.pairwise(_bounds(pairs, count)))
    split = []
    for lo, hi in bounds:  # rows are the chosen answers of every pair, then the rejected ones in the same order
        index = torch.cat([torch.arange(lo, hi), torch.arange(pairs + lo, pairs + hi)])
        split.append({k: v[index] for k, v in inputs.items()})
    scaled = trainer.loss_is_scaled_for_ga  # whether the loss already counts the accumulation (as training_step)
    if scaled is None:
        scaled = (trainer.model_accepts_loss_kwargs and num_items_in_batch is not None) or (
            trainer.compute_loss_func is not None
        )
    ga = 1 if scaled else trainer.current_gradient_accumulation_steps
    scales = [(hi - lo) / pairs / ga for lo, hi in bounds]
    metrics, tokens = _PartMetrics(count), trainer._total_train_tokens

    def reference(i: int) -> tuple[Any, Any]:
        with shared_head(count), trainer.compute_loss_context_manager():
            return trainer.compute_ref_log_probs(model, split[i])

    def loss_of(i: int) -> Any:
        _PART.index = i
        return trainer.compute_loss(model, split[i]) * scales[i]

    own, precomputed = trainer._metrics, trainer.precompute_ref_logps
    unwrapped = trainer.accelerator.unwrap_model(model)
    try:
        trainer.ref_model = model  # TRL then leaves the adapters alone: switched off here, for every part at once
        with use_adapter(unwrapped, "ref" if "ref" in unwrapped.peft_config else None):
            references = _on_threads(count, reference)
        trainer.ref_model = None
        for part, (chosen, rejected) in zip(split, references, strict=True):
            part["ref_chosen_logps"], part["ref_rejected_logps"] = chosen, rejected
        trainer._metrics, trainer.precompute_ref_logps = metrics, True
        loss = _trained_in_parts(trainer, model, count, loss_of)
    finally:
        trainer._metrics, trainer.precompute_ref_logps, trainer.ref_model = own, precomputed, None
    if "attention_mask" in inputs:  # counted once for the batch (the parts each added theirs, from two threads)
        trainer._total_train_tokens = tokens + int(inputs["attention_mask"].sum()) // trainer._tp_size
    _merge(own["train"], metrics, split, bounds, trainer._total_train_tokens)
    return loss


def _merge(
    into: dict[str, list[float]], metrics: _PartMetrics, split: list[dict[str, Any]], bounds: list[Any], tokens: int
) -> None:
    """The parts' metrics as one value each, the batch's: weighted by the parts' pairs, or by their tokens."""
    weights: dict[str, list[float]] = {"pairs": [], "completion": [], "chosen": [], "rejected": []}
    for part, (lo, hi) in zip(split, bounds, strict=True):
        mask = part["completion_mask"][:, 1:]
        weights["pairs"].append(hi - lo)
        weights["completion"].append(float(mask.sum()))
        weights["chosen"].append(float(mask[: hi - lo].sum()))
        weights["rejected"].append(float(mask[hi - lo :].sum()))
    per_part = [part.get("train", {}) for part in metrics.parts]
    for key in dict.fromkeys(k for part in per_part for k in part):
        if key == "num_tokens":
            into[key] = [tokens]
            continue
        values = [part.get(key, []) for part in per_part]
        if not all(len(v) == 1 for v in values):
            for v in values:
                into[key].extend(v)
            continue
        w = weights[_TOKEN_METRICS.get(key, "pairs")]
        total = sum(w)
        into[key].append(sum(x * y for (x,), y in zip(values, w, strict=True)) / total if total else values[0][0])
