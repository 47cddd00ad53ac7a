"""Log-likelihoods: how likely a model finds a continuation after a context (`loglikelihoods`), what multiple-choice
scoring and preference accuracy use.

As in lm-evaluation-harness's `_encode_pair`, trailing whitespace of the context moves into the continuation, the
whole text is tokenised once and the continuation's tokens are those after the context's.

Batched across requests: each distinct token row (context + continuation, less its last token) runs once, so
continuations that are one token each share one forward pass; rows are sorted by length, right-padded, and the
output head runs only on the scored positions where the model allows it. The forward passes run in the precision
`workbench.precision` picks (`auto`: bf16 autocast on a CPU with native bf16 units, else fp32; the weights are never
cast, the log-softmax is taken in fp32), as generation does. Results are cached by model identity + context +
continuation + the precision that ran (`LoglikCache`, beside the generation cache): bf16 sums are not fp32 sums.
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

from workbench.models.cache import open_cache, read_json_rows, write_json_rows
from workbench.models.folders import cache_dir
from workbench.models.generate import GenerationCache
from workbench.models.losses import prompt_learning
from workbench.models.targets import Loaded
from workbench.precision import Choice, for_model

ProgressFn = Callable[[int, int], None]
CACHE_FORMAT = 2  # the key holds the precision that ran; format 1 entries were fp32 without saying so


@dataclass(frozen=True)
class Request:
    context: str
    continuation: str


def split_pair(context: str, continuation: str) -> Request:
    """lm-eval's rule: trailing whitespace of the context belongs to the continuation."""
    n = len(context) - len(context.rstrip())
    if n:
        return Request(context[:-n], context[-n:] + continuation)
    return Request(context, continuation)


# --- computing --------------------------------------------------------------------------------------------------


def loglikelihoods(
    loaded: Loaded,
    requests: Sequence[Request],
    batch_size: int = 16,
    max_length: int = 1024,
    cache: LoglikCache | None = None,
    progress: ProgressFn | None = None,
    precision: str = "auto",
) -> list[tuple[float, int]]:
    """(summed log-probability, token count) of each request's continuation given its context, in order, computed
    in `precision` (auto, bf16 or fp32: `workbench.precision`)."""
    choice = for_model(precision, loaded.model)
    keys = [cache.key(loaded, r, max_length, choice.name) for r in requests] if cache is not None else []
    found = cache.get_many(keys) if cache is not None else {}
    out: list[tuple[float, int] | None] = [found.get(k) for k in keys] if cache is not None else [None] * len(requests)
    todo = [i for i, v in enumerate(out) if v is None]
    if progress is not None:
        progress(len(requests) - len(todo), len(requests))
    if todo:
        fresh = _compute(loaded, [requests[i] for i in todo], batch_size, max_length, progress, len(requests), choice)
        for i, value in zip(todo, fresh, strict=True):
            out[i] = value
        if cache is not None:
            cache.put_many({keys[i]: v for i, v in zip(todo, fresh, strict=True)})
    return [v if v is not None else (0.0, 0) for v in out]


def _encode(tokenizer: Any, r: Request, max_length: int) -> tuple[list[int], int]:
    """Token ids of context + continuation (left-truncated to max_length + 1) and where the continuation starts."""
    whole = tokenizer(r.context + r.continuation, add_special_tokens=False)["input_ids"]
    n_ctx = len(tokenizer(r.context, add_special_tokens=False)["input_ids"]) if r.context else 0
    n_ctx = min(n_ctx, len(whole) - 1)  # a continuation always keeps at least one token
    if n_ctx < 1:
        raise ValueError("a multiple-choice context must have at least one token")
    cut = max(0, len(whole) - (max_length + 1))
    return whole[cut:], n_ctx - cut if n_ctx > cut else 1


