"""Training recipes: one YAML file is the whole experiment (as in LLaMA-Factory's examples), validated by a
pydantic model; every key can be overridden on the command line with dotted `key=value` pairs
(`wb train pipelines/train-lora.yaml lora.r=64 epochs=1`).

Defaults follow common practice for small instruction sets: lr 2e-4, effective batch 4, 3 epochs, LoRA r 16 /
alpha 32 / dropout 0.05 on all linear layers, cosine schedule with 3 % warmup, weight decay 0.01.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workbench.errors import WbError
from workbench.train.data import check_template_spec
from workbench.yamlfile import read_yaml

Method = Literal["lora", "qlora", "dora", "prompt_tuning", "prefix_tuning", "freeze", "full"]


class Strict(BaseModel):
    # NaN and inf are refused in every float (`lr=inf` would train to an all-NaN adapter).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class LoraConfig(Strict):
    r: int = Field(16, ge=1, le=1024)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or all-linear (every linear layer but the output head)."
    )


class VirtualTokensConfig(Strict):
    num_virtual_tokens: int = Field(20, ge=1, le=512)


class FreezeConfig(Strict):
    trainable_layers: int = Field(2, ge=1, description="Train only the last N transformer layers (and the norm).")


# The fsdp_config keys transformers 5.24's TrainingArguments reads (an `fsdp_` prefix is accepted too, as there).
FSDP_CONFIG_KEYS = frozenset(
    {
        "activation_checkpointing", "auto_wrap_policy", "backward_prefetch", "cpu_offload", "cpu_ram_efficient_loading",
        "forward_prefetch", "limit_all_gathers", "min_num_params", "reshard_after_forward", "state_dict_type",
        "sync_module_states", "transformer_layer_cls_to_wrap", "use_orig_params", "version",
    }
)  # fmt: skip


class FsdpConfig(Strict):
    """FSDP (version 2, `fully_shard`): parameters, gradients and optimiser state sharded over the processes of a
    launched run (torchrun, accelerate launch), passed to Trainer as `fsdp=True` and `fsdp_config`."""

    sharding: Literal["full_shard", "shard_grad_op"] = Field(
        "full_shard",
        description="full_shard: parameters re-sharded after each forward (ZeRO-3-like, least memory); "
        "shard_grad_op: kept gathered until the backward pass (ZeRO-2-like, less communication).",
    )
    auto_wrap: bool = Field(
        True, description="Wrap each transformer layer as its own FSDP unit (else the whole model)."
    )
    offload: bool = Field(False, description="Keep parameters and gradients in CPU memory between uses.")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="More of Trainer's fsdp_config: transformer_layer_cls_to_wrap, state_dict_type, "
        "activation_checkpointing, cpu_ram_efficient_loading, ...",
    )

    @field_validator("config")
    @classmethod
    def _known_keys(cls, config: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(k for k in config if k.removeprefix("fsdp_") not in FSDP_CONFIG_KEYS)
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}; known: {', '.join(sorted(FSDP_CONFIG_KEYS))}")
        version = config.get("version", config.get("fsdp_version", 2))
        if version != 2:
            raise ValueError(f"version: {version!r}; wb passes FSDP2 settings (version 2, transformers' default)")
        return config

    def trainer_config(self) -> dict[str, Any]:
        """Trainer's `fsdp_config`: the settings above in its keys, then `config` (which wins where both say)."""
        return {
            "version": 2,
            "reshard_after_forward": self.sharding == "full_shard",
            "cpu_offload": self.offload,
            **({} if self.auto_wrap else {"auto_wrap_policy": "NO_WRAP"}),
            **self.config,
        }


def check_deepspeed_config(path: Path) -> Path:
    """A DeepSpeed JSON file with a ZeRO stage 2 or 3 section; errors name the file and what is wrong."""
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read ({err})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a DeepSpeed config is a JSON object")
    zero = config.get("zero_optimization")
    stage = zero.get("stage") if isinstance(zero, dict) else None
    if stage not in (2, 3):
        raise ValueError(f"{path}: zero_optimization.stage: {stage!r}, expected 2 or 3 (ZeRO-2 or ZeRO-3)")
    return path


