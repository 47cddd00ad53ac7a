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
"""

from __future__ import annotations

import functools
import itertools
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


def _rows(inputs: dict[str, Any]) -> int:
    """The batch's rows when every input is a tensor with them first; 0 otherwise (nothing to split by)."""
    import torch

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


def parts(trainer: Any, model: Any, inputs: dict[str, Any]) -> int:
    """How many parts this step's batch is split into (1: the step runs as transformers runs it)."""
    import torch

    threads = torch.get_num_threads()
    rows = _rows(inputs)
    if threads < 2 or rows < 2 or "labels" not in inputs:
        return 1
    params = list(model.parameters())
    trained = sum(p.numel() for p in params if p.requires_grad)
    args = trainer.args
    if (
        not params
        or params[0].device.type != "cpu"
        or trained == 0
        or trained > MAX_TRAINED_SHARE * sum(p.numel() for p in params)
        or trainer.accelerator.num_processes != 1
        or args.gradient_checkpointing
        or getattr(model, "is_gradient_checkpointing", False)
        or args.neftune_noise_alpha is not None
        or not trainer.model_accepts_loss_kwargs
        or not trainer._fast_loss(model, False)
        or _other_randomness(model)
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


def step(trainer: Any, model: Any, inputs: dict[str, Any], num_items_in_batch: Any, count: int) -> Any:
    """One training step in `count` parts (see the module): the gradients added to `.grad`, the loss returned as
    `Trainer.training_step` returns it (detached, the batch's)."""
    import torch

    if callable(getattr(trainer.optimizer, "train", None)):  # as Trainer.training_step (schedule-free optimisers)
        trainer.optimizer.train()
    inputs = trainer._prepare_inputs(inputs)
    trained = trainer.count_tokens(inputs)
    rows = _rows(inputs)
    split = [{k: v[lo:hi] for k, v in inputs.items()} for lo, hi in itertools.pairwise(_bounds(rows, count))]
    scale = 1.0
    if num_items_in_batch is None:  # the unsplit step takes the batch's mean, then divides by the accumulation
        num_items_in_batch = trained
        scale = 1 / trainer.current_gradient_accumulation_steps
    seeds = [int(torch.randint(0, 2**62, (1,))) for _ in split]
    threads = torch.get_num_threads()
    params = [p for p in model.parameters() if p.requires_grad]

    def run(i: int) -> tuple[Any, tuple[Any, ...]]:
        torch.set_num_threads(max(1, threads // count))
        with lora_linear.masks_from(seeds[i]), shared_head(count), trainer.compute_loss_context_manager():
            loss = trainer.compute_loss(model, split[i], num_items_in_batch=num_items_in_batch, counted=True)
        if scale != 1.0:
            loss = loss * scale
        return loss.detach(), torch.autograd.grad(loss, params, allow_unused=True)

    try:
        results = list(_pool().map(run, range(count)))
    finally:
        torch.set_num_threads(threads)
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
