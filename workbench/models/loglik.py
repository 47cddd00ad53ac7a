"""Log-likelihoods: how likely a model finds a continuation after a context (`loglikelihoods`), what multiple-choice
scoring and preference accuracy use.

As in lm-evaluation-harness's `_encode_pair`, trailing whitespace of the context moves into the continuation, the
whole text is tokenised once and the continuation's tokens are those after the context's.

Prefix reuse: the requests whose token ids agree up to the continuation (the options of one item, the letters of
one item) run as ONE row: the shared context once, then every continuation's tokens as a tree after it, each tree
token attending the context and its own earlier tokens only, at the position it holds in its full row (a 4D boolean
mask and position ids; a continuation that is a prefix of another shares its tokens). The scores are those of each
full row alone, up to float rounding, while the context runs once per item instead of once per option: lm-eval runs
each option's full row. Where the joined ids do not start with the context's own ids (the boundary tokenised
differently), under prompt learning (virtual tokens need a 2D mask), under eager attention and where a row is longer
than the model's sliding window (the 4D mask would replace it), each distinct full row
(context + continuation, less its last token) runs once instead. Rows are sorted by length and right-padded, and the
output head runs only on the scored positions where the model allows it. The forward passes run in the precision
`workbench.precision` picks (`auto`: bf16 autocast on a CPU with native bf16 units, else fp32; the weights are never
cast, the log-softmax is taken in fp32), as generation does. Results are cached by model identity + context +
continuation + the precision that ran (`LoglikCache`, beside the generation cache): bf16 sums are not fp32 sums.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbench.models.cache import SqliteCache
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


def _encode(tokenizer: Any, r: Request, max_length: int) -> tuple[list[int], int, bool]:
    """Token ids of context + continuation (left-truncated to max_length + 1), where the continuation starts, and
    whether the joined ids start with the context's own ids (False where the boundary tokenised differently)."""
    whole = tokenizer(r.context + r.continuation, add_special_tokens=False)["input_ids"]
    context = tokenizer(r.context, add_special_tokens=False)["input_ids"] if r.context else []
    n_ctx = min(len(context), len(whole) - 1)  # a continuation always keeps at least one token
    if n_ctx < 1:
        raise ValueError("a multiple-choice context must have at least one token")
    clean = whole[: len(context)] == context and n_ctx == len(context)
    cut = max(0, len(whole) - (max_length + 1))
    return whole[cut:], n_ctx - cut if n_ctx > cut else 1, clean


@dataclass
class _Row:
    """One input row of a forward pass: a shared prefix (causal), then a tree of continuation tokens after it. Each
    tree token attends the whole prefix and its own ancestors only, at the position it would hold in its full row, so
    its hidden states are those of the full row (`context + continuation`, less the last token) it stands for."""

    prefix: int  # how many leading positions are the shared prefix
    ids: list[int]
    parents: list[int]  # per position: the position it continues (-1 at the first); the prefix is a chain
    depth: list[int]  # per position: its position id in the full row
    nodes: dict[tuple[int, int], int] = field(default_factory=dict)  # (parent position, token) -> position


def _prefix_row(prefix: list[int]) -> _Row:
    return _Row(len(prefix), list(prefix), list(range(-1, len(prefix) - 1)), list(range(len(prefix))))


