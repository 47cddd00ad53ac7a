"""Batched generation and reference losses, with a cache so re-running an eval or a report never regenerates.

Prompts are rendered exactly as training rendered them (the run's chat or Alpaca template), left-padded, sorted by
length into batches (less padding) and returned in the caller's order. Greedy by default; sampling is seeded per
batch. Generation stops at the end-of-turn/EOS tokens or after `max_new_tokens`.

The cache (`<wb cache>/generations.sqlite`) is keyed by the model's identity (SHA-256 of the base weights and of the
active adapter's weights), the exact prompt text and the generation settings, batch size included (padding can
change greedy outputs in the last bits, so outputs made at another batch size are not reused).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from workbench.io import sha256_file
from workbench.train.model import SAFETENSORS_WEIGHTS, cache_dir, resolve_model
from workbench.train.runs import Loaded

ProgressFn = Callable[[int, int], None]


class GenerationSettings(BaseModel):
    """How answers are generated; every field is part of the cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(128, ge=1, le=8192)
    batch_size: int = Field(16, ge=1, description="Prompts generated together (16: ~5x one-at-a-time on 2 CPU cores).")
    do_sample: bool = False
    temperature: float = Field(0.7, gt=0)
    top_p: float = Field(0.9, gt=0, le=1)
    seed: int = 0

    def key(self) -> str:
        return json.dumps(self.model_dump(), sort_keys=True)


def prompt_for(loaded: Loaded, record: dict[str, Any]) -> str:
    """The text the model continues for a record: its template, up to where the answer starts."""
    from workbench.train import data as tdata

    full = {"system": "", "history": [], "input": "", **record, "output": ""}
    return tdata.prompt_text(loaded.tokenizer, loaded.template, full)  # type: ignore[arg-type]


def stop_token_ids(loaded: Loaded) -> list[int]:
    from workbench.train import data as tdata

    ids: set[int] = set()
    config_eos = getattr(getattr(loaded.model, "generation_config", None), "eos_token_id", None)
    for value in (config_eos, loaded.tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    if loaded.template == "chat":  # the template's own end of turn (<|im_end|> of a named template on a base model)
        eot = tdata.end_of_turn(loaded.tokenizer)
        eot_ids = loaded.tokenizer(eot, add_special_tokens=False)["input_ids"] if eot else []
        if len(eot_ids) == 1:
            ids.add(int(eot_ids[0]))
    return sorted(ids)


def generate(
    loaded: Loaded,
    prompts: Sequence[str],
    settings: GenerationSettings,
    cache: GenerationCache | None = None,
    progress: ProgressFn | None = None,
) -> list[str]:
    """Answers for `prompts` (rendered prompt texts), in order; cached answers are not regenerated."""
    keys = [cache.key(loaded, p, settings) for p in prompts] if cache is not None else []
    found = cache.get_many(keys) if cache is not None else {}
    answers: list[str | None] = [found.get(k) for k in keys] if cache is not None else [None] * len(prompts)
    todo = [i for i, a in enumerate(answers) if a is None]
    done = len(prompts) - len(todo)
    if progress is not None:
        progress(done, len(prompts))
    if todo:
        for batch, texts in _generate_batches(loaded, [prompts[i] for i in todo], settings):
            fresh = {todo[j]: text for j, text in zip(batch, texts, strict=True)}
            for i, text in fresh.items():
                answers[i] = text
            if cache is not None:
                cache.put_many({keys[i]: text for i, text in fresh.items()})
            done += len(batch)
            if progress is not None:
                progress(done, len(prompts))
    return [a if a is not None else "" for a in answers]


def _generate_batches(
    loaded: Loaded, prompts: list[str], settings: GenerationSettings
) -> Iterator[tuple[list[int], list[str]]]:
    import torch

    tokenizer = loaded.tokenizer
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (-len(encoded[i]), i))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = stop_token_ids(loaded)
    with loaded.active_model() as model:
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
            with torch.inference_mode():
                out = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=settings.max_new_tokens,
                    pad_token_id=pad_id,
                    eos_token_id=stops or None,
                    **sampling,
                )
            texts = tokenizer.batch_decode(out[:, longest:], skip_special_tokens=True)
            yield batch, [t.strip() for t in texts]


def reference_losses(
    loaded: Loaded, records: Sequence[dict[str, Any]], max_length: int = 1024, batch_size: int = 8
) -> list[float | None]:
    """Mean token loss of each record's `output` given its prompt (the template of the run); None if nothing fits."""
    from workbench.train import data as tdata

    examples = []
    for r in records:
        full = {"system": "", "history": [], "input": "", **r}
        examples.append(tdata.encode(loaded.tokenizer, full, loaded.template, max_length, "responses"))  # type: ignore[arg-type]
    return _losses(loaded, examples, batch_size)


def text_losses(
    loaded: Loaded, texts: Sequence[str], max_length: int = 1024, batch_size: int = 8
) -> list[float | None]:
    """Mean token loss of plain texts (no template): the language-modelling side of the forgetting check."""
    from workbench.train import data as tdata

    examples = []
    for text in texts:
        ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"][:max_length]
        examples.append(tdata.Example(0, ids, list(ids), len(ids) >= max_length))
    return _losses(loaded, examples, batch_size)


def _losses(loaded: Loaded, examples: list[Any], batch_size: int) -> list[float | None]:
    from workbench.train.trainer import sample_losses

    usable = [i for i, ex in enumerate(examples) if ex.trained_tokens > 1 or (ex.trained_tokens and ex.labels[0] < 0)]
    pad_id = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    out: list[float | None] = [None] * len(examples)
    if usable:
        with loaded.active_model() as model:
            losses = sample_losses(model, [examples[i] for i in usable], pad_id, batch_size)
        for i, loss in zip(usable, losses, strict=True):
            out[i] = round(float(loss), 6)
    return out


# ---------------------------------------------------------------------------------------------------------------
# The cache


@dataclass(frozen=True)
class ModelIdentity:
    base_sha256: str
    adapter_sha256: str | None


class GenerationCache:
    """Generated answers in SQLite, keyed by model identity + prompt + settings. Safe across processes."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_dir() / "generations.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._identities: dict[tuple[str | None, str | None], ModelIdentity] = {}
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, text TEXT NOT NULL)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS file_hashes (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                "sha256 TEXT)"
            )
        self.hits = 0
        self.misses = 0

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30)) as db, db:
            yield db

    def identity(self, loaded: Loaded) -> ModelIdentity:
        adapter_dir = _active_adapter_dir(loaded)
        memo = (loaded.base, adapter_dir)
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
        blob = json.dumps({"model": ident, "prompt": prompt, "settings": settings.key()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        with self._connect() as db:
            for lo in range(0, len(keys), 500):
                chunk = list(keys[lo : lo + 500])
                marks = ",".join("?" * len(chunk))
                found.update(db.execute(f"SELECT key, text FROM answers WHERE key IN ({marks})", chunk).fetchall())
        self.hits += sum(1 for k in keys if k in found)
        self.misses += sum(1 for k in keys if k not in found)
        return found

    def put_many(self, items: dict[str, str]) -> None:
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?)", list(items.items()))


def _active_adapter_dir(loaded: Loaded) -> str | None:
    if loaded.active is None:
        return None
    return str(loaded.adapter_dirs[loaded.active])
