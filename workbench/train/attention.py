"""Attention for training batches on CPU: each sequence of a batch attended on its own, with a plain causal SDPA.

wb's packed batches carry a 4D block-diagonal causal mask (`packing.PackedCollator`), padded batches a padding mask
that transformers turns into one; with either, torch's SDPA computes every query against every key of the row
(length² per head) and masks most of it away, and transformers repeats the key/value heads of a grouped-query model
to the query heads first (SmolLM2: 3 → 9), so that copy is kept for the backward pass too. Measured for one layer of
SmolLM2-135M, 2 × 512 packed tokens (3 examples a row), forward + backward, one AVX2 core: 78 ms masked, 34 ms per
sequence.

`sdpa_by_sequence` (registered with transformers as `ATTENTION`) reads the mask once per forward pass: when every
row of it is a contiguous run of keys — a causal block (row i sees keys s…i of its sequence), a padding row that sees
a fixed run of keys, or a row that sees nothing — or a branch (a fixed run of earlier keys, a prefix it shares with
an earlier sequence, then its own keys causally: DPO's rejected answer after its prompt, `preference_head`), it runs
SDPA per run: `is_causal` on each sequence (no mask, the upper triangle skipped), a plain SDPA for padding rows, a
small masked SDPA over prefix + own keys for a branch, zeros for rows that see nothing (what SDPA gives them), and
the key/value heads as they are (`enable_gqa`). Any other mask (sliding windows, bidirectional prefixes, a cache,
attention dropout) goes to transformers' own SDPA unchanged. Same values as the masked SDPA up to float rounding.

Under bf16 (or fp16) a run's backward pass is computed in fp32 when the run is short (`_attend`, `FP32_BACKWARD_MAX`
query x key positions): torch's CPU flash-attention backward costs about 0.7 ms a call in bf16 before any work (16
positions), and stays slower than its fp32 backward up to about 200 positions, while DPO's and packed SFT's runs are a
prompt or an answer of 50-300 tokens. One head layout of SmolLM2 (9 query, 3 key/value heads of 64), forward +
backward, one AMX core: 128 positions 3.0 -> 1.4 ms, 64 positions 1.4 -> 0.6 ms; 256 about even, 512 and more
faster in bf16 (kept). The forward pass, its output and what it keeps are bf16 as before; the gradients come out in
the inputs' dtype, nearer the exact ones (relative error against fp64 0.0017-0.0019 against 0.0025-0.0036 for
bf16's backward, one causal run of 200 positions).
"""

from __future__ import annotations

import functools
import threading
import weakref
from dataclasses import dataclass
from typing import Any

ATTENTION = "wb_sdpa_by_sequence"

# What one row of a batch asks for, run by run: ("causal", a, b) queries a…b-1 on keys a…b-1 causally; ("block", a,
# b, f, l) queries a…b-1 on keys f…l-1, no mask; ("branch", a, b, f, l) queries a…b-1 on every key f…l-1 (a prefix
# they share with an earlier sequence) and on a…b-1 causally; ("none", a, b) queries that see no key (output zero).
Run = tuple[Any, ...]


@dataclass
class _Layout:
    mask: Any  # a weak reference to the mask the layout was read from
    version: int
    runs: list[list[Run]] | None  # per row; None: the mask is not runs of keys, use SDPA with the mask


_LAST = threading.local()  # `layout`: the last mask a forward pass on this thread read (parts of a batch run on
# threads of their own: `row_parallel`)


