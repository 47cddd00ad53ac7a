"""The training loss wb computes itself: on trained positions only, with the output head fused into the
cross-entropy for plain-head models. The same chunked head (`head_log_probs`) gives DPO its per-position
log-probabilities at the completion positions (`workbench.train.preference_head.completion_head`). (The per-example
losses written to `sample_losses.jsonl` are `workbench.models.losses.sample_losses`.)"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from workbench.models import templates as tdata
from workbench.models.losses import unwrap

# Causal LMs whose logits are exactly `lm_head(hidden)`, with nothing applied after the head (no soft-capping, no
# logit scaling, no auxiliary loss; read in transformers 5.24's modeling files): for them wb fuses the output head
# with the loss (`HeadLogProbs`). Other models get the loss from their own logits, on the trained positions only.
PLAIN_HEAD_MODELS = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "smollm3", "olmo2", "gemma"})
# Logits computed at once by `HeadLogProbs`: positions per chunk × vocabulary ≤ 2**23 (32 MB in fp32; two such
# buffers are live at once, three while DPO's statistics are taken, while every activation of the step is kept),
# shared among the parts of a batch that run at once on threads of their own (`shared_head`).
HEAD_CHUNK_ELEMENTS = 2**23
_THREAD = threading.local()  # `parts`: how many parts of a batch run at once (`shared_head`); unset: one


@contextmanager
def shared_head(parts: int) -> Iterator[None]:
    """In this thread, `HeadLogProbs` chunks of HEAD_CHUNK_ELEMENTS / `parts` logits: `parts` threads running the
    head at once hold what one would (`row_parallel`)."""
    _THREAD.parts = parts
    try:
        yield
    finally:
        _THREAD.parts = 1


@functools.cache
def _head_log_probs_class() -> Any:
    import torch

    class HeadLogProbs(torch.autograd.Function):
        """Log-probabilities of target tokens under the output head, chunked over positions: `log_softmax(hidden @
        weight.T)[i, targets[i]]` for each row i of `hidden` (positions × hidden).

        The (positions × vocabulary) logits are never held in memory all at once: each chunk of HEAD_CHUNK_ELEMENTS
        logits is made, used and dropped. A position's log-probability depends on its own hidden state only, so its
        gradient is that row's vector `(one-hot − softmax) @ weight` times the incoming gradient: computed in the
        forward pass while the chunk's probabilities are at hand, kept (positions × hidden, small), and scaled in the
        backward pass. The head is not run again in the backward pass, as a recomputing kernel must (TRL's
        `ChunkedLogProbFunction`). Logits in fp32 (after the head's product in the autocast dtype), as the model's
        own loss takes them. The head's weight must be frozen (it gets no gradient).

        With `stats`, also (3 × positions, no gradient): the entropy of each position's distribution, the mean of its
        logits and whether the target is the first most likely token (1.0 or 0.0): what TRL's DPO logs.
        """

        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, targets: Any, stats: bool) -> Any:
            ctx.set_materialize_grads(False)
            budget = HEAD_CHUNK_ELEMENTS // getattr(_THREAD, "parts", 1)
            n, rows = hidden.shape[0], max(1, budget // weight.shape[0])
            logps = torch.empty(n, dtype=torch.float32, device=hidden.device)
            extra = torch.empty((3, n if stats else 0), dtype=torch.float32, device=hidden.device)
            # d(-log p_target)/d hidden per position: (softmax - one-hot) @ weight
            jac = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
            device = hidden.device.type
            if torch.is_autocast_enabled(device):
                # The products would cast the frozen weight at every chunk, twice (autocast caches casts of weights
                # that require grad only): cast once, the same bf16 numbers. SmolLM2-135M, 2 x 512 tokens, one AMX
                # core: 13 casts of the 49,152 x 576 head, 0.36 of a 4.2 s step.
                weight = weight.to(torch.get_autocast_dtype(device))
            for lo in range(0, n, rows):
                h, t = hidden[lo : lo + rows], targets[lo : lo + rows, None]
                logits = (h.to(weight.dtype) @ weight.T).float()
                if stats:  # (`max`'s index is the first most likely token, as `argmax`'s, in half its time)
                    extra[1, lo : lo + rows] = logits.mean(-1)
                    extra[2, lo : lo + rows] = logits.max(-1).indices == t[:, 0]
                logp = torch.log_softmax(logits, dim=-1)
                del logits
                logps[lo : lo + rows] = logp.gather(1, t)[:, 0]
                if not stats and jac is None:
                    continue
                probs = logp.exp() if stats else logp.exp_()
                if stats:
                    # (a row-wise dot product: exact in fp32, a third of the time of a batched (1 x V) @ (V x 1))
                    extra[0, lo : lo + rows] = -torch.linalg.vecdot(probs, logp)
                del logp
                if jac is not None:
                    probs[torch.arange(len(t), device=t.device), t[:, 0]] -= 1
                    jac[lo : lo + rows] = probs.to(weight.dtype) @ weight
            ctx.save_for_backward(jac)
            ctx.mark_non_differentiable(extra)
            return logps, extra

        @staticmethod
        def backward(ctx: Any, grad_logps: Any, _grad_extra: Any) -> Any:
            (jac,) = ctx.saved_tensors
            if grad_logps is None or jac is None:
                return None, None, None, None
            return jac * grad_logps.neg().to(jac.dtype)[:, None], None, None, None

    return HeadLogProbs


def head_log_probs(hidden: Any, weight: Any, targets: Any, stats: bool = False) -> tuple[Any, Any]:
    """(log-probabilities of `targets`, per-position statistics) under the frozen output head `weight` for the rows
    of `hidden` (`HeadLogProbs`; the statistics are empty without `stats`). The logits are computed chunk by chunk
    and dropped; the gradient reaches `hidden` only."""
    return _head_log_probs_class().apply(hidden, weight, targets, stats)


def trained_positions_loss(
    model: Any, inputs: dict[str, Any], num_items_in_batch: Any, loss_function: Any, head: Any = None
) -> Any:
    """The causal-LM loss with the output head applied only where a label is trained.

    The output head (vocabulary × hidden, the largest matrix of a small model) and the cross-entropy then skip the
    prompt and padding positions, which carry no loss. Position i predicts label i+1; transformers'
    `logits_to_keep` takes a boolean (batch, length) mask and hands the kept positions, flattened, to the head.
    With `head` (the model's frozen output `Linear`, for a model in PLAIN_HEAD_MODELS) the head's input is taken
    and `HeadLogProbs` computes the loss from it in chunks; without it the model's logits for the kept positions go
    through the model's own loss function. Either way the loss is the model's over the same targets, with the same
    normalisation (`num_items_in_batch`, else the mean): it equals `model(**inputs).loss`. Returns None when the
    model does not take a boolean `logits_to_keep` (its head sees another shape) or nothing in the batch is trained.
    """
    import torch

    labels = inputs["labels"]
    targets = labels[:, 1:] != tdata.IGNORE
    n = int(targets.sum())
    if n == 0:
        return None
    keep = torch.nn.functional.pad(targets, (0, 1), value=False)
    forward = {k: v for k, v in inputs.items() if k != "labels"}
    if head is None:
        logits = model(**forward, logits_to_keep=keep).logits
        if logits.dim() != 2 or logits.shape[0] != n:
            return None
        return loss_function(
            logits=logits,
            labels=None,
            vocab_size=logits.shape[-1],
            num_items_in_batch=num_items_in_batch,
            shift_labels=labels[:, 1:][targets],
        )
    taken: list[Any] = []
    this_thread = threading.get_ident()

    def take(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if threading.get_ident() != this_thread:  # another part of the batch (`row_parallel`): its own hook takes it
            return None
        taken.append(args[0])
        return (args[0][:0],)  # the head itself computes nothing

    handle = head.register_forward_pre_hook(take)
    try:
        model(**forward, logits_to_keep=keep)
    finally:
        handle.remove()
    hidden = taken[0] if len(taken) == 1 else None
    if hidden is None or hidden.dim() != 2 or hidden.shape[0] != n:
        return None
    divisor = float(num_items_in_batch) if num_items_in_batch is not None else float(n)
    logps, _ = head_log_probs(hidden, head.weight, labels[:, 1:][targets])
    return -logps.sum() / divisor


def fusable_head(model: Any) -> Any:
    """The output `Linear` of a model in PLAIN_HEAD_MODELS when it is frozen and has no bias, else None. Not under
    DeepSpeed ZeRO-3 either: there the weight is a partition, gathered only while the head's own forward runs, and
    `HeadLogProbs` reads it outside that forward."""
    import torch

    base = unwrap(model)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    plain = getattr(getattr(base, "config", None), "model_type", None) in PLAIN_HEAD_MODELS
    if plain and type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad:
        partitioned = hasattr(head.weight, "ds_id") or head.weight.numel() == 0
        return None if partitioned else head
    return None
