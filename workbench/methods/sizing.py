"""The sizes a method's parameter count and memory depend on: a Llama-style decoder's `Shape`, the `Options` a plan
is computed for (each method's settings, defaults as in `workbench.train.recipe`), and which linear modules a
target list selects under PEFT's and the Trainer's rules. Pure arithmetic, no torch: `wb plan` (plan/) and every
method spec (methods/) compute with it.

A Llama-style decoder (Llama, Mistral, Qwen, SmolLM): per layer q/k/v/o projections (`a` query heads and `kv`
key/value heads of width `d`), a SwiGLU MLP (gate/up `h → i`, down `i → h`), two RMSNorms; an embedding `V × h`
and an output head (tied or not). Parameters: `V·h·(1 + untied) + h + L·(2h·a·d + 2h·kv·d + 3h·i + 2h)`
(Llama-2-7B: 6,738,415,616, as its model card says 6.7B).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from workbench.errors import WbError

Device = Literal["cpu", "cuda"]
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


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
