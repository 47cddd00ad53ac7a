"""What a tuned model is made of, and loading it for generation.

A *target* is what `wb generate`, `wb chat`, `wb eval` and `wb export` are pointed at: a run folder
(`runs/<name>`, holding `recipe.yaml` and `adapter/` or `model/`; its files are read through
`workbench.runfile.folder`), an adapter folder (PEFT, or wb's bottleneck adapter, e.g. from `wb export
--adapter-only`), or a base model spec (`embedded`, a folder, a cached hub id). Several adapters over one base load
into one model (PEFT adapters into a PEFT model, bottleneck adapters into the base's layers) and are switched by name
at generation time.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WbError
from workbench.methods.registry import scores_only
from workbench.models import adapters
from workbench.models.base import load_adapter, load_model, load_tokenizer, resolve_model
from workbench.models.embedded import EMBEDDED
from workbench.models.folders import StatusFn
from workbench.models.weights import check_adapter_weights
from workbench.quiet import quiet_libraries
from workbench.runfile.folder import RunFolder

ADAPTER_INFO = "wb_adapter.json"  # written beside an exported adapter: its base model spec and template
EXPORT_INFO = "wb_export.json"  # written into every `wb export` folder: what was exported, its template fingerprint


@dataclass(frozen=True)
class RecordedTemplate:
    """The template fingerprint a run or an export recorded (`template_sha256`), and where."""

    sha256: str
    template: str
    where: str


@dataclass(frozen=True)
class Target:
    """A base model, plus the adapter (if any) that makes it the tuned model."""

    name: str
    base: str
    adapter: Path | None = None
    template: str = "auto"
    method: str | None = None
    run_dir: Path | None = None
    recorded: RecordedTemplate | None = None

    @property
    def label(self) -> str:
        return self.name

    @property
    def bottleneck(self) -> bool:
        """Whether the adapter is one of wb's bottleneck adapters (not a PEFT adapter)."""
        return self.adapter is not None and adapters.is_adapter_folder(self.adapter)


def resolve_target(spec: str | Path) -> Target:
    """A run folder, an adapter folder or a model spec, as a Target (no model is loaded); an adapter without
    safetensors weights is refused here, before any command reads or copies it."""
    path = Path(spec).expanduser()
    if RunFolder(path).is_run():
        target = _run_target(RunFolder(path))
    elif path.is_dir() and ((path / "adapter_config.json").is_file() or adapters.is_adapter_folder(path)):
        target = _adapter_target(path)
    else:
        return Target(name=str(spec), base=str(spec), recorded=_recorded(_json(path / EXPORT_INFO), path / EXPORT_INFO))
    if target.adapter is not None:
        check_adapter_weights(target.adapter)
    return target


def _run_target(folder: RunFolder) -> Target:
    run = folder.path
    recipe = folder.recipe()
    template = (folder.manifest() or {}).get("template") or recipe.get("template", "auto")
    from workbench.models import templates as tdata

    if template == tdata.RUN_TEMPLATE_FILE:  # the run's own copy of a template file
        template = str(run / tdata.RUN_TEMPLATE_FILE)
    method = recipe.get("method")
    recorded = _recorded(folder.manifest() or {}, folder.manifest_path)
    if (run / "adapter" / "adapter_config.json").is_file() or adapters.is_adapter_folder(run / "adapter"):
        base = str(recipe.get("model") or EMBEDDED)
        return Target(run.name, base, run / "adapter", template, method, run, recorded)
    if (run / "model" / "config.json").is_file():
        return Target(run.name, str(run / "model"), None, template, method, run, recorded)
    raise WbError(
        f"{run}: the run has no adapter/ or model/ yet (not finished?); finish it with `wb train --resume {run}`"
    )


def _adapter_target(folder: Path) -> Target:
    info = _json(folder / ADAPTER_INFO)
    recorded = _recorded(info, folder / ADAPTER_INFO) or _recorded(_json(folder / EXPORT_INFO), folder / EXPORT_INFO)
    config = _json(folder / "adapter_config.json")
    base = info.get("base_model") or config.get("base_model_name_or_path")
    if not base:
        raise WbError(f"{folder}: adapter_config.json names no base model; pass the run folder instead")
    method = info.get("method") or str(config.get("peft_type", "")).lower() or None
    if adapters.is_adapter_folder(folder):
        method = "adapter"
    return Target(folder.name, str(base), folder, str(info.get("template", "auto")), method, None, recorded)


def _recorded(info: dict[str, Any], where: Path) -> RecordedTemplate | None:
    sha = info.get("template_sha256")
    if not isinstance(sha, str) or not sha:
        return None
    return RecordedTemplate(sha, str(info.get("template_source") or info.get("template") or "?"), str(where))


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise WbError(f"{path}: not valid JSON: {e}") from None
    return data if isinstance(data, dict) else {}


