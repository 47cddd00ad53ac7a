"""Run manifests: what ran, on what, with which versions, how long and how much memory.

Versions are read from package metadata, so building a manifest never imports torch or transformers.
"""

from __future__ import annotations

import platform
import resource
import sys
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from workbench import __version__
from workbench.io.streams import sha256_path

PACKAGES = ("polars", "pydantic", "orjson", "torch", "transformers", "peft", "datasketch")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"wb": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports ru_maxrss in KiB, macOS in bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20) if sys.platform == "darwin" else peak / 1024, 1)


def _file_entry(path: Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():  # a dataset folder (save_to_disk or a hub snapshot)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return {"path": str(path), "bytes": size, "sha256": sha256_path(path)}
    if not path.is_file():
        return {"path": str(path), "exists": False}
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_path(path)}


def build_manifest(
    command: str,
    started: float,
    inputs: dict[str, Path],
    outputs: Mapping[str, Path | dict[str, Any]],
    config: dict[str, Any],
    seed: int | None = None,
) -> dict[str, Any]:
    return {
        "command": command,
        "argv": sys.argv,
        "versions": package_versions(),
        "platform": platform.platform(),
        "seed": seed,
        "config": config,
        "inputs": {k: _file_entry(p) for k, p in inputs.items()},
        "outputs": {k: p if isinstance(p, dict) else _file_entry(p) for k, p in outputs.items()},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_seconds": round(time.time() - started, 3),
        "peak_rss_mb": peak_rss_mb(),
    }
