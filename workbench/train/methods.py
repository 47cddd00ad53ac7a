"""Training methods: how the base model is wrapped or frozen for each `method` of a recipe.

LoRA, DoRA, QLoRA, IA3, prompt tuning, prefix tuning (P-Tuning v2 with `prefix_tuning.projection`), P-Tuning and
LLaMA-Adapter (adaption prompts) go through PEFT; `adapter` inserts wb's own bottleneck adapters
(`workbench.models.adapters`); `freeze` trains only the last N transformer layers; `full` and `galore` train every
weight (GaLore differs in its optimiser, set in `hf.training_args`).
"""

from __future__ import annotations

from typing import Any

from workbench.errors import WbError
from workbench.train.recipe import LORA_METHODS, Recipe

PEFT_METHODS = ("lora", "qlora", "dora", "ia3", "prompt_tuning", "prefix_tuning", "p_tuning", "llama_adapter")
# Methods whose run folder holds an adapter (adapter/) rather than a whole model (model/).
ADAPTER_METHODS = (*PEFT_METHODS, "adapter")
# PEFT's adaption prompts know these architectures (peft.tuners.adaption_prompt.config.TRANSFORMERS_MODEL_CONFIG).
ADAPTION_PROMPT_MODELS = ("llama", "mistral")
# LoRA initialisations that change the base weights (the adapter is saved converted against the unchanged base).
MUTATING_LORA_INITS = ("pissa", "olora")


def quantization_config(recipe: Recipe, compute_dtype: Any) -> Any:
    """4-bit NF4 with double quantisation (QLoRA), or None for other methods."""
    if recipe.method != "qlora":
        return None
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise WbError("method qlora needs bitsandbytes: pip install 'wb[gpu]' (or choose method lora)") from None
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def apply(model: Any, recipe: Recipe) -> Any:
    """Return the model to train (a PeftModel for PEFT methods), with exactly the intended weights trainable."""
    method = recipe.method
    if method in LORA_METHODS:
        from peft import LoraConfig, prepare_model_for_kbit_training

        if method == "qlora":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=recipe.gradient_checkpointing)
        lora = recipe.lora
        cfg = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            use_dora=method == "dora",
            use_rslora=lora.use_rslora,
            init_lora_weights=True if lora.init == "default" else lora.init,
            task_type="CAUSAL_LM",
        )
        return _peft(model, cfg, "lora.target_modules")
    if method == "ia3":
        from peft import IA3Config

        ia3 = recipe.ia3
        return _peft(
            model,
            IA3Config(
                task_type="CAUSAL_LM",
                target_modules=ia3.target_modules,
                feedforward_modules=ia3.feedforward_modules,
            ),
            "ia3.target_modules",
        )
    if method == "prompt_tuning":
        from peft import PromptTuningConfig, PromptTuningInit

        return _peft(
            model,
            PromptTuningConfig(
                task_type="CAUSAL_LM",
                num_virtual_tokens=recipe.prompt_tuning.num_virtual_tokens,
                prompt_tuning_init=PromptTuningInit.RANDOM,
            ),
        )
    if method == "prefix_tuning":
        from peft import PrefixTuningConfig

        prefix = recipe.prefix_tuning
        hidden = prefix.projection_hidden_size or model.config.hidden_size
        return _peft(
            model,
            PrefixTuningConfig(
                task_type="CAUSAL_LM",
                num_virtual_tokens=prefix.num_virtual_tokens,
                prefix_projection=prefix.projection,
                encoder_hidden_size=hidden,
            ),
        )
    if method == "p_tuning":
        from peft import PromptEncoderConfig

        pt = recipe.p_tuning
        extra: dict[str, Any] = {"encoder_num_layers": pt.encoder_layers} if pt.encoder == "lstm" else {}
        return _peft(
            model,
            PromptEncoderConfig(
                task_type="CAUSAL_LM",
                num_virtual_tokens=pt.num_virtual_tokens,
                encoder_reparameterization_type=pt.encoder.upper(),
                encoder_hidden_size=pt.encoder_hidden_size or model.config.hidden_size,
                encoder_dropout=pt.encoder_dropout,
                **extra,
            ),
        )
    if method == "llama_adapter":
        from peft import AdaptionPromptConfig

        kind = getattr(model.config, "model_type", None)
        if kind not in ADAPTION_PROMPT_MODELS:
            raise WbError(
                f"method llama_adapter: PEFT's adaption prompts support {', '.join(ADAPTION_PROMPT_MODELS)} models, "
                f"not {kind}; choose another method (lora, adapter)"
            )
        n_layers = len(_decoder_layers(model, method))
        layers = recipe.llama_adapter.adapter_layers or n_layers
        if layers > n_layers:
            raise WbError(f"llama_adapter.adapter_layers: {layers} is more than the model's {n_layers} layers")
        return _peft(
            model,
            AdaptionPromptConfig(
                task_type="CAUSAL_LM", adapter_len=recipe.llama_adapter.adapter_len, adapter_layers=layers
            ),
        )
    if method == "adapter":
        from workbench.models import adapters

        for p in model.parameters():
            p.requires_grad = False
        adapters.add(
            model,
            adapters.Spec(recipe.adapter.reduction_factor, recipe.adapter.non_linearity, recipe.adapter.placement),
            adapters.DEFAULT,
        )
        return model
    if method == "freeze":
        layers = _decoder_layers(model, method)
        n = recipe.freeze.trainable_layers
        if n > len(layers):
            raise WbError(f"freeze.trainable_layers: {n} is more than the model's {len(layers)} layers")
        for p in model.parameters():
            p.requires_grad = False
        for layer in layers[-n:]:
            for p in layer.parameters():
                p.requires_grad = True
        norm = getattr(getattr(model, "model", model), "norm", None)
        if norm is not None:
            for p in norm.parameters():
                p.requires_grad = True
        return model
    if method == "galore":
        _check_galore_targets(model, recipe.galore.target_modules)
    for p in model.parameters():  # full, galore
        p.requires_grad = True
    return model


def galore_targets(model: Any, targets: list[str] | str) -> list[str]:
    """The linear layers whose gradients GaLore projects, matched as the Trainer matches `optim_target_modules`."""
    import torch
    from transformers.trainer_utils import check_target_module_exists

    if targets == "all-linear":
        return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    return [
        n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and check_target_module_exists(targets, n)
    ]


def _check_galore_targets(model: Any, targets: list[str] | str) -> None:
    if not galore_targets(model, targets):
        raise WbError(f"galore.target_modules: {targets!r} matches no linear layer of the model")


def _peft(model: Any, config: Any, targets_key: str | None = None) -> Any:
    """`get_peft_model`; target modules that match nothing in the model are one line naming the recipe key."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, config)
    except ValueError as e:
        if targets_key is not None and "not found in the base model" in str(e):
            raise WbError(f"{targets_key}: {config.target_modules!r} matches no module of the model") from None
        raise


def _decoder_layers(model: Any, method: str = "freeze") -> Any:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise WbError(f"method {method}: cannot find the model's decoder layers (model.model.layers)")
    return layers


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
