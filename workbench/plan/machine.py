"""The machine `wb plan` plans for: a memory size a user writes (`24GB`), the GPU torch sees or the RAM available to
a new process (bounded by a cgroup limit), and the compute precision a run would use there (as
`workbench.precision` decides it).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import WbError
from workbench.methods.sizing import Device

GIB = 1 << 30
UNITS = {"": None, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


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
