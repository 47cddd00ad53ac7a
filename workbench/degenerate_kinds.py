"""The kinds of degenerate answer `wb eval` flags (answers that say nothing about what the model knows, however
they score), in report order: each kind's name, its one-line description (the report's Degenerate table), the words
of its warning (`12 of 40 tuned answers <words> (30%)`; None: no such warning) and, for a kind registered from
outside wb, its check. The run schema's gate paths (`task.degenerate.<kind>.<field>`), the report, `wb eval`'s
warnings and the flags in scores.jsonl all read this registry; the built-in checks are in
`workbench.evaluate.degenerate`.

Light on purpose (standard library only, floor 1): the run schema, `wb report` and `wb gate` import it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

Check = Callable[[str, str, int | None, int | None, bool | None], bool]
"""A check: (answer, prompt, generated_tokens, max_new_tokens, finished) to flagged or not."""


@dataclass(frozen=True)
class DegenerateKind:
    name: str
    description: str
    warning: str | None = None
    """The words after `N of M <side> answers` in a warning when any answer is flagged; None: no such warning."""
    check: Check | None = field(default=None, compare=False)
    """The kind's check when registered from outside wb (the built-in ones are `workbench.evaluate.degenerate`'s)."""


_KINDS: dict[str, DegenerateKind] = {}


def register_degenerate_kind(
    name: str, description: str, warning: str | None = None, check: Check | None = None
) -> DegenerateKind:
    """Add a kind (or replace one of the same name); its name becomes a flag, a gate path segment and a report row."""
    if not name.isidentifier():
        raise ValueError(f"degenerate kind {name!r}: use an identifier")
    kind = DegenerateKind(name, description, warning, check)
    _KINDS[name] = kind
    return kind


def unregister_degenerate_kind(name: str) -> None:
    _KINDS.pop(name, None)


def kinds() -> tuple[DegenerateKind, ...]:
    """Every kind, in report order."""
    return tuple(_KINDS.values())


def names() -> tuple[str, ...]:
    return tuple(_KINDS)


def get(name: str) -> DegenerateKind | None:
    return _KINDS.get(name)


def markdown_table() -> str:
    """The degenerate-answer table of docs/evaluation.md."""
    lines = ["| kind | what it flags |", "|---|---|"]
    lines += [f"| `{k.name}` | {k.description} |" for k in _KINDS.values()]
    return "\n".join(lines)


register_degenerate_kind(
    "echo",
    "The answer repeats the prompt (or a prefix or suffix of it) instead of answering.",
    "repeat the prompt instead of answering",
)
register_degenerate_kind("cut_off", "Generation stopped at max_new_tokens without an end token.")
register_degenerate_kind(
    "repetition",
    "The answer loops: repeated lines or n-grams (the clean rules' detector).",
    "loop (repeated lines or n-grams)",
)
register_degenerate_kind("empty", "The answer has no letter, digit or CJK character.", "are empty")
register_degenerate_kind(
    "wrong_language",
    "A Chinese question answered without Chinese, or a Latin-script question answered in Chinese.",
    "are in another language than the question",
)
register_degenerate_kind(
    "broken_text",
    "The answer holds U+FFFD, a lone surrogate or a control character.",
    "hold broken text (U+FFFD or control characters)",
)
