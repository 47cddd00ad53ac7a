"""Training recipes: one YAML file is the whole experiment (as in LLaMA-Factory's examples), validated by a
pydantic model; every key can be overridden on the command line with dotted `key=value` pairs
(`wb train pipelines/train-lora.yaml lora.r=64 epochs=1`).

Defaults follow common practice for small instruction sets: lr 2e-4, effective batch 4, 3 epochs, LoRA r 16 /
alpha 32 / dropout 0.05 on all linear layers, cosine schedule with 3 % warmup, weight decay 0.01.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

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
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after N evals without improvement of metric_for_best."
    )
    eval_metrics: list[str] = Field(
        default_factory=list,
        description="Task metrics computed at every eval from greedy answers to validation records (names from the "
        "metric registry: rouge_l, bleu, chrf, exact_match, f1, numeric_match, json_valid, ...), logged as "
        "eval_<metric> in trainer_log.jsonl.",
    )
    eval_generate_limit: int = Field(32, ge=1, description="Validation records answered at each eval (the first N).")
    eval_max_new_tokens: int = Field(64, ge=1, le=4096, description="New tokens per answer generated at each eval.")
    metric_for_best: str = Field(
        "eval_loss",
        description="What picks the best checkpoint (and early stopping): eval_loss, or one of eval_metrics "
        "(direction from the registry's higher_is_better).",
    )
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

    @field_validator("name")
    @classmethod
    def _inside_output_dir(cls, name: str) -> str:
        if name in (".", ".."):  # the pattern allows no "/", so these are the names that leave output_dir/NAME
            raise ValueError(f"{name!r} is not a run name: a run needs a folder of its own under output_dir")
        return name

    @field_validator("eval_metrics")
    @classmethod
    def _generation_metrics(cls, names: list[str]) -> list[str]:
        from workbench.train.task_eval import metric_problem

        for name in names:
            problem = metric_problem(name)
            if problem:
                raise ValueError(problem)
        if len(set(names)) != len(names):
            raise ValueError("a metric is listed twice")
        return names

    @field_validator("metric_for_best")
    @classmethod
    def _one_of_the_eval_metrics(cls, name: str, info: ValidationInfo) -> str:
        name = name if name in ("eval_loss", "loss") else name.removeprefix("eval_")
        name = "eval_loss" if name == "loss" else name
        chosen = info.data.get("eval_metrics") or []
        if name != "eval_loss" and name not in chosen:
            known = ", ".join(["eval_loss", *chosen])
            raise ValueError(f"{name!r} is not eval_loss or one of eval_metrics ({known})")
        return name

    @model_validator(mode="after")
    def _check(self) -> Recipe:
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
