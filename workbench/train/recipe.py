"""Training recipes: one YAML file is the whole experiment (as in LLaMA-Factory's examples), validated by a
pydantic model; every key can be overridden on the command line with dotted `key=value` pairs
(`wb train pipelines/train-lora.yaml lora.r=64 epochs=1`).

`method` is any method of the registry (`workbench.methods`); what it implies (preference data, virtual tokens,
LoRA options, loss variants) is read from its spec. The sections of a recipe (each method's settings, FSDP, a
DeepSpeed file) are models of their own in `workbench.train.recipe_sections`; this module holds the run-level keys and
how a recipe is loaded and overridden.

Defaults follow common practice for small instruction sets: lr 2e-4, effective batch 4, 3 epochs, LoRA r 16 /
alpha 32 / dropout 0.05 on all linear layers, cosine schedule with 3 % warmup, weight decay 0.01.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError

from workbench.errors import WbError
from workbench.methods import registry
from workbench.methods.lora import MUTATING_INITS
from workbench.models.templates import check_template_spec
from workbench.runfile.folder import RECIPE, RunFolder
from workbench.train.recipe_sections import (
    BottleneckConfig,
    FreezeConfig,
    FsdpConfig,
    GaloreConfig,
    IA3Config,
    LlamaAdapterConfig,
    LoraConfig,
    PreferenceMethodConfig,
    PrefixTuningConfig,
    PTuningConfig,
    Strict,
    VirtualTokensConfig,
    check_deepspeed_config,
)
from workbench.yamlfile import read_yaml


def _known_method(value: Any) -> Any:
    """A method of the registry (`workbench.methods`), refused as pydantic refuses a value outside a Literal (the
    same message, listing every method in recipe order); read when validated, so a method registered after this
    module was imported is accepted too."""
    names = registry.names()
    if not isinstance(value, str) or value not in names:
        expected = ", ".join(repr(n) for n in names[:-1]) + f" or {names[-1]!r}"
        raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
    return value


class _MethodEnum:
    """The recipe schema's `method` enum, from the registry when the schema is written."""

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"enum": registry.names(), "type": "string"}


Method = Annotated[str, BeforeValidator(_known_method), _MethodEnum()]
# Dashboards the Trainer reports to (`report_to`); each is an optional package (wb[dashboards] holds tensorboard).
Dashboard = Literal["tensorboard", "wandb", "mlflow"]


SOURCE_NAME = r"^[A-Za-z0-9_-]+$"  # a source's name is part of metric keys (eval_<name>_loss)


class DataSource(Strict):
    """One training source of a mixture (`data:` as a list). A source without weight or epochs is read once per
    epoch (`epochs: 1`); see docs/scoring.md#mixing for how weights and epochs combine."""

    path: Path = Field(description="Records of this source (output of wb clean), a file or a dataset folder.")
    name: str | None = Field(None, pattern=SOURCE_NAME, description="Name in the manifest and eval_<name>_loss.")
    weight: float | None = Field(
        None, gt=0, description="Sampling share among the weighted sources (shares are weight / sum of weights)."
    )
    epochs: float | None = Field(None, gt=0, description="Passes over this source per epoch (0.5: a seeded half).")
    max_samples: int | None = Field(None, ge=1, description="Use only the first N records of this source.")
    split: str | None = Field(None, description="Split of a dataset folder (default train).")

    @model_validator(mode="after")
    def _one_share(self) -> DataSource:
        if self.weight is not None and self.epochs is not None:
            raise ValueError("give a source weight or epochs, not both")
        return self

    @property
    def label(self) -> str:
        return self.name or self.path.name.split(".")[0] or "data"


class EvalSource(Strict):
    """One validation set of `eval_data:` as a list: its loss is logged as eval_<name>_loss."""

    path: Path
    name: str | None = Field(None, pattern=SOURCE_NAME)
    max_samples: int | None = Field(None, ge=1)
    split: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.path.name.split(".")[0] or "eval"


def _unique_labels(sources: list[Any], key: str) -> None:
    labels = [s.label for s in sources]
    repeated = sorted({n for n in labels if labels.count(n) > 1})
    if repeated:
        raise ValueError(f"{key}: the source name {repeated[0]!r} is used twice; give each source its own name")