@dataclass
class Loaded:
    """A model ready to generate: adapters loaded by name; `use(name)` switches, `use(None)` is the bare base."""

    model: Any
    tokenizer: Any
    template: str
    base: str
    adapter_dirs: dict[str, Path] = field(default_factory=dict)
    active: str | None = None
    bottleneck: bool = False  # the adapters are wb's bottleneck adapters (switched in workbench.models.adapters)
    weights_sha256: str | None = None  # weights that are not files (a model in training): their hash, for caches
    template_sha256: str | None = None  # the fingerprint of the template prompts are rendered with (when checked)
    warnings: list[str] = field(default_factory=list)  # a template unlike the one a target recorded: one line each

    @property
    def adapters(self) -> list[str]:
        return list(self.adapter_dirs)

    def use(self, name: str | None) -> None:
        if name is None:
            self.active = None
            return
        if name not in self.adapters:
            raise WbError(f"no adapter named {name!r}; loaded: {', '.join(self.adapters) or 'none'}")
        if self.bottleneck:
            adapters.set_active(self.model, name)
        else:
            self.model.set_adapter(name)
        self.active = name

    @contextlib.contextmanager
    def active_model(self) -> Iterator[Any]:
        """The model as the active choice makes it: with an adapter switched on, or the base with all of them off."""
        if self.adapters and self.active is None:
            with adapters.disabled(self.model) if self.bottleneck else self.model.disable_adapter():
                yield self.model
        else:
            yield self.model


def load(targets: list[Target], dtype: Any = "auto", on_status: StatusFn | None = None) -> Loaded:
    """Load one base model with every target's adapter on it (they must share the base).

    A target without an adapter (a base model, or a freeze/full run's model) must come alone.
    """
    from workbench.models import templates as tdata

    quiet_libraries()
    if not targets:
        raise WbError("nothing to load: give a run folder, an adapter folder or a model")
    scorer = next((t for t in targets if scores_only(t.method)), None)
    if scorer is not None:
        raise WbError(
            f"{scorer.name} is a reward model: it scores texts and does not generate; use it with "
            "`wb eval RUN --reward-model` or `preference.reward_model`"
        )
    with_adapter = [t for t in targets if t.adapter is not None]
    if len(with_adapter) != len(targets) and len(targets) > 1:
        plain = next(t for t in targets if t.adapter is None)
        raise WbError(f"{plain.name} is a whole model, not an adapter: it cannot be loaded beside other adapters")
    bases = {str(resolve_model(t.base, on_status)) for t in targets}
    if len(bases) > 1:
        raise WbError(
            "the adapters were trained on different base models ("
            + ", ".join(f"{t.name}: {t.base}" for t in targets)
            + "); load adapters of one base together"
        )
    first = targets[0]
    tokenizer = load_tokenizer(first.adapter if first.adapter is not None else first.base, on_status)
    model: Any = load_model(first.base, dtype=dtype, on_status=on_status)
    names: list[str] = []
    bottleneck = any(t.bottleneck for t in with_adapter)
    if bottleneck and not all(t.bottleneck for t in with_adapter):
        peft_one = next(t for t in with_adapter if not t.bottleneck)
        raise WbError(
            f"{peft_one.name} is a PEFT adapter and the others are bottleneck adapters (method adapter): "
            "load them in separate runs of the command"
        )
    if bottleneck:
        names = _unique_names([t.name for t in with_adapter])
        for t, name in zip(with_adapter, names, strict=True):
            assert t.adapter is not None
            adapters.load(model, t.adapter, name)
        adapters.set_active(model, names[0])
    elif with_adapter:
        names = _unique_names([t.name for t in with_adapter])
        for t, name in zip(with_adapter, names, strict=True):
            assert t.adapter is not None
            model = load_adapter(model, t.adapter, name)
        model.set_adapter(names[0])
    model.eval()
    templates = {t.template for t in targets}
    spec = first.template if len(templates) == 1 else "auto"
    template = tdata.choose_template(tokenizer, spec)
    dirs = {name: t.adapter for name, t in zip(names, with_adapter, strict=True) if t.adapter is not None}
    loaded = Loaded(model, tokenizer, template, first.base, dirs, names[0] if names else None, bottleneck)
    _check_template(loaded, targets, spec)
    return loaded


def _check_template(loaded: Loaded, targets: list[Target], spec: str) -> None:
    """Compare the template prompts will be rendered with against the fingerprint each target recorded."""
    from workbench.models import templates as tdata

    recorded = [t.recorded for t in targets if t.recorded is not None]
    if not recorded:
        return
    sha = tdata.template_fingerprint(loaded.tokenizer, loaded.template)  # type: ignore[arg-type]
    loaded.template_sha256 = sha
    label = tdata.template_label(loaded.tokenizer, loaded.template, spec)  # type: ignore[arg-type]
    for r in recorded:
        if r.sha256 != sha:
            loaded.warnings.append(tdata.fingerprint_mismatch(sha, label, r.sha256, r.template, r.where))


def _unique_names(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        candidate, n = name, 2
        while candidate in out:
            candidate, n = f"{name}-{n}", n + 1
        out.append(candidate)
    return out
