"""`wb plan`: which training method fits this model and this machine: peak memory, trainable parameters, size on disk.

Pure arithmetic over a model's `config.json` (or a Llama shape picked for a parameter count); nothing here imports
torch. Every figure is in bytes; the CLI prints GiB.

Model shape
-----------
A Llama-style decoder (Llama, Mistral, Qwen, SmolLM): per layer q/k/v/o projections (`a` query heads and `kv`
key/value heads of width `d`), a SwiGLU MLP (gate/up `h → i`, down `i → h`), two RMSNorms; an embedding `V × h`
and an output head (tied or not). Parameters: `V·h·(1 + untied) + h + L·(2h·a·d + 2h·kv·d + 3h·i + 2h)`
(Llama-2-7B: 6,738,415,616, as its model card says 6.7B). `--params N` picks the shape in SHAPES nearest to N
(log scale), from the published configs; the plan says how far N is from it, and N beyond the table is refused:

| shape | params | h | L | heads / kv | i | V | tied | context | config |
|---|---|---|---|---|---|---|---|---|---|
| 1B | 1.24B | 2048 | 16 | 32 / 8 | 8192 | 128256 | yes | 131072 | meta-llama/Llama-3.2-1B |
| 3B | 3.21B | 3072 | 28 | 24 / 8 | 8192 | 128256 | yes | 131072 | meta-llama/Llama-3.2-3B |
| 7B | 6.74B | 4096 | 32 | 32 / 32 | 11008 | 32000 | no | 4096 | meta-llama/Llama-2-7b-hf |
| 13B | 13.0B | 5120 | 40 | 40 / 40 | 13824 | 32000 | no | 4096 | meta-llama/Llama-2-13b-hf |
| 70B | 70.6B | 8192 | 80 | 64 / 8 | 28672 | 128256 | no | 131072 | meta-llama/Llama-3.1-70B |

Peak memory of one training step
--------------------------------
`peak = weights + gradients + optimiser states + activations`, the sum "Transformer Math 101" (EleutherAI 2023)
gives. It is an upper bound of what is live at once (the Trainer sets gradients to None after each step, and backward
frees a layer's activations as it fills that layer's gradients), and what a process's resident memory shows on a
CPU, where freed activations stay in the heap that gradients then come from (bench/plan_vs_measured.py).

* weights: every parameter at the load dtype: on a GPU the training precision (bf16/fp16 2 B, fp32 4 B), on a CPU
  fp32 (wb keeps CPU weights fp32 and autocasts). QLoRA (Dettmers et al. 2023, "QLoRA", section 3): the decoder's
  linear weights in 4-bit NF4, 0.5 B each, plus the quantisation constants of double quantisation,
  `8/64 + 32/(64·256)` = 0.127 bit per parameter (one 8-bit absmax per block of 64, one fp32 constant per 256
  blocks); the embeddings, head and norms stay unquantised and `prepare_model_for_kbit_training` upcasts them to
  fp32 (4 B). Adapter parameters (LoRA, prompts, IA3 vectors, bottlenecks) are fp32 (PEFT's
  `autocast_adapter_dtype`).
* gradients: one per trainable parameter, in the parameter's dtype.
* optimiser states: AdamW keeps two moments, counted as 2 × fp32 = 8 B per trainable parameter (mixed-precision
  training, "Transformer Math 101", EleutherAI 2023; ZeRO, Rajbhandari et al. 2020, section 3: 16 B/param with
  the weights and gradients). torch's AdamW keeps moments in the parameter's dtype, so a pure-bf16 full run needs
  4 B less per parameter than counted here. GaLore (Zhao et al. 2024, "GaLore", section 4.1): for each targeted
  `m × n` weight (m ≤ n) the moments are `2·r·n` and the projection `m·r` (fp32); other weights plain AdamW.
* activations, per token and per decoder layer through which gradients flow (Korthikanti et al. 2022, "Reducing
  Activation Recomputation in Large Transformer Models", section 4.1, which counts `sbh(34 + 5as/h)` bytes per
  layer for GPT with fp16 activations and 4h MLPs; adapted here to what a Llama layer in transformers saves for
  backward, tensor by tensor, with `c` the compute dtype's bytes):
  - two RMSNorms: the fp32 input and the fp32 normalised output, `2 · 8h`;
  - the projections' inputs in the compute dtype: `2·c·h` (q/k/v share one input, gate/up another); under CPU
    autocast every projection casts its own copy (`5·2h`), in fp32 they share the norm's output (0);
  - attention through `sdpa` (no `a·s²` score matrix is kept): q, k and v (k/v repeated to all heads when a mask
    is passed), the output and o_proj's contiguous input: `5·c·a·d` (the `5as/h` term of Korthikanti et al.
    belongs to eager attention, which wb does not use);
  - the attention mask (wb always passes one): a copy per layer, on a CPU expanded to every head as bools (`a·s`
    bytes per token, measured with saved-tensor hooks), on a GPU the additive bias (`c·s`);
  - the SwiGLU MLP: gate output, SiLU output, up output, their product (down_proj's input): `4·c·i`;
  - LoRA dropout (p > 0): per adapted projection its dropped input and the mask, `in · (e + 1)`, plus the low-rank
    input `r·c`; DoRA also keeps the adapted output; IA3 keeps the rescaled tensors; a bottleneck adapter its
    input, hidden and activation.
  - CPU autocast keeps the bf16 copy of every projection weight that backward needs: 2 B per linear parameter of
    the layers gradients flow through.
  Layers gradients flow through: all for every method but `freeze` (the last N) and `llama_adapter` (its top
  layers). Prompt tuning and P-Tuning lengthen the sequence by their virtual tokens.
  With gradient checkpointing only each layer's input is kept (`h` per token, Korthikanti et al.'s `2sbh` per
  layer) and one layer's activations are rebuilt at a time.
* the logits/cross-entropy term ("Transformer Math 101" leaves it out; at a 32k-128k vocabulary it is the largest
  single activation): for trained positions `n = batch · seq · trained_share`, when the output head trains (full,
  galore) the head's output in fp32 is kept by log-softmax (`4·n·V`) and backward holds two more fp32 copies
  (`12·n·V` in all, plus the compute-dtype cast); when the head is frozen wb fuses head and loss in chunks of
  2**25 logits (`workbench.train.loss.HeadLoss`), keeping only the gradient for the head's input (`n·h`).
* CPU heap retention: glibc keeps freed activation blocks in the process heap and RSS counts them; what gradients
  and optimiser states do not reuse stays resident: `0.5 · max(0, activations - gradients - optimiser)`, measured
  (bench/plan_vs_measured.py; the recipe's `release_freed_memory`, which removes it, notes about 35 % less peak RSS).
* runtime (counted only in the fit check): a GPU's CUDA context and library workspaces (not in
  `torch.cuda.max_memory_allocated`), or on a CPU the process with torch, transformers and PEFT imported.

Size on disk: adapters in fp32 safetensors (prompt methods store their computed prompt: `n·h`, or `n·L·2·kv·d` for
prefix tuning); freeze, full and galore save the whole model at its weight dtype.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from workbench.errors import WbError

GIB = 1 << 30
Device = Literal["cpu", "cuda"]

# Every method wb trains (workbench/train/recipe.py), in the order the plan lists them.
METHODS = (
    "full",
    "galore",
    "freeze",
    "lora",
    "dora",
    "qlora",
    "adapter",
    "ia3",
    "llama_adapter",
    "prompt_tuning",
    "prefix_tuning",
    "p_tuning",
)
ADAPTER_METHODS = frozenset(METHODS) - {"full", "galore", "freeze"}
PROMPT_METHODS = ("prompt_tuning", "p_tuning")  # virtual tokens prepended to the input sequence
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# QLoRA NF4 with double quantisation: 4 bits + 8/64 + 32/(64*256) bits per weight (QLoRA paper, section 3).
NF4_BYTES_PER_PARAM = (4 + 8 / 64 + 32 / (64 * 256)) / 8
ADAMW_BYTES = 8  # two fp32 moments per trainable parameter
HEAD_CHUNK_ELEMENTS = 2**25  # workbench.train.loss.HEAD_CHUNK_ELEMENTS (not imported: that module needs torch)
# What the fit check adds: the CUDA context and cuBLAS/cuDNN workspaces (about 0.3-0.8 GiB with current drivers),
# or the measured RSS of a CPU process with torch, transformers and PEFT imported (bench/plan_vs_measured.py).
RUNTIME_BYTES = {"cuda": int(0.75 * GIB), "cpu": int(0.45 * GIB)}
# CPU: glibc malloc keeps freed activation blocks in the heap (per-thread arenas) and RSS counts them; what is not
# reused by gradients and optimiser states stays resident across steps. Measured: lora at 2 x 512 tokens on the
# embedded model (bench/plan_vs_measured.py) and the recipe's `release_freed_memory` note (about 35 % less peak
# RSS for LoRA at 4 x 512 when freed blocks go back to the system) both put it at about half the activations.
CPU_HEAP_RETENTION = 0.5
UNITS = {"": None, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass(frozen=True)
class Shape:
    """The sizes of a Llama-style decoder that memory and parameter counts depend on."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    context: int | None
    model_type: str = "llama"
    attention_bias: bool = False
    source: str = ""

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each projection of one decoder layer."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    def layer_linear_params(self) -> int:
        return sum(a * b for a, b in self.linears().values())

    def layer_params(self) -> int:
        bias = (self.heads + 2 * self.kv_heads) * self.head_dim if self.attention_bias else 0
        return self.layer_linear_params() + bias + 2 * self.hidden

    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    def head_params(self) -> int:
        return 0 if self.tied else self.vocab * self.hidden

    def total_params(self) -> int:
        return self.embedding_params() + self.head_params() + self.hidden + self.layers * self.layer_params()

    def module_paths(self) -> list[tuple[str, int, int]]:
        """Every linear module as transformers names it (`model.layers.3.self_attn.q_proj`), with (in, out)."""
        out = []
        for layer in range(self.layers):
            for name, (a, b) in self.linears().items():
                block = "self_attn" if name in LINEARS[:4] else "mlp"
                out.append((f"model.layers.{layer}.{block}.{name}", a, b))
        return out


