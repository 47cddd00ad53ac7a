"""`wb plan` as a library function (`build_plan`): which training method fits this model and this machine: peak
memory, trainable parameters, size on disk, for every method whose spec counts its parameters
(`workbench.methods.registry.planned`). From what a user names (a model spec, a run folder or a parameter count, a
data file, a memory size) to a `Plan`: the shape (`shapes`), the machine (`machine`), one estimate per method
(`memory`, from `counts`) and the data's advice (`workbench.advice`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WbError
from workbench.methods import registry
from workbench.methods.sizing import Device, Options, Shape
from workbench.plan.machine import detect_machine, parse_memory, resolve_precision
from workbench.plan.memory import Estimate, estimate
from workbench.plan.shapes import model_summary, read_config, shape_distance, shape_for_params, shape_from_config
from workbench.runfile.folder import RECIPE, RunFolder


@dataclass
class Plan:
    model: dict[str, Any]
    settings: dict[str, Any]
    machine: dict[str, Any]
    estimates: list[Estimate]
    advice: list[dict[str, Any]] = field(default_factory=list)
    recommendation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "settings": self.settings,
            "machine": self.machine,
            "methods": [e.to_dict() for e in self.estimates],
            "advice": self.advice,
            "recommendation": self.recommendation,
        }


def plan(
    shape: Shape,
    opts: Options,
    methods: Sequence[str] | None = None,
    memory: int | None = None,
    memory_source: str = "",
    precision_reason: str = "",
) -> Plan:
    """Estimates for each method; a recommendation comes from `workbench.advice` when data is given."""
    estimates = [estimate(shape, m, opts, memory) for m in (registry.planned() if methods is None else methods)]
    return Plan(
        model=model_summary(shape),
        settings={
            "seq_len": opts.seq_len,
            "batch": opts.batch,
            "device": opts.device,
            "precision": opts.precision,
            "precision_reason": precision_reason,
            "trained_share": opts.trained_share,
            "lora_r": opts.lora_r,
            "lora_targets": opts.lora_targets if isinstance(opts.lora_targets, str) else list(opts.lora_targets),
            "virtual_tokens": opts.virtual_tokens,
            "freeze_layers": opts.freeze_layers,
            "galore_rank": opts.galore_rank,
            "adapter_reduction_factor": opts.adapter_reduction_factor,
        },
        machine={"device": opts.device, "memory": memory, "source": memory_source},
        estimates=estimates,
    )


# ---------------------------------------------------------------------------------------------------------------
# From what a user names: a model spec or a parameter count, a data file, a memory size


@dataclass(frozen=True)
class Model:
    shape: Shape
    folder: Path | None
    names: list[str]
    recipe: dict[str, Any]


def load_model_shape(spec: str | None, params: float | None) -> Model:
    """The shape to plan for: `--params N` (a Llama shape), a run folder (its recipe's model and settings), or a
    model spec as `wb train` takes it (`embedded`, a folder, a cached hub id)."""
    if (spec is None) == (params is None):
        raise WbError("give one of --model (embedded, a model folder or a run folder) or --params (e.g. 7e9)")
    if params is not None:
        shape = shape_for_params(params)
        return Model(shape, None, [shape.name], {})
    from workbench.models.base import resolve_model
    from workbench.models.embedded import SOURCE_FILE

    recipe: dict[str, Any] = {}
    run = RunFolder(Path(str(spec)).expanduser())
    if run.is_run():
        recipe = run.recipe()
        spec = str(recipe.get("model") or "embedded")
    folder = resolve_model(str(spec))
    config = read_config(folder)
    names = [str(spec), folder.name, str(config.get("_name_or_path") or "")]
    source = folder / SOURCE_FILE
    if source.is_file():
        with contextlib.suppress(ValueError):
            names.append(str(json.loads(source.read_text(encoding="utf-8")).get("model") or ""))
    shape = shape_from_config(config, str(folder / "config.json"), name=str(spec))
    names.append(shape.model_type)
    return Model(shape, folder, [n for n in names if n], recipe)


def options_from_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Options a run's recipe sets (its max_length, batch, LoRA, virtual tokens, ...), by Options field."""
    out: dict[str, Any] = {}

    def take(key: str, *path: str) -> None:
        node: Any = recipe
        for p in path:
            node = node.get(p) if isinstance(node, dict) else None
        if node is not None:
            out[key] = node

    take("seq_len", "max_length")
    take("batch", "batch_size")
    take("lora_r", "lora", "r")
    take("lora_dropout", "lora", "dropout")
    take("lora_targets", "lora", "target_modules")
    take("lora_init", "lora", "init")
    take("freeze_layers", "freeze", "trainable_layers")
    take("release_freed_memory", "release_freed_memory")
    take("galore_rank", "galore", "rank")
    take("galore_targets", "galore", "target_modules")
    take("adapter_reduction_factor", "adapter", "reduction_factor")
    take("adapter_placement", "adapter", "placement")
    take("llama_adapter_len", "llama_adapter", "adapter_len")
    take("llama_adapter_layers", "llama_adapter", "adapter_layers")
    take("prefix_projection", "prefix_tuning", "projection")
    take("prefix_projection_hidden", "prefix_tuning", "projection_hidden_size")
    take("p_tuning_encoder", "p_tuning", "encoder")
    take("p_tuning_hidden", "p_tuning", "encoder_hidden_size")
    take("p_tuning_layers", "p_tuning", "encoder_layers")
    take("ia3_targets", "ia3", "target_modules")
    take("ia3_feedforward", "ia3", "feedforward_modules")
    method = recipe.get("method")
    spec = registry.find(method) if isinstance(method, str) else None
    if spec is not None and spec.virtual_tokens is not None:  # its section is named after it
        take("virtual_tokens", spec.name, "num_virtual_tokens")
    return out


def build_plan(
    model: str | None = None,
    params: float | None = None,
    data: Path | None = None,
    memory: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    methods: Sequence[str] | None = None,
    **overrides: Any,
) -> Plan:
    """`wb plan` as a library function: the model's shape, this machine (or `memory`), the data's advice."""
    from workbench import advice

    planned = registry.planned()
    chosen = list(methods or planned)
    bad = [m for m in chosen if m not in planned]
    if bad:
        raise WbError(f"--method: {bad[0]!r} is not one of {', '.join(planned)}")
    size = parse_memory(memory) if memory is not None else None
    if device not in ("auto", "cpu", "cuda"):
        raise WbError(f"--device: {device!r} is not one of auto, cpu, cuda")
    found = load_model_shape(model, params)
    shape = found.shape
    if size is not None:
        dev: Device = "cpu" if device == "cpu" else "cuda"
        kind = "RAM" if dev == "cpu" else "a GPU"
        source = f"--memory {memory} ({kind}" + ("; --device cpu plans for RAM)" if device == "auto" else ")")
    else:
        machine = detect_machine()
        if device != "auto" and device != machine.device:
            dev, size, source = device, None, f"--device {device}: no such device found here, memory unknown"  # type: ignore[assignment]
        else:
            dev, size, source = machine.device, machine.memory, machine.source
    compute, reason = resolve_precision(precision, dev)
    fields = {**options_from_recipe(found.recipe), **{k: v for k, v in overrides.items() if v is not None}}
    facts: dict[str, Any] | None = None
    lengths: dict[str, Any] | None = None
    rejected = 0
    if data is not None:
        frame, rejected = advice.read_frame(data)
        facts = advice.data_facts(frame)
        lengths = _token_lengths(data, found.folder)
        if lengths is not None:
            lengths["tokenizer"] = shape.name  # the spec the user gave, not the resolved cache folder
        if lengths and lengths.get("tokens_total") and "trained_share" not in fields:
            fields["trained_share"] = max(1e-6, lengths["trained_tokens_total"] / lengths["tokens_total"])
    if "seq_len" not in fields and shape.context is not None and shape.context < Options.seq_len:
        fields["seq_len"] = shape.context  # the default length, for a model whose context is shorter
    try:
        opts = Options(device=dev, precision=compute, **fields)
    except TypeError as e:
        raise WbError(f"wb plan: {e}") from None
    if shape.context is not None and opts.seq_len > shape.context:
        asked = "--seq-len" if overrides.get("seq_len") is not None else f"{model}/{RECIPE}: max_length"
        raise WbError(
            f"{asked} {opts.seq_len:,}: longer than the model's context of {shape.context:,} tokens "
            f"({shape.source}: max_position_embeddings)"
        )
    result = plan(shape, opts, chosen, size, source, reason)
    if params is not None:
        result.model["params_asked"] = params
        result.model["shape_distance"] = shape_distance(params, shape)
    if facts is not None:
        items = advice.advise(facts, chosen, opts.seq_len, shape.context, found.names, lengths, rejected)
        result.advice = [a.to_dict() for a in items]
        result.settings["data"] = {
            "path": str(data),
            "records": facts["records"],
            "scripts": facts["scripts"],
            "changing_facts": facts["changing_facts"],
            "lengths_from": "tokenizer" if lengths else "word-count estimate",
        }
    result.recommendation = advice.recommend(result.estimates, facts["records"] if facts else None, size is not None)
    return result


def _token_lengths(data: Path, folder: Path | None) -> dict[str, Any] | None:
    """Lengths in the model's tokens when its tokenizer and transformers are at hand, else None (estimated then)."""
    import importlib.util

    if folder is None or importlib.util.find_spec("transformers") is None:
        return None
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        return None
    from workbench.token_lengths import token_lengths

    return token_lengths(data, str(folder))
