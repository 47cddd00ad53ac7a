"""`eval/metrics.json` (`EvalMetrics`: a `SetMetrics` per set, with a `Stat` per metric) and `eval/scores.jsonl`
(one `ScoreRow` per item and set), as `wb eval` writes them and `wb report` reads them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from workbench import metric_specs
from workbench.records import Turn
from workbench.runfile.values import Count, Fraction, ItemId, NonNegative, Number, Percent, Strict


class Stat(Strict):
    """One metric of one set: the tuned mean with its 95% bootstrap interval and, against the base, the paired
    difference with its interval, wins/ties/losses per item and, for 0/1 metrics, McNemar's p."""

    tuned: Number | None = Field(None, description="Mean over the items (the set-level value for set metrics).")
    lower: Number | None = Field(None, description="Lower end of the 95% bootstrap interval of the tuned value.")
    upper: Number | None = Field(None, description="Upper end of that interval.")
    base: Number | None = Field(None, description="The base model's value on the same items.")
    delta: Number | None = Field(None, description="tuned - base.")
    delta_lower: Number | None = Field(None, description="Lower end of the 95% paired bootstrap interval of delta.")
    delta_upper: Number | None = Field(None, description="Upper end of that interval.")
    wins: Count | None = Field(None, description="Items where tuned beat base (lower wins for lower-is-better).")
    ties: Count | None = Field(None, description="Items where they are equal.")
    losses: Count | None = Field(None, description="Items where base beat tuned.")
    mcnemar_p: Fraction | None = Field(None, description="Exact McNemar p-value (0/1 metrics).")
    n: Count | None = Field(None, description="Items that have this metric (when fewer than the set's n).")
    constant: bool | None = Field(
        None,
        description="Every item scores the same value on both sides (0 or 1), or every preference pair has the same "
        "margin (the scorer does not tell chosen from rejected): the number carries no decision.",
    )

    def check_rate(self, metric: str, prefix: str = "") -> Stat:
        """For a metric whose values lie in [0, 1]: its means and interval ends in [0, 1], differences in [-1, 1]."""
        for name in ("tuned", "lower", "upper", "base", *DELTA_FIELDS):
            value = getattr(self, name)
            low = -1 if name in DELTA_FIELDS else 0
            if value is not None and not low <= value <= 1:
                raise PydanticCustomError(
                    "rate_range",
                    "{field}: {value} is outside [{low}, 1] ({metric} is a rate)",
                    {"field": prefix + name, "value": value, "low": low, "metric": metric},
                )
        return self


DELTA_FIELDS = ("delta", "delta_lower", "delta_upper")
BASE_FIELDS = ("base", *DELTA_FIELDS, "wins", "ties", "losses", "mcnemar_p")


class CorpusScore(Strict):
    """A corpus-level sacrebleu score (0-100) of one language group, with what explains it."""

    tuned: Percent | None = None
    base: Percent | None = None
    signature: str = ""
    n: Count | None = Field(None, description="Items in this language group.")
    language: str | None = Field(None, description="zh (tokenizer zh) or latin (13a); absent for one-language sets.")
    brevity_penalty: Fraction | None = Field(None, description="BLEU's brevity penalty of the tuned answers.")
    base_brevity_penalty: Fraction | None = None
    length_ratio: NonNegative | None = Field(None, description="Answer length / reference length (BLEU tokens), tuned.")
    base_length_ratio: NonNegative | None = None


class DegenerateStat(Strict):
    """The share of items whose answer is degenerate in one way (echo, cut_off, ...), per model."""

    tuned: Fraction
    base: Fraction | None = None
    tuned_items: Count = 0
    base_items: Count | None = None


class ClassScores(Strict):
    precision: Fraction
    recall: Fraction
    f1: Fraction
    support: Count


class Confusion(Strict):
    rows: list[str] = Field(description="Reference labels.")
    columns: list[str] = Field(description="Predicted labels, then `(none)` for answers that name no label.")
    matrix: list[list[Count]]


class ClassReport(Strict):
    """Per-class scores and the confusion matrix of one model's answers to a label task."""

    labels: list[str]
    n: Count
    accuracy: Fraction
    macro_f1: Fraction
    unparsed: Count = Field(description="Answers that name no label (or several).")
    per_class: dict[str, ClassScores]
    confusion: Confusion


