"""`wb train --inspect`: the first examples of a recipe's data as the trainer sees them, each split into spans that
are trained on and spans that are masked (the prompt), for SFT records and preference data alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from workbench.train.recipe import Recipe

Role = Literal["masked", "trained", "rejected"]
Span = tuple[str, Role]


@dataclass
class Example:
    title: str
    blocks: list[list[Span]]  # an SFT record: one; a preference pair: prompt + chosen, prompt + rejected


@dataclass
class Inspection:
    template: str
    legend: str
    examples: list[Example] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def inspect(recipe: Recipe, n: int, on_status: Callable[[str], None] | None = None) -> Inspection:
    """The first `n` examples of `recipe`'s training data, rendered and tokenised as training would."""
    from workbench.methods import registry
    from workbench.models.base import load_tokenizer

    tokenizer = load_tokenizer(recipe.model, on_status)
    if registry.get(recipe.method).data in ("pairs", "unpaired"):
        return _preference(recipe, tokenizer, n)
    from workbench.train.prepare import inspect as spans_of
    from workbench.train.prepare import prepare

    prepared = prepare(recipe, tokenizer, None)
    found = Inspection(prepared.template, "trained tokens in green, masked tokens dim", warnings=prepared.warnings)
    for i, spans in enumerate(spans_of(tokenizer, prepared.train, n)):
        ex = prepared.train[i]
        title = f"line {ex.line}: {ex.trained_tokens} of {len(ex.input_ids)} tokens trained"
        found.examples.append(Example(title, [[(text, "trained" if on else "masked") for text, on in spans]]))
    return found


def _preference(recipe: Recipe, tokenizer: object, n: int) -> Inspection:
    """Preference examples: the prompt masked, the chosen answer trained towards, the rejected one away from."""
    from workbench.train.trl_trainers import prepare as prepare_pairs

    prepared = prepare_pairs(recipe, tokenizer)
    checked = prepared.train
    found = Inspection(prepared.template, "prompt dim, chosen green, rejected red")
    for ex in checked.pairs[:n]:
        title = (f"line {ex.line}: prompt {len(ex.prompt_ids)}, chosen {len(ex.chosen_ids)}, rejected "
                 f"{len(ex.rejected_ids)} tokens")  # fmt: skip
        found.examples.append(
            Example(
                title,
                [[(ex.prompt, "masked"), (ex.chosen, "trained")], [(ex.prompt, "masked"), (ex.rejected, "rejected")]],
            )
        )
    for kto in checked.unpaired[:n]:
        title = f"line {kto.line}: {'desirable' if kto.label else 'undesirable'}"
        found.examples.append(
            Example(title, [[(kto.prompt, "masked"), (kto.completion, "trained" if kto.label else "rejected")]])
        )
    for reason, lines in sorted(checked.dropped.items()):
        found.warnings.append(f"{len(lines)} dropped ({reason}): lines {', '.join(map(str, lines[:10]))}")
    return found
