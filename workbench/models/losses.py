"""Per-example losses: the mean loss over the trained tokens of each tokenised example (`sample_losses`), what
reference losses, forgetting probes, the per-example training losses (`sample_losses.jsonl`) and perplexity scores
use; and the two facts about a (PEFT-wrapped) model that every forward pass here needs."""

from __future__ import annotations

import contextlib
from typing import Any

from workbench import precision
from workbench.models import templates as tdata


def unwrap(model: Any) -> Any:
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def prompt_learning(model: Any) -> bool:
    """Whether a PEFT model prepends virtual tokens (prompt or prefix tuning)."""
    return bool(getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False))


def sample_losses(
    model: Any, examples: list[tdata.Example], pad_id: int, batch_size: int, choice: precision.Choice | None = None
) -> list[float]:
    """Mean loss over the trained tokens of each example, without packing (one row per example), in the order of
    `examples`. Batches hold examples of similar length (little padding), and where the model allows it the output
    head runs only on the positions whose next token is trained (`logits_to_keep` with a boolean mask). The forward
    passes run under `choice`'s autocast (none when not given); the cross-entropy is fp32 either way."""
    import torch

    collate = tdata.PaddingCollator(pad_id)
    model.eval()
    out = [0.0] * len(examples)
    device = next(model.parameters()).device
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    masked_head = not prompt_learning(model)
    with (
        choice.inference() if choice is not None else torch.inference_mode(),
        choice.packed(model) if choice is not None else contextlib.nullcontext(),
    ):
        for lo in range(0, len(order), batch_size):
            rows = order[lo : lo + batch_size]
            batch = collate([{"input_ids": examples[i].input_ids, "labels": examples[i].labels} for i in rows])
            input_ids, attention = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            labels = batch["labels"].to(device)[:, 1:]
            trained = labels != tdata.IGNORE
            sums = None
            if masked_head and bool(trained.any()):
                keep = torch.nn.functional.pad(trained, (0, 1), value=False)
                logits = model(input_ids=input_ids, attention_mask=attention, logits_to_keep=keep).logits
                if logits.dim() == 2 and logits.shape[0] == int(trained.sum()):
                    token_losses = torch.nn.functional.cross_entropy(
                        logits.float(), labels[trained], reduction="none"
                    )  # kept positions come row by row, as trained.nonzero() lists them
                    sums = torch.zeros(len(rows), device=device).index_add_(0, trained.nonzero()[:, 0], token_losses)
                else:
                    masked_head = False  # the model's logits_to_keep takes no mask
            if sums is None:
                logits = model(input_ids=input_ids, attention_mask=attention).logits
                logits = logits[:, -batch["labels"].shape[1] :]  # prompt tuning prepends virtual-token positions
                sums = torch.nn.functional.cross_entropy(
                    logits[:, :-1].float().transpose(1, 2), labels, ignore_index=tdata.IGNORE, reduction="none"
                ).sum(dim=1)
            counts = trained.sum(dim=1).clamp(min=1)
            for i, loss in zip(rows, (sums / counts).tolist(), strict=True):
                out[i] = loss
    return out
