"""Training methods: how the base model is wrapped or frozen for each `method` of a recipe.

LoRA, DoRA, QLoRA, prompt tuning and prefix tuning go through PEFT; `freeze` trains only the last N transformer
layers; `full` trains every weight.
"""

from __future__ import annotations

from typing import Any

from workbench.errors import WbError
from workbench.train.recipe import Recipe

PEFT_METHODS = ("lora", "qlora", "dora", "prompt_tuning", "prefix_tuning")


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
    if method in ("lora", "qlora", "dora"):
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if method == "qlora":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=recipe.gradient_checkpointing)
        cfg = LoraConfig(
            r=recipe.lora.r,
            lora_alpha=recipe.lora.alpha,
            lora_dropout=recipe.lora.dropout,
            target_modules=recipe.lora.target_modules,
            use_dora=method == "dora",
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, cfg)
    if method == "prompt_tuning":
        from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

        return get_peft_model(
            model,
            PromptTuningConfig(
                task_type="CAUSAL_LM",
                num_virtual_tokens=recipe.prompt_tuning.num_virtual_tokens,
                prompt_tuning_init=PromptTuningInit.RANDOM,
            ),
        )
    if method == "prefix_tuning":
        from peft import PrefixTuningConfig, get_peft_model

        return get_peft_model(
            model, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=recipe.prefix_tuning.num_virtual_tokens)
        )
    if method == "freeze":
        layers = _decoder_layers(model)
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
    for p in model.parameters():  # full
        p.requires_grad = True
    return model


def _decoder_layers(model: Any) -> Any:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise WbError("method freeze: cannot find the model's decoder layers (model.model.layers)")
    return layers


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
