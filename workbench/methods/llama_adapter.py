"""LLaMA-Adapter (Zhang et al. 2023): gated adaption prompts in the attention of the top layers, through PEFT's
AdaptionPromptConfig (the recipe's `llama_adapter:` section; Llama and Mistral models only)."""

from __future__ import annotations

from workbench.methods.sizing import Options, Shape
from workbench.methods.spec import LORA_ONLY, MethodSpec


def layers(shape: Shape, opts: Options) -> int:
    """The top layers that hold a prompt: gradients flow through these only."""
    return min(opts.llama_adapter_layers or shape.layers, shape.layers)


def count(shape: Shape, opts: Options) -> int:
    return layers(shape, opts) * (opts.llama_adapter_len * shape.hidden + 1)  # the prompt and its zero-init gate


SPECS = (
    MethodSpec(
        "llama_adapter",
        "sft",
        "llama_adapter",
        "gated adaption prompts in the top layers' attention",
        order=7,
        merge_note="adapters add gated adaption prompts to the attention",
        serving_note=f"adapters add gated adaption prompts to the attention; {LORA_ONLY}",
        plan_rank=8,
        count=count,
        grad_layers=layers,
    ),
)
