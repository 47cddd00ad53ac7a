"""`wb export`: a run's adapter merged into its base model, or the adapter alone, as safetensors folders.

The merged folder loads with plain `transformers.AutoModelForCausalLM.from_pretrained` (no PEFT, no wb). Every kind
carries the run's chat template, its stop tokens and the template's fingerprint (`bundle`), a model card
(`README.md`, `card`) and records what it is in `wb_export.json`. Each output is built in a temporary folder beside
the target and renamed into place when complete.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WbError
from workbench.export.bundle import write_bundle
from workbench.export.card import CardInput, ServeSection, write_card
from workbench.export.gguf import QUANTS, llama_config, write_folder
from workbench.export.modelfile import gguf_section
from workbench.io.jsontext import write_json
from workbench.manifest import build_manifest
from workbench.methods import registry
from workbench.models.base import load_adapter, load_model, resolve_model
from workbench.models.folders import StatusFn, publish_folder, temp_dir_beside
from workbench.models.stack import quiet_transformers
from workbench.models.targets import ADAPTER_INFO, EXPORT_INFO, Target, resolve_target

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass
class Exported:
    path: Path
    kind: str
    files: list[str]
    warnings: list[str] = field(default_factory=list)
    gate: Any = None  # the gate's verdict (report.gate.GateResult) when a threshold file was given


def export(
    run: Path,
    out: Path,
    merge: bool,
    dtype: str = "auto",
    force: bool = False,
    on_status: StatusFn | None = None,
    gate: Path | None = None,
    serving: Sequence[ServeSection] = (),
    gguf_quant: str | None = None,
) -> Exported:
    """Write the run's adapter (merge=False) or base+adapter merged (merge=True) to `out`, with its model card: the
    gate's verdict in it when `gate` (a threshold file) is given, and `serving` as extra "how to serve" sections.
    With `gguf_quant` (f16, q8_0) the merged or whole model is also written as `model.gguf` with an Ollama
    `Modelfile` (`gguf`, `modelfile`)."""
    started = time.time()
    target = resolve_target(run)
    if target.run_dir is None and target.adapter is None:
        raise WbError(f"{run}: not a run folder (recipe.yaml) or an adapter folder (adapter_config.json)")
    check_out(out, force)
    if gguf_quant is not None:
        merge = _check_gguf(target, gguf_quant)
    if target.adapter is None:  # freeze/full runs already hold a whole model
        if not merge:
            raise WbError(f"{run}: a {target.method} run has no adapter, only a whole model; use --merge to copy it")
        kind = "model"
    else:
        kind = "merged" if merge else "adapter"
        spec = registry.find(target.method or "lora")  # which adapters merge, and why not: the method's spec
        if merge and not (spec is not None and spec.merges) and not _is_lora(target.adapter):
            why = spec.merge_note if spec is not None else "adapters"
            raise WbError(f"{run}: {target.method} {why} and cannot be merged into the weights; use --adapter-only")
    out.parent.mkdir(parents=True, exist_ok=True)
    with temp_dir_beside(out) as tmp:
        if kind == "adapter":
            assert target.adapter is not None
            _copy_adapter(target, tmp)
        elif kind == "merged":
            _merge(target, tmp, dtype, on_status)
        else:
            shutil.copytree(Path(target.base), tmp, dirs_exist_ok=True)
        bundle = write_bundle(target, tmp, on_status)
        if gguf_quant is not None:  # from the folder just written: its weights, and its tokenizer with the template
            bundle.warnings += write_folder(tmp, tmp, gguf_quant, bundle.kind, target.name)
            serving = [*serving, gguf_section(out, target.name)]
        if kind == "adapter":  # loads alone: the template it carries, and what the run trained with
            info = {"base_model": target.base, "template": bundle.kind, "method": target.method, **bundle.record()}
            write_json(tmp / ADAPTER_INFO, info)
        lora = target.adapter is not None and _is_lora(target.adapter)
        card = CardInput(out.name, kind, target.base, target.method, bundle.record(), target.run_dir, lora)
        verdict = write_card(tmp, card, gate, serving)
        manifest = build_manifest(
            command="export",
            started=started,
            inputs={},
            outputs={},
            config={"run": str(run), "merge": merge, "dtype": dtype, "kind": kind, "gguf": gguf_quant},
        )
        manifest.update({"base_model": target.base, "method": target.method, "template": bundle.source})
        manifest.update(bundle.record())
        write_json(tmp / EXPORT_INFO, manifest)
        files = sorted(p.name for p in tmp.iterdir())
        if force and out.exists():
            shutil.rmtree(out)
        publish_folder(tmp, out)
    return Exported(out, kind, files, bundle.warnings, verdict)


def _check_gguf(target: Target, quant: str) -> bool:
    """A GGUF export merges; the quantisation and the architecture are checked before anything is merged."""
    if quant not in QUANTS:
        raise WbError(f"--quant {quant}: choose one of {', '.join(QUANTS)}")
    base = Path(target.base)
    llama_config(base if (base / "config.json").is_file() else resolve_model(target.base))
    return True


def _is_lora(adapter: Path) -> bool:
    """A LoRA adapter (also those of the preference methods: dpo, kto, reward, ...), which merges into the weights."""
    try:
        config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("peft_type") == "LORA"


def check_out(out: Path, force: bool) -> None:
    """An export's folder must not exist (an empty one is taken) unless `force` replaces it when the export is done."""
    if out.exists() and not force:
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
            return
        raise WbError(f"{out}: already exists; choose another folder or pass --force to replace it")


def _copy_adapter(target: Target, dest: Path) -> None:
    assert target.adapter is not None
    for p in target.adapter.iterdir():
        if p.is_file() and not p.name.endswith((".bin", ".pt", ".pth", ".pkl")):
            shutil.copy2(p, dest / p.name)


def _merge(target: Target, dest: Path, dtype: str, on_status: StatusFn | None) -> None:
    if on_status is not None:
        on_status(f"merging {target.adapter} into {target.base}")
    head = "reward" if registry.scores_only(target.method) else "causal_lm"  # a reward run: its head is merged too
    base = load_model(target.base, dtype=dtype, on_status=on_status, head=head)
    assert target.adapter is not None
    model: Any = load_adapter(base, target.adapter)
    merged = model.merge_and_unload()
    with quiet_transformers():
        merged.save_pretrained(dest, safe_serialization=True)
    config_path = dest / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.pop("quantization_config", None)  # a QLoRA base is merged in full precision
    write_json(config_path, config)
