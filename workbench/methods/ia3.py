"""IA3 (Liu et al. 2022): learned vectors rescaling the keys, values and the feed-forward input, through PEFT's
IA3Config (the recipe's `ia3:` section). A vector per target: its input width for a feed-forward module, else its
output width."""

from __future__ import annotations

from workbench.methods.sizing import Options, Shape, peft_targets
from workbench.methods.spec import LORA_ONLY, MethodSpec


def count(shape: Shape, opts: Options) -> int:
    mods = peft_targets(shape, list(opts.ia3_targets))
    ff = list(opts.ia3_feedforward)
    return sum(a if any(m == t or m.endswith("." + t) for t in ff) else b for m, a, b in mods)


def activations(shape: Shape, opts: Options, compute: int, low_precision_in: bool) -> float:
    """The rescaled tensors, averaged over the layers."""
    return sum(
        (a if m.endswith("down_proj") else b) * compute for m, a, b in peft_targets(shape, list(opts.ia3_targets))
    ) / max(1, shape.layers)


SPECS = (
    MethodSpec(
        "ia3",
        "sft",
        "ia3",
        "learned rescaling vectors",
        order=6,
        merges=True,
        serving_note=f"vectors rescale activations; {LORA_ONLY}; merge them into the base instead (--merge)",
        plan_rank=7,
        count=count,
        activations=activations,
    ),
)
