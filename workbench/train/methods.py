"""How a training method's trainable parameters are put on the model: one applier per trainable-parameter axis of
the method specs (`workbench.methods`: `MethodSpec.params`), or a spec's own `apply`.

LoRA, DoRA, QLoRA, IA3, prompt tuning, prefix tuning (P-Tuning v2 with `prefix_tuning.projection`), P-Tuning and
LLaMA-Adapter (adaption prompts) go through PEFT; `bottleneck` inserts wb's own bottleneck adapters
(`workbench.models.adapters`); `freeze` trains only the last N transformer layers; `full` trains every weight
(GaLore differs in its optimiser, set in `hf.training_args`). What each method is (its family, what it saves,
whether it merges) is its spec's; nothing here names a method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workbench.errors import WbError
from workbench.methods import registry
from workbench.methods.spec import MethodSpec
from workbench.train import lora_linear
from workbench.train.recipe import Recipe

# PEFT's adaption prompts know these architectures (peft.tuners.adaption_prompt.config.TRANSFORMERS_MODEL_CONFIG).
ADAPTION_PROMPT_MODELS = ("llama", "mistral")


def quantization_config(recipe: Recipe, compute_dtype: Any, quantized: bool | None = None) -> Any:
    """4-bit NF4 with double quantisation (QLoRA) when the method loads its base in 4-bit (or `quantized`), else
    None."""
    if not (registry.get(recipe.method).quantized if quantized is None else quantized):
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


def apply(model: Any, recipe: Recipe, method: str | None = None) -> Any:
    """Return the model to train (a PeftModel for PEFT methods), with exactly the intended weights trainable: the
    recipe's method, or `method` (a preference run training every weight applies `full`)."""
    spec = registry.get(method or recipe.method)
    if spec.apply is not None:
        return spec.apply(model, recipe)
    applier = APPLIERS.get(spec.params)
    if applier is None:
        raise WbError(f"method {spec.name}: its trainable parameters ({spec.params}) are applied by its trainer")
    return applier(model, recipe, spec)


def _lora(model: Any, recipe: Recipe, spec: MethodSpec) -> Any:
    from peft import LoraConfig, prepare_model_for_kbit_training

    if spec.quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=recipe.gradient_checkpointing)
    lora = recipe.lora
    cfg = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        use_rslora=lora.use_rslora,
        init_lora_weights=True if lora.init == "default" else lora.init,
        task_type="CAUSAL_LM",
        **{"use_dora": False, **spec.peft_options},
    )
    return _peft(model, cfg, "lora.target_modules")


def _ia3(model: Any, recipe: Recipe, spec: MethodSpec) -> Any:
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


def _prompt(model: Any, recipe: Recipe, spec: MethodSpec) -> Any:
    from peft import PromptTuningConfig, PromptTuningInit

    return _peft(
        model,
        PromptTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=recipe.prompt_tuning.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.RANDOM,
        ),
    )


def _prefix(model: Any, recipe: Recipe, spec: MethodSpec) -> Any:
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


def _p_tuning(model: Any, recipe: Recipe, spec: MethodSpec) -> Any:
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


def _llama_adapter(model: Any, recipe: Recipe, spec: MethodSpec) -> Any:
    from peft import AdaptionPromptConfig

    kind = getattr(model.config, "model_type", None)
    if kind not in ADAPTION_PROMPT_MODELS:
        raise WbError(
            f"method {spec.name}: PEFT's adaption prompts support {', '.join(ADAPTION_PROMPT_MODELS)} models, "
            f"not {kind}; choose another method (lora, adapter)"
        )
    n_layers = len(_decoder_layers(model, spec.name))
    layers = recipe.llama_adapter.adapter_layers or n_layers
    if layers > n_layers:
        raise WbError(f"llama_adapter.adapter_layers: {layers} is more than the model's {n_layers} layers")
    return _peft(
        model,
        AdaptionPromptConfig(
            task_type="CAUSAL_LM", adapter_len=recipe.llama_adapter.adapter_len, adapter_layers=layers
        ),
    )


def _bottleneck(model: Any, recipe: Recipe, spec: MethodSpec) -> Any:
    from workbench.models import adapters

    for p in model.parameters():
        p.requires_grad = False
    adapters.add(
        model,
        adapters.Spec(recipe.adapter.reduction_factor, recipe.adapter.non_linearity, recipe.adapter.placement),
        adapters.DEFAULT,
    )
    return model


def _freeze(model: Any, recipe: Recipe, spec: MethodSpec) -> Any:
    layers = _decoder_layers(model, spec.name)
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


def _full(model: Any, recipe: Recipe, spec: MethodSpec) -> Any:
    if spec.optimizer == "galore":
        _check_galore_targets(model, recipe.galore.target_modules)
    for p in model.parameters():
        p.requires_grad = True
    return model


APPLIERS: dict[str, Callable[[Any, Recipe, MethodSpec], Any]] = {
    "lora": _lora,
    "ia3": _ia3,
    "prompt": _prompt,
    "prefix": _prefix,
    "p_tuning": _p_tuning,
    "llama_adapter": _llama_adapter,
    "bottleneck": _bottleneck,
    "freeze": _freeze,
    "full": _full,
}


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
    """`get_peft_model` (its projections on the fused training path of `lora_linear`); target modules that match nothing
    in the model are one line naming the recipe key."""
    from peft import get_peft_model

    try:
        peft_model = get_peft_model(model, config)
    except ValueError as e:
        if targets_key is not None and "not found in the base model" in str(e):
            raise WbError(f"{targets_key}: {config.target_modules!r} matches no module of the model") from None
        raise
    lora_linear.fuse(peft_model)  # one autograd function per adapted projection: fewer passes, a mask of bits kept
    return peft_model


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
