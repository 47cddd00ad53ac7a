"""A LoRA-adapted linear layer in training as one autograd function: the base product, the input's dropout, the
low-rank update and their backward pass, with fewer passes over the activations and less kept for backward.

PEFT computes `base(x) + lora_B(lora_A(dropout(x))) * scaling` as six autograd nodes. Per adapted projection that
keeps the dropped-out input (the size of `x`; q, k, v, gate and up read the same `x` but each keeps its own copy)
and, under CPU autocast, a bf16 copy of `x`; and it walks over the (tokens x features) activations several times
besides the products: the dropout mask as floats, the masked input, `lora_B`'s output, its scaling, the sum, and in
backward as many again. Measured on SmolLM2-135M, LoRA r 16 all-linear, 2 x 512 packed tokens, fp32, one core of an
AVX2 EPYC: these passes and the mask took ~2.5 of ~14 CPU-s a step (the base model's products ~9).

`lora_linear` keeps `x` (shared with the other projections reading it), the mask packed 8 to a byte and the low-rank
input `t` (tokens x r), and computes:

* forward: `y = x W^T (+ bias)`; `t = (x * keep) A^T / (1 - p)`; `y += scaling * t B^T`, accumulated in the GEMM
  (`addmm_`), no extra tensor;
* backward: `g_t = scaling * g B`; `grad_B = scaling * g^T t`; `grad_A = g_t^T (x * keep) / (1 - p)` (the dropped
  input rebuilt from the bits); `grad_x = g W + keep * (g_t A) / (1 - p)` (with no dropout, `g_t A` is accumulated
  in the GEMM).

Masking is a bitwise AND of the values with an all-ones/all-zeros integer of their width (one cheap pass; torch's
bool-to-float conversion is not vectorised on CPU). The numbers are PEFT's for the same mask, up to the order of
floating-point additions.

The mask (`keep_mask`): on CPU, torch's `bernoulli_` draws one Mersenne-Twister number per element, about a tenth of a
LoRA step on SmolLM2. wb draws 16-bit integers from numpy's SFC64 generator instead, seeded by one draw from torch's
generator (so `seed` fixes the masks, a resumed run goes on with its restored random state, and gradient
checkpointing's replay draws the same mask; a part of a batch on a thread of its own, `row_parallel`, draws from a
generator seeded from torch's for that part, `masks_from`), and keeps an element when its integer is below
round((1 - p) * 2**16): the drop probability is p to within 0.1 % of p (p = 0.05 drops 0.0500031, p = 0.1
0.1000061); a p that no 16-bit fraction matches that closely (some below 0.008) gets 32-bit integers, to within 2**-32
as torch's float draws. Half the random bits of 32-bit draws: 0.4 against 1.1 ms for 1024 x 576 elements on one AVX2
core. Other devices keep torch's `bernoulli_`.

`fuse` switches every plain LoRA projection (no DoRA or other variant, no LoRA bias, a `torch.nn.Linear` base) to
this path; it is taken in training mode with one adapter active and every product in one dtype (fp32 on a CPU, one
dtype throughout, or on a CPU a bf16 input over a bf16 frozen base under autocast, the adapter weights cast to bf16
as autocast would: `session.bf16_frozen_base`), with or without gradients recorded (so that reentrant gradient
checkpointing, whose first pass runs without them, draws the same masks as its replay). Evaluation, merging,
autocast over fp32 base weights (see `FusedLoraLinear.forward`), disabled adapters (TRL's reference passes), several
active adapters and anything else go through PEFT's own forward, and the saved adapter is the same file. On those
forwards the layer's dropout is `LoraDropout`: torch's arithmetic (`x * keep / (1 - p)`) with the masks above, kept
as bits, where torch's CPU dropout keeps a float noise tensor (4 bytes an element, as large as lora_A's input in
fp32) drawn one Mersenne-Twister number an element (SmolLM2-135M, 2 x 512 tokens, r 16 all-linear, dropout 0.05,
bf16 autocast over fp32 weights: what the forward pass keeps for backward, 1,741 -> 1,180 MiB).
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_INT_OF_WIDTH = {1: "int8", 2: "int16", 4: "int32", 8: "int64"}
_THREAD = threading.local()  # `generator`: where this thread's masks are seeded from (`masks_from`); unset: torch's


@contextmanager
def masks_from(seed: int) -> Iterator[None]:
    """In this thread, the dropout masks' seeds come from a generator of its own seeded with `seed`, not from torch's
    global one: the parts of a batch that `row_parallel` runs on several threads at once draw their masks in an order
    that does not depend on which thread gets ahead."""
    import torch

    _THREAD.generator = torch.Generator().manual_seed(seed)
    try:
        yield
    finally:
        _THREAD.generator = None


def _draw(p: float) -> tuple[int, int]:
    """Bits drawn per element for dropout p and the keep threshold: 16 bits when the 16-bit fraction nearest 1 - p is
    off by at most 0.1 % of p (p = 0.05: 62259 / 2**16, off by 3e-6), else 32."""
    q = 1 - p
    threshold = round(q * 2**16)
    if threshold < 2**16 and abs(threshold / 2**16 - q) <= 1e-3 * p:
        return 16, threshold
    return 32, min(round(q * 2**32), 2**32 - 1)


def keep_mask(like: Any, p: float) -> Any:
    """A boolean tensor shaped and placed like `like`: True (keep) with probability 1 - p, independently per element
    (see the module for how it is drawn)."""
    import numpy as np
    import torch

    if like.device.type != "cpu":
        return torch.empty_like(like).bernoulli_(1 - p).bool()
    seed = int(torch.randint(0, 2**62, (1,), generator=getattr(_THREAD, "generator", None)))
    n = math.prod(like.shape)
    bits, threshold = _draw(p)
    words = np.random.Generator(np.random.SFC64(seed)).bit_generator.random_raw((n * bits + 63) // 64)
    keep = words.view(np.uint16 if bits == 16 else np.uint32)[:n] < threshold
    return torch.from_numpy(keep).view(like.shape)


def _pack(keep: Any) -> Any:
    """A CPU mask as bits (8 to a byte); a mask on another device as it is."""
    import numpy as np
    import torch

    if keep.device.type != "cpu":
        return keep
    return torch.from_numpy(np.packbits(keep.numpy().reshape(-1)))


def _unpack(packed: Any, shape: Any) -> Any:
    import numpy as np
    import torch

    if packed.dtype == torch.bool:
        return packed
    bits = np.unpackbits(packed.numpy(), count=math.prod(shape))
    return torch.from_numpy(bits.view(np.bool_)).view(shape)


def _bits(keep: Any, like: Any) -> Any:
    """The mask as integers of `like`'s width: all ones where kept, zero where dropped."""
    import torch

    return keep.to(getattr(torch, _INT_OF_WIDTH[like.element_size()])).neg_()