class Recipe(Strict):
    """A training run. Paths are relative to the working directory."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, title="TrainRecipe")

    name: str = Field("run", pattern=r"^[A-Za-z0-9._-]+$", description="Run name: the folder under output_dir.")
    model: str = Field("embedded", description="embedded (SmolLM2-135M-Instruct), a local folder, or a cached hub id.")
    method: Method = "lora"
    license: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9.+_-]*$",
        description="License of the trained weights (a Hugging Face license id: apache-2.0, mit, llama3.1, other): "
        "the `license` of the model card `wb export` writes.",
    )
    data: Path | list[DataSource] | None = Field(
        None,
        description="Training records (output of wb clean), or a list of sources to mix, each with path and optional "
        "name, weight or epochs, max_samples.",
    )
    data_split: str | None = Field(
        None, description="Split of a dataset folder given as data (save_to_disk or hub snapshot); default train."
    )
    eval_data: Path | list[EvalSource] | None = Field(
        None,
        description="Validation records; else val_size of data is held out (of each source, for a mixture). A list: "
        "one eval loss per set (eval_<name>_loss).",
    )
    replay: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Mix in general instruction records (replay_data) as this share of the training set, against "
        "forgetting: 0.1 → 10 % of the examples per epoch are replay.",
    )
    replay_data: Path | None = Field(
        None, description="Replay records for `replay`; default: the shipped EN + ZH set data/replay/general.jsonl."
    )
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
    logging_steps: int | None = Field(
        None,
        ge=1,
        description="Log the training loss every N steps (default: about 50 points over the run, every step in a run "
        "of 50 steps or fewer, so a short run still has a curve).",
    )
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
    sample_losses: bool = Field(
        False,
        description="After training, each training example's loss under the final weights, written to "
        "sample_losses.jsonl (for `wb clean --scores`): one more forward pass over the epoch's data, about 40 % of "
        "the train loop's time with LoRA.",
    )
    release_freed_memory: bool = Field(
        False,
        description="CPU on Linux: memory blocks of 1 MiB or more go back to the system as soon as they are freed "
        "(glibc M_MMAP_THRESHOLD): less peak memory for slower steps. Measured before wb train ran with glibc's "
        "per-thread cache off (which removed most of the heap's growth): 35 % less at 4 x 512 tokens, 25 % slower; "
        "the gain is smaller now.",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="auto: bf16 on a GPU that supports it; on a CPU bf16 autocast where it has native bf16 units "
        "(AMX, AVX512-BF16, Arm bf16; weights, optimizer and adapter stay fp32), else fp32. fp16: GPU only. "
        "QLoRA on CPU: fp32.",
    )
    output_dir: Path = Field(Path("runs"), description="Runs are written to output_dir/name.")
    neftune_noise_alpha: float | None = Field(
        None,
        gt=0,
        description="NEFTune: uniform noise of scale alpha/sqrt(length x hidden) added to the input embeddings while "
        "training (the paper used 5), for any method.",
    )
    loraplus_lr_ratio: float | None = Field(
        None,
        ge=1,
        description="LoRA+: the B matrices learn at lr x this ratio (the paper suggests 16); for lora, dora, qlora.",
    )
    report_to: list[Dashboard] = Field(
        [],
        description="Dashboards the Trainer logs to: tensorboard (run folder's tensorboard/), wandb, mlflow. Off by "
        "default; WANDB_MODE=offline and MLFLOW_TRACKING_URI=file:./mlruns work without a network.",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig)
    prompt_tuning: VirtualTokensConfig = Field(default_factory=VirtualTokensConfig)
    prefix_tuning: PrefixTuningConfig = Field(default_factory=PrefixTuningConfig)
    p_tuning: PTuningConfig = Field(default_factory=PTuningConfig)
    ia3: IA3Config = Field(default_factory=IA3Config)
    llama_adapter: LlamaAdapterConfig = Field(default_factory=LlamaAdapterConfig)
    adapter: BottleneckConfig = Field(default_factory=BottleneckConfig)
    galore: GaloreConfig = Field(default_factory=GaloreConfig)
    freeze: FreezeConfig = Field(default_factory=FreezeConfig)
    preference: PreferenceMethodConfig = Field(default_factory=PreferenceMethodConfig)

    @field_validator("data", "eval_data", mode="before")
    @classmethod
    def _paths_as_sources(cls, value: Any) -> Any:
        if isinstance(value, list):  # `data: [a.jsonl, b.jsonl]`: each a source with its path alone
            return [{"path": v} if isinstance(v, str | Path) else v for v in value]
        return value

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

    @field_validator("report_to")
    @classmethod
    def _once_each(cls, names: list[str]) -> list[str]:
        return sorted(set(names), key=names.index)

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
        if self.fsdp is not None and self.deepspeed is not None:
            raise ValueError("fsdp and deepspeed both set: choose one way to shard the model")
        if isinstance(self.data, list):
            if not self.data:
                raise ValueError("data: an empty list of sources")
            _unique_labels([*self.data, *([_REPLAY] if self.replay else [])], "data")
        if isinstance(self.eval_data, list):
            if not self.eval_data:
                raise ValueError("eval_data: an empty list of sets")
            _unique_labels(self.eval_data, "eval_data")
        spec = registry.get(self.method)
        if spec.virtual_tokens is not None and self.packing:
            # Virtual tokens are prepended per sequence; packed examples would share them.
            object.__setattr__(self, "packing", False)
        if spec.family == "preference":
            if isinstance(self.data, list) or isinstance(self.eval_data, list) or self.replay:
                raise ValueError(
                    f"method {self.method} reads one preference file: data/eval_data as lists of sources and replay "
                    "are for SFT methods"
                )
            object.__setattr__(self, "packing", False)  # pairs are batched by TRL's own collators
            pref = self.preference
            if spec.data == "prompts" and pref.reward_model is None and pref.reward_function is None:
                raise ValueError(
                    f"method {self.method} needs preference.reward_model (a reward run) or preference.reward_function"
                )
            if pref.init_from is not None and pref.weights == "full":
                raise ValueError("preference.init_from continues a LoRA adapter: use preference.weights lora or qlora")
            if pref.weights == "qlora" and spec.head == "reward":
                raise ValueError("preference.weights qlora: the reward head trains in full precision; use lora")
            accepted = spec.loss_types
            if pref.loss_type is not None and pref.loss_type not in accepted:
                if not accepted:
                    raise ValueError(f"preference.loss_type: method {self.method} has no loss variants; leave it out")
                needs = spec.loss_types_left_out.get(pref.loss_type)
                why = f" ({pref.loss_type} needs {needs}, which wb does not set)" if needs else ""
                raise ValueError(
                    f"preference.loss_type: {pref.loss_type!r} is not one of method {self.method}'s: "
                    f"{', '.join(accepted)}{why}"
                )
        if self.loraplus_lr_ratio is not None and not spec.takes_lora:
            *others, last = [n for n in registry.planned() if registry.get(n).takes_lora]
            raise ValueError(f"loraplus_lr_ratio is for {', '.join(others)} and {last}, not method {self.method}")
        if spec.quantized and self.lora.init in MUTATING_INITS:
            raise ValueError(
                f"lora.init {self.lora.init} rewrites the base weights, which a 4-bit base cannot take; use method lora"
            )
        if isinstance(self.ia3.target_modules, list):
            extra = [m for m in self.ia3.feedforward_modules if m not in self.ia3.target_modules]
            if extra:
                raise ValueError(f"ia3.feedforward_modules: {', '.join(extra)} not in ia3.target_modules")
        return self

    @property
    def run_dir(self) -> Path:
        return self.output_dir / self.name


_REPLAY = EvalSource(path=Path("replay"), name="replay")  # the name the replay source takes in a mixture


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
    if path is not None:
        loaded = read_yaml(Path(path), "recipe")
        if loaded is not None and not isinstance(loaded, dict):
            raise WbError(f"{path}: a recipe must be a YAML mapping")
        raw = loaded or {}
    return build(raw, str(path) if path is not None else "recipe", overrides, **fields)


def build(raw: dict[str, Any], source: str, overrides: list[str] | None = None, **fields: Any) -> Recipe:
    """A recipe mapping (from a file, or a run folder's saved recipe) with `key=value` overrides and keyword fields
    applied, validated; errors name `source`."""
    raw = _merge(raw, parse_overrides(overrides or []))
    raw = _merge(raw, {k: v for k, v in fields.items() if v is not None})
    try:
        return Recipe.model_validate(raw)
    except ValidationError as err:
        raise WbError(f"{source}: {_first_error(err)}") from None


def from_arguments(
    args: list[str],
    *,
    data: Path | None = None,
    model: str | None = None,
    name: str | None = None,
    split: str | None = None,
    resume: Path | None = None,
) -> Recipe:
    """The recipe of `wb train ARGS`: at most one recipe file and `key=value` overrides, then the named fields. With
    `resume` (a run folder) the run's own recipe.yaml is read, overrides applied, and the run keeps its name and
    place."""
    files = [a for a in args if "=" not in a]
    overrides = [a for a in args if "=" in a]
    if len(files) > 1:
        raise WbError(f"one recipe file at most, got {', '.join(files)}")
    if resume is not None:
        if files:
            raise WbError(f"--resume reads the run's own {RECIPE}; give overrides only")
        run = RunFolder(resume)
        return build(run.recipe(), str(run.recipe_path), overrides, name=resume.name, output_dir=resume.parent)
    return load(Path(files[0]) if files else None, overrides, data=data, model=model, name=name, data_split=split)


def _first_error(err: ValidationError) -> str:
    """`loc: msg` of the error to show. For a union (`data: FILE | [sources]`) pydantic reports one error per branch
    under a tag naming the branch: the branch the value was written for (a list: the sources) is shown, tags left
    out."""
    errors = err.errors(include_url=False)

    def tagged(e: Any) -> bool:
        return any("[" in str(part) for part in e["loc"])

    def is_path_branch(e: Any) -> bool:
        return any(str(part).startswith("lax-or-strict") for part in e["loc"])

    e = next((x for x in errors if not is_path_branch(x)), errors[0]) if any(map(tagged, errors)) else errors[0]
    loc = ".".join(str(p) for p in e["loc"] if "[" not in str(p))
    if not loc:  # a check across fields: no key
        return str(e["msg"]).removeprefix("Value error, ")
    return f"{loc}: {e['msg']}"
