"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020): `method: adapter`, wb's own
(`workbench.models.adapters`): a down projection to `h / reduction_factor`, a non-linearity and an up projection,
after the MLP (pfeiffer) or after attention and the MLP (houlsby)."""

from __future__ import annotations

from workbench.methods.sizing import Options, Shape
from workbench.methods.spec import LORA_ONLY, MethodSpec


def _sites(opts: Options) -> int:
    return 2 if opts.adapter_placement == "houlsby" else 1


def count(shape: Shape, opts: Options) -> int:
    h = shape.hidden
    m = max(1, h // opts.adapter_reduction_factor)
    return shape.layers * _sites(opts) * (h * m + m + m * h + h)


def activations(shape: Shape, opts: Options, compute: int, low_precision_in: bool) -> float:
    m = max(1, shape.hidden // opts.adapter_reduction_factor)
    return _sites(opts) * (4 * shape.hidden + 8 * m)  # its fp32 input, down output, activation output


SPECS = (
    MethodSpec(
        "adapter",
        "sft",
        "bottleneck",
        "bottleneck adapters after attention and/or the MLP",
        order=8,
        merge_note="(bottleneck) adapters add layers with a non-linearity between two projections",
        serving_note=f"(bottleneck) adapters add layers of their own; {LORA_ONLY}",
        plan_rank=6,
        count=count,
        activations=activations,
    ),
)
