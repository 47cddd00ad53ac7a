"""Preference examples as the trainers see them: each prompt rendered with the run's template (the one `wb generate`
and `wb chat` use), each answer closed with the template's end-of-turn text, tokenised exactly as TRL tokenises the
strings it is given (`tokenizer(text)`; the completion starts where prompt and prompt+answer diverge), and checked
against the recipe's `max_length` / `max_prompt_length` before training.

Two things make a pair useless and are caught here, by line: a prompt that leaves no room for a response (TRL's
DPO and KTO trainers silently filter those out; its RewardTrainer silently drops pairs longer than max_length) and a
pair whose chosen and rejected sequences are identical once cut to max_length (their log-ratio difference is zero:
no gradient, and an accuracy that is a coin flip; OpenRLHF #1311). `truncation: refuse` stops the run naming the
lines (exit 2); `truncation: drop` leaves them out and counts them per reason in the manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from workbench.errors import WbError
from workbench.models import templates as tdata
from workbench.models.templates import completion_text, render_prompt
from workbench.pairs import Pair, Unpaired

NO_ROOM = "prompt_leaves_no_room"
IDENTICAL = "identical_after_truncation"


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text)["input_ids"])


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass
class PairExample:
    line: int
    prompt: str
    chosen: str
    rejected: str
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]

    @property
    def tokens(self) -> int:
        """Tokens of both sequences (prompt + answer each), as trained."""
        return 2 * len(self.prompt_ids) + len(self.chosen_ids) + len(self.rejected_ids)


@dataclass
class UnpairedExample:
    line: int
    prompt: str
    completion: str
    label: bool
    prompt_ids: list[int]
    completion_ids: list[int]

    @property
    def tokens(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)


@dataclass
class Checked:
    """The examples that can train, and those left out by reason (line numbers)."""

    pairs: list[PairExample] = field(default_factory=list)
    unpaired: list[UnpairedExample] = field(default_factory=list)
    dropped: dict[str, list[int]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {reason: len(lines) for reason, lines in sorted(self.dropped.items())}


def encode_pair(tokenizer: Any, template: tdata.Template, pair: Pair) -> PairExample:
    prompt = render_prompt(tokenizer, template, pair.prompt)
    chosen = completion_text(tokenizer, template, pair.chosen)
    rejected = completion_text(tokenizer, template, pair.rejected)
    p, pc, pr = _ids(tokenizer, prompt), _ids(tokenizer, prompt + chosen), _ids(tokenizer, prompt + rejected)
    n = min(_common(p, pc), _common(p, pr), len(p))
    return PairExample(pair.line, prompt, chosen, rejected, pc[:n], pc[n:], pr[n:])


def encode_unpaired(tokenizer: Any, template: tdata.Template, ex: Unpaired) -> UnpairedExample:
    prompt = render_prompt(tokenizer, template, ex.prompt)
    completion = completion_text(tokenizer, template, ex.completion)
    p, pc = _ids(tokenizer, prompt), _ids(tokenizer, prompt + completion)
    n = min(_common(p, pc), len(p))
    return UnpairedExample(ex.line, prompt, completion, ex.label, pc[:n], pc[n:])


def _no_room(prompt_len: int, max_length: int, max_prompt_length: int | None) -> bool:
    return prompt_len >= max_length or (max_prompt_length is not None and prompt_len > max_prompt_length)


def pair_problem(ex: PairExample, max_length: int, max_prompt_length: int | None) -> str | None:
    """Why a pair cannot train at this max_length, or None."""
    if _no_room(len(ex.prompt_ids), max_length, max_prompt_length):
        return NO_ROOM
    chosen = (ex.prompt_ids + ex.chosen_ids)[:max_length]
    rejected = (ex.prompt_ids + ex.rejected_ids)[:max_length]
    return IDENTICAL if chosen == rejected else None


def _decide(source: str, checked: Checked, policy: str, max_length: int, max_prompt_length: int | None) -> None:
    if policy == "drop" or not checked.dropped:
        return
    why = {
        NO_ROOM: f"the prompt leaves no room for a response within max_length {max_length}"
        + (f" / max_prompt_length {max_prompt_length}" if max_prompt_length is not None else ""),
        IDENTICAL: f"chosen and rejected are identical after truncation to max_length {max_length}",
    }
    parts = []
    for reason, lines in sorted(checked.dropped.items()):
        shown = ", ".join(str(n) for n in lines[:8]) + (f" and {len(lines) - 8} more" if len(lines) > 8 else "")
        parts.append(f"{len(lines)} pair(s) where {why[reason]} (lines {shown})")
    raise WbError(f"{source}: " + "; ".join(parts) + "; raise max_length, shorten the prompts, or set truncation: drop")


def check_pairs(
    source: str,
    tokenizer: Any,
    template: tdata.Template,
    pairs: Sequence[Pair],
    max_length: int,
    max_prompt_length: int | None,
    policy: str,
) -> Checked:
    """Encode every pair; refuse (policy `refuse`) or leave out (`drop`) those that cannot train."""
    checked = Checked()
    for pair in pairs:
        ex = encode_pair(tokenizer, template, pair)
        problem = pair_problem(ex, max_length, max_prompt_length)
        if problem is None:
            checked.pairs.append(ex)
        else:
            checked.dropped.setdefault(problem, []).append(ex.line)
    _decide(source, checked, policy, max_length, max_prompt_length)
    if not checked.pairs:
        raise WbError(f"{source}: no pair is left to train on after the truncation checks")
    return checked


def check_unpaired(
    source: str,
    tokenizer: Any,
    template: tdata.Template,
    examples: Sequence[Unpaired],
    max_length: int,
    max_prompt_length: int | None,
    policy: str,
) -> Checked:
    checked = Checked()
    for item in examples:
        ex = encode_unpaired(tokenizer, template, item)
        if _no_room(len(ex.prompt_ids), max_length, max_prompt_length):
            checked.dropped.setdefault(NO_ROOM, []).append(ex.line)
        else:
            checked.unpaired.append(ex)
    _decide(source, checked, policy, max_length, max_prompt_length)
    if not checked.unpaired:
        raise WbError(f"{source}: no example is left to train on after the truncation checks")
    labels = {ex.label for ex in checked.unpaired}
    if len(labels) < 2:
        kind = "desirable" if True in labels else "undesirable"
        raise WbError(f"{source}: every example is {kind}; KTO needs both desirable and undesirable completions")
    return checked
