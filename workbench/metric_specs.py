"""The metric registry: every score `wb eval` can write, with what a reader needs to interpret it.

In the manner of lm-evaluation-harness's `register_metric`: each metric declares its name, whether higher is better,
whether it is 0/1 per item (then McNemar's test is reported beside the paired interval), whether its values are a
rate in [0, 1], the answer types it applies to and a one-line description. Two sections:

- `set` metrics score the items of a set (the task set, a forgetting probe set, a multiple-choice set): gate paths
  `task.<metric>.<field>` and `forgetting.<set>.<metric>.<field>`;
- `pref` metrics score held-out preference pairs (`wb eval --prefs`, `workbench.evaluate.preference_metrics`): gate
  paths `pref.<metric>.<field>`, fields of `runfile.evals.PreferenceMetrics`.

The pairwise judge's numbers (`task.judge.<field>`: win, tie and loss rates, position flips, agreement with human
review) are not metrics of items but fields of one summary, `runfile.evals.JudgeSummary`, whose descriptions are
their one home (the gate paths and docs are generated from it).

The run schema's rate checks and unknown-metric errors (`workbench.runfile`), the report's order and descriptions,
the gate's path validation, "lower is better", `wb eval`'s tables and the metric tables of docs/evaluation.md all
read this registry, so a new metric is one `register_metric` call (with its per-item scorer, or computed in bulk by
`workbench.evaluate.metrics`). The built-in per-item scorers are in `workbench.evaluate.scorers`.

Light on purpose (standard library only, floor 1): the run schema, `wb report` and `wb gate` import it.

Answer types: `text` (free text judged by overlap with the reference), `number` (a final numeric answer), `choice`
(an option letter), `label` (one of a closed label set), `json` (a JSON object), `regex` (a pattern from the suite),
`probe` (the short-answer forgetting probes), `lm` (the likelihood of a text: losses), `mc` (multiple-choice items
scored by the log-likelihood of each option, `workbench.evaluate.loglik`).

`scope`: `item` metrics have one value per item (averaged, bootstrapped, paired); `set` metrics exist only for a
whole set (macro F1: its interval is a bootstrap over items of the set-level number).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

AnswerType = Literal["text", "number", "choice", "label", "json", "regex", "probe", "lm", "mc"]
ANSWER_TYPES: tuple[AnswerType, ...] = ("text", "number", "choice", "label", "json", "regex", "probe", "lm", "mc")
Section = Literal["set", "pref"]

RESERVED = frozenset(
    {"n", "kind", "corpus", "regressions", "degenerate", "classification", "settings", "metrics", "judge"}
)
"""Keys of a set's section that are not metrics (a metric may not take one of these names)."""

ItemScorer = Callable[[str, Any], float | int | None]
"""A per-item scorer: the answer and a `workbench.evaluate.scorers.ItemContext` to its value (None: no value)."""


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
    """A per-item scorer given with the metric; the built-in ones are `workbench.evaluate.scorers.scorer`'s."""
    rate: bool = False
    """Its values lie in [0, 1] (every 0/1 metric, F-measures, BLEU and chrF divided by 100); the run schema refuses
    a value outside (a hand-edited accuracy of 7.0)."""
    section: Section = "set"
    headline: bool = True
    """A preference metric shown in the report's short Markdown summary (the margins are on the page only)."""


_REGISTRY: dict[str, Metric] = {}
_PREF: dict[str, Metric] = {}


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
    """Add a set metric (or replace one of the same name). Its name becomes a gate path segment and a report row.
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


def register_pref_metric(name: str, description: str, *, rate: bool = False, headline: bool = True) -> Metric:
    """Add a preference metric (`pref.<name>`): a `runfile.Stat` of `runfile.evals.PreferenceMetrics` of that name.
    `headline`: also a row of the report's short Markdown summary."""
    if not name.isidentifier():
        raise ValueError(f"preference metric name {name!r}: use an identifier")
    metric = Metric(name, description, frozenset(), rate=rate, section="pref", headline=headline)
    _PREF[name] = metric
    return metric


def unregister_metric(name: str) -> None:
    _REGISTRY.pop(name, None)


def get(name: str) -> Metric | None:
    """The set metric of that name (None when there is none)."""
    return _REGISTRY.get(name)


def names() -> tuple[str, ...]:
    """Registered set metric names in registration order (the report's reading order)."""
    return tuple(_REGISTRY)


def metrics() -> tuple[Metric, ...]:
    return tuple(_REGISTRY.values())


def pref_metrics() -> tuple[Metric, ...]:
    """The preference metrics, in reading order (`pref.<name>` rows of `wb eval`, the report and the gate)."""
    return tuple(_PREF.values())


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


def pref_markdown_table() -> str:
    """The preference metric table of docs/evaluation.md."""
    lines = ["| metric | in [0, 1] | what it measures |", "|---|---|---|"]
    lines += [f"| `pref.{m.name}` | {'yes' if m.rate else ''} | {m.description} |" for m in _PREF.values()]
    return "\n".join(lines)


# --- the built-in metrics, in reading order ---------------------------------------------------------------------
# Their per-item scorers (where they have one) are `workbench.evaluate.scorers`'s.

register_metric(
    "numeric_match",
    "the answer's final number (after `####`, `答案：`, `the answer is`, or the last one) equals the reference's "
    "within a relative tolerance",
    ["number"],
    binary=True,
)
register_metric(
    "choice_accuracy",
    "the chosen option letter (`B`, `(B)`, `答案是B`, or the option's text) equals the reference letter",
    ["choice"],
    binary=True,
)
register_metric(
    "label_accuracy",
    "the answer, normalised against the suite's label set, is the reference label",
    ["label"],
    binary=True,
)
register_metric(
    "macro_f1",
    "mean over the suite's labels of per-class F1 (unparseable answers count as wrong); interval by resampling items",
    ["label"],
    scope="set",
    rate=True,
)
register_metric("json_valid", "the answer (or its fenced block) parses as JSON", ["json"], binary=True)
register_metric(
    "json_schema_valid",
    "the answer's JSON conforms to the suite's JSON Schema",
    ["json"],
    binary=True,
)
register_metric(
    "json_field_f1",
    "F1 of (field path, value) pairs of the answer's JSON against the reference object",
    ["json"],
    rate=True,
)
register_metric("regex_match", "the suite's pattern is found in the answer", ["regex"], binary=True)
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
    "listed (MMLU style; only with --mc-letters)",
    ["mc"],
    binary=True,
)

# --- preference metrics (`wb eval --prefs`, `--reward-model`) ---------------------------------------------------

register_pref_metric(
    "implicit_accuracy",
    "share of pairs whose chosen gains more log-probability over the reference than rejected",
    rate=True,
)
register_pref_metric("implicit_margin", "mean of that log-ratio difference (nats)", headline=False)
register_pref_metric("reward_accuracy", "share of pairs the reward model scores chosen above rejected", rate=True)
register_pref_metric("reward_margin", "mean reward(chosen) - reward(rejected)", headline=False)
register_pref_metric(
    "reward_score",
    "reward of the tuned model's task answers (base: the base model's answers to the same prompts)",
)
