"""LoRA (Hu et al. 2021), DoRA (Liu et al. 2024: LoRA plus a magnitude vector per adapted module) and QLoRA
(Dettmers et al. 2023: LoRA over a base in 4-bit NF4), through PEFT's LoraConfig (the recipe's `lora:` section).
"""

from __future__ import annotations

from workbench.methods.sizing import Options, Shape, peft_targets
from workbench.methods.spec import Activations, Count, MethodSpec

# LoRA initialisations that change the base weights (the adapter is saved converted against the unchanged base).
MUTATING_INITS = ("pissa", "olora")


def _count(dora: bool) -> Count:
    def count(shape: Shape, opts: Options) -> int:
        mods = peft_targets(shape, opts.lora_targets)
        n = sum(opts.lora_r * (a + b) for _, a, b in mods)
        return n + (sum(b for _, _, b in mods) if dora else 0)  # DoRA's magnitude vectors

    return count


def _saved(count: Count) -> Count:
    def saved(shape: Shape, opts: Options) -> int:
        if opts.lora_init in MUTATING_INITS:
            return 2 * count(shape, opts)  # saved converted against the unchanged base: rank 2r
        return count(shape, opts)

    return saved


def _activations(dora: bool) -> Activations:
    """Per adapted projection: lora_A's output (kept for lora_B) and the dropout mask (wb's one-function LoRA
    layer, `workbench.train.lora_linear`: one bit per input element on a CPU, a byte elsewhere). DoRA, and plain
    LoRA where the input arrives in fp32 under low precision (CPU autocast, QLoRA), run PEFT's own path: lora_A's
    cast input, the dropout's mask (plain LoRA on a CPU: wb's, as bits) or the dropped input and its mask, and (DoRA)
    the adapted output."""

    def activations(shape: Shape, opts: Options, compute: int, low_precision_in: bool) -> float:
        extra = 0.0
        for _, a, b in peft_targets(shape, opts.lora_targets):
            extra += opts.lora_r * compute  # lora_A's output, kept for lora_B
            if low_precision_in:
                extra += 2 * a  # PEFT's path: lora_A casts its input
            if opts.lora_dropout > 0 and not dora and (opts.device == "cpu" or not low_precision_in):
                extra += a / 8 if opts.device == "cpu" else a  # wb's mask (fused layer or `LoraDropout`)
            elif opts.lora_dropout > 0:
                extra += a * ((4 if low_precision_in else compute) + 1)  # the dropped input and the mask
            if dora:
                extra += b * compute  # the adapted output
        return extra / max(1, shape.layers)  # averaged over the layers (a target list may name some only)

    return activations


_LORA, _DORA = _count(False), _count(True)
SPECS = (
    MethodSpec(
        "lora",
        "sft",
        "lora",
        "low-rank adapters on the linear layers",
        order=0,
        merges=True,
        serves_as_lora=True,
        plan_rank=3,
        count=_LORA,
        saved=_saved(_LORA),
        activations=_activations(False),
    ),
    MethodSpec(
        "qlora",
        "sft",
        "lora",
        "LoRA over the base in 4-bit NF4",
        order=1,
        merges=True,
        quantized=True,
        serves_as_lora=True,
        plan_rank=5,
        count=_LORA,
        activations=_activations(False),
    ),
    MethodSpec(
        "dora",
        "sft",
        "lora",
        "LoRA with a learned magnitude per module",
        order=2,
        merges=True,
        peft_options={"use_dora": True},
        # vllm/lora/peft_helper.py (PEFTHelper._validate_features): "vLLM does not yet support DoRA."
        serving_note="adapters carry a magnitude vector per module, which vLLM's LoRA serving does not load (its "
        "peft_helper: 'vLLM does not yet support DoRA'); merge it into the base instead (--merge)",
        plan_rank=4,
        count=_DORA,
        saved=_saved(_DORA),
        activations=_activations(True),
    ),
)
