"""Bottleneck adapters: small residual MLPs inserted into every decoder layer, the base model's weights frozen.

An adapter maps a sublayer's output `h` to `h + W_up · σ(W_down · h)` (Houlsby et al. 2019, "Parameter-Efficient
Transfer Learning for NLP", section 2.1), with `W_down` hidden → hidden / reduction_factor and `W_up` back. Placements
as AdapterHub names them: `houlsby` puts one after each layer's attention and one after its MLP (the paper's two per
layer); `pfeiffer` one after the MLP only (Pfeiffer et al. 2020, "AdapterFusion", whose search found that placement as
good at half the parameters). `W_up` starts at zero, so training starts exactly at the base model.

wb writes this module itself: AdapterHub's `adapters` library (1.3.0, its newest release) requires transformers
~=4.57, which conflicts with wb's transformers 5. The adapters sit in a `bottleneck` ModuleDict of each decoder layer
and run from forward hooks on the layer's `self_attn` and `mlp` (Llama, Mistral, Qwen, Gemma, Phi-3 and SmolLM
layers have both). Several adapters can be loaded under names and switched (`set_active`), or all switched off
(`disabled`), as PEFT adapters are. They are not mergeable: the bottleneck's non-linearity sits between two
projections, so no single weight matrix equals it.

On disk an adapter is a folder with `bottleneck_config.json` (shape and placement) and `adapter_model.safetensors`
(keys `layers.<i>.<attn|mlp>.<down|up>.<weight|bias>`, fp32).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WbError
from workbench.io.jsontext import write_json
from workbench.output import atomic_write, ensure_dir

DEFAULT = "default"
CONFIG_FILE = "bottleneck_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
KIND = "bottleneck"
SITES = {"houlsby": ("attn", "mlp"), "pfeiffer": ("mlp",)}
MODULE_OF_SITE = {"attn": "self_attn", "mlp": "mlp"}


@dataclass(frozen=True)
class Spec:
    """An adapter's shape: what `bottleneck_config.json` holds."""

    reduction_factor: int
    non_linearity: str
    placement: str
    hidden_size: int = 0
    num_layers: int = 0
    kind: str = KIND

    @property
    def bottleneck_size(self) -> int:
        return max(1, self.hidden_size // self.reduction_factor)


@dataclass
class Registry:
    """Kept on the model (`model.wb_bottleneck`): the adapters by name, the active one, the hooks."""

    specs: dict[str, Spec] = field(default_factory=dict)
    active: str | None = None
    handles: list[Any] = field(default_factory=list)


def _activation(name: str) -> Any:
    import torch

    acts = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "silu": torch.nn.SiLU, "tanh": torch.nn.Tanh}
    if name not in acts:
        raise WbError(f"adapter non_linearity {name!r}: choose one of {', '.join(acts)}")
    return acts[name]()


def _bottleneck_class() -> Any:
    import torch

    class Bottleneck(torch.nn.Module):
        """`h + up(σ(down(h)))`, in the adapter's own dtype (fp32), returned in `h`'s dtype."""

        def __init__(self, hidden: int, size: int, non_linearity: str) -> None:
            super().__init__()
            self.down = torch.nn.Linear(hidden, size)
            self.act = _activation(non_linearity)
            self.up = torch.nn.Linear(size, hidden)
            torch.nn.init.zeros_(self.up.weight)  # the adapter starts as the identity: training starts at the base
            torch.nn.init.zeros_(self.up.bias)

        def forward(self, h: Any) -> Any:
            delta = self.up(self.act(self.down(h.to(self.down.weight.dtype))))
            return h + delta.to(h.dtype)

    return Bottleneck


def _layers(model: Any) -> Any:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(getattr(base, "model", None), "layers", None)
    if layers is None or not all(hasattr(layer, m) for layer in layers for m in MODULE_OF_SITE.values()):
        raise WbError(
            "method adapter: the model's decoder layers (model.model.layers) need self_attn and mlp blocks; "
            "this architecture has not: choose another method (lora)"
        )
    return layers


def registry(model: Any) -> Registry | None:
    reg = getattr(model, "wb_bottleneck", None)
    return reg if isinstance(reg, Registry) else None


def has(model: Any) -> bool:
    """Whether bottleneck adapters were added to the model."""
    reg = registry(model)
    return reg is not None and bool(reg.specs)


def _install_hooks(model: Any, reg: Registry) -> None:
    for layer in _layers(model):
        for site, module_name in MODULE_OF_SITE.items():
            reg.handles.append(getattr(layer, module_name).register_forward_hook(_hook(layer, site, reg)))


def _hook(layer: Any, site: str, reg: Registry) -> Any:
    def run(module: Any, args: Any, output: Any) -> Any:
        name = reg.active
        if name is None or site not in layer.bottleneck[name]:
            return output
        adapter = layer.bottleneck[name][site]
        if isinstance(output, tuple):  # attention: (hidden states, attention weights)
            return (adapter(output[0]), *output[1:])
        return adapter(output)

    return run