def _plan(
    encoded: list[tuple[list[int], int, bool]], shared: bool
) -> tuple[list[_Row], list[list[tuple[int, int, int]]]]:
    """Input rows and, per request, the (row, position, token) of each continuation token it scores.

    shared: the requests whose token ids agree up to their continuation's start (lm-eval's split: the whole text
    tokenised once, the continuation is what follows the context's token count) share one row: that prefix once,
    then each continuation's tokens as a tree after it. A request whose joined ids do not start with its context's
    own ids (the boundary merged differently) runs its full row instead, as do all requests when not shared: each
    distinct full row (less its last token) once."""
    rows: list[_Row] = []
    by_prefix: dict[tuple[int, ...], int] = {}
    places: list[list[tuple[int, int, int]]] = []
    for whole, start, clean in encoded:
        split = start if shared and clean else len(whole) - 1
        key = tuple(whole[:split])
        r = by_prefix.get(key)
        if r is None:
            r = by_prefix[key] = len(rows)
            rows.append(_prefix_row(list(key)))
        row = rows[r]
        here = split - 1  # the position holding whole[split - 1]
        mine: list[tuple[int, int, int]] = []
        for t in range(start, len(whole)):  # token t is predicted by the position holding token t - 1
            if t - 1 >= split:  # a tree token: find or add the node holding whole[t - 1] after `here`
                node = row.nodes.get((here, whole[t - 1]))
                if node is None:
                    node = row.nodes[(here, whole[t - 1])] = len(row.ids)
                    row.ids.append(whole[t - 1])
                    row.parents.append(here)
                    row.depth.append(row.depth[here] + 1)
                here = node
                mine.append((r, here, whole[t]))
            else:
                mine.append((r, t - 1, whole[t]))
        places.append(mine)
    return rows, places


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
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    done = total - len(requests)
    with loaded.active_model() as model, choice.inference(), choice.packed(model):
        device = next(model.parameters()).device
        masked_head = not prompt_learning(model)
        # A tree row needs a 4D boolean mask and position ids: sdpa takes them as given. Prompt learning prepends
        # virtual tokens to a 2D mask, and eager attention would add a boolean mask: those run full rows.
        shared = masked_head and getattr(model.config, "_attn_implementation", None) == "sdpa"
        window = getattr(model.config, "sliding_window", None)
        if isinstance(window, int) and max(len(whole) for whole, _, _ in encoded) > window:
            shared = False  # the 4D mask would replace the model's sliding window: full rows, exact as before
        rows, places = _plan(encoded, shared)
        needed: list[dict[int, set[int]]] = [{} for _ in rows]  # row -> position -> tokens scored there
        per_row = [0] * len(rows)
        for mine in places:
            for r, pos, t in mine:
                needed[r].setdefault(pos, set()).add(t)
            per_row[mine[0][0]] += 1
        logprobs: list[dict[tuple[int, int], float]] = [{} for _ in rows]  # row -> (position, token) -> log-prob
        order = sorted(range(len(rows)), key=lambda i: (len(rows[i].ids), i))
        for lo in range(0, len(order), batch_size):
            batch = order[lo : lo + batch_size]
            longest = max(len(rows[i].ids) for i in batch)
            ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
            keep = torch.zeros((len(batch), longest), dtype=torch.bool)
            inputs: dict[str, Any] = {}
            if shared:
                mask = torch.zeros((len(batch), 1, longest, longest), dtype=torch.bool)
                positions = torch.arange(longest, dtype=torch.long).repeat(len(batch), 1)
                for b, i in enumerate(batch):
                    _tree_mask(rows[i], mask[b, 0], positions[b])
                inputs["position_ids"] = positions.to(device)
            else:
                mask = torch.zeros((len(batch), longest), dtype=torch.long)
                for b, i in enumerate(batch):
                    mask[b, : len(rows[i].ids)] = 1
            for b, i in enumerate(batch):
                ids[b, : len(rows[i].ids)] = torch.tensor(rows[i].ids, dtype=torch.long)
                keep[b, sorted(needed[i])] = True
            ids, keep = ids.to(device), keep.to(device)
            inputs["attention_mask"] = mask.to(device)
            picked = None
            if masked_head:
                logits = model(input_ids=ids, logits_to_keep=keep, **inputs).logits
                if logits.dim() == 2 and logits.shape[0] == int(keep.sum()):
                    picked = logits
                else:
                    masked_head = False  # the model's logits_to_keep takes no mask
            if picked is None:
                logits = model(input_ids=ids, **inputs).logits[:, -longest:]
                picked = logits[keep]
            scores = torch.log_softmax(picked.float(), dim=-1).cpu().double()
            for k, (b, pos) in enumerate(keep.nonzero().tolist()):  # row by row, as the kept positions come
                for t in needed[batch[b]][pos]:
                    logprobs[batch[b]][(pos, t)] = float(scores[k, t])
            done += sum(per_row[i] for i in batch)
            if progress is not None:
                progress(done, total)
    return [(sum(logprobs[r][(pos, t)] for r, pos, t in mine), len(mine)) for mine in places]


def _tree_mask(row: _Row, mask: Any, positions: Any) -> None:
    """Fills one row's (L, L) attention mask (True: may attend) and position ids: the prefix causal, each tree token
    its ancestors and itself; padding attends only itself (a query with nothing to attend would give NaN)."""
    import torch

    n, longest, prefix = len(row.ids), mask.shape[0], row.prefix
    mask[:prefix, :prefix] = torch.tril(torch.ones(prefix, prefix, dtype=torch.bool))
    for k in range(prefix, n):
        mask[k] = mask[row.parents[k]]
        mask[k, k] = True
    positions[:n] = torch.tensor(row.depth, dtype=torch.long)
    idx = torch.arange(n, longest)
    mask[idx, idx] = True


# --- the cache --------------------------------------------------------------------------------------------------


class LoglikCache(SqliteCache):
    """Log-likelihoods in SQLite (`<wb cache>/logliks.sqlite`), keyed by model identity (the generation cache's:
    SHA-256 of the base and adapter weights) + context + continuation + max_length + the precision that ran (`bf16`
    or `fp32`, never `auto`). Safe across processes."""

    def __init__(self, path: Path | None = None, identities: GenerationCache | None = None) -> None:
        tables = {"logliks": "key TEXT PRIMARY KEY, value TEXT NOT NULL"}
        super().__init__(path or cache_dir() / "logliks.sqlite", tables)
        self._identities = identities or GenerationCache()

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
        return {k: (float(e["loglik"]), int(e["tokens"])) for k, e in self._read("logliks", keys).items()}

    def put_many(self, items: dict[str, tuple[float, int]]) -> None:
        self._write("logliks", {k: {"loglik": v, "tokens": n} for k, (v, n) in items.items()})
