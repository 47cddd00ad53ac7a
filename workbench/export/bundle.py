"""What every export carries so that it serves exactly as the run trained: the run's chat template, the end-of-turn
token among the stop tokens, and the template's fingerprint.

The tokenizer is saved with the template the run trained with installed (a named template such as `chatml`, a
template file, or the base model's own): as `chat_template.jinja`, where transformers 5 saves and reads it first,
and as `chat_template` in `tokenizer_config.json`, where readers written before that file look for it; both hold the
same text. A run trained with the Alpaca format carries no chat
template (a base model's own would render prompts unlike training; without one, `apply_chat_template` refuses
instead). `generation_config.json` lists the template's end-of-turn token (`<|im_end|>` for ChatML) in
`eos_token_id` beside the tokenizer's EOS, so plain `model.generate` stops where `wb generate` does. The fingerprint
(`templates.template_fingerprint`) goes into `wb_export.json`; `wb generate` and `wb eval` compare it with the
template they render with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.io.jsontext import write_json
from workbench.models import templates as tdata
from workbench.models.base import TOKENIZER_FILES, load_tokenizer, resolve_model
from workbench.models.folders import StatusFn
from workbench.models.targets import Target
from workbench.output import atomic_write

GENERATION_CONFIG = "generation_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"


@dataclass
class Bundle:
    """The template an export carries: `kind` chat or alpaca, `source` what the run recorded (chat, chatml, a file,
    alpaca), its fingerprint, end-of-turn text and the stop token ids written to generation_config.json."""

    kind: tdata.Template
    source: str
    sha256: str
    end_of_turn: str
    eos_token_ids: list[int]
    warnings: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """What wb_export.json (and an exported adapter's wb_adapter.json) says of the template."""
        return {
            "template_kind": self.kind,
            "template_source": self.source,
            "template_sha256": self.sha256,
            "end_of_turn": self.end_of_turn,
            "eos_token_id": self.eos_token_ids,
        }


def write_bundle(target: Target, dest: Path, on_status: StatusFn | None = None) -> Bundle:
    """Save the tokenizer with the run's template and a generation_config.json with its stop tokens into `dest`."""
    tokenizer = load_tokenizer(tokenizer_source(target), on_status)
    kind = tdata.choose_template(tokenizer, target.template)
    if kind == "alpaca":
        tokenizer.chat_template = None
    sha = tdata.template_fingerprint(tokenizer, kind)
    eot = tdata.end_of_turn(tokenizer) if kind == "chat" else ""
    tokenizer.save_pretrained(dest)
    _template_in_config(dest, tokenizer.chat_template if kind == "chat" else None)
    stops = _stop_ids(tokenizer, kind)
    _generation_config(target, dest, tokenizer, stops)
    source = target.recorded.template if target.recorded is not None else target.template
    bundle = Bundle(kind, _short(source), sha, eot, stops)
    if target.recorded is not None and target.recorded.sha256 != sha:  # the template changed since training
        label = tdata.template_label(tokenizer, kind, target.template)
        r = target.recorded
        bundle.warnings.append(tdata.fingerprint_mismatch(sha, label, r.sha256, r.template, r.where))
    return bundle


def tokenizer_source(target: Target) -> str | Path:
    """The adapter folder when it holds the run's tokenizer (wb saves it there), else the base model."""
    if target.adapter is not None and any((target.adapter / n).is_file() for n in TOKENIZER_FILES):
        return target.adapter
    return target.base


def _short(source: str) -> str:
    """A template file's name rather than its path on the machine that exported it."""
    return Path(source).name if source.endswith(".jinja") else source


def _template_in_config(dest: Path, text: str | None) -> None:
    """tokenizer_config.json's `chat_template` as older readers expect it (or none, with no chat template)."""
    path = dest / TOKENIZER_CONFIG
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    config.pop("chat_template", None)
    if text is not None:
        config["chat_template"] = text
    else:
        (dest / tdata.RUN_TEMPLATE_FILE).unlink(missing_ok=True)  # a copied adapter's own, unlike the training
    with atomic_write(path) as f:  # the standard library's JSON: transformers writes model_max_length as 1e30
        f.write((json.dumps(config, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))


def _stop_ids(tokenizer: Any, kind: tdata.Template) -> list[int]:
    ids = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    if kind == "chat":
        eot_id = tdata.end_of_turn_id(tokenizer)
        if eot_id is not None:
            ids.add(eot_id)
    return sorted(ids)


def _generation_config(target: Target, dest: Path, tokenizer: Any, stops: list[int]) -> None:
    """The folder's generation_config.json (a merged model's own, else the base model's), its eos_token_id
    extended by the stop tokens; bos and pad from the tokenizer where it names none."""
    path = dest / GENERATION_CONFIG
    if not path.is_file():
        base = resolve_model(target.base) / GENERATION_CONFIG
        path = base if base.is_file() else path
    config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    had = config.get("eos_token_id")
    have = [had] if isinstance(had, int) else list(had or [])
    config["eos_token_id"] = have + [i for i in stops if i not in have]
    if len(config["eos_token_id"]) == 1:
        config["eos_token_id"] = config["eos_token_id"][0]
    for key in ("bos_token_id", "pad_token_id"):
        value = getattr(tokenizer, key, None)
        if config.get(key) is None and value is not None:
            config[key] = int(value)
    write_json(dest / GENERATION_CONFIG, config)