def _runs(row: Any) -> list[Run] | None:
    """The runs of one (L, L) boolean mask row, or None when a query's keys are not one contiguous run, or a fixed
    run of earlier keys then its own causal run, of the shapes above."""
    import torch

    length = row.shape[0]
    seen = row.sum(-1)
    index = torch.arange(length)
    # Where a run of keys starts (a key seen after one not seen); a query sees one run of keys or two.
    starts = row & ~torch.nn.functional.pad(row[:, :-1], (1, 0), value=False)
    if int(starts.sum(-1).max()) > 2:
        return None
    first = row.to(torch.int8).argmax(-1)
    own = (length - 1) - starts.flip(-1).to(torch.int8).argmax(-1)  # the start of the last run
    last = (length - 1) - row.flip(-1).to(torch.int8).argmax(-1)
    prefix_end = first + seen - (last - own + 1)  # the end of the first run, when there are two
    two = own > first
    one_run = (index[None, :] >= first[:, None]) & (index[None, :] <= last[:, None])
    prefix = (index[None, :] >= first[:, None]) & (index[None, :] < prefix_end[:, None]) & two[:, None]
    tail = (index[None, :] >= own[:, None]) & (index[None, :] <= last[:, None]) & two[:, None]
    expected = torch.where(two[:, None], prefix | tail, one_run) & (seen[:, None] > 0)
    if not torch.equal(expected, row):
        return None
    firsts, lasts, counts = first.tolist(), last.tolist(), seen.tolist()
    owns, ends, twos = own.tolist(), prefix_end.tolist(), two.tolist()
    runs: list[Run] = []
    i = 0
    while i < length:
        if counts[i] == 0:
            j = i
            while j < length and counts[j] == 0:
                j += 1
            runs.append(("none", i, j))
        elif twos[i]:  # a branch: rows i… see a fixed run of earlier keys, then i…themselves
            j = i + 1
            while j < length and twos[j] and (firsts[j], ends[j], owns[j]) == (firsts[i], ends[i], i) and lasts[j] == j:
                j += 1
            if owns[i] != i or lasts[i] != i:
                return None
            runs.append(("branch", i, j, firsts[i], ends[i]))
        elif firsts[i] == i and lasts[i] == i:  # a sequence starts here: rows i… see i…themselves
            j = i + 1
            while j < length and counts[j] and not twos[j] and firsts[j] == i and lasts[j] == j:
                j += 1
            runs.append(("causal", i, j))
        elif lasts[i] < i:  # a padding row: sees a fixed run of earlier keys
            j = i + 1
            while j < length and counts[j] and not twos[j] and (firsts[j], lasts[j]) == (firsts[i], lasts[i]):
                j += 1
            runs.append(("block", i, j, firsts[i], lasts[i] + 1))
        else:
            return None
        i = j
    return runs


def _layout(mask: Any) -> list[list[Run]] | None:
    """The runs of every row of a (B, 1, L, L) boolean mask, read once per forward pass (every layer gets the same
    mask object)."""
    import torch

    version = -1 if mask.is_inference() else mask._version  # inference tensors keep no version counter
    seen = getattr(_LAST, "layout", None)
    if seen is not None and seen.mask() is mask and seen.version == version:
        return seen.runs
    runs: list[list[Run]] | None = None
    if mask.dtype == torch.bool and mask.dim() == 4 and mask.shape[1] == 1 and mask.shape[2] == mask.shape[3]:
        rows = [_runs(mask[b, 0]) for b in range(mask.shape[0])]
        runs = None if any(r is None for r in rows) else [r for r in rows if r is not None]
    _LAST.layout = _Layout(weakref.ref(mask), version, runs)
    return runs


# Runs of at most this many query x key positions take their backward pass in fp32 under bf16 (see the module).
FP32_BACKWARD_MAX = 200 * 200


@functools.cache
def _attention_class() -> Any:
    import torch

    forward_op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default
    backward_op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward.default

    class ShortRunAttention(torch.autograd.Function):
        """torch's CPU flash attention (what `scaled_dot_product_attention` runs on CPU), its backward pass in fp32:
        the inputs, output and incoming gradient cast up, the log-sum-exp already fp32, the gradients cast back."""

        @staticmethod
        def forward(ctx: Any, q: Any, k: Any, v: Any, mask: Any, causal: bool, scale: float | None) -> Any:
            out, lse = forward_op(q, k, v, 0.0, causal, attn_mask=mask, scale=scale)
            ctx.save_for_backward(q, k, v, out, lse, mask)
            ctx.causal, ctx.scale = causal, scale
            return out

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            q, k, v, out, lse, mask = ctx.saved_tensors
            up = [t.float() for t in (grad, q, k, v, out)]
            mask = None if mask is None else mask.float()
            grads = backward_op(*up, lse, 0.0, ctx.causal, attn_mask=mask, scale=ctx.scale)
            return grads[0].to(q.dtype), grads[1].to(k.dtype), grads[2].to(v.dtype), None, None, None

    return ShortRunAttention


