"""The sections of a training recipe (`workbench.train.recipe.Recipe`): each method's own settings (`lora:`,
`prefix_tuning:`, `preference:` ...) and the scale-out settings (`fsdp:`, a DeepSpeed config file), each a strict
pydantic model, so the recipe module holds only the run-level keys and how a recipe file is loaded.

Every model refuses unknown keys and NaN/inf (`Strict`); descriptions are the recipe schema's and docs' text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator


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
