"""Compute precision: the one place that decides whether model work runs in fp32 or under bf16 autocast, and why.

`auto` picks bf16 where the hardware computes it natively and fp32 elsewhere; `bf16` and `fp32` force it. On a
CPU, bf16 is `torch.autocast("cpu", dtype=torch.bfloat16)` around the forward pass: the weights, the optimizer
state and the trained (LoRA) parameters stay fp32, only the matrix products run in bf16. Casting the weights
themselves to bf16 is a trap on CPU: generation measured about 6x *slower* than fp32 (ARCHITECTURE.md).

Whether a CPU has native bf16 units is torch's own answer, not a list of CPU names: AMX tiles
(`torch.cpu._is_amx_tile_supported`), AVX512-BF16 (`torch.cpu._is_avx512_bf16_supported`), or on Arm the bf16
extension (`torch.ops.mkldnn._is_mkldnn_bf16_supported`, which on x86 only asks for AVX512 and so says yes where
bf16 would be emulated). On a GPU, `auto` is bf16 where `torch.cuda.is_bf16_supported()`.

torch is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from workbench.errors import WbError

Precision = Literal["auto", "bf16", "fp32"]
PRECISION_HELP = (
    "Compute precision: auto (bf16 autocast where the CPU or GPU has native bf16 units, else fp32), bf16 or fp32."
)


@dataclass(frozen=True)
class Choice:
    """The precision work runs in (`fp32`, `bf16` or, for training on a GPU, `fp16`), on which device, and why."""

    name: str
    device: str
    reason: str

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on the device for bf16, else nothing: weights keep their own dtype either way."""
        if self.name != "bf16":
            return contextlib.nullcontext()
        import torch

        return torch.autocast(self.device, dtype=torch.bfloat16)

    def inference(self) -> contextlib.AbstractContextManager[Any]:
        """No gradients, under `autocast()`: what a forward pass that trains nothing runs in. fp32 (and fp16) is
        `torch.inference_mode()`. bf16 is `torch.no_grad()` instead: autocast keeps the bf16 copy of each weight it
        casts until the block ends only outside inference mode (its cast cache holds leaf tensors that require
        grad, and inference mode bypasses it), so under inference mode every forward pass casts every weight
        again, each decoding step of generation included. On one AVX2 core an output-head product (16 x 576 by
        576 x 49,152) took 163 ms under inference mode, 102 ms under no_grad, 100 ms with the weight cast once.
        The copies (half the fp32 weights' size) live until the block ends."""
        import torch

        if self.name != "bf16":
            return torch.inference_mode()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.no_grad())
        stack.enter_context(self.autocast())
        return stack

    def packed(self, model: Any) -> contextlib.AbstractContextManager[int]:
        """For a block of forward passes that train nothing (inside `inference()`): under bf16 on a CPU with AMX,
        each of `model`'s linear layers runs on a bf16 copy of its weight packed once, for the block, into oneDNN's
        blocked layout (`torch.ops.mkldnn._reorder_linear_weight`, what inductor's CPU freezing uses), instead of
        the copy autocast casts and oneDNN then reorders again at every call. The numbers are the same as
        autocast's (the same bf16 product; tested bit for bit), the copies as large as autocast's cast cache.
        Measured on one core of a 2-core AMX Xeon, SmolLM2-135M, 16 prompts x 32 new tokens: the 210 products of
        a decoding step 34.8 -> 24.3 ms, a whole batch-16 generation 3.5 -> 3.1 s; products of 1,344 rows 239 ->
        216 ms. Elsewhere (fp32, a GPU, no AMX: unmeasured there) it does nothing. Yields how many layers it
        packed."""
        return _packed_linears(model) if self.name == "bf16" and self.device == "cpu" else contextlib.nullcontext(0)

    def record(self) -> dict[str, str]:
        """What a manifest stores: the precision used and why."""
        return {"precision": self.name, "precision_reason": self.reason}


#: Set to 1 or 0 to answer the native-bf16 question instead of the hardware: `auto` then resolves as it would on a
#: CPU with (1) or without (0) bf16 units. The test suite sets 0 so it gives the same numbers on every CPU, and sets
#: 1 where a test checks what an AMX or AVX512-BF16 machine would do; a user can reproduce another machine's `auto`.
CPU_BF16_ENV = "WB_CPU_BF16"


def forced_cpu_bf16() -> bool | None:
    """`WB_CPU_BF16`'s answer to whether the CPU has native bf16 units: True for 1, False for 0, None when it is unset
    or holds anything else (`cpu_bf16_units` refuses that; torch is not imported here)."""
    return {"1": True, "0": False}.get(os.environ.get(CPU_BF16_ENV, "").strip())


