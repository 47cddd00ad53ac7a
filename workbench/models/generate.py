"""Batched generation and reference losses, with a cache so re-running an eval or a report never regenerates.

Prompts are rendered exactly as training rendered them (the run's chat or Alpaca template), left-padded, sorted by
length into batches (less padding) and returned in the caller's order. Greedy by default; sampling is seeded per
batch. Generation stops at the end-of-turn/EOS tokens or after `max_new_tokens`.

Each answer records how many tokens were generated and whether generation ended at an end token (`finished`) or was
cut at `max_new_tokens`. A cut answer never ends in half a character: byte-level tokenizers can stop in the middle
of a multi-byte UTF-8 character (a Chinese character is three bytes), which decodes to U+FFFD; those trailing
replacement characters are dropped.

Generation and the losses run in the precision `workbench.precision` picks (`auto`: bf16 autocast on a CPU with
native bf16 units, else fp32); the weights are never cast (with AMX their bf16 copies are packed once per call,
`Choice.packed`). The key/value cache grows in place (`workbench.models.kv_cache`).

The cache (`<wb cache>/generations.sqlite`) is keyed by the model's identity (SHA-256 of the base weights and of the
active adapter's weights), the exact prompt text and the generation settings, batch size included (padding can
change greedy outputs in the last bits, so outputs made at another batch size are not reused), and the precision
used (`auto` resolved to bf16 or fp32: bf16 answers are not fp32 answers).

The cache is built on `workbench.models.cache`, the scaffold every SQLite cache of wb shares.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from workbench.models.base import resolve_model
from workbench.models.cache import ModelIdentity, SqliteCache
from workbench.models.folders import cache_dir
from workbench.models.kv_cache import generation_cache
from workbench.models.targets import Loaded
from workbench.models.weights import SAFETENSORS_WEIGHTS
from workbench.output import sha256_file
from workbench.precision import PRECISION_HELP, Choice, Precision, for_model
from workbench.text import safe_decode_tail

ProgressFn = Callable[[int, int], None]
CACHE_FORMAT = 2  # entries hold {"text", "tokens", "finished"}; format 1 held the text alone


class GenerationSettings(BaseModel):
    """How answers are generated; every field is part of the cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(128, ge=1, le=8192, description="Stop after this many new tokens.")
    batch_size: int = Field(16, ge=1, description="Prompts generated together (16: ~5x one-at-a-time on 2 CPU cores).")
    do_sample: bool = Field(False, description="Sample instead of greedy decoding.")
    temperature: float = Field(0.7, gt=0, description="Sampling temperature.")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling: the smallest token set of this probability.")
    seed: int = Field(0, description="Seed of sampling.")
    precision: Precision = Field("auto", description=PRECISION_HELP)

    def key(self) -> str:
        return json.dumps(self.model_dump(), sort_keys=True)


def prompt_for(loaded: Loaded, record: dict[str, Any]) -> str:
    """The text the model continues for a record: its template, up to where the answer starts."""
    from workbench.models import templates as tdata

    full = {"system": "", "history": [], "input": "", **record, "output": ""}
    return tdata.prompt_text(loaded.tokenizer, loaded.template, full)  # type: ignore[arg-type]


