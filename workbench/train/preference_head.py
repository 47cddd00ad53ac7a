"""DPO's and KTO's log-probabilities on a CPU: the output head at the completion positions only, once per pass; the
padding of the batch left out and each pair's prompt run once (`completion_head`, installed by `trl_trainers` on
TRL's DPOTrainer and KTOTrainer)."""

from __future__ import annotations

import types
from typing import Any

from workbench.models import templates as tdata
from workbench.models.losses import unwrap
from workbench.train import loss


def completion_head(trainer: Any) -> bool:
    """Replace the fused head TRL's DPOTrainer or KTOTrainer put on the policy (`trl.trainer.utils.add_fused_lm_head`)
    by wb's, which runs the output head at the completion positions only. Returns whether it did.

    TRL's fused head leaves out the positions without a label only where Triton runs (CUDA, XPU); elsewhere, a CPU
    included, every position of the padded batch goes through the head: prompt and padding as well (in the bench's
    DPO batches 42 % of the positions are completion tokens), three times per step (policy, its backward recomputing
    the logits, and the reference). wb's (`loss.head_log_probs`) takes the completion positions only, computes each
    position's gradient while its probabilities are at hand (no second pass over the head) and, for the reference
    (a forward without gradient while training), the log-probabilities alone. What TRL reads is the same:
    `log_probs`, `entropy`, `mean_logits` and `is_top1` as (batch, length - 1), zero where the label is -100, and
    the mean loss. Used on a CPU for plain-head models with a frozen head (`loss.fusable_head`), not for WPO
    weighting (`use_weighting`, which reads `log_sum_sq_probs`) nor a separate reference model; other calls go to
    TRL's.
    """
    import functools

    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    if getattr(trainer, "use_weighting", False) or getattr(trainer, "ref_model", None) is not None:
        return False
    head = loss.fusable_head(trainer.model)
    base = unwrap(trainer.model)
    trl_forward = base.__dict__.get("forward")  # TRL's, set on the instance (named as the class's forward)
    code = getattr(getattr(trl_forward, "__func__", None), "__code__", None)
    if head is None or head.weight.device.type != "cpu" or getattr(code, "co_name", None) != "_fused_forward":
        return False  # on CUDA and XPU, TRL's Triton kernel already scores the labelled positions alone

    @functools.wraps(type(base).forward)
    def forward(
        self: Any,
        *args: Any,
        fused_lm_head: bool = False,
        labels: Any = None,
        shift_labels: Any = None,
        num_items_in_batch: Any = None,
        **kwargs: Any,
    ) -> Any:
        if not fused_lm_head or labels is None or shift_labels is not None or kwargs.get("output_router_logits"):
            more = {"labels": labels, "shift_labels": shift_labels, "num_items_in_batch": num_items_in_batch}
            return trl_forward(*args, fused_lm_head=fused_lm_head, **more, **kwargs)
        kwargs["use_cache"] = False
        targets = labels[:, 1:]
        mask = targets != tdata.IGNORE
        body = getattr(self, self.base_model_prefix)
        unpadded = _unpadded(self, args, kwargs, labels)
        if unpadded is None:
            scored = body(*args, **kwargs).last_hidden_state[:, :-1][mask]
        else:  # the real tokens of the batch in one row; a position's hidden state found by its place in that row
            packed, index = unpadded
            scored = body(**packed).last_hidden_state[0][index[:, :-1][mask]]
        stats = torch.is_grad_enabled() or not self.training  # a reference pass reads the log-probs alone
        logps, extra = loss.head_log_probs(scored, head.weight, targets[mask], stats)

        def spread(values: Any) -> Any:
            return values.new_zeros(mask.shape).masked_scatter(mask, values)

        divisor = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        log_probs = spread(logps)
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / divisor,
            log_probs=log_probs,
            entropy=spread(extra[0]) if stats else None,
            mean_logits=spread(extra[1]) if stats else None,
            is_top1=spread(extra[2].bool()) if stats else None,
            label_mask=mask,
        )

    base.forward = types.MethodType(forward, base)
    return True