class JudgeSummary(Strict):
    """A pairwise judge's verdicts on the task set (`wb eval --judge`): each item judged in both answer orders, a win
    only when both orders agree (else a tie); gate paths `task.judge.<field>`."""

    n: Count = Field(description="Items judged (those with a tuned and a base answer).")
    win_rate: Fraction | None = Field(
        None, description="Share of items where the judge preferred tuned in both orders."
    )
    tie_rate: Fraction | None = Field(None, description="Share of ties (said tie, orders disagreed, or unparsed).")
    loss_rate: Fraction | None = Field(None, description="Share of items where it preferred base in both orders.")
    win_minus_loss: Number | None = Field(None, description="win_rate - loss_rate (per item: +1 win, -1 loss, 0 tie).")
    win_minus_loss_lower: Number | None = Field(None, description="Lower end of its 95% paired bootstrap interval.")
    win_minus_loss_upper: Number | None = Field(None, description="Upper end of that interval.")
    wins: Count = 0
    ties: Count = 0
    losses: Count = 0
    position_flip_rate: Fraction | None = Field(
        None, description="Share of items (both replies parsed) whose verdict changed when the answers swapped places."
    )
    flipped: Count = Field(0, description="Items whose verdict changed with the order.")
    unparsed: Count = Field(0, description="Judge replies that named no verdict (their items count as ties).")
    replies: Count = Field(0, description="Judge replies (two per item).")
    tuned_longer: Count = Field(0, description="Items where the tuned answer is longer (CJK-aware tokens).")
    win_rate_tuned_longer: Fraction | None = Field(None, description="Win rate on the items where tuned is longer.")
    win_rate_tuned_not_longer: Fraction | None = Field(None, description="Win rate on the others.")
    kappa: Number | None = Field(None, description="Cohen's kappa, judge vs imported human review verdicts.")
    kappa_n: Count | None = Field(None, description="Items both the judge and the reviewers gave a verdict.")
    review_agreement: Fraction | None = Field(None, description="Share of those items with the same verdict.")
    informative: bool = Field(False, description="The flip rate is at most 0.5: verdicts do not follow positions.")
    settings: dict[str, Any] = Field(default_factory=dict, description="Judge model, prompts, generation settings.")


class SetMetrics(Strict):
    """The aggregate scores of one evaluated set: the task set, or one forgetting probe set."""

    n: Count
    kind: Literal["task", "qa", "text", "mc"] = "task"
    metrics: dict[str, Stat] = Field(default_factory=dict)
    corpus: dict[str, CorpusScore] = Field(default_factory=dict)
    regressions: list[ItemId] = Field(default_factory=list)
    degenerate: dict[str, DegenerateStat] = Field(default_factory=dict)
    classification: dict[str, ClassReport] = Field(default_factory=dict, description="Per side (tuned, base).")
    settings: dict[str, Any] = Field(default_factory=dict, description="How this set was scored.")
    judge: JudgeSummary | None = Field(None, description="The pairwise judge's verdicts (task set, --judge).")

    @field_validator("metrics", mode="after")
    @classmethod
    def _rates_in_range(cls, metrics: dict[str, Stat]) -> dict[str, Stat]:
        for name, stat in metrics.items():
            if metric_specs.is_rate(name):
                stat.check_rate(name, f"{name}.")
        return metrics


class Overlap(Strict):
    training_data: str | None = None
    items: Count
    fraction: Fraction
    ids: list[ItemId] = Field(default_factory=list)


class PreferenceMetrics(Strict):
    """Preference evaluation on held-out pairs (`wb eval --prefs`, workbench/evaluate/preference_metrics.py): the
    policy's implicit-reward accuracy, a reward model's accuracy (`--reward-model`), and the tuned-vs-base win rate of
    the task answers under that reward model."""

    n: Count = Field(description="Held-out pairs scored.")
    source: str | None = Field(None, description="The pairs file.")
    excluded_identical: Count = Field(
        0, description="Pairs left out because chosen and rejected are the same text: they carry no preference."
    )
    implicit_accuracy: Stat | None = Field(
        None, description="Share of pairs whose chosen gains more log-probability over the reference than rejected."
    )
    implicit_margin: Stat | None = Field(None, description="Mean of that log-ratio difference (nats).")
    reward_accuracy: Stat | None = Field(None, description="Share of pairs the reward model scores chosen higher.")
    reward_margin: Stat | None = Field(None, description="Mean reward(chosen) - reward(rejected).")
    reward_score: Stat | None = Field(
        None, description="Reward of the tuned task answers vs the base's (paired; wins/ties/losses per prompt)."
    )
    win_rate: Fraction | None = Field(None, description="(wins + ties / 2) / prompts of reward_score.")
    settings: dict[str, Any] = Field(default_factory=dict, description="Reference, reward model, max_length.")

    @field_validator("implicit_accuracy", "reward_accuracy", mode="after")
    @classmethod
    def _rates_in_range(cls, stat: Stat | None, info: ValidationInfo) -> Stat | None:
        return stat.check_rate(str(info.field_name)) if stat is not None else None