class Recipe(Strict):
    """A training run. Paths are relative to the working directory."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, title="TrainRecipe")

    name: str = Field("run", pattern=r"^[A-Za-z0-9._-]+$", description="Run name: the folder under output_dir.")
    model: str = Field("embedded", description="embedded (SmolLM2-135M-Instruct), a local folder, or a cached hub id.")
    method: Method = "lora"
    data: Path | None = Field(None, description="Training records (output of wb clean).")
    data_split: str | None = Field(
        None, description="Split of a dataset folder given as data (save_to_disk or hub snapshot); default train."
    )
    eval_data: Path | None = Field(None, description="Validation records; else val_size of data is held out.")
    val_size: float = Field(0.1, ge=0, lt=1, description="Share of data held out for eval loss when no eval_data.")
    max_samples: int | None = Field(None, ge=1, description="Use only the first N records of data (quick runs).")
    template: Annotated[str, AfterValidator(check_template_spec)] = Field(
        "auto",
        description="auto: the model's chat template if it has one, else the Alpaca template; chat; alpaca; a named "
        "template for base models without one (chatml, llama3, qwen, glm4); or a path to a Jinja chat template file. "
        "wb generate, wb chat and wb eval render with the same template.",
    )
    train_on: Literal["responses", "all"] = Field("responses", description="Loss on responses only, or everything.")
    max_length: int = Field(1024, ge=16, description="Tokens per example (and per packed sequence).")
    packing: bool = Field(True, description="Pack several examples into one sequence (kept apart by the mask).")
    epochs: float = Field(3, gt=0)
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimiser steps (overrides epochs).")
    lr: float = Field(2e-4, gt=0)
    batch_size: int = Field(4, ge=1, description="Sequences per device step.")
    grad_accum: int = Field(1, ge=1, description="Steps accumulated per optimiser update.")
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = 42
    logging_steps: int = Field(5, ge=1)
    eval_steps: int | None = Field(None, ge=1, description="Eval loss every N steps (default: once per epoch).")
    save_steps: int | None = Field(None, ge=1, description="Checkpoint every N steps (default: once per epoch).")
    save_total_limit: int = Field(2, ge=1)
    early_stopping_patience: int | None = Field(None, ge=1, description="Stop after N evals without improvement.")
    gradient_checkpointing: bool = False
    release_freed_memory: bool = Field(
        False,
        description="CPU on Linux: memory blocks of 1 MiB or more go back to the system as soon as they are freed "
        "(glibc M_MMAP_THRESHOLD): about 35 % less peak memory at 4 x 512 tokens a step, for steps about 25 % slower.",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="auto: bf16 on a GPU that supports it; on a CPU bf16 autocast where it has native bf16 units "
        "(AMX, AVX512-BF16, Arm bf16; weights, optimizer and adapter stay fp32), else fp32. fp16: GPU only. "
        "QLoRA on CPU: fp32.",
    )
    output_dir: Path = Field(Path("runs"), description="Runs are written to output_dir/name.")
    lora: LoraConfig = Field(default_factory=LoraConfig)
    prompt_tuning: VirtualTokensConfig = Field(default_factory=VirtualTokensConfig)
    prefix_tuning: VirtualTokensConfig = Field(default_factory=VirtualTokensConfig)
    freeze: FreezeConfig = Field(default_factory=FreezeConfig)
    fsdp: FsdpConfig | None = Field(
        None, description="Shard the model over the GPUs of a launched run with FSDP (docs/scale-out.md)."
    )
    deepspeed: Annotated[Path, AfterValidator(check_deepspeed_config)] | None = Field(
        None,
        description="A DeepSpeed ZeRO-2/3 JSON config for a launched run (the [deepspeed] extra; docs/scale-out.md).",
    )

    @field_validator("name")
    @classmethod
    def _inside_output_dir(cls, name: str) -> str:
        if name in (".", ".."):  # the pattern allows no "/", so these are the names that leave output_dir/NAME
            raise ValueError(f"{name!r} is not a run name: a run needs a folder of its own under output_dir")
        return name

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        if self.fsdp is not None and self.deepspeed is not None:
            raise ValueError("fsdp and deepspeed both set: choose one way to shard the model")
        if self.method in ("prompt_tuning", "prefix_tuning") and self.packing:
            # Virtual tokens are prepended per sequence; packed examples would share them.
            object.__setattr__(self, "packing", False)
        return self

    @property
    def run_dir(self) -> Path:
        return self.output_dir / self.name


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise WbError(f"override {dotted}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`["lora.r=64", "epochs=1"]` → nested dict; values are read as YAML scalars (64 → int, true → bool)."""
    tree: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise WbError(f"override {item!r}: expected KEY=VALUE, e.g. lora.r=64")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        _set(tree, key.strip(), value)
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load(path: Path | None, overrides: list[str] | None = None, **fields: Any) -> Recipe:
    """Read a recipe file (or start from defaults), apply `key=value` overrides and keyword fields, validate."""
    raw: dict[str, Any] = {}
    source = str(path) if path is not None else "recipe"
    if path is not None:
        loaded = read_yaml(Path(path), "recipe")
        if loaded is not None and not isinstance(loaded, dict):
            raise WbError(f"{path}: a recipe must be a YAML mapping")
        raw = loaded or {}
    raw = _merge(raw, parse_overrides(overrides or []))
    raw = _merge(raw, {k: v for k, v in fields.items() if v is not None})
    try:
        return Recipe.model_validate(raw)
    except ValidationError as err:
        e = err.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in e["loc"])
        raise WbError(f"{source}: {loc}: {e['msg']}") from None