def _attend(q: Any, k: Any, v: Any, scale: float | None, causal: bool = False, mask: Any = None) -> Any:
    """SDPA over one run: (1, heads, queries, dim) against (1, key/value heads, keys, dim), causal or with a boolean
    `mask` (True: attend). A short run in bf16 or fp16 with gradients takes `ShortRunAttention` (see the module)."""
    import torch

    short = q.shape[2] * k.shape[2] <= FP32_BACKWARD_MAX
    half = q.dtype in (torch.bfloat16, torch.float16) and q.dtype == k.dtype == v.dtype
    if short and half and torch.is_grad_enabled() and q.requires_grad:
        if mask is not None:  # as scaled_dot_product_attention passes a boolean mask to the kernel
            mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
        return _attention_class().apply(q, k, v, mask, causal, scale)
    gqa = q.shape[1] != k.shape[1]
    return torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, scale=scale, is_causal=causal, enable_gqa=gqa
    )


def sdpa_by_sequence(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' attention interface: (batch, heads, L, dim) query, key and value in; (batch, L, heads, dim)
    out. Falls back to transformers' `sdpa_attention_forward` for anything but runs of keys (see the module)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    runs = None
    plain = (
        attention_mask is not None
        and attention_mask.shape[0] == query.shape[0]  # a mask per row (not one broadcast over the batch)
        and dropout == 0.0
        and query.shape[2] == key.shape[2]
        and kwargs.get("position_bias") is None
        and kwargs.get("softcap") is None
        and not kwargs.get("output_attentions", False)
        and is_causal is not False
        and query.shape[-1] == value.shape[-1]
    )
    if plain:
        runs = _layout(attention_mask)
    if runs is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    rows = []
    # Rows and runs are taken apart with `unbind` and `split` (their backward pass is one stack or cat): slicing each
    # run out of the batch makes a zero-filled tensor of the whole batch per run in the backward pass, and adds them.
    for row, q_row, k_row, v_row in zip(runs, query.unbind(0), key.unbind(0), value.unbind(0), strict=True):
        sizes = [run[2] - run[1] for run in row]
        qs = q_row.split(sizes, dim=1)
        own = all(run[0] in ("causal", "none") for run in row)  # every run attends to its own keys only
        ks, vs = (k_row.split(sizes, dim=1), v_row.split(sizes, dim=1)) if own else ((), ())
        parts = []
        for i, run in enumerate(row):
            kind, lo, hi = run[0], run[1], run[2]
            q = qs[i][None]
            if kind == "causal":
                k, v = (ks[i][None], vs[i][None]) if own else (k_row[None, :, lo:hi], v_row[None, :, lo:hi])
                parts.append(_attend(q, k, v, scaling, causal=True))
            elif kind == "block":
                keys = slice(run[3], run[4])
                parts.append(_attend(q, k_row[None, :, keys], v_row[None, :, keys], scaling))
            elif kind == "branch":  # every key of the shared prefix, then its own keys causally
                keys, own_keys = slice(run[3], run[4]), slice(lo, hi)
                n, shared = hi - lo, run[4] - run[3]
                seen = torch.ones(n, shared + n, dtype=torch.bool, device=q.device)
                seen[:, shared:].tril_()
                kb = torch.cat([k_row[None, :, keys], k_row[None, :, own_keys]], 2)
                vb = torch.cat([v_row[None, :, keys], v_row[None, :, own_keys]], 2)
                parts.append(_attend(q, kb, vb, scaling, mask=seen))
            else:
                parts.append(q.new_zeros((1, q.shape[1], hi - lo, v_row.shape[-1])))
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
    out = rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)
    return out.transpose(1, 2).contiguous(), None


def use(model: Any) -> bool:
    """Switch a model that runs transformers' SDPA on CPU to `sdpa_by_sequence` (registered on first use). True when
    switched. The switch is not saved: transformers leaves the implementation out of a saved config."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    config = getattr(model, "config", None)
    on_cpu = getattr(getattr(model, "device", None), "type", "") == "cpu"
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa" or not on_cpu:
        return False
    AttentionInterface.register(ATTENTION, sdpa_by_sequence)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # padding masks are built as for SDPA
    config._attn_implementation = ATTENTION
    return True
