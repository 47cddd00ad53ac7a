"""DPO's log-probabilities on a CPU: the output head at the completion positions only, once per pass, and the padding
of the batch left out (`completion_head`, installed by `trl_trainers` on TRL's DPOTrainer)."""

from __future__ import annotations

import types
from typing import Any

from workbench.models import templates as tdata
from workbench.models.losses import unwrap
from workbench.train import loss


def completion_head(trainer: Any) -> bool:
    """Replace the fused head TRL's DPOTrainer put on the policy (`trl.trainer.utils.add_fused_lm_head`) by wb's,
    which runs the output head at the completion positions only. Returns whether it did.

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
        unpadded = _unpadded(self, args, kwargs)
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


def _unpadded(model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[dict[str, Any], Any] | None:
    """The model's inputs without their padding, for a right-padded batch (TRL's DPO collator pads right) on a
    model attending by sequence (`workbench.train.attention`): the real tokens of every row in one row, with the
    position ids the padded rows had and a block-diagonal causal mask, so each sequence attends to itself alone and
    every hidden state is the one the padded batch gives (the padding positions, a quarter of the bench's DPO
    batches, are not computed). Returns (inputs, index), `index[b, t]` the place of row b's token t in the new row,
    or None to run the padded batch as it is."""
    import torch

    from workbench.train.attention import ATTENTION

    ids, real = kwargs.get("input_ids"), kwargs.get("attention_mask")
    other = set(kwargs) - {"input_ids", "attention_mask", "use_cache"}
    if (
        args
        or other
        or ids is None
        or real is None
        or real.dim() != 2
        or model.config._attn_implementation != ATTENTION
    ):
        return None
    keep = real.bool()
    lengths = keep.sum(1)
    if not bool((keep == (torch.arange(keep.shape[1]) < lengths[:, None])).all()):
        return None  # not right-padded
    sequence = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    total = len(sequence)
    causal = torch.ones(total, total, dtype=torch.bool).tril_()
    inputs = {
        "input_ids": ids[keep][None],
        "position_ids": torch.arange(ids.shape[1]).expand_as(ids)[keep][None],  # transformers' default positions
        "attention_mask": ((sequence[:, None] == sequence[None, :]) & causal)[None, None],
        "use_cache": False,
    }
    index = (keep.reshape(-1).cumsum(0) - 1).view_as(keep)
    return inputs, index
