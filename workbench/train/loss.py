"""The training loss wb computes itself: on trained positions only, with the output head fused into the
cross-entropy for plain-head models. (The per-example losses written to `sample_losses.jsonl` are
`workbench.models.losses.sample_losses`.)"""

from __future__ import annotations

from typing import Any

from workbench.models import templates as tdata
from workbench.models.losses import unwrap

# Causal LMs whose logits are exactly `lm_head(hidden)`, with nothing applied after the head (no soft-capping, no
# logit scaling, no auxiliary loss; read in transformers 5.24's modeling files): for them wb fuses the output head
# with the loss (`HeadLoss`). Other models get the loss from their own logits, on the trained positions only.
PLAIN_HEAD_MODELS = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "smollm3", "olmo2", "gemma"})
# Logits computed at once by `HeadLoss`: positions per chunk × vocabulary ≤ 2**23 (32 MB in fp32; two such
# buffers are live at once, while every activation of the step is kept).
HEAD_CHUNK_ELEMENTS = 2**23


def _head_loss_class() -> Any:
    import torch

    class HeadLoss(torch.autograd.Function):
        """Output head and cross-entropy in one step, chunked over positions: sum of the losses / divisor.

        The gradient for the hidden states is computed in the forward pass, chunk by chunk, and kept (positions ×
        hidden, small); the (positions × vocabulary) logits, log-probabilities and their gradients are never held
        in memory all at once, as they are when the model returns logits and a loss is taken from them. Same
        values: logits in fp32, log-sum-exp minus the target logit; gradient softmax − one-hot. The head's weight
        must be frozen (it gets no gradient).
        """

        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, targets: Any, divisor: float) -> Any:
            rows = max(1, HEAD_CHUNK_ELEMENTS // weight.shape[0])
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad = torch.empty_like(hidden)
            for lo in range(0, hidden.shape[0], rows):
                h, t = hidden[lo : lo + rows], targets[lo : lo + rows]
                logits = (h.to(weight.dtype) @ weight.T).float()
                lse = torch.logsumexp(logits, dim=-1)
                total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
                probs = logits.sub_(lse[:, None]).exp_()
                probs[torch.arange(len(t), device=t.device), t] -= 1
                grad[lo : lo + rows] = (probs.to(weight.dtype) @ weight) / divisor
            ctx.save_for_backward(grad)
            return total / divisor

        @staticmethod
        def backward(ctx: Any, grad_output: Any) -> Any:
            (grad,) = ctx.saved_tensors
            return grad * grad_output.to(grad.dtype), None, None, None

    return HeadLoss


def trained_positions_loss(
    model: Any, inputs: dict[str, Any], num_items_in_batch: Any, loss_function: Any, head: Any = None
) -> Any:
    """The causal-LM loss with the output head applied only where a label is trained.

    The output head (vocabulary × hidden, the largest matrix of a small model) and the cross-entropy then skip the
    prompt and padding positions, which carry no loss. Position i predicts label i+1; transformers'
    `logits_to_keep` takes a boolean (batch, length) mask and hands the kept positions, flattened, to the head.
    With `head` (the model's frozen output `Linear`, for a model in PLAIN_HEAD_MODELS) the head's input is taken
    and `HeadLoss` computes the loss from it in chunks; without it the model's logits for the kept positions go
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

    def take(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
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
    return _head_loss_class().apply(hidden, head.weight, labels[:, 1:][targets], divisor)


def fusable_head(model: Any) -> Any:
    """The output `Linear` of a model in PLAIN_HEAD_MODELS when it is frozen and has no bias, else None. Not under
    DeepSpeed ZeRO-3 either: there the weight is a partition, gathered only while the head's own forward runs, and
    `HeadLoss` reads it outside that forward."""
    import torch

    base = unwrap(model)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    plain = getattr(getattr(base, "config", None), "model_type", None) in PLAIN_HEAD_MODELS
    if plain and type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad:
        partitioned = hasattr(head.weight, "ds_id") or head.weight.numel() == 0
        return None if partitioned else head
    return None
