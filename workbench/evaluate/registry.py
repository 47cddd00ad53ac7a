"""The metric registry: every score `wb eval` can write, with what a reader needs to interpret it.

In the manner of lm-evaluation-harness's `register_metric`: each metric declares its name, whether higher is better,
whether it is 0/1 per item (then McNemar's test is reported beside the paired interval), the answer types it applies
to and a one-line description. The report's order, the gate's path validation (`task.<metric>.<field>`), "lower is
better" and the metric table of docs/evaluation.md all come from here, so a new metric needs no change anywhere else.

Light on purpose (standard library only): `wb report` and `wb gate` import it.

Answer types: `text` (free text judged by overlap with the reference), `number` (a final numeric answer), `choice`
(an option letter), `label` (one of a closed label set), `json` (a JSON object), `regex` (a pattern from the suite),
`probe` (the short-answer forgetting probes), `lm` (the likelihood of a text: losses) and `mc` (multiple-choice items
scored by the log-likelihood of each option, `workbench.evaluate.loglik`).

`scope`: `item` metrics have one value per item (averaged, bootstrapped, paired); `set` metrics exist only for a
whole set (macro F1: its interval is a bootstrap over items of the set-level number).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

AnswerType = Literal["text", "number", "choice", "label", "json", "regex", "probe", "lm", "mc"]
ANSWER_TYPES: tuple[AnswerType, ...] = ("text", "number", "choice", "label", "json", "regex", "probe", "lm", "mc")

RESERVED = frozenset(
    {"n", "kind", "corpus", "regressions", "degenerate", "classification", "settings", "metrics", "judge"}
)
"""Keys of a set's section that are not metrics (a metric may not take one of these names)."""


@dataclass(frozen=True)
class ItemContext:
    """What a per-item scorer may look at besides the answer: the item's reference(s) and options, and the suite's
    settings (`workbench.evaluate.suite.EvalSuite`: numeric tolerance, letters, labels, JSON Schema, pattern)."""

    reference: str
    references: Sequence[str] = ()
    options: Mapping[str, str] | None = None
    suite: Any = None


ItemScorer = Callable[[str, ItemContext], float | int | None]


@dataclass(frozen=True)
class Metric:
    name: str
    description: str
    answer_types: frozenset[str]
    higher_is_better: bool = True
    binary: bool = False
    scope: Literal["item", "set"] = "item"
    length_sensitive: bool = False  # its value falls when an answer is cut short (BLEU, ROUGE, chrF)
    score: ItemScorer | None = field(default=None, compare=False)
    """Per-item scorer; None for metrics computed in bulk (overlap metrics, losses) or per set (macro F1)."""
    rate: bool = False
    """Its values lie in [0, 1] (every 0/1 metric, F-measures, BLEU and chrF divided by 100); the run schema refuses
    a value outside (a hand-edited accuracy of 7.0)."""


_REGISTRY: dict[str, Metric] = {}


def register_metric(
    name: str,
    description: str,
    answer_types: Iterable[str],
    *,
    higher_is_better: bool = True,
    binary: bool = False,
    scope: Literal["item", "set"] = "item",
    length_sensitive: bool = False,
    score: ItemScorer | None = None,
    rate: bool | None = None,
) -> Metric:
    """Add a metric (or replace one of the same name). Its name becomes a gate path segment and a report row.
    `rate`: its values lie in [0, 1] (default: when it is 0/1 per item)."""
    if not name.isidentifier() or name in RESERVED:
        raise ValueError(f"metric name {name!r}: use an identifier that is not one of {', '.join(sorted(RESERVED))}")
    types = frozenset(answer_types)
    unknown = types - set(ANSWER_TYPES)
    if unknown:
        raise ValueError(f"metric {name!r}: unknown answer types {sorted(unknown)} (known: {', '.join(ANSWER_TYPES)})")
    rate = binary if rate is None else rate
    metric = Metric(name, description, types, higher_is_better, binary, scope, length_sensitive, score, rate)
    _REGISTRY[name] = metric
    return metric


def unregister_metric(name: str) -> None:
    _REGISTRY.pop(name, None)


def get(name: str) -> Metric | None:
    return _REGISTRY.get(name)


def names() -> tuple[str, ...]:
    """Registered metric names in registration order (the report's reading order)."""
    return tuple(_REGISTRY)


def metrics() -> tuple[Metric, ...]:
    return tuple(_REGISTRY.values())


def is_rate(name: str) -> bool:
    """Does the metric's value lie in [0, 1]? (False for an unregistered name: nothing is known of its scale.)"""
    metric = _REGISTRY.get(name)
    return metric is not None and metric.rate


def higher_is_better(name: str) -> bool:
    metric = _REGISTRY.get(name)
    return True if metric is None else metric.higher_is_better


def is_binary(name: str) -> bool:
    metric = _REGISTRY.get(name)
    return metric is not None and metric.binary


