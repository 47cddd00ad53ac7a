"""Freeze: only the last N decoder layers and the final norm train (the recipe's `freeze:` section); the embeddings
and head stay frozen. The run folder holds the whole model."""

from __future__ import annotations

from workbench.methods.sizing import Options, Shape
from workbench.methods.spec import WHOLE_MODEL, MethodSpec


def layers(shape: Shape, opts: Options) -> int:
    return min(opts.freeze_layers, shape.layers)


def count(shape: Shape, opts: Options) -> int:
    return layers(shape, opts) * shape.layer_params() + shape.hidden


SPECS = (
    MethodSpec(
        "freeze",
        "sft",
        "freeze",
        "the last N layers train",
        order=9,
        saves="model",
        serving_note=WHOLE_MODEL,
        plan_rank=2,
        count=count,
        grad_layers=layers,
    ),
)