class EvalMetrics(Strict):
    """`eval/metrics.json`."""

    model_config = ConfigDict(extra="forbid", title="EvalMetrics")

    task: SetMetrics | None = None
    forgetting: dict[str, SetMetrics] = Field(default_factory=dict)
    overlap: Overlap | None = None
    preference: PreferenceMetrics | None = None
    generation: dict[str, Any] = Field(default_factory=dict)
    suite: dict[str, Any] | None = None
    warnings: list[str] = Field(default_factory=list)


# --- eval/scores.jsonl ----------------------------------------------------------------------------------------------


class Continuation(Strict):
    """One scored continuation: its exact text, the sum of its tokens' log-probabilities and how many tokens."""

    continuation: str = Field(description="The text scored after the context (delimiter and option, or letter).")
    loglik: Number = Field(description="Sum of the natural-log probabilities of its tokens given the context.")
    tokens: Count = Field(description="Its tokens: those of tokenize(context + continuation) after tokenize(context).")


class McScores(Strict):
    """One model's log-likelihoods for one multiple-choice item, enough to recompute its scores with plain
    transformers: tokenize `context + continuation` without special tokens, and sum the log-probabilities of the
    tokens after the first len(tokenize(context)) (trailing whitespace of a rendered context is already moved into
    the continuation, as lm-evaluation-harness does)."""

    context: str = Field(description="The rendered question (few-shot examples included) the options continue.")
    choices: list[Continuation] = Field(description="Each option's text, in letter order (A, B, ...).")
    letter_context: str | None = Field(
        None, description="The question with its options listed, for letter scoring (only with --mc-letters)."
    )
    letters: list[Continuation] | None = Field(None, description="Each option's letter, in order (--mc-letters).")
    predicted: str = Field(description="The letter of the most likely option (mc_accuracy's choice).")
    predicted_norm: str = Field(description="The letter chosen after dividing by option length (mc_accuracy_norm).")
    predicted_letter: str | None = Field(
        None, description="The most likely letter (mc_letter_accuracy's choice; --mc-letters)."
    )


class JudgeCall(Strict):
    """One judge reply: which position the tuned answer had, the raw text, and what it was read as."""

    tuned_position: Literal["A", "B"]
    raw: str = Field(description="The judge's reply as generated.")
    parsed: Literal["A", "B", "tie"] | None = Field(None, description="The verdict read from it; null: unparsed.")
    preferred: Literal["tuned", "base", "tie"] | None = Field(None, description="That verdict as a side.")


class JudgeVerdict(Strict):
    """The judge's verdict on one task item: both orders, and the verdict they give together."""

    verdict: Literal["tuned", "base", "tie"] = Field(description="A side when both orders agree on it; else tie.")
    language: str = Field(description="The prompt used: en or zh (the question's dominant script).")
    flipped: bool = Field(description="Both replies parsed and they differ (the verdict depends on the order).")
    unparsed: Count = Field(0, description="Replies of this item that named no verdict.")
    tuned_longer: bool = Field(description="The tuned answer has more (CJK-aware) tokens than the base answer.")
    calls: list[JudgeCall]


class SideScores(BaseModel):
    """One model's answer to one item and its per-item scores (metric name -> value; None where not applicable)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, Number | None] = Field(init=False)

    prediction: str | None = None
    scored: str | None = Field(None, description="The part of the answer that was scored, when not all of it.")
    generated_tokens: Count | None = None
    finished: bool | None = Field(None, description="Generation ended at an end token (False: cut at the limit).")
    flags: list[str] = Field(default_factory=list, description="Degenerate-answer kinds found in this answer.")
    mc: McScores | None = Field(None, description="Multiple-choice items: the log-likelihood of every option.")


class ScoreRow(Strict):
    """One line of `eval/scores.jsonl`."""

    set: str
    id: ItemId
    instruction: str = ""
    input: str = ""
    system: str | None = Field(None, description="The item's system prompt, when it has one.")
    history: list[Turn] | None = Field(
        None, description="The conversation before the instruction: (user, assistant) turns, oldest first."
    )
    reference: str = ""
    answers: list[str] | None = None
    answer_type: str | None = None
    options: dict[str, str] | None = Field(None, description="Multiple choice: letter -> option text.")
    scored_reference: str | None = None
    tuned: SideScores
    base: SideScores | None = None
    judge: JudgeVerdict | None = Field(None, description="The pairwise judge's verdict (task rows, --judge).")
