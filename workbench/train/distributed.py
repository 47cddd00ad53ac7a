"""Training across processes (`torchrun`, `accelerate launch`): who writes the run folder, and waiting for it.

The launcher sets `RANK`, `LOCAL_RANK` and `WORLD_SIZE`; Trainer (through accelerate) starts the process group
(gloo on CPU, nccl on GPUs) when the TrainingArguments are built. wb starts it earlier, in `begin`, because the
run folder is written before Trainer exists: only rank 0 (the main process) writes the recipe, the log, the
weights, `sample_losses.jsonl`, `loss.svg` and the manifest; the others wait at a barrier until it has, so every
process returns with a complete run folder behind it. Checkpoints are Trainer's: rank 0 writes the model and
optimiser state, each rank its own RNG state, and `--resume` restores them on every rank.

No torch import at module level: a single-process run never touches torch.distributed.
"""

from __future__ import annotations

import os
from typing import Any


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def is_main() -> bool:
    """True in a single-process run and in rank 0 of a launched one: the process that writes the run folder."""
    return rank() == 0


def start() -> None:
    """Join the launcher's process group (gloo on CPU, nccl on GPUs) through accelerate, once, before any file is
    written; a single-process run does nothing. Trainer later finds the same state and reuses it."""
    if world_size() <= 1:
        return
    import torch
    from accelerate import PartialState

    PartialState(cpu=not torch.cuda.is_available())  # without cpu=True accelerate sees no CPU group (one process)


def barrier() -> None:
    """Wait until every process reaches this point (nothing in a single-process run)."""
    if world_size() <= 1:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def sum_counts(values: list[int]) -> list[int]:
    """Each value summed over all processes (token counts each rank keeps for its own batches)."""
    if world_size() <= 1:
        return values
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    total = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return [int(v) for v in total.tolist()]


def gather_to_main(values: list[Any]) -> list[list[Any]] | None:
    """Every process's `values`, in rank order, on the main process (None on the others)."""
    if world_size() <= 1:
        return [values]
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [values]
    out: list[Any] | None = [None] * world_size() if is_main() else None
    dist.gather_object(values, out, dst=0)
    return out
