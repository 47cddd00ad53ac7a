"""Packing for training: examples concatenated into sequences of at most `max_length` tokens (first-fit, longest
first, deterministic). Examples are kept apart by position ids that restart per example and a block-diagonal causal
attention mask built by `PackedCollator`: with sdpa/eager attention, position ids alone do not isolate them. The
first label of each example is masked, so no example's last token learns to predict the next example's first one:
the loss of a packed sequence is exactly the sum of its examples' losses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from workbench.models.templates import IGNORE, Example


@dataclass
class Packed:
    input_ids: list[int]
    labels: list[int]
    lengths: list[int] = field(default_factory=list)  # the examples in this sequence, in order


def pack(examples: Sequence[Example], max_length: int) -> list[Packed]:
    """First-fit decreasing: longest examples first, each into the first sequence with room."""
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i].input_ids), i))
    bins: list[Packed] = []
    room: list[int] = []
    for i in order:
        ex = examples[i]
        n = len(ex.input_ids)
        for b, free in enumerate(room):
            if free >= n:
                bins[b].input_ids.extend(ex.input_ids)
                bins[b].labels.extend(ex.labels)
                bins[b].lengths.append(n)
                room[b] -= n
                break
        else:
            bins.append(Packed(list(ex.input_ids), list(ex.labels), [n]))
            room.append(max_length - n)
    return bins


class PackedCollator:
    """Pads a batch and builds, per sequence, position ids restarting at each example and a 4D block-diagonal
    causal mask (batch, 1, L, L) — True where a token may attend — so packed examples never see each other."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        batch = len(features)
        ids = torch.full((batch, longest), self.pad_id, dtype=torch.long)
        labels = torch.full((batch, longest), IGNORE, dtype=torch.long)
        positions = torch.zeros((batch, longest), dtype=torch.long)
        mask = torch.zeros((batch, 1, longest, longest), dtype=torch.bool)
        for b, f in enumerate(features):
            n = len(f["input_ids"])
            ids[b, :n] = torch.tensor(f["input_ids"])
            labels[b, :n] = torch.tensor(f["labels"])
            start = 0
            for length in f.get("lengths") or [n]:
                # An example's first token is never a target: not of the previous example's last token either.
                labels[b, start] = IGNORE
                positions[b, start : start + length] = torch.arange(length)
                mask[b, 0, start : start + length, start : start + length] = torch.tril(
                    torch.ones(length, length, dtype=torch.bool)
                )
                start += length
        return {"input_ids": ids, "labels": labels, "position_ids": positions, "attention_mask": mask}
