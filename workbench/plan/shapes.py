"""Which model `wb plan` plans for: a `Shape` (`workbench.methods.sizing`, where the parameter formula is) read from a
model's `config.json`, or the Llama shape picked for a parameter count. Pure arithmetic, no torch.

`--params N` picks the shape in SHAPES nearest to N (log scale), from the published configs; the plan says how far
N is from it, and N beyond the table is refused:

| shape | params | h | L | heads / kv | i | V | tied | context | config |
|---|---|---|---|---|---|---|---|---|---|
| 1B | 1.24B | 2048 | 16 | 32 / 8 | 8192 | 128256 | yes | 131072 | meta-llama/Llama-3.2-1B |
| 3B | 3.21B | 3072 | 28 | 24 / 8 | 8192 | 128256 | yes | 131072 | meta-llama/Llama-3.2-3B |
| 7B | 6.74B | 4096 | 32 | 32 / 32 | 11008 | 32000 | no | 4096 | meta-llama/Llama-2-7b-hf |
| 13B | 13.0B | 5120 | 40 | 40 / 40 | 13824 | 32000 | no | 4096 | meta-llama/Llama-2-13b-hf |
| 70B | 70.6B | 8192 | 80 | 64 / 8 | 28672 | 128256 | no | 131072 | meta-llama/Llama-3.1-70B |
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from workbench.errors import WbError
from workbench.io.jsontext import read_json_object
from workbench.methods.sizing import Shape


def _shape(name: str, h: int, layers: int, heads: int, kv: int, i: int, vocab: int, tied: bool, ctx: int) -> Shape:
    return Shape(name, h, layers, heads, kv, h // heads, i, vocab, tied, ctx, source=f"{name} config.json")


SHAPES: dict[str, Shape] = {
    "1B": _shape("meta-llama/Llama-3.2-1B", 2048, 16, 32, 8, 8192, 128256, True, 131072),
    "3B": _shape("meta-llama/Llama-3.2-3B", 3072, 28, 24, 8, 8192, 128256, True, 131072),
    "7B": _shape("meta-llama/Llama-2-7b-hf", 4096, 32, 32, 32, 11008, 32000, False, 4096),
    "13B": _shape("meta-llama/Llama-2-13b-hf", 5120, 40, 40, 40, 13824, 32000, False, 4096),
    "70B": _shape("meta-llama/Llama-3.1-70B", 8192, 80, 64, 8, 28672, 128256, False, 131072),
}


SHAPE_REACH = 2.0  # --params more than this factor beyond the smallest or largest shape is refused: none describes it
SHAPE_MATCH = 1.1  # within this factor a shape is the size asked for; further off, the plan says how far


def shape_for_params(n: float) -> Shape:
    """The shape in SHAPES whose parameter count is nearest to `n` on a log scale; refused beyond SHAPE_REACH of the
    table's ends (a 1e30 request would otherwise be planned as a 70B model without a word)."""
    if not math.isfinite(n) or n <= 0:
        raise WbError(f"--params: {n!r} is not a positive parameter count (e.g. 7e9)")
    label, shape = min(SHAPES.items(), key=lambda kv: abs(math.log(kv[1].total_params() / n)))
    have = shape.total_params()
    sizes = [s.total_params() for s in SHAPES.values()]
    if n > max(sizes) * SHAPE_REACH or n < min(sizes) / SHAPE_REACH:
        end = "largest" if n > have else "smallest"
        raise WbError(
            f"--params {n:.3g}: {_times(n, have)} the {end} shape wb plans for ({label}, {have / 1e9:.2f}B "
            "parameters); plan a model of another size from its config.json with --model FOLDER"
        )
    return replace(shape, name=f"{label} shape ({shape.name})")


def _times(n: float, have: int) -> str:
    """How `n` compares with `have`: `2.31x more than` / `1.6x fewer than`."""
    return f"{n / have:.3g}x more than" if n > have else f"{have / n:.3g}x fewer than"


def shape_distance(n: float, shape: Shape) -> str | None:
    """What the plan says when the shape planned for `--params n` is not that size (beyond SHAPE_MATCH)."""
    have = shape.total_params()
    if max(have / n, n / have) <= SHAPE_MATCH:
        return None
    return (
        f"--params {n:.3g} asks for {_times(n, have)} the nearest shape wb plans for, {shape.name} with "
        f"{have / 1e9:.2f}B parameters: the figures are that shape's"
    )


def _need(config: dict[str, Any], key: str, source: str, *alts: str) -> int:
    for k in (key, *alts):
        value = config.get(k)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    raise WbError(f"{source}: field {key}: missing or not a positive integer; wb plan needs a decoder's config.json")


def shape_from_config(config: dict[str, Any], source: str, name: str | None = None) -> Shape:
    """A Shape from a transformers `config.json` (a multimodal config's `text_config` is read when present)."""
    if isinstance(config.get("text_config"), dict):
        config = {**config["text_config"], "tie_word_embeddings": config.get("tie_word_embeddings", True)}
    hidden = _need(config, "hidden_size", source, "n_embd", "d_model")
    heads = _need(config, "num_attention_heads", source, "n_head")
    kv = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    model_type = str(config.get("model_type") or "llama")
    return Shape(
        name=name or str(config.get("_name_or_path") or model_type),
        hidden=hidden,
        layers=_need(config, "num_hidden_layers", source, "n_layer"),
        heads=heads,
        kv_heads=int(kv),
        head_dim=int(head_dim),
        intermediate=_need(config, "intermediate_size", source, "n_inner"),
        vocab=_need(config, "vocab_size", source),
        tied=bool(config.get("tie_word_embeddings", True)),
        context=config.get("max_position_embeddings")
        if isinstance(config.get("max_position_embeddings"), int)
        else None,
        model_type=model_type,
        attention_bias=bool(config.get("attention_bias", model_type == "qwen2")),
        source=source,
    )


def read_config(folder: Path) -> dict[str, Any]:
    return read_json_object(Path(folder) / "config.json", "the model config")


def model_summary(shape: Shape) -> dict[str, Any]:
    return {
        "name": shape.name,
        "source": shape.source,
        "model_type": shape.model_type,
        "parameters": shape.total_params(),
        "hidden_size": shape.hidden,
        "layers": shape.layers,
        "attention_heads": shape.heads,
        "kv_heads": shape.kv_heads,
        "head_dim": shape.head_dim,
        "intermediate_size": shape.intermediate,
        "vocab_size": shape.vocab,
        "tied_embeddings": shape.tied,
        "context": shape.context,
    }