def _unpadded(
    model: Any, args: tuple[Any, ...], kwargs: dict[str, Any], labels: Any
) -> tuple[dict[str, Any], Any] | None:
    """The model's inputs without their padding and with each pair's prompt once, for a right-padded batch of
    chosen then rejected sequences (TRL's DPO collator: rows j and j + B/2 are a pair) on a model attending by
    sequence (`workbench.train.attention`).

    The real tokens go in one row: per pair the prompt and the chosen answer as one causal sequence, then the
    rejected answer attending to that prompt and to itself (a branch); a pair whose rows do not begin with the same
    prompt (the positions before the first label) runs as two sequences (so KTO's batches of unrelated examples run
    each as its own sequence, but where rows j and j + B/2 happen to share a prompt). Position ids are those of the
    padded rows, so every hidden state is the one the padded batch gives, and the prompt's activations collect the
    gradients of both answers, as its two copies did. Left out: the padding (a quarter of the bench's DPO positions)
    and the second copy of each prompt (prompts are about 40 % of its real tokens). Returns (inputs, index),
    `index[b, t]` the place of row b's token t in the new row, or None to run the padded batch as it is."""
    import torch

    from workbench.train.attention import ATTENTION

    ids, real = kwargs.get("input_ids"), kwargs.get("attention_mask")
    other = {k for k, v in kwargs.items() if v is not None} - {"input_ids", "attention_mask", "use_cache"}
    by_sequence = model.config._attn_implementation == ATTENTION
    if args or other or ids is None or real is None or real.dim() != 2 or not by_sequence:
        return None
    keep = real.bool()
    rows, width = keep.shape
    lengths = keep.sum(1).tolist()
    if not bool((keep == (torch.arange(width) < torch.tensor(lengths)[:, None])).all()):
        return None  # not right-padded
    scored = labels != tdata.IGNORE
    prompts = [int(scored[b].to(torch.int8).argmax()) if bool(scored[b].any()) else lengths[b] for b in range(rows)]
    half = rows // 2 if rows % 2 == 0 else 0
    index = torch.full((rows, width), -1, dtype=torch.long)
    tokens: list[Any] = []
    positions: list[Any] = []
    blocks: list[tuple[int, int, int, int]] = []  # (start, end, shared prefix start, end): end = start: causal
    place = 0

    def add(b: int, start: int) -> int:
        n = lengths[b] - start
        index[b, start : lengths[b]] = torch.arange(place, place + n)
        tokens.append(ids[b, start : lengths[b]])
        positions.append(torch.arange(start, lengths[b]))
        return n

    for b in range(half or rows):
        n = add(b, 0)
        blocks.append((place, place + n, place, place))
        chosen_start, place = place, place + n
        r = b + half
        if not half:
            continue
        p = prompts[b]
        if 0 < p == prompts[r] <= min(lengths[b], lengths[r]) and torch.equal(ids[b, :p], ids[r, :p]):
            index[r, :p] = index[b, :p]
            n = add(r, p)
            blocks.append((place, place + n, chosen_start, chosen_start + p))
        else:
            n = add(r, 0)
            blocks.append((place, place + n, place, place))
        place += n
    seen = torch.zeros(place, place, dtype=torch.bool)
    for start, end, shared, shared_end in blocks:
        seen[start:end, start:end] = torch.ones(end - start, end - start, dtype=torch.bool).tril_()
        seen[start:end, shared:shared_end] = True
    inputs = {
        "input_ids": torch.cat(tokens)[None],
        "position_ids": torch.cat(positions)[None],  # transformers' default for the padded rows: 0, 1, ...
        "attention_mask": seen[None, None],
        "use_cache": False,
    }
    return inputs, index
