"""Methods that train virtual tokens, through PEFT: prompt tuning (Lester et al. 2021: `n` embeddings prepended to
the input), prefix tuning (Li & Liang 2021; P-Tuning v2 with `prefix_tuning.projection`: per-layer key/value
prefixes) and P-Tuning (Liu et al. 2021: prompt embeddings from an MLP or LSTM encoder). Each recipe section is
named after its method (`prompt_tuning:`, ...) and holds `num_virtual_tokens`. They cannot be merged, and packing
is switched off for them (packed examples would share the virtual tokens)."""

from __future__ import annotations

from workbench.methods.sizing import Options, Shape
from workbench.methods.spec import LORA_ONLY, MethodSpec

NOT_MERGEABLE = "adapters add virtual tokens"
NOT_SERVED = f"adapters add virtual tokens; {LORA_ONLY}"


def prompt_count(shape: Shape, opts: Options) -> int:
    return opts.virtual_tokens * shape.hidden


def prefix_count(shape: Shape, opts: Options) -> int:
    h, n = shape.hidden, opts.virtual_tokens
    token = shape.kv_heads * shape.head_dim  # PEFT sizes prefixes to the key/value heads (GQA)
    width = shape.layers * 2 * token
    if not opts.prefix_projection:
        return n * width
    enc = opts.prefix_projection_hidden or h
    return n * token + (token * enc + enc) + (enc * width + width)


def prefix_saved(shape: Shape, opts: Options) -> int:
    """The computed prefixes (the projection is not saved)."""
    return opts.virtual_tokens * shape.layers * 2 * shape.kv_heads * shape.head_dim


def prefix_activations(shape: Shape, opts: Options, compute: int, low_precision_in: bool) -> float:
    """Each layer's attention also keeps the prefixes' keys and values, per token of the sequence."""
    return 2 * compute * shape.heads * shape.head_dim * opts.virtual_tokens / max(1, opts.seq_len)


def p_tuning_count(shape: Shape, opts: Options) -> int:
    h, n = shape.hidden, opts.virtual_tokens
    enc = opts.p_tuning_hidden or h
    if opts.p_tuning_encoder == "mlp":
        return n * h + (h * enc + enc) + (enc * enc + enc) + (enc * h + h)
    lstm = 0
    for layer in range(opts.p_tuning_layers):
        size_in = h if layer == 0 else 2 * enc
        lstm += 2 * (4 * enc * (size_in + enc) + 8 * enc)  # two directions: W_ih, W_hh, b_ih, b_hh
    return n * h + lstm + (2 * enc * 2 * enc + 2 * enc) + (2 * enc * h + h)


SPECS = (
    MethodSpec(
        "prompt_tuning",
        "sft",
        "prompt",
        "virtual token embeddings prepended to the input",
        order=3,
        merge_note=NOT_MERGEABLE,
        serving_note=NOT_SERVED,
        virtual_tokens="input",
        plan_rank=9,
        count=prompt_count,
    ),
    MethodSpec(
        "prefix_tuning",
        "sft",
        "prefix",
        "per-layer key/value prefixes",
        order=4,
        merge_note=NOT_MERGEABLE,
        serving_note=NOT_SERVED,
        virtual_tokens="prefix",
        plan_rank=10,
        count=prefix_count,
        saved=prefix_saved,
        activations=prefix_activations,
    ),
    MethodSpec(
        "p_tuning",
        "sft",
        "p_tuning",
        "prompt embeddings from an encoder",
        order=5,
        merge_note=NOT_MERGEABLE,
        serving_note=NOT_SERVED,
        virtual_tokens="input",
        plan_rank=11,
        count=p_tuning_count,
        saved=prompt_count,
    ),
)
