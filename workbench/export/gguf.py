"""GGUF for llama.cpp and Ollama: a Llama-family safetensors model folder (a run's merged or whole model) written as
one `.gguf` file, f16 or q8_0, with its byte-level BPE tokenizer and the run's chat template in the metadata.

It is the inverse of how wb reads the embedded model (`models.embedded`, through transformers' GGUF loader): tensor
names follow the `gguf` package's own map for the LLAMA architecture, and the rows of the query and key projections
are permuted into llama.cpp's rotary layout, which the loader undoes. Only Llama-family models with a gpt2-style
(byte-level BPE) tokenizer are written; anything else is refused in one line.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from workbench.errors import WbError
from workbench.io.jsontext import read_json_object

GGUF_FILE = "model.gguf"
QUANTS = ("f16", "q8_0")
LLAMA_ARCHITECTURES = ("LlamaForCausalLM",)

# llama.cpp chooses its pre-tokenizer (how text is split before BPE) by a name in the metadata; its converter finds the
# name by hashing the token ids of this text. The table holds the names of the byte-level BPE tokenizers that
# Llama-family models wb trains use (hashes as llama.cpp's convert_hf_to_gguf.py lists them).
_PRE_TOKENIZER_PROBE = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ "
    "(multiple emojis concatenated) ✅ 🦙🦙 3 33 333 "
    "3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= "
    "нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure "
    "I'll make it, 'D you like some tea? We'Ve a'lL"
)
_PRE_TOKENIZERS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",
}


def llama_config(model_dir: Path) -> dict[str, Any]:
    """The model's config.json, refused in one line unless it is a Llama-family model GGUF export can write."""
    config = read_json_object(model_dir / "config.json", "the model's config")
    archs = config.get("architectures") or []
    if config.get("model_type") != "llama" or not set(archs) <= set(LLAMA_ARCHITECTURES):
        what = ", ".join(archs) or config.get("model_type") or "unknown"
        raise WbError(
            f"{model_dir}: GGUF export writes Llama-family models ({', '.join(LLAMA_ARCHITECTURES)}); this is {what}"
        )
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise WbError(f"{model_dir}: GGUF export does not convert rope scaling {rope.get('rope_type')!r} yet")
    return dict(config)


