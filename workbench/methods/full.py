"""Every weight trains: `full` with AdamW, `galore` (Zhao et al. 2024) with the Trainer's GaLore optimiser, which
projects the gradients of the targeted linear layers to rank r (the recipe's `galore:` section; its optimiser is
set in `workbench.train.hf.training_args`). The run folder holds the whole model."""

from __future__ import annotations

from workbench.methods.sizing import Options, Shape, trainer_targets
from workbench.methods.spec import WHOLE_MODEL, MethodSpec

ADAMW_BYTES = 8  # two fp32 moments per trainable parameter


def count(shape: Shape, opts: Options) -> int:
    return shape.total_params()


def galore_optimizer(shape: Shape, opts: Options, trainable: int) -> tuple[int, str]:
    """For each targeted `m × n` weight (m ≤ n) moments of `2·r·n` and the projection `m·r` (fp32); other weights
    plain AdamW (GaLore, section 4.1)."""
    projected = trainer_targets(shape, opts.galore_targets)
    plain = trainable - sum(a * b for _, a, b in projected)
    r = opts.galore_rank
    optimizer = plain * ADAMW_BYTES + sum(
        (2 * min(r, min(a, b)) * max(a, b) + min(a, b) * min(r, min(a, b))) * 4 for _, a, b in projected
    )
    return optimizer, f"GaLore rank {r} on {len(projected)} projections; gradients stay full size"


SPECS = (
    MethodSpec(
        "full",
        "sft",
        "full",
        "every weight",
        order=10,
        saves="model",
        trains_head=True,
        serving_note=WHOLE_MODEL,
        plan_rank=0,
        count=count,
    ),
    MethodSpec(
        "galore",
        "sft",
        "full",
        "every weight, gradients projected to low rank",
        order=11,
        saves="model",
        trains_head=True,
        optimizer="galore",
        serving_note=WHOLE_MODEL,
        plan_rank=1,
        count=count,
        optimizer_bytes=galore_optimizer,
    ),
)
