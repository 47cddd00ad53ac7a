"""The one safetensors check: wb loads and writes safetensors only, so a base model folder without
`model.safetensors` (`check_weights`), an adapter without `adapter_model.safetensors` or a Trainer checkpoint whose
weights are pickles (`check_adapter_weights`) is refused with one line naming what the folder holds instead, before
transformers, PEFT or the Trainer could fall back to `torch.load`. Light: it reads file names only.
"""

from __future__ import annotations

from pathlib import Path

from workbench.errors import WbError

SAFETENSORS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def weights_kind(folder: Path) -> str:
    """`safetensors`, `pickle` (only .bin/.pt/... weights) or `none`."""
    if any((folder / name).is_file() for name in SAFETENSORS_WEIGHTS):
        return "safetensors"
    if any(p.suffix in PICKLE_SUFFIXES for p in folder.iterdir() if p.is_file()):
        return "pickle"
    return "none"


def check_weights(spec: str | Path, folder: Path) -> None:
    """Refuse a folder without safetensors weights, naming what it has instead."""
    kind = weights_kind(folder)
    if kind == "pickle":
        names = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        raise WbError(
            f"model '{spec}': {folder} has only pickle weights ({', '.join(names[:3])}); wb loads safetensors only "
            "— convert them to model.safetensors with a tool you trust, or use a model that ships safetensors"
        )
    if kind == "none":
        raise WbError(f"model '{spec}': {folder} has no model.safetensors; pass a complete model folder")


def check_adapter_weights(folder: Path, what: str = "adapter") -> None:
    """Refuse an adapter folder (`what` "adapter") without `adapter_model.safetensors`, or a Trainer checkpoint
    (`what` "checkpoint") whose weights are pickles, before PEFT or the Trainer reads it: both fall back to
    `torch.load` of `adapter_model.bin` / `pytorch_model.bin` when no safetensors file is there. A checkpoint holding
    no weights file at all (FSDP's or DeepSpeed's sharded state) is the Trainer's to read."""
    folder = Path(folder)
    wanted = (ADAPTER_WEIGHTS,) if what == "adapter" else (ADAPTER_WEIGHTS, *SAFETENSORS_WEIGHTS)
    if any((folder / name).is_file() for name in wanted):
        return
    pickles = sorted(p.name for p in folder.glob("*") if p.is_file() and p.suffix in PICKLE_SUFFIXES)
    if what != "adapter":  # a checkpoint's optimizer.pt, scheduler.pt and rng_state.pth are not its weights
        pickles = [name for name in pickles if name.startswith(("adapter_model", "pytorch_model"))]
    if pickles:
        raise WbError(
            f"{what} {folder}: only pickle weights ({', '.join(pickles[:3])}), no {' or '.join(wanted[:2])}; "
            "wb loads safetensors only — save it with safe_serialization=True, or convert it with a tool you trust"
        )
    if what == "adapter":
        raise WbError(f"{what} {folder}: no {ADAPTER_WEIGHTS}; pass a complete adapter folder or run folder")