def add(model: Any, spec: Spec, name: str = DEFAULT) -> Spec:
    """Add a trainable adapter under `name` to every decoder layer and make it the active one."""
    import torch

    layers = _layers(model)
    reg = registry(model)
    if reg is None:
        reg = Registry()
        model.wb_bottleneck = reg
        _install_hooks(model, reg)
    if name in reg.specs:
        raise WbError(f"an adapter named {name!r} is already loaded")
    hidden = int(model.config.hidden_size)
    spec = Spec(spec.reduction_factor, spec.non_linearity, spec.placement, hidden, len(layers))
    bottleneck = _bottleneck_class()
    device = next(model.parameters()).device
    for layer in layers:
        if not hasattr(layer, "bottleneck"):
            layer.bottleneck = torch.nn.ModuleDict()
        sites = torch.nn.ModuleDict(
            {s: bottleneck(hidden, spec.bottleneck_size, spec.non_linearity) for s in SITES[spec.placement]}
        )
        layer.bottleneck[name] = sites.to(device=device, dtype=torch.float32)
    reg.specs[name] = spec
    reg.active = name
    return spec


def set_active(model: Any, name: str | None) -> None:
    """Switch to the adapter `name`, or (None) run the bare base model."""
    reg = registry(model)
    if reg is None or (name is not None and name not in reg.specs):
        loaded = ", ".join(reg.specs) if reg is not None else ""
        raise WbError(f"no adapter named {name!r}; loaded: {loaded or 'none'}")
    reg.active = name


@contextlib.contextmanager
def disabled(model: Any) -> Iterator[None]:
    """The bare base model inside the block, the active adapter again after it."""
    reg = registry(model)
    before = reg.active if reg is not None else None
    if reg is not None:
        reg.active = None
    try:
        yield
    finally:
        if reg is not None:
            reg.active = before


def state_dict(model: Any, name: str = DEFAULT) -> dict[str, Any]:
    """The adapter's weights under file keys (`layers.<i>.<site>.<down|up>.<weight|bias>`), contiguous copies."""
    out: dict[str, Any] = {}
    for i, layer in enumerate(_layers(model)):
        for key, tensor in layer.bottleneck[name].state_dict().items():
            out[f"layers.{i}.{key}"] = tensor.detach().contiguous().cpu()
    return out


def save(model: Any, folder: Path, name: str = DEFAULT) -> Path:
    """Write the adapter `name` to `folder` (its config and safetensors weights, each written atomically)."""
    from safetensors.torch import save

    reg = registry(model)
    if reg is None or name not in reg.specs:
        raise WbError(f"no adapter named {name!r} to save")
    folder = Path(folder)
    ensure_dir(folder)
    with atomic_write(folder / WEIGHTS_FILE) as f:
        f.write(save(state_dict(model, name), metadata={"format": "pt", "wb_adapter": KIND}))
    write_json(folder / CONFIG_FILE, {**asdict(reg.specs[name]), "bottleneck_size": reg.specs[name].bottleneck_size})
    return folder


def read_spec(folder: Path) -> Spec:
    path = Path(folder) / CONFIG_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw.pop("bottleneck_size", None)
        spec = Spec(**raw)
    except (OSError, ValueError, TypeError) as e:
        raise WbError(f"{path}: not a bottleneck adapter config: {e}") from None
    if spec.kind != KIND or spec.placement not in SITES or spec.reduction_factor < 1:
        raise WbError(f"{path}: not a bottleneck adapter config (kind {spec.kind!r}, placement {spec.placement!r})")
    return spec


def is_adapter_folder(folder: Path) -> bool:
    return (Path(folder) / CONFIG_FILE).is_file()


def load_weights(model: Any, folder: Path, name: str = DEFAULT) -> None:
    """Load saved weights into the already added adapter `name` (every key must match, in shape too)."""
    from safetensors.torch import load_file

    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise WbError(f"{folder}: no {WEIGHTS_FILE} in the adapter folder")
    weights = load_file(str(path))
    used: set[str] = set()
    for i, layer in enumerate(_layers(model)):
        prefix = f"layers.{i}."
        own = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        used.update(prefix + k for k in own)
        try:
            layer.bottleneck[name].load_state_dict(own, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise WbError(f"{path}: does not fit this model's adapter (layer {i}: {first})") from None
    extra = sorted(set(weights) - used)
    if extra:
        raise WbError(f"{path}: weights this model's adapter has no place for ({extra[0]})")


def load(model: Any, folder: Path, name: str = DEFAULT, trainable: bool = False) -> Spec:
    """Add the adapter saved in `folder` to the model under `name` (frozen unless `trainable`) and activate it."""
    spec = read_spec(folder)
    hidden, n_layers = int(model.config.hidden_size), len(_layers(model))
    if (spec.hidden_size, spec.num_layers) != (hidden, n_layers):
        raise WbError(
            f"{folder}: the adapter was trained on a model with hidden size {spec.hidden_size} and {spec.num_layers} "
            f"layers; this one has {hidden} and {n_layers}"
        )
    added = add(model, spec, name)
    load_weights(model, folder, name)
    for layer in _layers(model):
        for p in layer.bottleneck[name].parameters():
            p.requires_grad = trainable
    return added