def for_answer_type(answer_type: str) -> tuple[str, ...]:
    """Metrics that apply to an answer type, in registry order."""
    return tuple(m.name for m in _REGISTRY.values() if answer_type in m.answer_types)


def order(keys: Iterable[str]) -> list[str]:
    """Keys in registry order; unregistered ones (from a newer wb) after them, alphabetically."""
    rank = {name: i for i, name in enumerate(_REGISTRY)}
    return sorted(keys, key=lambda k: (rank.get(k, len(rank)), k))


def markdown_table() -> str:
    """The metric table of docs/evaluation.md (and docs/run-folder.md)."""
    lines = ["| metric | applies to | better | 0/1 | what it checks |", "|---|---|---|---|---|"]
    for m in _REGISTRY.values():
        types = ", ".join(t for t in ANSWER_TYPES if t in m.answer_types)
        better = "higher" if m.higher_is_better else "lower"
        lines.append(f"| `{m.name}` | {types} | {better} | {'yes' if m.binary else ''} | {m.description} |")
    return "\n".join(lines)


# --- the built-in metrics, in reading order ---------------------------------------------------------------------
# Scorers import `answers` when first called, so that reading the registry (wb report, wb gate) stays light.


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


register_metric(
    "numeric_match",
    "the answer's final number (after `####`, `答案：`, `the answer is`, or the last one) equals the reference's "
    "within a relative tolerance",
    ["number"],
    binary=True,
    score=_numeric,
)
register_metric(
    "choice_accuracy",
    "the chosen option letter (`B`, `(B)`, `答案是B`, or the option's text) equals the reference letter",
    ["choice"],
    binary=True,
    score=_choice,
)
register_metric(
    "label_accuracy",
    "the answer, normalised against the suite's label set, is the reference label",
    ["label"],
    binary=True,
    score=_label,
)
register_metric(
    "macro_f1",
    "mean over the suite's labels of per-class F1 (unparseable answers count as wrong); interval by resampling items",
    ["label"],
    scope="set",
    rate=True,
)
register_metric(
    "json_valid", "the answer (or its fenced block) parses as JSON", ["json"], binary=True, score=_json_valid
)
register_metric(
    "json_schema_valid",
    "the answer's JSON conforms to the suite's JSON Schema",
    ["json"],
    binary=True,
    score=_json_schema,
)
register_metric(
    "json_field_f1",
    "F1 of (field path, value) pairs of the answer's JSON against the reference object",
    ["json"],
    score=_json_fields,
    rate=True,
)
register_metric("regex_match", "the suite's pattern is found in the answer", ["regex"], binary=True, score=_regex)
register_metric(
    "accuracy",
    "the normalised reference occurs, as whole tokens, in the normalised answer (short-answer probes)",
    ["probe"],
    binary=True,
)
register_metric(
    "rouge_l",
    "ROUGE-L F-measure (longest common subsequence) on CJK-aware tokens",
    ["text", "probe"],
    length_sensitive=True,
    rate=True,
)
register_metric(
    "rouge1", "ROUGE-1 F-measure (unigram overlap) on CJK-aware tokens", ["text"], length_sensitive=True, rate=True
)
register_metric(
    "rouge2", "ROUGE-2 F-measure (bigram overlap) on CJK-aware tokens", ["text"], length_sensitive=True, rate=True
)
register_metric(
    "bleu",
    "sentence BLEU (sacrebleu, exp smoothing, effective order; tokenizer by language), divided by 100",
    ["text"],
    length_sensitive=True,
    rate=True,
)
register_metric(
    "chrf",
    "sentence chrF (sacrebleu, character 6-grams, beta 2), divided by 100",
    ["text"],
    length_sensitive=True,
    rate=True,
)
register_metric(
    "exact_match",
    "the normalised answer equals the normalised reference (SQuAD normalisation, extended to Chinese)",
    ["text", "probe"],
    binary=True,
)
register_metric(
    "f1", "SQuAD token F1 of the normalised answer (each CJK character a token)", ["text", "probe"], rate=True
)
register_metric(
    "loss",
    "mean token loss of the reference answer under the model (teacher forcing)",
    ["text", "number", "choice", "label", "json", "regex", "lm"],
    higher_is_better=False,
)
register_metric("perplexity", "exp(mean token loss) of a plain text", ["lm"], higher_is_better=False)
register_metric(
    "mc_accuracy",
    "the option whose text has the highest summed log-likelihood after the question is the answer "
    "(lm-evaluation-harness `acc`)",
    ["mc"],
    binary=True,
)
register_metric(
    "mc_accuracy_norm",
    "as mc_accuracy, each option's log-likelihood divided by its length in characters (lm-evaluation-harness "
    "`acc_norm`)",
    ["mc"],
    binary=True,
)
register_metric(
    "mc_letter_accuracy",
    "the answer letter is the most likely of the option letters (A, B, ...) after the question with its options "
    "listed (MMLU style)",
    ["mc"],
    binary=True,
)