def _shape(name: str, h: int, layers: int, heads: int, kv: int, i: int, vocab: int, tied: bool, ctx: int) -> Shape:
    return Shape(name, h, layers, heads, kv, h // heads, i, vocab, tied, ctx, source=f"{name} config.json")


SHAPES: dict[str, Shape] = {
    "1B": _shape("meta-llama/Llama-3.2-1B", 2048, 16, 32, 8, 8192, 128256, True, 131072),
    "3B": _shape("meta-llama/Llama-3.2-3B", 3072, 28, 24, 8, 8192, 128256, True, 131072),
    "7B": _shape("meta-llama/Llama-2-7b-hf", 4096, 32, 32, 32, 11008, 32000, False, 4096),
    "13B": _shape("meta-llama/Llama-2-13b-hf", 5120, 40, 40, 40, 13824, 32000, False, 4096),
    "70B": _shape("meta-llama/Llama-3.1-70B", 8192, 80, 64, 8, 28672, 128256, False, 131072),
}


SHAPE_REACH = 2.0  # --params more than this factor beyond the smallest or largest shape is refused: none describes it
SHAPE_MATCH = 1.1  # within this factor a shape is the size asked for; further off, the plan says how far


def shape_for_params(n: float) -> Shape:
    """The shape in SHAPES whose parameter count is nearest to `n` on a log scale; refused beyond SHAPE_REACH of the
    table's ends (a 1e30 request would otherwise be planned as a 70B model without a word)."""
    if not math.isfinite(n) or n <= 0:
        raise WbError(f"--params: {n!r} is not a positive parameter count (e.g. 7e9)")
    label, shape = min(SHAPES.items(), key=lambda kv: abs(math.log(kv[1].total_params() / n)))
    have = shape.total_params()
    sizes = [s.total_params() for s in SHAPES.values()]
    if n > max(sizes) * SHAPE_REACH or n < min(sizes) / SHAPE_REACH:
        end = "largest" if n > have else "smallest"
        raise WbError(
            f"--params {n:.3g}: {_times(n, have)} the {end} shape wb plans for ({label}, {have / 1e9:.2f}B "
            "parameters); plan a model of another size from its config.json with --model FOLDER"
        )
    return replace(shape, name=f"{label} shape ({shape.name})")


def _times(n: float, have: int) -> str:
    """How `n` compares with `have`: `2.31x more than` / `1.6x fewer than`."""
    return f"{n / have:.3g}x more than" if n > have else f"{have / n:.3g}x fewer than"


def shape_distance(n: float, shape: Shape) -> str | None:
    """What the plan says when the shape planned for `--params n` is not that size (beyond SHAPE_MATCH)."""
    have = shape.total_params()
    if max(have / n, n / have) <= SHAPE_MATCH:
        return None
    return (
        f"--params {n:.3g} asks for {_times(n, have)} the nearest shape wb plans for, {shape.name} with "
        f"{have / 1e9:.2f}B parameters: the figures are that shape's"
    )


def _need(config: dict[str, Any], key: str, source: str, *alts: str) -> int:
    for k in (key, *alts):
        value = config.get(k)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    raise WbError(f"{source}: field {key}: missing or not a positive integer; wb plan needs a decoder's config.json")


def shape_from_config(config: dict[str, Any], source: str, name: str | None = None) -> Shape:
    """A Shape from a transformers `config.json` (a multimodal config's `text_config` is read when present)."""
    if isinstance(config.get("text_config"), dict):
        config = {**config["text_config"], "tie_word_embeddings": config.get("tie_word_embeddings", True)}
    hidden = _need(config, "hidden_size", source, "n_embd", "d_model")
    heads = _need(config, "num_attention_heads", source, "n_head")
    kv = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    model_type = str(config.get("model_type") or "llama")
    return Shape(
        name=name or str(config.get("_name_or_path") or model_type),
        hidden=hidden,
        layers=_need(config, "num_hidden_layers", source, "n_layer"),
        heads=heads,
        kv_heads=int(kv),
        head_dim=int(head_dim),
        intermediate=_need(config, "intermediate_size", source, "n_inner"),
        vocab=_need(config, "vocab_size", source),
        tied=bool(config.get("tie_word_embeddings", True)),
        context=config.get("max_position_embeddings")
        if isinstance(config.get("max_position_embeddings"), int)
        else None,
        model_type=model_type,
        attention_bias=bool(config.get("attention_bias", model_type == "qwen2")),
        source=source,
    )


def read_config(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise WbError(f"{path}: cannot read the model config: {e}") from None
    if not isinstance(data, dict):
        raise WbError(f"{path}: a model config must be a JSON object")
    return data


# ---------------------------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class Options:
    """What a plan is computed for: the step's shape, the precision and device, and each method's settings
    (defaults as in `workbench.train.recipe`)."""

    seq_len: int = 1024
    batch: int = 4
    device: Device = "cpu"
    precision: str = "bf16"  # the resolved compute precision: fp32, bf16 or fp16
    trained_share: float = 1.0  # share of positions with a trained label (responses only: below 1)
    lora_r: int = 16
    lora_dropout: float = 0.05
    lora_targets: Sequence[str] | str = "all-linear"
    virtual_tokens: int = 20
    prefix_projection: bool = False
    prefix_projection_hidden: int | None = None
    p_tuning_encoder: Literal["mlp", "lstm"] = "mlp"
    p_tuning_hidden: int | None = None
    p_tuning_layers: int = 2
    ia3_targets: Sequence[str] = ("k_proj", "v_proj", "down_proj")
    ia3_feedforward: Sequence[str] = ("down_proj",)
    llama_adapter_len: int = 10
    llama_adapter_layers: int | None = None
    adapter_reduction_factor: int = 16
    adapter_placement: Literal["pfeiffer", "houlsby"] = "pfeiffer"
    galore_rank: int = 128
    galore_targets: Sequence[str] | str = ("self_attn", "mlp")
    freeze_layers: int = 2
    lora_init: str = "default"  # pissa and olora adapters are saved converted to plain LoRA of rank 2r
    release_freed_memory: bool = False  # the recipe's CPU allocator setting (no heap retention then)

    def __post_init__(self) -> None:
        for name in ("seq_len", "batch", "lora_r", "virtual_tokens", "galore_rank", "freeze_layers"):
            if getattr(self, name) < 1:
                raise WbError(f"--{name.replace('_', '-')}: must be at least 1, got {getattr(self, name)}")
        if not 0 < self.trained_share <= 1:
            raise WbError(f"trained share {self.trained_share}: must be in (0, 1]")


# ---------------------------------------------------------------------------------------------------------------
# Which modules a target list selects (PEFT's and the Trainer's rules)


def peft_targets(shape: Shape, targets: Sequence[str] | str) -> list[tuple[str, int, int]]:
    """Modules PEFT adapts: `all-linear` (every linear but the output head), a regular expression matched against
    the whole module path, or names matching a path's last components (`q_proj`, `self_attn.q_proj`)."""
    modules = shape.module_paths()
    if targets == "all-linear":
        return modules
    if isinstance(targets, str):
        pattern = re.compile(targets)
        return [m for m in modules if pattern.fullmatch(m[0])]
    return [m for m in modules if any(m[0] == t or m[0].endswith("." + t) for t in targets)]


def trainer_targets(shape: Shape, targets: Sequence[str] | str) -> list[tuple[str, int, int]]:
    """Linear modules the Trainer's GaLore optimisers project (`optim_target_modules`): a regular expression
    matched against the whole path, or names contained in the path (or matching it as an expression)."""
    modules = shape.module_paths()
    if targets == "all-linear":
        return modules
    if isinstance(targets, str):
        pattern = re.compile(targets)
        return [m for m in modules if pattern.fullmatch(m[0])]
    return [m for m in modules if any(t in m[0] or re.fullmatch(t, m[0]) for t in targets)]


# ---------------------------------------------------------------------------------------------------------------
# Trainable parameters, exact


def trainable_parameters(shape: Shape, method: str, opts: Options) -> int:
    """How many parameters the method trains, as PEFT (or wb's own adapter, freeze, full) creates them."""
    h, n = shape.hidden, opts.virtual_tokens
    if method in ("full", "galore"):
        return shape.total_params()
    if method == "freeze":
        return min(opts.freeze_layers, shape.layers) * shape.layer_params() + shape.hidden
    if method in ("lora", "qlora", "dora"):
        mods = peft_targets(shape, opts.lora_targets)
        count = sum(opts.lora_r * (a + b) for _, a, b in mods)
        return count + (sum(b for _, _, b in mods) if method == "dora" else 0)  # DoRA's magnitude vectors
    if method == "ia3":
        mods = peft_targets(shape, list(opts.ia3_targets))
        ff = list(opts.ia3_feedforward)
        return sum(a if any(m == t or m.endswith("." + t) for t in ff) else b for m, a, b in mods)
    if method == "prompt_tuning":
        return n * h
    if method == "prefix_tuning":
        token = shape.kv_heads * shape.head_dim  # PEFT sizes prefixes to the key/value heads (GQA)
        width = shape.layers * 2 * token
        if not opts.prefix_projection:
            return n * width
        enc = opts.prefix_projection_hidden or h
        return n * token + (token * enc + enc) + (enc * width + width)
    if method == "p_tuning":
        enc = opts.p_tuning_hidden or h
        if opts.p_tuning_encoder == "mlp":
            return n * h + (h * enc + enc) + (enc * enc + enc) + (enc * h + h)
        lstm = 0
        for layer in range(opts.p_tuning_layers):
            size_in = h if layer == 0 else 2 * enc
            lstm += 2 * (4 * enc * (size_in + enc) + 8 * enc)  # two directions: W_ih, W_hh, b_ih, b_hh
        return n * h + lstm + (2 * enc * 2 * enc + 2 * enc) + (2 * enc * h + h)
    if method == "llama_adapter":
        layers = min(opts.llama_adapter_layers or shape.layers, shape.layers)
        return layers * (opts.llama_adapter_len * h + 1)  # the adaption prompt and its zero-initialised gate
    if method == "adapter":
        m = max(1, h // opts.adapter_reduction_factor)
        sites = 2 if opts.adapter_placement == "houlsby" else 1
        return shape.layers * sites * (h * m + m + m * h + h)
    raise WbError(f"method {method!r}: not one of {', '.join(METHODS)}")


def saved_parameters(shape: Shape, method: str, opts: Options) -> int:
    """Numbers the run folder stores: the adapter's (a prompt method's computed prompt), else the whole model."""
    if method in ("prompt_tuning", "p_tuning"):
        return opts.virtual_tokens * shape.hidden
    if method == "prefix_tuning":
        return opts.virtual_tokens * shape.layers * 2 * shape.kv_heads * shape.head_dim
    if method in ("lora", "dora") and opts.lora_init in ("pissa", "olora"):
        return 2 * trainable_parameters(shape, method, opts)  # saved converted against the unchanged base: rank 2r
    if method in ADAPTER_METHODS:
        return trainable_parameters(shape, method, opts)
    return shape.total_params()


# ---------------------------------------------------------------------------------------------------------------
# Memory


@dataclass
class Estimate:
    """One method's plan. Bytes throughout."""

    method: str
    trainable: int
    total: int
    weights: int
    gradients: int
    optimizer: int
    activations: int
    activations_checkpointed: int
    logits: int
    heap_retention: int
    heap_retention_checkpointed: int
    peak: int
    peak_checkpointed: int
    adapter_bytes: int
    runtime: int
    fits: bool | None = None
    fits_checkpointed: bool | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bytes(precision: str) -> int:
    return 4 if precision == "fp32" else 2


def _grad_layers(shape: Shape, method: str, opts: Options) -> int:
    if method == "freeze":
        return min(opts.freeze_layers, shape.layers)
    if method == "llama_adapter":
        return min(opts.llama_adapter_layers or shape.layers, shape.layers)
    return shape.layers


def _layer_activations(shape: Shape, method: str, opts: Options, compute: int, cpu: bool) -> float:
    """Bytes one decoder layer keeps for backward, per token (see the module docstring)."""
    h, i, ad = shape.hidden, shape.intermediate, shape.heads * shape.head_dim
    qlora = method == "qlora"
    cpu_autocast = cpu and compute != 4
    elem = 4 if qlora else compute  # a 4-bit layer returns its output in its input's dtype: fp32 after prepare
    total: float = 2 * 8 * h  # the two RMSNorms: fp32 input and fp32 normalised output
    if cpu_autocast or qlora:
        total += 5 * 2 * h  # q, k, v, gate and up each cast their fp32 input to the compute dtype
    elif compute != 4:
        total += 2 * compute * h  # the norms' outputs in the compute dtype, shared by q/k/v and by gate/up
    total += 5 * compute * ad  # sdpa's q, k, v (repeated to all heads), its output, o_proj's input
    # The attention mask wb always passes (packed or padded batches): sdpa keeps a copy per layer, on a CPU expanded
    # to every head as bools (measured with saved-tensor hooks), on a GPU as the additive float bias.
    total += (shape.heads if cpu else compute) * opts.seq_len
    total += 4 * elem * i  # SwiGLU: gate, SiLU(gate), up, their product
    if qlora:
        total += 2 * i  # down_proj's input cast to the compute dtype
    if method in ("lora", "qlora", "dora"):
        low_precision_in = cpu_autocast or qlora  # the adapted module's input arrives in fp32
        extra = 0.0
        for _, a, b in peft_targets(shape, opts.lora_targets):
            extra += opts.lora_r * compute  # lora_A's output, kept for lora_B
            if low_precision_in:
                extra += 2 * a  # lora_A casts its input too
            if opts.lora_dropout > 0:
                extra += a * ((4 if low_precision_in else compute) + 1)  # the dropped input and the mask
            if method == "dora":
                extra += b * compute
        total += extra / max(1, shape.layers)  # averaged over the layers (a target list may name some only)
    if method == "ia3":
        total += sum(
            (a if m.endswith("down_proj") else b) * compute for m, a, b in peft_targets(shape, list(opts.ia3_targets))
        ) / max(1, shape.layers)
    if method == "adapter":
        m = max(1, h // opts.adapter_reduction_factor)
        sites = 2 if opts.adapter_placement == "houlsby" else 1
        total += sites * (4 * h + 8 * m)  # its fp32 input, down output, activation output
    return total


def estimate(
    shape: Shape, method: str, opts: Options, memory: int | None = None, runtime: int | None = None
) -> Estimate:
    """Peak memory, trainable parameters and size on disk of one method (formulas in the module docstring)."""
    if method not in METHODS:
        raise WbError(f"--method: {method!r} is not one of {', '.join(METHODS)}")
    notes: list[str] = []
    cpu = opts.device == "cpu"
    precision = opts.precision
    if method == "qlora" and cpu:
        precision = "fp32"  # bitsandbytes' 4-bit layers compute in fp32 on a CPU (workbench.precision)
        notes.append("QLoRA on CPU computes in fp32")
    compute = _bytes(precision)
    weight_bytes = 4 if cpu else _bytes(precision)
    cpu_autocast = cpu and precision != "fp32"
    total = shape.total_params()
    trainable = trainable_parameters(shape, method, opts)

    # Weights
    linear_params = shape.layers * shape.layer_linear_params()
    if method == "qlora":
        other = total - linear_params
        weights = math.ceil(linear_params * NF4_BYTES_PER_PARAM) + other * 4
    else:
        weights = total * weight_bytes
    adapter_dtype = 4
    base_trains = method in ("full", "galore", "freeze")
    if not base_trains:
        weights += trainable * adapter_dtype
    grad_bytes = weight_bytes if base_trains else adapter_dtype
    gradients = trainable * grad_bytes

    # Optimiser
    optimizer = trainable * ADAMW_BYTES
    if method == "galore":
        projected = trainer_targets(shape, opts.galore_targets)
        plain = trainable - sum(a * b for _, a, b in projected)
        r = opts.galore_rank
        optimizer = plain * ADAMW_BYTES + sum(
            (2 * min(r, min(a, b)) * max(a, b) + min(a, b) * min(r, min(a, b))) * 4 for _, a, b in projected
        )
        notes.append(f"GaLore rank {r} on {len(projected)} projections; gradients stay full size")

    # Activations
    tokens = opts.batch * (opts.seq_len + (opts.virtual_tokens if method in PROMPT_METHODS else 0))
    layers = _grad_layers(shape, method, opts)
    per_layer = _layer_activations(shape, method, opts, compute, cpu)
    residual = 4 if (cpu or method == "qlora") else compute
    layer_input = shape.hidden * residual
    if method == "prefix_tuning":
        per_layer += 2 * compute * shape.heads * shape.head_dim * opts.virtual_tokens / max(1, opts.seq_len)
    final = 8 * shape.hidden * opts.batch * opts.seq_len  # the final norm
    copies = 2 * shape.layer_linear_params() if cpu_autocast else 0  # bf16 weight copies kept for backward, a layer
    head_trains = method in ("full", "galore")  # freeze keeps the embeddings and head frozen
    n_pos = max(1, round(opts.batch * opts.seq_len * opts.trained_share))
    if head_trains:
        logits = n_pos * shape.vocab * (12 + (compute if compute != 4 else 0))
        logits += 2 * shape.vocab * shape.hidden if cpu_autocast else 0  # the head's bf16 copy
    else:
        chunk = min(n_pos, max(1, HEAD_CHUNK_ELEMENTS // shape.vocab)) * shape.vocab
        logits = n_pos * shape.hidden * residual + chunk * (4 + compute + 4)
    activations = int(layers * (per_layer * tokens + copies) + final + logits)
    checkpointed = int(layers * layer_input * tokens + per_layer * tokens + copies + final + logits)
    if method == "qlora":
        transient = max(a * b for _, a, b in shape.module_paths()) * compute  # one dequantised weight at a time
        activations += transient
        checkpointed += transient

    retention = CPU_HEAP_RETENTION if cpu and not opts.release_freed_memory else 0.0
    kept = int(retention * max(0, activations - gradients - optimizer))
    kept_ckpt = int(retention * max(0, checkpointed - gradients - optimizer))
    peak = weights + optimizer + gradients + activations + kept
    peak_ckpt = weights + optimizer + gradients + checkpointed + kept_ckpt
    run = RUNTIME_BYTES[opts.device] if runtime is None else runtime
    est = Estimate(
        method=method,
        trainable=trainable,
        total=total,
        weights=int(weights),
        gradients=int(gradients),
        optimizer=int(optimizer),
        activations=activations,
        activations_checkpointed=checkpointed,
        logits=int(logits),
        heap_retention=kept,
        heap_retention_checkpointed=kept_ckpt,
        peak=int(peak),
        peak_checkpointed=int(peak_ckpt),
        adapter_bytes=saved_parameters(shape, method, opts) * (4 if method in ADAPTER_METHODS else weight_bytes),
        runtime=run,
        notes=notes,
    )
    if memory is not None:
        est.fits = est.peak + run <= memory
        est.fits_checkpointed = est.peak_checkpointed + run <= memory
    return est


# ---------------------------------------------------------------------------------------------------------------
# Memory sizes: parsing and detecting


def parse_memory(text: str) -> int:
    """`24GB`, `24 GiB`, `80G`, `512MB`, `1.5TB` → bytes. GB, G and GiB all mean 2**30 (JEDEC, as nvidia-smi and
    torch report memory: a "24 GB" card holds 24 GiB)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(i?[bB])?\s*", text or "")
    if not m:
        raise WbError(f"--memory: {text!r} is not a memory size; write it like 24GB, 80GiB or 512MB")
    number, unit, suffix = m.groups()
    if not unit and not suffix:
        raise WbError(f"--memory: {text!r} has no unit; write it like {text.strip()}GB")
    value = float(number) * (UNITS[unit.lower()] or 1)
    if value < 1 << 20:
        raise WbError(f"--memory: {text!r} is less than 1 MiB; write it like 24GB")
    return int(value)


@dataclass(frozen=True)
class Machine:
    device: Device
    memory: int | None
    source: str


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


def ram_available() -> tuple[int | None, str]:
    """Memory available to a new process: /proc/meminfo's MemAvailable (bounded by a cgroup limit), else psutil."""
    try:
        info = dict(
            (line.split(":")[0], int(line.split()[1]) * 1024)
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.split()[1:2] and line.split()[1].isdigit()
        )
    except (OSError, ValueError, IndexError):
        info = {}
    if "MemAvailable" in info:
        avail, source = (
            info["MemAvailable"],
            f"RAM available (/proc/meminfo, of {info.get('MemTotal', 0) / GIB:.1f} GiB)",
        )
    else:
        try:
            import psutil

            avail, source = int(psutil.virtual_memory().available), "RAM available (psutil)"
        except ImportError:
            return None, "RAM unknown (no /proc/meminfo, no psutil)"
    limit = _cgroup_limit()
    if limit is not None and limit < avail:
        return limit, f"cgroup memory limit ({limit / GIB:.1f} GiB)"
    return avail, source


def detect_machine() -> Machine:
    """The GPU's memory when torch sees one (torch is imported only when installed), else available RAM."""
    import importlib.util

    if os.environ.get("WB_PLAN_NO_GPU") != "1" and importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return Machine("cuda", int(props.total_memory), f"GPU 0: {props.name}")
    memory, source = ram_available()
    return Machine("cpu", memory, source)


def resolve_precision(wanted: str, device: Device, cpu_bf16: bool | None = None) -> tuple[str, str]:
    """The compute precision a run would use, with the reason, as `workbench.precision` decides it: on a GPU auto is
    bf16 (assumed supported: Ampere and newer); on a CPU bf16 autocast where the CPU has native bf16 units."""
    if wanted not in ("auto", "fp32", "bf16", "fp16"):
        raise WbError(f"--precision: {wanted!r} is not one of auto, fp32, bf16, fp16")
    if device == "cuda":
        if wanted == "auto":
            return "bf16", "auto on a GPU: bf16 (Ampere or newer)"
        return wanted, f"precision {wanted} was asked for"
    if wanted == "fp16":
        raise WbError("--precision: fp16 needs a GPU; on CPU use auto, bf16 or fp32")
    if wanted != "auto":
        return wanted, f"precision {wanted} was asked for"
    if cpu_bf16 is None:
        cpu_bf16 = _cpu_has_bf16()
    return ("bf16", "auto: the CPU has native bf16 units") if cpu_bf16 else ("fp32", "auto: no native bf16 on this CPU")


def _cpu_has_bf16() -> bool:
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        from workbench.precision import cpu_bf16_units

        return cpu_bf16_units()[0]
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


# ---------------------------------------------------------------------------------------------------------------
# A whole plan


@dataclass
class Plan:
    model: dict[str, Any]
    settings: dict[str, Any]
    machine: dict[str, Any]
    estimates: list[Estimate]
    advice: list[dict[str, Any]] = field(default_factory=list)
    recommendation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "settings": self.settings,
            "machine": self.machine,
            "methods": [e.to_dict() for e in self.estimates],
            "advice": self.advice,
            "recommendation": self.recommendation,
        }


def model_summary(shape: Shape) -> dict[str, Any]:
    return {
        "name": shape.name,
        "source": shape.source,
        "model_type": shape.model_type,
        "parameters": shape.total_params(),
        "hidden_size": shape.hidden,
        "layers": shape.layers,
        "attention_heads": shape.heads,
        "kv_heads": shape.kv_heads,
        "head_dim": shape.head_dim,
        "intermediate_size": shape.intermediate,
        "vocab_size": shape.vocab,
        "tied_embeddings": shape.tied,
        "context": shape.context,
    }


def plan(
    shape: Shape,
    opts: Options,
    methods: Sequence[str] = METHODS,
    memory: int | None = None,
    memory_source: str = "",
    precision_reason: str = "",
) -> Plan:
    """Estimates for each method; a recommendation comes from `workbench.advice` when data is given."""
    estimates = [estimate(shape, m, opts, memory) for m in methods]
    return Plan(
        model=model_summary(shape),
        settings={
            "seq_len": opts.seq_len,
            "batch": opts.batch,
            "device": opts.device,
            "precision": opts.precision,
            "precision_reason": precision_reason,
            "trained_share": opts.trained_share,
            "lora_r": opts.lora_r,
            "lora_targets": opts.lora_targets if isinstance(opts.lora_targets, str) else list(opts.lora_targets),
            "virtual_tokens": opts.virtual_tokens,
            "freeze_layers": opts.freeze_layers,
            "galore_rank": opts.galore_rank,
            "adapter_reduction_factor": opts.adapter_reduction_factor,
        },
        machine={"device": opts.device, "memory": memory, "source": memory_source},
        estimates=estimates,
    )


# ---------------------------------------------------------------------------------------------------------------
# From what a user names: a model spec or a parameter count, a data file, a memory size


@dataclass(frozen=True)
class Model:
    shape: Shape
    folder: Path | None
    names: list[str]
    recipe: dict[str, Any]


def _run_recipe(folder: Path) -> dict[str, Any]:
    import yaml

    path = folder / "recipe.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise WbError(f"{path}: cannot read the run's recipe: {e}") from None
    if not isinstance(data, dict):
        raise WbError(f"{path}: a recipe must be a YAML mapping")
    return data


def load_model_shape(spec: str | None, params: float | None) -> Model:
    """The shape to plan for: `--params N` (a Llama shape), a run folder (its recipe's model and settings), or a
    model spec as `wb train` takes it (`embedded`, a folder, a cached hub id)."""
    if (spec is None) == (params is None):
        raise WbError("give one of --model (embedded, a model folder or a run folder) or --params (e.g. 7e9)")
    if params is not None:
        shape = shape_for_params(params)
        return Model(shape, None, [shape.name], {})
    from workbench.models.base import SOURCE_FILE, resolve_model

    recipe: dict[str, Any] = {}
    path = Path(str(spec)).expanduser()
    if path.is_dir() and (path / "recipe.yaml").is_file():
        recipe = _run_recipe(path)
        spec = str(recipe.get("model") or "embedded")
    folder = resolve_model(str(spec))
    config = read_config(folder)
    names = [str(spec), folder.name, str(config.get("_name_or_path") or "")]
    source = folder / SOURCE_FILE
    if source.is_file():
        with contextlib.suppress(ValueError):
            names.append(str(json.loads(source.read_text(encoding="utf-8")).get("model") or ""))
    shape = shape_from_config(config, str(folder / "config.json"), name=str(spec))
    names.append(shape.model_type)
    return Model(shape, folder, [n for n in names if n], recipe)


def options_from_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Options a run's recipe sets (its max_length, batch, LoRA, virtual tokens, ...), by Options field."""
    out: dict[str, Any] = {}

    def take(key: str, *path: str) -> None:
        node: Any = recipe
        for p in path:
            node = node.get(p) if isinstance(node, dict) else None
        if node is not None:
            out[key] = node

    take("seq_len", "max_length")
    take("batch", "batch_size")
    take("lora_r", "lora", "r")
    take("lora_dropout", "lora", "dropout")
    take("lora_targets", "lora", "target_modules")
    take("lora_init", "lora", "init")
    take("freeze_layers", "freeze", "trainable_layers")
    take("release_freed_memory", "release_freed_memory")
    take("galore_rank", "galore", "rank")
    take("galore_targets", "galore", "target_modules")
    take("adapter_reduction_factor", "adapter", "reduction_factor")
    take("adapter_placement", "adapter", "placement")
    take("llama_adapter_len", "llama_adapter", "adapter_len")
    take("llama_adapter_layers", "llama_adapter", "adapter_layers")
    take("prefix_projection", "prefix_tuning", "projection")
    take("prefix_projection_hidden", "prefix_tuning", "projection_hidden_size")
    take("p_tuning_encoder", "p_tuning", "encoder")
    take("p_tuning_hidden", "p_tuning", "encoder_hidden_size")
    take("p_tuning_layers", "p_tuning", "encoder_layers")
    take("ia3_targets", "ia3", "target_modules")
    take("ia3_feedforward", "ia3", "feedforward_modules")
    method = recipe.get("method")
    if method in ("prompt_tuning", "prefix_tuning", "p_tuning"):
        take("virtual_tokens", str(method), "num_virtual_tokens")
    return out


def build_plan(
    model: str | None = None,
    params: float | None = None,
    data: Path | None = None,
    memory: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    methods: Sequence[str] | None = None,
    **overrides: Any,
) -> Plan:
    """`wb plan` as a library function: the model's shape, this machine (or `memory`), the data's advice."""
    from workbench import advice

    chosen = list(methods or METHODS)
    bad = [m for m in chosen if m not in METHODS]
    if bad:
        raise WbError(f"--method: {bad[0]!r} is not one of {', '.join(METHODS)}")
    size = parse_memory(memory) if memory is not None else None
    if device not in ("auto", "cpu", "cuda"):
        raise WbError(f"--device: {device!r} is not one of auto, cpu, cuda")
    found = load_model_shape(model, params)
    shape = found.shape
    if size is not None:
        dev: Device = "cpu" if device == "cpu" else "cuda"
        kind = "RAM" if dev == "cpu" else "a GPU"
        source = f"--memory {memory} ({kind}" + ("; --device cpu plans for RAM)" if device == "auto" else ")")
    else:
        machine = detect_machine()
        if device != "auto" and device != machine.device:
            dev, size, source = device, None, f"--device {device}: no such device found here, memory unknown"  # type: ignore[assignment]
        else:
            dev, size, source = machine.device, machine.memory, machine.source
    compute, reason = resolve_precision(precision, dev)
    fields = {**options_from_recipe(found.recipe), **{k: v for k, v in overrides.items() if v is not None}}
    facts: dict[str, Any] | None = None
    lengths: dict[str, Any] | None = None
    rejected = 0
    if data is not None:
        frame, rejected = advice.read_frame(data)
        facts = advice.data_facts(frame)
        lengths = _token_lengths(data, found.folder)
        if lengths is not None:
            lengths["tokenizer"] = shape.name  # the spec the user gave, not the resolved cache folder
        if lengths and lengths.get("tokens_total") and "trained_share" not in fields:
            fields["trained_share"] = max(1e-6, lengths["trained_tokens_total"] / lengths["tokens_total"])
    if "seq_len" not in fields and shape.context is not None and shape.context < Options.seq_len:
        fields["seq_len"] = shape.context  # the default length, for a model whose context is shorter
    try:
        opts = Options(device=dev, precision=compute, **fields)
    except TypeError as e:
        raise WbError(f"wb plan: {e}") from None
    if shape.context is not None and opts.seq_len > shape.context:
        asked = "--seq-len" if overrides.get("seq_len") is not None else f"{model}/recipe.yaml: max_length"
        raise WbError(
            f"{asked} {opts.seq_len:,}: longer than the model's context of {shape.context:,} tokens "
            f"({shape.source}: max_position_embeddings)"
        )
    result = plan(shape, opts, chosen, size, source, reason)
    if params is not None:
        result.model["params_asked"] = params
        result.model["shape_distance"] = shape_distance(params, shape)
    if facts is not None:
        items = advice.advise(facts, chosen, opts.seq_len, shape.context, found.names, lengths, rejected)
        result.advice = [a.to_dict() for a in items]
        result.settings["data"] = {
            "path": str(data),
            "records": facts["records"],
            "scripts": facts["scripts"],
            "changing_facts": facts["changing_facts"],
            "lengths_from": "tokenizer" if lengths else "word-count estimate",
        }
    result.recommendation = advice.recommend(result.estimates, facts["records"] if facts else None, size is not None)
    return result


def _token_lengths(data: Path, folder: Path | None) -> dict[str, Any] | None:
    """Lengths in the model's tokens when its tokenizer and transformers are at hand, else None (estimated then)."""
    import importlib.util

    if folder is None or importlib.util.find_spec("transformers") is None:
        return None
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        return None
    from workbench.token_lengths import token_lengths

    return token_lengths(data, str(folder))