def permute_qk(weight: Any, n_head: int) -> Any:
    """Rows of a query/key projection (or bias) from the Hugging Face rotary layout to llama.cpp's (per head, the
    two halves interleaved); transformers' GGUF loader applies the inverse."""
    return (
        weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def write_folder(model_dir: Path, dest: Path, quant: str, template: str, name: str) -> list[str]:
    """Write `model.gguf` and its Ollama `Modelfile` into `dest` from the model in `model_dir`, rendering with the
    run's `template` spec (auto, chat, alpaca, a named template or a file); the lines returned say what the user
    should know (a TEMPLATE that could not be translated)."""
    from workbench.export import modelfile
    from workbench.models.base import load_tokenizer
    from workbench.models.templates import choose_template

    llama_config(model_dir)
    tokenizer = load_tokenizer(model_dir)
    used = choose_template(tokenizer, template)
    chat_template = str(tokenizer.chat_template) if used == "chat" else None
    write_gguf(model_dir, tokenizer, chat_template, dest / GGUF_FILE, quant, name)
    translation = modelfile.translate(tokenizer, used)
    (dest / modelfile.MODELFILE).write_text(modelfile.modelfile_text(GGUF_FILE, translation), encoding="utf-8")
    return [translation.note] if translation.note else []


def write_gguf(model_dir: Path, tokenizer: Any, chat_template: str | None, out: Path, quant: str, name: str) -> None:
    """Write the model in `model_dir` to the file `out` (the caller publishes it atomically), with `tokenizer`'s
    vocabulary and `chat_template` (None: the model has none, e.g. an Alpaca-format run) in the metadata."""
    import gguf

    if quant not in QUANTS:
        raise WbError(f"--quant {quant}: choose one of {', '.join(QUANTS)}")
    config = llama_config(model_dir)
    writer = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    _add_hparams(writer, config, name, quant)
    _add_tokenizer(writer, tokenizer, int(config["vocab_size"]), chat_template, model_dir)
    for tensor_name, array, qtype in _tensors(model_dir, config, quant):
        writer.add_tensor(tensor_name, array, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _add_hparams(writer: Any, config: dict[str, Any], name: str, quant: str) -> None:
    import gguf

    n_head = int(config["num_attention_heads"])
    rope = config.get("rope_parameters") or {}
    writer.add_name(name)
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or n_head))
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(int(config["vocab_size"]))
    writer.add_rope_dimension_count(int(config.get("head_dim") or config["hidden_size"] // n_head))
    file_type = gguf.LlamaFileType.MOSTLY_F16 if quant == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_tokenizer(writer: Any, tokenizer: Any, vocab_size: int, chat_template: str | None, model_dir: Path) -> None:
    """The gpt2-style vocabulary as llama.cpp reads it: tokens by id (gaps as unused [PADn] tokens), their types
    (special added tokens are control tokens), the BPE merges, the special ids and whether a BOS is prepended."""
    import gguf

    backend = json.loads(tokenizer.backend_tokenizer.to_str()) if hasattr(tokenizer, "backend_tokenizer") else {}
    model = backend.get("model") or {}
    if (
        model.get("type") != "BPE"
        or model.get("byte_fallback")
        or "ByteLevel" not in json.dumps(backend.get("pre_tokenizer"))
    ):
        raise WbError(
            f"{model_dir}: GGUF export writes byte-level BPE (gpt2-style) tokenizers; this tokenizer is not one"
        )
    vocab: dict[str, int] = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise WbError(f"{model_dir}: the tokenizer has ids beyond the model's vocab_size {vocab_size}")
    by_id = {i: tok for tok, i in vocab.items()}
    added = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer(tokenizer))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for add, token_id in (
        (writer.add_bos_token_id, tokenizer.bos_token_id),
        (writer.add_eos_token_id, tokenizer.eos_token_id),
        (writer.add_unk_token_id, tokenizer.unk_token_id),
        (writer.add_pad_token_id, tokenizer.pad_token_id),
    ):
        if token_id is not None:
            add(int(token_id))
    probe = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(bool(probe) and probe[0] == tokenizer.bos_token_id)
    writer.add_add_eos_token(bool(probe) and probe[-1] == tokenizer.eos_token_id and len(probe) > 1)
    if chat_template:
        writer.add_chat_template(chat_template)


def pre_tokenizer(tokenizer: Any) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer, found as its converter finds it; `default` (llama.cpp's
    generic GPT-2 split) for one the table does not know."""
    ids = tokenizer.encode(_PRE_TOKENIZER_PROBE)
    return _PRE_TOKENIZERS.get(hashlib.sha256(str(ids).encode()).hexdigest(), "default")


def _tensors(model_dir: Path, config: dict[str, Any], quant: str) -> Any:
    """(gguf name, array, type) for every weight: 1-D tensors (norms, biases) stay float32; matrices become f16, or
    q8_0 where their rows split into q8_0's 32-value blocks (else f16, as llama.cpp does)."""
    import gguf
    import numpy as np
    from safetensors import safe_open

    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, int(config["num_hidden_layers"]))
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise WbError(f"{model_dir}: no safetensors weights to convert")
    tied = bool(config.get("tie_word_embeddings", False))
    for file in files:
        with safe_open(str(file), framework="pt") as st:
            for key in st.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if key == "lm_head.weight" and tied:
                    continue
                target = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if target is None:
                    raise WbError(f"{file}: tensor {key} has no place in a Llama GGUF file")
                data = st.get_tensor(key).float().numpy()
                if key.endswith(("q_proj.weight", "q_proj.bias")):
                    data = permute_qk(data, n_head)
                elif key.endswith(("k_proj.weight", "k_proj.bias")):
                    data = permute_qk(data, n_kv)
                if data.ndim == 1:
                    yield target, data.astype(np.float32), gguf.GGMLQuantizationType.F32
                elif quant == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
                    q8 = gguf.GGMLQuantizationType.Q8_0
                    yield target, gguf.quants.quantize(data.astype(np.float32), q8), q8
                else:
                    yield target, data.astype(np.float16), gguf.GGMLQuantizationType.F16