def _and(values: Any, bits: Any) -> Any:
    """`values` where `bits` is all ones, +0 where it is zero (a new tensor)."""
    import torch

    return torch.bitwise_and(values.contiguous().view(bits.dtype), bits).view(values.dtype)


@functools.cache
def _function() -> Any:
    """The autograd function (every tensor in one dtype: `FusedLoraLinear.forward` sends the rest to PEFT)."""
    import torch

    class LoraLinear(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any, weight: Any, bias: Any, a: Any, b: Any, scaling: float, p: float) -> Any:
            shape = x.shape
            x2 = x.reshape(-1, shape[-1])
            y = torch.nn.functional.linear(x2, weight, bias)
            keep = keep_mask(x2, p) if p > 0 else None
            dropped = x2 if keep is None else _and(x2, _bits(keep, x2))
            t = torch.mm(dropped, a.t())
            if keep is not None:
                t.mul_(1 / (1 - p))
            y.addmm_(t, b.t(), alpha=scaling)
            ctx.scaling, ctx.p, ctx.shape = scaling, p, shape
            ctx.save_for_backward(x2, None if keep is None else _pack(keep), weight, a, b, t)
            return y.view(*shape[:-1], y.shape[-1])

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            x2, packed, weight, a, b, t = ctx.saved_tensors
            need_x, _, _, need_a, need_b = ctx.needs_input_grad[:5]  # the base weights are frozen (see fuse)
            g = grad.reshape(-1, grad.shape[-1])
            g_t = torch.mm(g, b).mul_(ctx.scaling)  # the gradient at t
            grad_b = torch.mm(g.t(), t).mul_(ctx.scaling) if need_b else None
            bits = None if packed is None else _bits(_unpack(packed, x2.shape), x2)
            if ctx.p > 0:
                g_t.mul_(1 / (1 - ctx.p))  # the gradient at the masked input, before the mask
            grad_a = None
            if need_a:
                dropped = x2 if bits is None else _and(x2, bits)
                grad_a = torch.mm(g_t.t(), dropped)
            grad_x = None
            if need_x:
                grad_x = torch.mm(g, weight)
                if bits is None:
                    grad_x.addmm_(g_t, a)
                else:
                    grad_x.add_(_and(torch.mm(g_t, a), bits))
                grad_x = grad_x.view(ctx.shape)
            return grad_x, None, None, grad_a, grad_b, None, None

    return LoraLinear