def stop_token_ids(loaded: Loaded) -> list[int]:
    from workbench.models import templates as tdata

    ids: set[int] = set()
    config_eos = getattr(getattr(loaded.model, "generation_config", None), "eos_token_id", None)
    for value in (config_eos, loaded.tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    if loaded.template == "chat":  # the template's own end of turn (<|im_end|> of a named template on a base model)
        eot_id = tdata.end_of_turn_id(loaded.tokenizer)
        if eot_id is not None:
            ids.add(eot_id)
    return sorted(ids)


@dataclass(frozen=True)
class Answer:
    text: str
    generated_tokens: int
    finished: bool  # ended at an end token; False: cut at max_new_tokens


def generate(
    loaded: Loaded,
    prompts: Sequence[str],
    settings: GenerationSettings,
    cache: GenerationCache | None = None,
    progress: ProgressFn | None = None,
) -> list[str]:
    """Answers for `prompts` (rendered prompt texts), in order; cached answers are not regenerated."""
    return [a.text for a in generate_answers(loaded, prompts, settings, cache, progress)]


def generate_answers(
    loaded: Loaded,
    prompts: Sequence[str],
    settings: GenerationSettings,
    cache: GenerationCache | None = None,
    progress: ProgressFn | None = None,
) -> list[Answer]:
    """`generate`, with each answer's token count and whether it finished."""
    choice = for_model(settings.precision, loaded.model)
    settings = settings.model_copy(update={"precision": choice.name})  # the cache key holds what ran, not auto
    keys = [cache.key(loaded, p, settings) for p in prompts] if cache is not None else []
    found = cache.get_many(keys) if cache is not None else {}
    answers: list[Answer | None] = [found.get(k) for k in keys] if cache is not None else [None] * len(prompts)
    todo = [i for i, a in enumerate(answers) if a is None]
    done = len(prompts) - len(todo)
    if progress is not None:
        progress(done, len(prompts))
    if todo:
        for batch, made in _generate_batches(loaded, [prompts[i] for i in todo], settings, choice):
            fresh = {todo[j]: answer for j, answer in zip(batch, made, strict=True)}
            for i, answer in fresh.items():
                answers[i] = answer
            if cache is not None:
                cache.put_many({keys[i]: answer for i, answer in fresh.items()})
            done += len(batch)
            if progress is not None:
                progress(done, len(prompts))
    return [a if a is not None else Answer("", 0, True) for a in answers]


def _generate_batches(
    loaded: Loaded, prompts: list[str], settings: GenerationSettings, choice: Choice
) -> Iterator[tuple[list[int], list[Answer]]]:
    import torch

    tokenizer = loaded.tokenizer
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (-len(encoded[i]), i))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = stop_token_ids(loaded)
    with loaded.active_model() as model, choice.packed(model):
        device = next(model.parameters()).device
        for n, lo in enumerate(range(0, len(order), settings.batch_size)):
            batch = order[lo : lo + settings.batch_size]
            longest = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), longest), dtype=torch.long)
            for row, i in enumerate(batch):  # left padding: every prompt ends where generation starts
                seq = encoded[i]
                ids[row, longest - len(seq) :] = torch.tensor(seq, dtype=torch.long)
                mask[row, longest - len(seq) :] = 1
            if settings.do_sample:
                torch.manual_seed(settings.seed + n)
            sampling = (
                {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
                if settings.do_sample
                else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
            )
            with choice.inference():
                out = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=settings.max_new_tokens,
                    pad_token_id=pad_id,
                    eos_token_id=stops or None,
                    cache=generation_cache(model),
                    **sampling,
                )
            new = out[:, longest:]
            texts = tokenizer.batch_decode(new, skip_special_tokens=True)
            made = []
            for row, text in zip(new.tolist(), texts, strict=True):
                ends = [k for k, token in enumerate(row) if token in stops]
                finished = bool(ends)
                count = ends[0] + 1 if ends else len(row)
                made.append(Answer(safe_decode_tail(text).strip(), count, finished or count < settings.max_new_tokens))
            yield batch, made


def reference_losses(
    loaded: Loaded,
    records: Sequence[dict[str, Any]],
    max_length: int = 1024,
    batch_size: int = 8,
    precision: str = "auto",
) -> list[float | None]:
    """Mean token loss of each record's `output` given its prompt (the template of the run); None if nothing fits."""
    from workbench.models import templates as tdata

    examples = []
    for r in records:
        full = {"system": "", "history": [], "input": "", **r}
        examples.append(tdata.encode(loaded.tokenizer, full, loaded.template, max_length, "responses"))  # type: ignore[arg-type]
    return _losses(loaded, examples, batch_size, precision)


def text_losses(
    loaded: Loaded,
    texts: Sequence[str],
    max_length: int = 1024,
    batch_size: int = 8,
    precision: str = "auto",
) -> list[float | None]:
    """Mean token loss of plain texts (no template): the language-modelling side of the forgetting check."""
    from workbench.models import templates as tdata

    examples = []
    for text in texts:
        ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"][:max_length]
        examples.append(tdata.Example(0, ids, list(ids), len(ids) >= max_length))
    return _losses(loaded, examples, batch_size, precision)


