"""A reward model's score per record: a sequence-classification model (one label) over the whole conversation.

A reward model is what `wb train method=reward` makes (TRL's RewardTrainer: a sequence-classification LoRA run) or
any local `AutoModelForSequenceClassification` folder in safetensors:

- a run folder (`recipe.yaml` with `adapter/` or `model/`),
- an adapter folder (`adapter_config.json`, PEFT `SEQ_CLS`; its score head saved in the adapter), over the base
  model it names,
- a whole model folder whose `config.json` names a `...ForSequenceClassification` architecture.

The conversation is rendered as the reward trainer renders it: the tokenizer's chat template over the full
conversation (prompt and answer), or, for a tokenizer without one, the Alpaca prompt followed by the answer. The
score is the model's logit for the last token that is not padding (transformers' rule for these heads).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import WbError
from workbench.models import templates as tdata
from workbench.models.base import load_adapter, load_tokenizer, resolve_model
from workbench.models.embedded import EMBEDDED
from workbench.models.weights import SAFETENSORS_WEIGHTS, check_adapter_weights
from workbench.precision import Choice
from workbench.quiet import quiet_libraries
from workbench.runfile.folder import RunFolder

ProgressFn = Callable[[int, int], None]


@dataclass
class RewardModel:
    model: Any
    tokenizer: Any
    spec: str
    weight_files: list[Path]  # what its identity hashes

    def identity(self, file_hash: Callable[[Path], str]) -> dict[str, Any]:
        return {"reward_model": [file_hash(p) for p in self.weight_files]}


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise WbError(f"{path}: not valid JSON: {e}") from None
    return value if isinstance(value, dict) else {}


def _weights(folder: Path) -> list[Path]:
    found = [folder / n for n in SAFETENSORS_WEIGHTS if (folder / n).is_file()]
    if found and found[0].name.endswith(".index.json"):
        index = _json(found[0])
        return [folder / f for f in sorted(set(index.get("weight_map", {}).values()))]
    return found


def _locate(spec: str) -> tuple[Path | None, Path | None, str | None]:
    """(whole model folder, adapter folder, base model spec) of a reward model spec."""
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise WbError(f"--reward-model {spec}: no such folder (give a reward run, an adapter or a model folder)")
    if RunFolder(path).is_run():
        recipe = RunFolder(path).recipe()
        if (path / "adapter" / "adapter_config.json").is_file():
            return None, path / "adapter", str(recipe.get("model") or EMBEDDED)
        if (path / "model" / "config.json").is_file():
            return path / "model", None, None
        raise WbError(f"--reward-model {spec}: the run has no adapter/ or model/ yet (not finished?)")
    if (path / "adapter_config.json").is_file():
        config = _json(path / "adapter_config.json")
        base = config.get("base_model_name_or_path")
        if not base:
            raise WbError(f"{path / 'adapter_config.json'}: names no base model; pass the reward run folder instead")
        return None, path, str(base)
    if (path / "config.json").is_file():
        return path, None, None
    raise WbError(f"--reward-model {spec}: neither a run folder, an adapter folder nor a model folder")


def _check_head(folder: Path, spec: str) -> None:
    archs = _json(folder / "config.json").get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        raise WbError(
            f"--reward-model {spec}: {folder / 'config.json'} names {', '.join(map(str, archs)) or 'no architecture'}, "
            "not a ...ForSequenceClassification reward model"
        )


def load_reward_model(spec: str) -> RewardModel:
    quiet_libraries()
    whole, adapter, base = _locate(spec)
    if adapter is not None:
        check_adapter_weights(adapter)  # before the base loads
    from transformers import AutoModelForSequenceClassification

    def from_folder(folder: Path, **kwargs: Any) -> Any:
        if not _weights(folder):
            raise WbError(f"--reward-model {spec}: {folder} has no model.safetensors")
        try:
            return AutoModelForSequenceClassification.from_pretrained(
                str(folder), trust_remote_code=False, use_safetensors=True, local_files_only=True, **kwargs
            )
        except (OSError, ValueError) as e:
            raise WbError(f"--reward-model {spec}: cannot load {folder}: {str(e).splitlines()[0]}") from None

    if whole is not None:
        _check_head(whole, spec)
        model = from_folder(whole)
        tokenizer = load_tokenizer(whole)
        files = _weights(whole)
    else:
        assert adapter is not None and base is not None
        base_dir = resolve_model(base)
        tokenizer = load_tokenizer(adapter if (adapter / "tokenizer_config.json").is_file() else base_dir)
        model = from_folder(base_dir, num_labels=1)
        model = load_adapter(model, adapter)
        files = [*_weights(base_dir), adapter / "adapter_model.safetensors"]
    if int(getattr(model.config, "num_labels", 1)) != 1:
        raise WbError(f"--reward-model {spec}: the model has {model.config.num_labels} labels; a reward model has 1")
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return RewardModel(model, tokenizer, spec, files)


def render(tokenizer: Any, record: dict[str, Any]) -> str:
    """The conversation as the reward model reads it (chat template, else Alpaca prompt + answer)."""
    full = {"system": "", "history": [], "input": "", **record}
    if getattr(tokenizer, "chat_template", None):
        return tdata._render(tokenizer, tdata.messages_of(full), generation_prompt=False)
    prompt = tdata.prompt_text(tokenizer, "alpaca", full)
    return prompt + full["output"] + (tokenizer.eos_token or "")


def score_token_ids(
    model: Any,
    encoded: Sequence[Sequence[int]],
    choice: Choice,
    batch_size: int = 8,
    progress: ProgressFn | None = None,
) -> list[float]:
    """A reward model's score of each token sequence, in order: batches of similar length, right-padded, the logit
    at the last real token (transformers' rule for sequence-classification heads)."""
    import torch

    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), i))
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    out = [0.0] * len(encoded)
    device = next(model.parameters()).device
    with choice.inference(), choice.packed(model):
        for lo in range(0, len(order), batch_size):
            batch = order[lo : lo + batch_size]
            longest = max(1, max(len(encoded[i]) for i in batch))
            ids = torch.full((len(batch), longest), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), longest), dtype=torch.long)
            for b, i in enumerate(batch):
                ids[b, : len(encoded[i])] = torch.tensor(list(encoded[i]), dtype=torch.long)
                mask[b, : len(encoded[i])] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            for i, value in zip(batch, logits[:, 0].float().tolist(), strict=True):
                out[i] = float(value)
            if progress is not None:
                progress(min(len(encoded), lo + len(batch)), len(encoded))
    return out


def reward_scores(
    rm: RewardModel,
    records: Sequence[dict[str, Any]],
    choice: Choice,
    max_length: int = 1024,
    batch_size: int = 8,
    progress: ProgressFn | None = None,
) -> list[float]:
    """The reward of each record, in order (texts longer than max_length keep their first max_length tokens)."""
    tok = rm.tokenizer
    encoded = [tok(render(tok, r), add_special_tokens=False)["input_ids"][:max_length] for r in records]
    return [round(v, 6) for v in score_token_ids(rm.model, encoded, choice, batch_size, progress)]
