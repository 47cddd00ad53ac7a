"""Training recipes: one YAML file is the whole experiment (as in LLaMA-Factory's examples), validated by a
pydantic model; every key can be overridden on the command line with dotted `key=value` pairs
(`wb train pipelines/train-lora.yaml lora.r=64 epochs=1`).

`method` is any method of the registry (`workbench.methods`); what it implies (preference data, virtual tokens,
LoRA options, loss variants) is read from its spec.

Defaults follow common practice for small instruction sets: lr 2e-4, effective batch 4, 3 epochs, LoRA r 16 /
alpha 32 / dropout 0.05 on all linear layers, cosine schedule with 3 % warmup, weight decay 0.01.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
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


def _module_names(value: list[str] | str) -> list[str] | str:
    """A list of module names, `all-linear`, or one regular expression matched against whole module paths (as PEFT
    and the Trainer read a string): the expression must compile."""
    if isinstance(value, str) and value != "all-linear":
        try:
            re.compile(value)
        except re.error as e:
            raise ValueError(f"{value!r} is not a regular expression: {e}") from None
    if isinstance(value, list) and (not value or any(not name.strip() for name in value)):
        raise ValueError("give at least one module name, none of them empty")
    return value


class Strict(BaseModel):
    # NaN and inf are refused in every float (`lr=inf` would train to an all-NaN adapter).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class LoraConfig(Strict):
    r: int = Field(16, ge=1, le=1024)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: Annotated[list[str] | str, AfterValidator(_module_names)] = Field(
        "all-linear",
        description="Module names to adapt (a name matches a module whose path ends with it), all-linear (every "
        "linear layer but the output head), or one regular expression matched against the whole module path, "
        r"e.g. '.*\.(q_proj|v_proj)'.",
    )
    use_rslora: bool = Field(False, description="Rank-stabilised LoRA: scale alpha/sqrt(r) instead of alpha/r.")
    init: Literal["default", "gaussian", "pissa", "olora"] = Field(
        "default",
        description="default: A Kaiming-uniform, B zero; gaussian: A Gaussian 1/r, B zero; pissa: A and B from the "
        "top-r singular vectors of each weight (the base keeps the rest); olora: from its QR decomposition. pissa and "
        "olora adapters are saved converted to plain LoRA (rank 2r) against the unchanged base.",
    )


class VirtualTokensConfig(Strict):
    num_virtual_tokens: int = Field(20, ge=1, le=512)


class PrefixTuningConfig(VirtualTokensConfig):
    projection: bool = Field(
        False,
        description="Reparameterise the per-layer prefixes through a two-layer MLP (the deep prompt method published "
        "as P-Tuning v2); more parameters while training, the same prefix size on disk.",
    )
    projection_hidden_size: int | None = Field(None, ge=1, description="The MLP's width (default: the model's).")


class PTuningConfig(VirtualTokensConfig):
    encoder: Literal["mlp", "lstm"] = Field("mlp", description="Reparameterisation of the virtual-token embeddings.")
    encoder_hidden_size: int | None = Field(None, ge=1, description="The encoder's width (default: the model's).")
    encoder_layers: int = Field(2, ge=1, le=8, description="Layers of the LSTM encoder (the MLP's shape is fixed).")
    encoder_dropout: float = Field(0.0, ge=0, lt=1)


class IA3Config(Strict):
    target_modules: Annotated[list[str] | str, AfterValidator(_module_names)] = Field(
        ["k_proj", "v_proj", "down_proj"],
        description="Modules whose activations IA3 rescales (default for Llama-style models: keys, values and the "
        "MLP's down projection, as in the IA3 paper's k, v and feed-forward).",
    )
    feedforward_modules: list[str] = Field(
        ["down_proj"], description="Of target_modules, those whose input (not output) is rescaled: the MLP's."
    )


class LlamaAdapterConfig(Strict):
    adapter_len: int = Field(10, ge=1, le=512, description="Learned adaption-prompt tokens per adapted layer.")
    adapter_layers: int | None = Field(
        None, ge=1, description="Adapt the top N decoder layers (default: all; the paper's 30 of LLaMA-7B's 32)."
    )


class BottleneckConfig(Strict):
    reduction_factor: int = Field(16, ge=1, description="Bottleneck width = hidden size / reduction_factor.")
    non_linearity: Literal["relu", "gelu", "silu", "tanh"] = "relu"
    placement: Literal["pfeiffer", "houlsby"] = Field(
        "pfeiffer",
        description="pfeiffer: one adapter after each layer's MLP; houlsby: one after its attention and one after its "
        "MLP (about twice the parameters).",
    )


class GaloreConfig(Strict):
    rank: int = Field(128, ge=1, description="Rank of the gradient projection (the optimiser states' width).")
    update_proj_gap: int = Field(200, ge=1, description="Steps between recomputing each projection (an SVD).")
    scale: float = Field(0.25, gt=0, description="Scale of the projected update (GaLore's alpha).")
    target_modules: Annotated[list[str] | str, AfterValidator(_module_names)] = Field(
        ["self_attn", "mlp"],
        description="Linear layers whose gradients are projected: names contained in the module path, all-linear, or "
        "one regular expression; every other weight trains with plain AdamW.",
    )
    optimizer: Literal["adamw", "adamw_8bit", "adafactor"] = Field(
        "adamw", description="GaLore's optimiser: adamw, adafactor, or adamw_8bit (bitsandbytes; GPU only)."
    )


class FreezeConfig(Strict):
    trainable_layers: int = Field(2, ge=1, description="Train only the last N transformer layers (and the norm).")


class PreferenceMethodConfig(Strict):
    """Keys of the preference methods (dpo, orpo, simpo, kto, reward, grpo); TRL's names where TRL has one."""

    weights: Literal["lora", "qlora", "full"] = Field(
        "lora",
        description="Train a LoRA adapter (the lora: section), a LoRA adapter over the base loaded in 4-bit NF4 "
        "(QLoRA: needs bitsandbytes; fp32 compute on CPU), or every weight of the policy.",
    )
    beta: float = Field(
        0.1,
        ge=0,
        description="DPO/KTO: strength of the pull to the reference; ORPO: weight of the odds-ratio term (lambda); "
        "SimPO: reward scale; GRPO: KL coefficient (0 = no reference model, no KL).",
    )
    loss_type: str | None = Field(
        None,
        description="TRL's loss variant: dpo sigmoid (default), hinge, ipo, robust, ...; kto kto or apo_zero_unpaired.",
    )
    max_prompt_length: int | None = Field(
        None,
        ge=1,
        description="Prompts longer than this many tokens are refused or dropped (see truncation). TRL 1.16 no longer "
        "cuts prompts itself; wb checks instead of cutting (cutting a prompt's start loses its instruction).",
    )
    truncation: Literal["refuse", "drop"] = Field(
        "refuse",
        description="Pairs whose chosen and rejected are identical after truncation to max_length, or whose prompt "
        "leaves no room for a response: refuse (exit 2, their line numbers named) or drop them and count them.",
    )
    init_from: Path | None = Field(
        None,
        description="A finished LoRA run (runs/sft) whose adapter the policy starts from and keeps training; the "
        "reference is that adapter, frozen (an adapter copy, not a second model).",
    )
    reference: Literal["auto", "base"] = Field(
        "auto",
        description="auto: the starting policy (the base with the adapter disabled, or the init_from adapter frozen); "
        "base: always the base model with adapters disabled.",
    )
    simpo_gamma: float = Field(0.5, description="SimPO: target reward margin (gamma).")
    desirable_weight: float = Field(1.0, gt=0, description="KTO: loss weight of desirable completions.")
    undesirable_weight: float = Field(1.0, gt=0, description="KTO: loss weight of undesirable completions.")
    reward_model: Path | None = Field(None, description="GRPO: a finished reward run (method reward) scoring samples.")
    reward_function: str | None = Field(
        None,
        description="GRPO: a metric of the registry with a per-item scorer (e.g. json_valid, numeric_match), scoring "
        "each sampled answer against the record's reference; used with or instead of reward_model.",
    )
    num_generations: int = Field(4, ge=2, description="GRPO: answers sampled per prompt (the group).")
    max_completion_length: int = Field(64, ge=1, description="GRPO: tokens sampled per answer.")
    temperature: float = Field(1.0, gt=0, description="GRPO: sampling temperature.")


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
