"""The per-item scorers of the registered metrics (`workbench.metric_specs`): what a scorer may look at besides the
answer (`ItemContext`), the built-in scorers (thin calls into `workbench.evaluate.answers`), and `scorer`, the one
lookup `wb eval`, training-time eval and GRPO rewards use. A metric registered with its own `score` uses that."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from workbench import metric_specs
from workbench.metric_specs import ItemScorer


@dataclass(frozen=True)
class ItemContext:
    """What a per-item scorer may look at besides the answer: the item's reference(s) and options, and the suite's
    settings (`workbench.evaluate.suite.EvalSuite`: numeric tolerance, letters, labels, JSON Schema, pattern)."""

    reference: str
    references: Sequence[str] = ()
    options: Mapping[str, str] | None = None
    suite: Any = None


def scorer(name: str) -> ItemScorer | None:
    """The per-item scorer of the metric `name`: its own, else the built-in one; None when it has none (metrics
    computed in bulk, per set, or not registered)."""
    metric = metric_specs.get(name)
    if metric is None:
        return None
    return metric.score or _BUILT_IN.get(name)


def scorable() -> list[str]:
    """The registered metrics with a per-item scorer, in registry order."""
    return [name for name in metric_specs.names() if scorer(name) is not None]


def _numeric(prediction: str, ctx: ItemContext) -> int:
    from workbench.evaluate.numbers import numeric_match

    return numeric_match(prediction, ctx.reference, ctx.suite.numeric.rel_tol)


def _choice(prediction: str, ctx: ItemContext) -> int:
    from workbench.evaluate.choices import choice_accuracy

    return choice_accuracy(prediction, ctx.reference, ctx.options, ctx.suite.choices.letters)


def _label(prediction: str, ctx: ItemContext) -> int:
    from workbench.evaluate.answers import label_accuracy

    return label_accuracy(prediction, ctx.reference, ctx.suite.labels)


def _json_valid(prediction: str, ctx: ItemContext) -> int:
    from workbench.evaluate.answer_format import json_valid

    return json_valid(prediction)


def _json_schema(prediction: str, ctx: ItemContext) -> int | None:
    from workbench.evaluate.answer_format import json_schema_valid

    schema = ctx.suite.json_schema
    return None if schema is None else json_schema_valid(prediction, schema)


def _json_fields(prediction: str, ctx: ItemContext) -> float:
    from workbench.evaluate.answer_format import json_field_f1

    return json_field_f1(prediction, ctx.reference)


def _regex(prediction: str, ctx: ItemContext) -> int | None:
    from workbench.evaluate.answer_format import regex_match

    rx = ctx.suite.regex
    if rx is None:
        return None
    return regex_match(prediction, rx.pattern, "i" if rx.ignore_case else 0, full=rx.full_match)


_BUILT_IN: dict[str, ItemScorer] = {
    "numeric_match": _numeric,
    "choice_accuracy": _choice,
    "label_accuracy": _label,
    "json_valid": _json_valid,
    "json_schema_valid": _json_schema,
    "json_field_f1": _json_fields,
    "regex_match": _regex,
}
