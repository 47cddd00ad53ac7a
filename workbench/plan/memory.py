"""Peak memory of one training step per method, for `wb plan`: the sum over weights, gradients, optimiser states and
activations, each method's part read from its spec (`workbench.methods`): its trainable parameters, whether the
base trains or loads in 4-bit, its optimiser, its virtual tokens and what its modules keep for backward. Every
figure is in bytes; the CLI prints GiB.

Peak memory of one training step
--------------------------------
`peak = weights + gradients + optimiser states + activations`, the sum "Transformer Math 101" (EleutherAI 2023)
gives. It is an upper bound of what is live at once (the Trainer sets gradients to None after each step, and backward
frees a layer's activations as it fills that layer's gradients), and what a process's resident memory shows on a
CPU, where freed activations stay in the heap that gradients then come from (bench/plan_vs_measured.py).

* weights: every parameter at the load dtype: on a GPU the training precision (bf16/fp16 2 B, fp32 4 B), on a CPU
  fp32 (wb keeps CPU weights fp32 and autocasts), except plain LoRA under CPU bf16 autocast, whose whole frozen
  base is held in bf16 (2 B; `workbench.train.session.bf16_frozen_base`). QLoRA (Dettmers et al. 2023, "QLoRA",
  section 3): the decoder's linear weights in 4-bit NF4, 0.5 B each, plus the quantisation constants of double
  quantisation, `8/64 + 32/(64·256)` = 0.127 bit per parameter (one 8-bit absmax per block of 64, one fp32 constant
  per 256 blocks); the embeddings, head and norms stay unquantised and `prepare_model_for_kbit_training` upcasts them to
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
  - two RMSNorms: the fp32 input and the fp32 normalised output, `2 · 8h`; a frozen norm (`workbench.train.rmsnorm`,
    every method that leaves the base weights alone) keeps its output only, `2 · 4h`, in bf16 over a bf16 base
    `2 · 2h`;
  - the projections' inputs in the compute dtype: `2·c·h` (q/k/v share one input, gate/up another); under CPU
    autocast over fp32 weights every projection casts its own copy (`5·2h`), in fp32 and over a bf16 base they
    share the norm's output (0);
  - attention (no `a·s²` score matrix is kept; the `5as/h` term of Korthikanti et al. belongs to eager attention,
    which wb does not use): on a CPU by sequence (`workbench.train.attention`), q at every head, k and v at the
    key/value heads, the output and o_proj's contiguous input, `c·(3·a·d + 2·kv·d)`, no mask; on a GPU through
    `sdpa` with the padding/packing mask, k/v repeated to all heads, `5·c·a·d`, plus the mask's additive bias `c·s`;
  - the gated MLP (`workbench.train.glu`): gate output, up output, their product (down_proj's input): `3·c·i`;
  - LoRA (`workbench.train.lora_linear`): per adapted projection the low-rank input `r·c` and, with dropout, the
    mask, one bit per input element on a CPU (a byte elsewhere); where the input arrives in fp32 under low precision
    (CPU autocast over fp32 weights, QLoRA) lora_A's cast input too; DoRA (PEFT's own path) keeps the dropped
    input, its mask and the adapted output; IA3 keeps the rescaled tensors; a bottleneck adapter its input, hidden
    and activation.
  - CPU autocast keeps the bf16 copy of every projection weight that backward needs: 2 B per linear parameter of
    the layers gradients flow through; none for plain LoRA, whose frozen base is held in bf16.
  The residual stream between layers (what gradient checkpointing keeps, `h` per token) is fp32 on a CPU but over a
  bf16 base (bf16), and in the compute dtype on a GPU.
  Layers gradients flow through: all for every method but `freeze` (the last N) and `llama_adapter` (its top
  layers). Prompt tuning and P-Tuning lengthen the sequence by their virtual tokens.
  What a method adds to a layer, and which layers it trains, are its spec's `activations` and `grad_layers`
  (`workbench.methods`).
  With gradient checkpointing only each layer's input is kept (`h` per token, Korthikanti et al.'s `2sbh` per
  layer) and one layer's activations are rebuilt at a time.
* the logits/cross-entropy term ("Transformer Math 101" leaves it out; at a 32k-128k vocabulary it is the largest
  single activation): for trained positions `n = batch · seq · trained_share`, when the output head trains (full,
  galore) the head's output in fp32 is kept by log-softmax (`4·n·V`) and backward holds two more fp32 copies
  (`12·n·V` in all, plus the compute-dtype cast); when the head is frozen wb fuses head and loss in chunks of
  2**23 logits (`workbench.train.loss.HeadLogProbs`), keeping only the gradient for the head's input (`n·h`).
* CPU heap retention: glibc keeps freed activation blocks in the process heap and RSS counts them; what gradients
  and optimiser states do not reuse stays resident: `0.2 · max(0, activations - gradients - optimiser)` with the
  malloc settings `wb train` runs with, measured (bench/plan_vs_measured.py; `release_freed_memory` removes it).
* runtime (counted only in the fit check): a GPU's CUDA context and library workspaces (not in
  `torch.cuda.max_memory_allocated`), or on a CPU the process with torch, transformers and PEFT imported.

Size on disk: adapters in fp32 safetensors (prompt methods store their computed prompt: `n·h`, or `n·L·2·kv·d` for
prefix tuning); freeze, full and galore save the whole model at its weight dtype.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from workbench.methods.lora import MUTATING_INITS
from workbench.methods.sizing import Options, Shape
from workbench.methods.spec import MethodSpec
from workbench.plan.counts import planned_spec, saved_parameters, trainable_parameters

GIB = 1 << 30
# QLoRA NF4 with double quantisation: 4 bits + 8/64 + 32/(64*256) bits per weight (QLoRA paper, section 3).
NF4_BYTES_PER_PARAM = (4 + 8 / 64 + 32 / (64 * 256)) / 8
ADAMW_BYTES = 8  # two fp32 moments per trainable parameter
HEAD_CHUNK_ELEMENTS = 2**23  # workbench.train.loss.HEAD_CHUNK_ELEMENTS (not imported: that module needs torch)
# What the fit check adds: the CUDA context and cuBLAS/cuDNN workspaces (about 0.3-0.8 GiB with current drivers),
# or the measured RSS of a CPU process with torch, transformers and PEFT imported (bench/plan_vs_measured.py).
RUNTIME_BYTES = {"cuda": int(0.75 * GIB), "cpu": int(0.45 * GIB)}
# CPU: glibc malloc keeps freed activation blocks in the heap and RSS counts them; what is not reused by gradients
# and optimiser states stays resident across steps. `wb train` runs with glibc's tcache and fastbins off
# (workbench.train.memory), which lets the heap reuse most freed blocks: measured, lora at 2 x 512 tokens on the
# embedded model (bench/plan_vs_measured.py, 2026-12-06) keeps 0.2 of those activations (it was 0.5 before).
CPU_HEAP_RETENTION = 0.2


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


def _layer_activations(
    shape: Shape, spec: MethodSpec, opts: Options, compute: int, cpu: bool, bf16_base: bool
) -> float:
    """Bytes one decoder layer keeps for backward, per token (see the module docstring). `bf16_base`: the whole
    frozen base held in bf16 under CPU autocast, the activations bf16 throughout."""
    h, i, ad = shape.hidden, shape.intermediate, shape.heads * shape.head_dim
    qlora = spec.quantized
    cpu_autocast = cpu and compute != 4 and not bf16_base  # autocast over fp32 weights
    elem = 4 if qlora else compute  # a 4-bit layer returns its output in its input's dtype: fp32 after prepare
    # The two RMSNorms: fp32 input and fp32 normalised output; a frozen one (workbench.train.rmsnorm) its output
    # only; over a bf16 base that output is bf16, and q/k/v and gate/up share it.
    total: float = 2 * (8 if spec.trains_base else 2 if bf16_base else 4) * h
    if cpu_autocast or qlora:
        total += 5 * 2 * h  # q, k, v, gate and up each cast their fp32 input to the compute dtype
    elif compute != 4 and not bf16_base:
        total += 2 * compute * h  # the norms' outputs in the compute dtype, shared by q/k/v and by gate/up
    if cpu:  # attention by sequence (workbench.train.attention): q, k and v at their own heads, output, o_proj's input
        total += compute * (3 * ad + 2 * shape.kv_heads * shape.head_dim)
    else:  # sdpa's q, k, v (repeated to all heads), its output, o_proj's input; the mask as an additive float bias
        total += 5 * compute * ad + compute * opts.seq_len
    total += 3 * elem * i  # the gated MLP (workbench.train.glu): gate, up, their product
    if qlora:
        total += 2 * i  # down_proj's input cast to the compute dtype
    if spec.activations is not None:  # what the method's own modules keep (the adapted input arrives in fp32?)
        total += spec.activations(shape, opts, compute, cpu_autocast or qlora)
    return total


def estimate(
    shape: Shape, method: str, opts: Options, memory: int | None = None, runtime: int | None = None
) -> Estimate:
    """Peak memory, trainable parameters and size on disk of one method (formulas in the module docstring)."""
    spec = planned_spec(method)
    notes: list[str] = []
    cpu = opts.device == "cpu"
    precision = opts.precision
    if spec.quantized and cpu:
        precision = "fp32"  # bitsandbytes' 4-bit layers compute in fp32 on a CPU (workbench.precision)
        notes.append("QLoRA on CPU computes in fp32")
    compute = _bytes(precision)
    weight_bytes = 4 if cpu else _bytes(precision)
    cpu_autocast = cpu and precision != "fp32"
    total = shape.total_params()
    trainable = trainable_parameters(shape, method, opts)

    # Weights
    linear_params = shape.layers * shape.layer_linear_params()
    if spec.quantized:
        other = total - linear_params
        weights = math.ceil(linear_params * NF4_BYTES_PER_PARAM) + other * 4
    else:
        weights = total * weight_bytes
    # the whole frozen base held in bf16 (train.session.bf16_frozen_base)
    held_bf16 = cpu_autocast and spec.bf16_frozen_base and opts.lora_init not in MUTATING_INITS
    if held_bf16:
        weights = total * 2
    adapter_dtype = 4
    base_trains = spec.trains_base
    if not base_trains:
        weights += trainable * adapter_dtype
    grad_bytes = weight_bytes if base_trains else adapter_dtype
    gradients = trainable * grad_bytes

    # Optimiser
    optimizer = trainable * ADAMW_BYTES
    if spec.optimizer_bytes is not None:
        optimizer, note = spec.optimizer_bytes(shape, opts, trainable)
        notes.append(note)

    # Activations
    tokens = opts.batch * (opts.seq_len + (opts.virtual_tokens if spec.virtual_tokens == "input" else 0))
    layers = spec.grad_layers(shape, opts) if spec.grad_layers is not None else shape.layers
    per_layer = _layer_activations(shape, spec, opts, compute, cpu, held_bf16)
    residual = 2 if held_bf16 else 4 if (cpu or spec.quantized) else compute
    layer_input = shape.hidden * residual
    final = (4 if held_bf16 else 8) * shape.hidden * opts.batch * opts.seq_len  # the final norm: input and output
    # bf16 weight copies kept for backward, a layer (none where the weights are held in bf16)
    copies = 2 * shape.layer_linear_params() if cpu_autocast and not held_bf16 else 0
    head_trains = spec.trains_head  # freeze keeps the embeddings and head frozen
    n_pos = max(1, round(opts.batch * opts.seq_len * opts.trained_share))
    if head_trains:
        logits = n_pos * shape.vocab * (12 + (compute if compute != 4 else 0))
        logits += 2 * shape.vocab * shape.hidden if cpu_autocast else 0  # the head's bf16 copy
    else:
        chunk = min(n_pos, max(1, HEAD_CHUNK_ELEMENTS // shape.vocab)) * shape.vocab
        logits = n_pos * shape.hidden * residual + chunk * (4 + compute + 4)
    activations = int(layers * (per_layer * tokens + copies) + final + logits)
    checkpointed = int(layers * layer_input * tokens + per_layer * tokens + copies + final + logits)
    if spec.quantized:
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
        adapter_bytes=saved_parameters(shape, method, opts) * (4 if spec.saves == "adapter" else weight_bytes),
        runtime=run,
        notes=notes,
    )
    if memory is not None:
        est.fits = est.peak + run <= memory
        est.fits_checkpointed = est.peak_checkpointed + run <= memory
    return est
