"""The gated MLP of Llama-family models with one activation fewer kept for the backward pass.

Their MLP computes `down_proj(silu(gate_proj(x)) * up_proj(x))`; autograd keeps the gate's output (for silu's
backward), silu's output and the up projection's output (for the product's backward), and the product when down_proj
trains or carries a LoRA: four (tokens × intermediate) tensors a layer, the largest share of a step's activations.
`SwiGLU` keeps the gate's and the up projection's outputs and computes silu again in the backward pass (one
elementwise op): three instead of four, the same numbers (silu's own backward kernel on the same inputs). Measured on
SmolLM2-135M (intermediate 1536), LoRA all-linear, 2 × 512 tokens, fp32: 180 MB less kept.
"""

from __future__ import annotations

import functools
import types
from typing import Any

# MLP classes whose forward is exactly `down_proj(act_fn(gate_proj(x)) * up_proj(x))` (read in transformers 5.25).
GATED_MLPS = frozenset(
    {"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP", "SmolLM3MLP", "Olmo2MLP", "GemmaMLP", "GraniteMLP"}
)


@functools.cache
def _swiglu() -> Any:
    import torch

    class SwiGLU(torch.autograd.Function):
        """silu(gate) * up, keeping gate and up (not silu(gate)) for the backward pass."""

        @staticmethod
        def forward(ctx: Any, gate: Any, up: Any) -> Any:
            ctx.save_for_backward(gate, up)
            return torch.nn.functional.silu(gate) * up

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            gate, up = ctx.saved_tensors
            grad_gate = torch.ops.aten.silu_backward(grad * up, gate) if ctx.needs_input_grad[0] else None
            grad_up = grad * torch.nn.functional.silu(gate) if ctx.needs_input_grad[1] else None
            return grad_gate, grad_up

    return SwiGLU


def _forward(self: Any, x: Any) -> Any:
    return self.down_proj(_swiglu().apply(self.gate_proj(x), self.up_proj(x)))


def fuse(model: Any) -> int:
    """Every gated MLP of `model` (a class in GATED_MLPS with a SiLU activation) computes its product with `SwiGLU`.
    Returns the MLPs changed. Parameters and state dict are untouched."""
    import torch

    changed = 0
    for module in model.modules():
        act = getattr(module, "act_fn", None)
        silu = isinstance(act, torch.nn.SiLU) or type(act).__name__ == "SiLUActivation"
        if type(module).__name__ in GATED_MLPS and silu and "forward" not in vars(module):
            module.forward = types.MethodType(_forward, module)
            changed += 1
    return changed
