"""The score registry: every per-record score a clean rule can read, with what a reader needs to interpret it — its
name, a description, which end is better, whether its distribution is drawn on a log scale, and where it comes from
(`lm`: `wb score`'s language-model losses, `workbench.score.lm`; `reward`: `wb score --reward-model`; `run`: a
training run's `sample_losses.jsonl`).

`wb score`'s output order, the stats page's log-scale histograms, `keep_top_fraction`'s default direction and the
score table of docs/scoring.md all read this registry; the computations stay in `workbench.score`.

Light on purpose (standard library only, floor 1): the clean rules (floor 2) read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Source = Literal["lm", "reward", "run"]


@dataclass(frozen=True)
class ScoreSpec:
    name: str
    description: str
    source: Source
    higher_is_better: bool = True
    log_scale: bool = False
    """Its histogram has log-spaced bins (perplexities)."""


_SCORES: dict[str, ScoreSpec] = {}


def register_score(
    name: str, description: str, source: Source, *, higher_is_better: bool = True, log_scale: bool = False
) -> ScoreSpec:
    """Add a score (or replace one of the same name)."""
    if not name.isidentifier():
        raise ValueError(f"score name {name!r}: use an identifier")
    spec = ScoreSpec(name, description, source, higher_is_better, log_scale)
    _SCORES[name] = spec
    return spec


def unregister_score(name: str) -> None:
    _SCORES.pop(name, None)


def get(name: str) -> ScoreSpec | None:
    return _SCORES.get(name)


def names(source: Source | None = None) -> tuple[str, ...]:
    """Registered score names (of one source), in registration order (`wb score`'s output order)."""
    return tuple(s.name for s in _SCORES.values() if source is None or s.source == source)


def higher_is_better(name: str) -> bool:
    """Which end of a score is best (True for an unregistered name)."""
    spec = _SCORES.get(name)
    return True if spec is None else spec.higher_is_better


def is_log_scale(name: str) -> bool:
    spec = _SCORES.get(name)
    return spec is not None and spec.log_scale


def markdown_table() -> str:
    """The score table of docs/scoring.md."""
    lines = ["| score | `keep_top_fraction` keeps | what it is |", "|---|---|---|"]
    for s in _SCORES.values():
        lines.append(f"| `{s.name}` | {'highest' if s.higher_is_better else 'lowest'} | {s.description} |")
    return "\n".join(lines)


register_score(
    "ppl_answer",
    "perplexity (exp of the mean token loss) of the answer given the prompt. The conversation is rendered exactly as "
    "`wb train` renders it (`workbench.models.templates.encode`: chat template or Alpaca, system and history "
    "included), and the answer tokens include the end-of-turn token",
    "lm",
    higher_is_better=False,
    log_scale=True,
)
register_score(
    "ppl_answer_alone",
    "the same answer's perplexity after an empty user turn (instruction, input, system and history removed). The "
    "template's own scaffolding stays, such as a default system prompt, so both losses see the same framing",
    "lm",
    higher_is_better=False,
    log_scale=True,
)
register_score(
    "ifd",
    "`loss_answer / loss_answer_alone`: the instruction-following difficulty of Cherry-LLM (Li et al. 2023, *From "
    "Quantity to Quality*). Below 1, the prompt helps the model predict the answer. At 1 or above it does not, which "
    "is how a mismatched pair looks",
    "lm",
)
register_score(
    "ppl_prompt",
    "perplexity of the user text (instruction and input) as plain text, without the template",
    "lm",
    higher_is_better=False,
    log_scale=True,
)
register_score(
    "loss_answer",
    "mean token loss of the answer given the prompt (the log of `ppl_answer`)",
    "lm",
    higher_is_better=False,
)
register_score(
    "loss_answer_alone",
    "mean token loss of the answer after an empty user turn (the log of `ppl_answer_alone`)",
    "lm",
    higher_is_better=False,
)
register_score("reward", "with `--reward-model`: the reward model's score of the whole conversation", "reward")
register_score(
    "loss",
    "a training run's per-example loss (`sample_losses.jsonl`, `wb train`), for clean rules only",
    "run",
    higher_is_better=False,
)
