"""What a training method is, as data: `MethodSpec`. Two axes, as LLaMA-Factory's stage × finetuning_type: the
*family* (SFT on records, or a preference objective on TRL) and the *trainable parameters* (`params`: a LoRA-like
adapter, IA3 vectors, prompts, bottleneck adapters, the last layers, every weight, or for a preference method the
`preference.weights` its recipe names). Every question the code asks about a method (what does its run folder
hold, can it merge, can vLLM serve its adapter, does it need a 4-bit base, does it add virtual tokens, which TRL
trainer and loss variants, how many parameters it trains, what its step keeps for backward) is an attribute or a
function of its spec, so a new method is one spec (in a module of this package, or registered by a caller) and no
`method ==` test elsewhere.

The functions `wb plan` calls (`count`, `saved`, `grad_layers`, `activations`, `optimizer_bytes`) compute over
`sizing.Shape` and `sizing.Options`; their formulas and sources are in `workbench.plan.memory`'s docstring. How a
spec's trainable parameters are put on a model is `workbench.train.methods`' applier for its `params` axis, or the
spec's own `apply(model, recipe)`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from workbench.methods.sizing import Options, Shape

Family = Literal["sft", "preference"]
# How the trainable parameters are put on the model: one applier each in workbench.train.methods ("custom": the
# spec's own `apply`; "preference.weights": the recipe's preference.weights, applied by TRL or train/trl_trainers.py).
Params = Literal[
    "lora",
    "ia3",
    "prompt",
    "prefix",
    "p_tuning",
    "llama_adapter",
    "bottleneck",
    "freeze",
    "full",
    "preference.weights",
    "custom",
]

# Why an adapter that is not LoRA cannot be served by vLLM next to others: its LoRA serving reads only lora_A/lora_B
# weights (vllm/lora/utils.py parse_fine_tuned_lora_name; "In vLLM, all linear layers support LoRA").
LORA_ONLY = "vLLM's LoRA serving loads low-rank weight updates (lora_A, lora_B) only"
WHOLE_MODEL = "runs hold a whole model, not an adapter; export it with --merge and serve that folder"

Count = Callable[[Shape, Options], int]
# Bytes one decoder layer keeps for backward per token beyond the base layer's: (shape, options, compute dtype's
# bytes, whether the adapted modules' input arrives in fp32 (CPU autocast or a 4-bit base)).
Activations = Callable[[Shape, Options, int, bool], float]
# AdamW states replaced by another optimiser's: (shape, options, trainable parameters) -> (bytes, note).
OptimizerBytes = Callable[[Shape, Options, int], tuple[int, str]]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    family: Family
    params: Params
    summary: str
    order: int  # its place in the recipe's `method` enum (the schema and its error messages list them in this order)
    saves: Literal["adapter", "model"] = "adapter"  # the run folder's adapter/ or model/
    merges: bool = False  # `wb export --merge` folds it into the base weights
    merge_note: str = "adapters"  # why it cannot be merged, as `wb export` says it
    # Its adapter is a plain LoRA adapter that vLLM's LoRA serving loads (`wb export --adapter`; the adapter's own
    # config is still checked against vLLM's rules in workbench.export.serving); else `serving_note` says why not.
    serves_as_lora: bool = False
    serving_note: str = "its adapter is not a LoRA adapter"
    quantized: bool = False  # the base loads in 4-bit NF4 (bitsandbytes; fp32 compute on a CPU)
    trains_head: bool = False  # the output head trains (full-size logits in memory)
    optimizer: Literal["adamw", "galore"] = "adamw"
    virtual_tokens: Literal["input", "prefix"] | None = None  # prepended to the input, or as per-layer prefixes
    peft_options: Mapping[str, Any] = field(default_factory=dict)  # extra keys of the PEFT config (use_dora)
    # Preference methods (family "preference"): TRL's trainer, the data it reads, its reference, its loss variants.
    trainer: str | None = None
    data: Literal["records", "pairs", "unpaired", "prompts"] = "records"
    head: Literal["causal_lm", "reward"] = "causal_lm"  # reward: a scoring head; it scores texts, generates none
    reference: Literal["none", "policy", "unless beta 0"] = "none"
    loss_types: tuple[str, ...] = ()  # TRL 1.16's variants (`preference.loss_type`), checked at recipe load
    loss_types_left_out: Mapping[str, str] = field(default_factory=dict)  # variant: the TRL setting wb does not pass
    # `wb plan`: None for `count` leaves the method out of the plan (preference methods: their weights vary).
    plan_rank: int | None = None  # its place in the plan's table
    count: Count | None = None  # trainable parameters, exact (as PEFT or wb creates them)
    saved: Count | None = None  # numbers the run folder stores; default: `count` for an adapter, else the model
    grad_layers: Count | None = None  # decoder layers gradients flow through; default: all
    activations: Activations | None = None
    optimizer_bytes: OptimizerBytes | None = None
    apply: Callable[[Any, Any], Any] | None = None  # (model, recipe) -> model to train, for params "custom"

    @property
    def trains_base(self) -> bool:
        """The base model's own weights train (gradients at the weights' dtype; the whole model is saved)."""
        return self.params in ("full", "freeze")

    @property
    def takes_lora(self) -> bool:
        """The recipe's `lora:` section shapes its adapter (and LoRA+ and LoRA initialisations apply)."""
        return self.params == "lora"

    @property
    def bf16_frozen_base(self) -> bool:
        """Under CPU bf16 autocast its whole frozen base can be held in bf16 (`train.session.bf16_frozen_base`):
        plain LoRA adapters, whose forward pass only multiplies by the base weights. Not a 4-bit base, nor DoRA (its
        magnitude divides by the norm of the base weight plus the update, computed in the weight's own dtype)."""
        return self.takes_lora and not self.quantized and not self.peft_options.get("use_dora")