def _compute(
    loaded: Loaded,
    requests: list[Request],
    batch_size: int,
    max_length: int,
    progress: ProgressFn | None,
    total: int,
    choice: Choice,
) -> list[tuple[float, int]]:
    import torch

    tokenizer = loaded.tokenizer
    encoded = [_encode(tokenizer, r, max_length) for r in requests]
    rows: dict[tuple[int, ...], int] = {}  # distinct input rows (each sequence less its last token)
    targets: list[tuple[int, int, list[int]]] = []  # per request: row, first scored position, tokens
    for whole, start in encoded:
        key = tuple(whole[:-1])
        row = rows.setdefault(key, len(rows))
        targets.append((row, start - 1, whole[start:]))
    row_ids = list(rows)
    needed: list[dict[int, set[int]]] = [{} for _ in row_ids]  # row -> position -> tokens scored there
    for row, first, tokens in targets:
        for j, t in enumerate(tokens):
            needed[row].setdefault(first + j, set()).add(t)
    logprobs: list[dict[tuple[int, int], float]] = [{} for _ in row_ids]  # row -> (position, token) -> log-prob
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(row_ids)), key=lambda i: (len(row_ids[i]), i))
    done = total - len(requests)
    per_row = [0] * len(row_ids)
    for row, _, _ in targets:
        per_row[row] += 1
    with loaded.active_model() as model, torch.inference_mode(), choice.autocast():
        device = next(model.parameters()).device
        masked_head = not prompt_learning(model)
        for lo in range(0, len(order), batch_size):
            batch = order[lo : lo + batch_size]
            longest = max(len(row_ids[i]) for i in batch)
            ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), longest), dtype=torch.long)
            keep = torch.zeros((len(batch), longest), dtype=torch.bool)
            for b, i in enumerate(batch):
                ids[b, : len(row_ids[i])] = torch.tensor(row_ids[i], dtype=torch.long)
                mask[b, : len(row_ids[i])] = 1
                keep[b, sorted(needed[i])] = True
            ids, mask, keep = ids.to(device), mask.to(device), keep.to(device)
            picked = None
            if masked_head:
                logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
                if logits.dim() == 2 and logits.shape[0] == int(keep.sum()):
                    picked = logits
                else:
                    masked_head = False  # the model's logits_to_keep takes no mask
            if picked is None:
                logits = model(input_ids=ids, attention_mask=mask).logits[:, -longest:]
                picked = logits[keep]
            scores = torch.log_softmax(picked.float(), dim=-1).cpu().double()
            for k, (b, pos) in enumerate(keep.nonzero().tolist()):  # row by row, as the kept positions come
                for t in needed[batch[b]][pos]:
                    logprobs[batch[b]][(pos, t)] = float(scores[k, t])
            done += sum(per_row[i] for i in batch)
            if progress is not None:
                progress(done, total)
    out = []
    for row, first, tokens in targets:
        total_lp = sum(logprobs[row][(first + j, t)] for j, t in enumerate(tokens))
        out.append((total_lp, len(tokens)))
    return out


# --- the cache --------------------------------------------------------------------------------------------------


class LoglikCache:
    """Log-likelihoods in SQLite (`<wb cache>/logliks.sqlite`), keyed by model identity (the generation cache's:
    SHA-256 of the base and adapter weights) + context + continuation + max_length + the precision that ran (`bf16`
    or `fp32`, never `auto`). Safe across processes."""

    def __init__(self, path: Path | None = None, identities: GenerationCache | None = None) -> None:
        self.path = path or cache_dir() / "logliks.sqlite"
        self._identities = identities or GenerationCache()
        open_cache(self.path, {"logliks": "key TEXT PRIMARY KEY, value TEXT NOT NULL"})
        self.hits = 0
        self.misses = 0

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30)) as db, db:
            yield db

    def key(self, loaded: Loaded, request: Request, max_length: int, precision: str) -> str:
        ident = asdict(self._identities.identity(loaded))
        blob = json.dumps(
            {
                "model": ident,
                "context": request.context,
                "continuation": request.continuation,
                "max_length": max_length,
                "precision": precision,
                "format": CACHE_FORMAT,
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, tuple[float, int]]:
        found = {k: (float(e["loglik"]), int(e["tokens"])) for k, e in read_json_rows(self._connect, "logliks", keys)}
        self.hits += sum(1 for k in keys if k in found)
        self.misses += sum(1 for k in keys if k not in found)
        return found

    def put_many(self, items: dict[str, tuple[float, int]]) -> None:
        write_json_rows(self._connect, "logliks", {k: {"loglik": v, "tokens": n} for k, (v, n) in items.items()})