def cpu_bf16_units() -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively, with the capability that says so (or what is missing)."""
    import torch

    forced = forced_cpu_bf16()
    if forced is True:
        return True, f"{CPU_BF16_ENV}=1: treated as a CPU with native bf16 units"
    if forced is False:
        return False, f"{CPU_BF16_ENV}=0: treated as a CPU without native bf16 units, so bf16 would be emulated"
    if value := os.environ.get(CPU_BF16_ENV, "").strip():
        raise WbError(f"{CPU_BF16_ENV}={value!r}: set it to 1 (native bf16 units) or 0 (none), or unset it")
    if not torch.backends.mkldnn.is_available():
        return False, "this torch build has no oneDNN (mkldnn) backend for bf16 on CPU"
    if _query(torch.cpu, "_is_amx_tile_supported"):
        return True, "the CPU has AMX tiles (torch.cpu._is_amx_tile_supported)"
    if _query(torch.cpu, "_is_avx512_bf16_supported"):
        return True, "the CPU has AVX512-BF16 (torch.cpu._is_avx512_bf16_supported)"
    if platform.machine().lower() in ("aarch64", "arm64") and _query(torch.ops.mkldnn, "_is_mkldnn_bf16_supported"):
        return True, "the Arm CPU has bf16 instructions (torch.ops.mkldnn._is_mkldnn_bf16_supported)"
    return False, "the CPU has no native bf16 units (no AMX, AVX512-BF16 or Arm bf16): bf16 would be emulated"


#: The rows oneDNN packs a weight for (its hint of the batch size); 16 was as fast as 1 for one row and faster for
#: 16 to 1,344 rows (products of SmolLM2-135M's shapes, one AMX core).
PACK_ROWS = 16


class _PackedLinear:
    """The forward pass of one `torch.nn.Linear` on its weight packed once (see `Choice.packed`); with gradients
    on, the layer's own (the packed product has no backward pass)."""

    def __init__(self, linear: Any) -> None:
        import torch

        self.linear = linear
        self.weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach().to(torch.bfloat16), PACK_ROWS)
        self.bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)

    def __call__(self, x: Any) -> Any:
        import torch

        if torch.is_grad_enabled():
            return torch.nn.functional.linear(x, self.linear.weight, self.linear.bias)
        rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16).contiguous()
        y = torch.ops.mkldnn._linear_pointwise(rows, self.weight, self.bias, "none", [], "")
        return y.reshape(*x.shape[:-1], y.shape[-1])


def packs_linears() -> bool:
    """Whether `Choice.packed` packs on this machine: an x86 CPU with AMX tiles (the one kind measured) and the
    oneDNN operators it calls. The hardware's answer, not `WB_CPU_BF16`'s (packing is not emulated)."""
    import torch

    return (
        torch.backends.mkldnn.is_available()
        and _query(torch.cpu, "_is_amx_tile_supported")
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


@contextlib.contextmanager
def _packed_linears(model: Any) -> Iterator[int]:
    import torch

    if not packs_linears():
        yield 0
        return
    linears = [
        m
        for m in model.modules()
        if type(m) is torch.nn.Linear  # not a subclass (quantised layers, wb's own), nor one already packed
        and "forward" not in vars(m)
        and m.weight.device.type == "cpu"
        and m.weight.dtype in (torch.float32, torch.bfloat16)
    ]
    try:
        for m in linears:
            vars(m)["forward"] = _PackedLinear(m)  # an instance attribute: nn.Module.__call__ calls it
        yield len(linears)
    finally:
        for m in linears:
            vars(m).pop("forward", None)


def _query(namespace: Any, name: str) -> bool:
    probe = getattr(namespace, name, None)
    return bool(probe()) if callable(probe) else False


def resolve(wanted: str, device: str = "cpu") -> Choice:
    """`auto`, `bf16`, `fp32` (or `fp16` on a GPU) as the precision to run in on `device` ("cpu" or "cuda")."""
    import torch

    if device != "cpu":
        if wanted != "auto":
            return Choice(wanted, device, f"precision {wanted} was asked for")
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return Choice("bf16", device, "auto: the GPU supports bf16 (torch.cuda.is_bf16_supported)")
        return Choice("fp32", device, "auto: the GPU does not support bf16")
    if wanted == "fp16":
        raise WbError("precision: fp16 needs a GPU; on CPU use auto, bf16 or fp32")
    native, why = cpu_bf16_units()
    if wanted == "auto":
        return Choice("bf16" if native else "fp32", device, f"auto: {why}")
    if wanted == "bf16":
        return Choice("bf16", device, "precision bf16 was asked for" + ("" if native else f" ({why}: slower)"))
    if wanted == "fp32":
        return Choice("fp32", device, "precision fp32 was asked for")
    raise WbError(f"precision: {wanted!r} is not one of auto, bf16, fp32")


def for_model(wanted: str, model: Any) -> Choice:
    """The precision to run `model` in, on the device its parameters are on."""
    return resolve(wanted, next(model.parameters()).device.type)


def for_training(wanted: str, quantized: bool = False) -> Choice:
    """The precision a training run uses: on a GPU if there is one, else on the CPU.

    A base in 4-bit (QLoRA, `quantized`) on CPU stays fp32: bitsandbytes' 4-bit layers there dequantise to their
    compute dtype, measured and tested in fp32 only (ARCHITECTURE.md), so `auto` picks fp32 and `bf16` is refused.
    """
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and quantized:
        if wanted == "bf16":
            raise WbError("precision: bf16: QLoRA on CPU computes in fp32 (bitsandbytes); use auto or fp32")
        if wanted == "fp16":
            raise WbError("precision: fp16 needs a GPU; on CPU use auto or fp32")
        return Choice("fp32", device, "QLoRA on CPU: bitsandbytes' 4-bit layers compute in fp32 here")
    return resolve(wanted, device)