@functools.cache
def _dropout_class() -> Any:
    """`LoraDropout`: the dropout of the LoRA layers `fuse` switches, for the forwards that stay PEFT's (autocast, mixed
    dtypes, several adapters)."""
    import torch

    class MaskedDropout(torch.autograd.Function):
        """`x * keep / (1 - p)` with `keep_mask`'s mask, applied as a bitwise AND and kept as bits for backward."""

        @staticmethod
        def forward(ctx: Any, x: Any, p: float) -> Any:
            keep = keep_mask(x, p)
            ctx.p, ctx.shape = p, x.shape
            ctx.save_for_backward(_pack(keep))
            return _and(x, _bits(keep, x)).mul_(1 / (1 - p))

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            (packed,) = ctx.saved_tensors
            return _and(grad, _bits(_unpack(packed, ctx.shape), grad)).mul_(1 / (1 - ctx.p)), None

    class LoraDropout(torch.nn.Dropout):
        """torch's `Dropout` (same `p`, same arithmetic) drawing `keep_mask`'s masks on a CPU in training. torch's CPU
        dropout multiplies by a float noise tensor and keeps it for backward: 4 bytes an element (lora_A's input is
        as large), drawn one Mersenne-Twister number an element; this keeps the mask as bits. Elsewhere, torch's."""

        def forward(self, x: Any) -> Any:
            if not self.training or self.p == 0 or self.inplace or x.device.type != "cpu":
                return super().forward(x)
            return MaskedDropout.apply(x, float(self.p))

    return LoraDropout


@functools.cache
def _layer_class() -> Any:
    import torch
    from peft.tuners.lora import Linear as PeftLinear

    class FusedLoraLinear(PeftLinear):
        """PEFT's LoRA `Linear` (same parameters, state dict and other paths) with the training path of `_function`."""

        def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
            name = self.active_adapters[0] if len(self.active_adapters) == 1 else None
            if (
                name is None
                or args
                or kwargs
                or self.disable_adapters
                or self.merged
                or name not in self.lora_A
                or name in self.lora_variant
                or not self.training
            ):
                return super().forward(x, *args, **kwargs)
            base, a, b = self.base_layer, self.lora_A[name].weight, self.lora_B[name].weight
            frozen = not base.weight.requires_grad and (base.bias is None or not base.bias.requires_grad)
            # One dtype for every product: the input, the base weight and the adapter's. Without autocast they must
            # already agree (PEFT casts a bf16 input for fp32 adapters: a GPU run). Under CPU autocast, a bf16 input
            # over a bf16 base (`session.bf16_frozen_base`) takes bf16 copies of the fp32 adapter weights, as autocast's
            # own products would; an fp32 input (fp32 base weights, autocast casting them at each use) stays PEFT's:
            # trained through this path, PiSSA/OLoRA runs over fp32 weights came out more sensitive to bf16 rounding
            # than PEFT's (two equal factorisations 3-10x further apart; cause not found).
            autocast = torch.is_autocast_enabled(x.device.type)
            cpu_bf16 = x.device.type == "cpu" and x.dtype == base.weight.dtype == torch.get_autocast_dtype("cpu")
            if autocast and frozen and cpu_bf16:
                a, b = a.to(x.dtype), b.to(x.dtype)
            elif autocast or not (frozen and x.dtype == a.dtype == b.dtype == base.weight.dtype):
                return super().forward(x, *args, **kwargs)
            dropout = self.lora_dropout[name]
            p = float(dropout.p) if isinstance(dropout, torch.nn.Dropout) else 0.0
            scaling = float(self.scaling[name])
            return _function().apply(x, base.weight, base.bias, a, b, scaling, p)

    return FusedLoraLinear


def fuse(model: Any) -> int:
    """Every plain LoRA projection of `model` takes the fused training path (see the module): a `torch.nn.Linear`
    base, plain `Linear` A and B without bias, no variant (DoRA ...), dropout a `torch.nn.Dropout` or none; that
    dropout becomes a `LoraDropout` (wb's masks, kept as bits) for the forwards that stay PEFT's. Returns the modules
    changed."""
    import torch
    from peft.tuners.lora import Linear as PeftLinear

    cls, dropout = _layer_class(), _dropout_class()
    changed = 0
    for module in model.modules():
        if type(module) is not PeftLinear or module.fan_in_fan_out or type(module.base_layer) is not torch.nn.Linear:
            continue
        plain = all(
            type(module.lora_A[name]) is torch.nn.Linear
            and type(module.lora_B[name]) is torch.nn.Linear
            and module.lora_B[name].bias is None
            and type(module.lora_dropout[name]) in (torch.nn.Dropout, torch.nn.Identity)
            and name not in module.lora_variant
            for name in module.lora_A
        )
        if plain:
            module.__class__ = cls
            for layer in module.lora_dropout.values():
                if type(layer) is torch.nn.Dropout:
                    layer.__class__ = dropout
            changed += 1
    return changed