def _losses(loaded: Loaded, examples: list[Any], batch_size: int, precision: str) -> list[float | None]:
    from workbench.models.losses import sample_losses

    usable = [i for i, ex in enumerate(examples) if ex.trained_tokens > 1 or (ex.trained_tokens and ex.labels[0] < 0)]
    pad_id = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    out: list[float | None] = [None] * len(examples)
    if usable:
        with loaded.active_model() as model:
            choice = for_model(precision, model)
            losses = sample_losses(model, [examples[i] for i in usable], pad_id, batch_size, choice)
        for i, loss in zip(usable, losses, strict=True):
            out[i] = round(float(loss), 6)
    return out


# ---------------------------------------------------------------------------------------------------------------
# The cache


class GenerationCache(SqliteCache):
    """Generated answers in SQLite, keyed by model identity + prompt + settings. Safe across processes."""

    def __init__(self, path: Path | None = None) -> None:
        super().__init__(
            path or cache_dir() / "generations.sqlite",
            {
                "answers": "key TEXT PRIMARY KEY, text TEXT NOT NULL",
                "file_hashes": "path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, sha256 TEXT",
            },
        )
        self._identities: dict[tuple[str | None, str | None], ModelIdentity] = {}

    def identity(self, loaded: Loaded) -> ModelIdentity:
        """SHA-256 of the base weight files and of the active adapter's (or, for weights in training, the hash the
        trainer gives them: `Loaded.weights_sha256`)."""
        adapter_dir = _active_adapter_dir(loaded)
        memo = (loaded.base, adapter_dir)
        if loaded.weights_sha256 is not None:
            base_only = Loaded(loaded.model, loaded.tokenizer, loaded.template, loaded.base)
            return ModelIdentity(self.identity(base_only).base_sha256, "training:" + loaded.weights_sha256)
        if memo not in self._identities:
            base = resolve_model(loaded.base)
            weights = [base / n for n in SAFETENSORS_WEIGHTS if (base / n).is_file()]
            if weights and weights[0].name.endswith(".index.json"):
                index = json.loads(weights[0].read_text(encoding="utf-8"))
                weights = [base / f for f in sorted(set(index.get("weight_map", {}).values()))]
            base_hash = hashlib.sha256("".join(self._file_hash(w) for w in weights).encode()).hexdigest()
            adapter_hash = None
            if adapter_dir is not None:
                adapter_hash = self._file_hash(Path(adapter_dir) / "adapter_model.safetensors")
            self._identities[memo] = ModelIdentity(base_hash, adapter_hash)
        return self._identities[memo]

    def file_hash(self, path: Path) -> str:
        """SHA-256 of a file, remembered by path, size and mtime (a reward model's weights hash once)."""
        return self._file_hash(path)

    def _file_hash(self, path: Path) -> str:
        st = path.stat()
        with self._connect() as db:
            row = db.execute(
                "SELECT sha256 FROM file_hashes WHERE path = ? AND size = ? AND mtime_ns = ?",
                (str(path.resolve()), st.st_size, st.st_mtime_ns),
            ).fetchone()
        if row:
            return str(row[0])
        digest = sha256_file(path)
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?)",
                (str(path.resolve()), st.st_size, st.st_mtime_ns, digest),
            )
        return digest

    def key(self, loaded: Loaded, prompt: str, settings: GenerationSettings) -> str:
        ident = asdict(self.identity(loaded))
        blob = json.dumps(
            {"model": ident, "prompt": prompt, "settings": settings.key(), "format": CACHE_FORMAT}, sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, Answer]:
        return {k: Answer(e["text"], e["tokens"], e["finished"]) for k, e in self._read("answers", keys).items()}

    def put_many(self, items: dict[str, Answer]) -> None:
        rows = {k: {"text": a.text, "tokens": a.generated_tokens, "finished": a.finished} for k, a in items.items()}
        self._write("answers", rows)


def _active_adapter_dir(loaded: Loaded) -> str | None:
    if loaded.active is None:
        return None
    return str(loaded.adapter_dirs[loaded.active])
