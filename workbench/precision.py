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

    def record(self) -> dict[str, str]:
        """What a manifest stores: the precision used and why."""
        return {"precision": self.name, "precision_reason": self.reason}


#: Set to 1 or 0 to answer the native-bf16 question instead of the hardware: `auto` then resolves as it would on a
#: CPU with (1) or without (0) bf16 units. The test suite sets 0 so it gives the same numbers on every CPU, and sets
#: 1 where a test checks what an AMX or AVX512-BF16 machine would do; a user can reproduce another machine's `auto`.
CPU_BF16_ENV = "WB_CPU_BF16"


def cpu_bf16_units() -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively, with the capability that says so (or what is missing)."""
    import torch

    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced == "1":
        return True, f"{CPU_BF16_ENV}=1: treated as a CPU with native bf16 units"
    if forced == "0":
        return False, f"{CPU_BF16_ENV}=0: treated as a CPU without native bf16 units, so bf16 would be emulated"
    if forced:
        raise WbError(f"{CPU_BF16_ENV}={forced!r}: set it to 1 (native bf16 units) or 0 (none), or unset it")
    if not torch.backends.mkldnn.is_available():
        return False, "this torch build has no oneDNN (mkldnn) backend for bf16 on CPU"
    if _query(torch.cpu, "_is_amx_tile_supported"):
        return True, "the CPU has AMX tiles (torch.cpu._is_amx_tile_supported)"
    if _query(torch.cpu, "_is_avx512_bf16_supported"):
        return True, "the CPU has AVX512-BF16 (torch.cpu._is_avx512_bf16_supported)"
    if platform.machine().lower() in ("aarch64", "arm64") and _query(torch.ops.mkldnn, "_is_mkldnn_bf16_supported"):
        return True, "the Arm CPU has bf16 instructions (torch.ops.mkldnn._is_mkldnn_bf16_supported)"
    return False, "the CPU has no native bf16 units (no AMX, AVX512-BF16 or Arm bf16): bf16 would be emulated"


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
