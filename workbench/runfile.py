"""The run schema: pydantic models of every file in a run folder, and of the summary `wb report` and `wb gate` read.

Writers (`wb eval`, `wb train`) build these models and dump them; readers (`workbench.report`) validate what they
load against them, so a number in a run file is a real number: strict types (no string, no bool where a number
belongs) and finite (NaN and infinity are refused with the file and the field). The JSON Schemas in `schemas/` are
generated from these models, and the gate's valid paths are derived by walking `RunSummary` (`gate_path_problem`),
so a new metric or a new summary number needs no change in the gate.

Files (docs/run-folder.md describes them in words):
- `eval/metrics.json`: `EvalMetrics`; `eval/scores.jsonl`: one `ScoreRow` per line.
- `manifest.json` of a training run: `TrainManifest` (its known numbers typed; other keys kept as they are).
- `<stem>.stats.json` of `wb clean`: `CleanStats` (the accounting numbers typed; the rest kept).
- the summary: `RunSummary`, whose dotted paths are the gate's paths. Sections `task` and `forgetting.<set>` are
  `SetMetrics`; their metrics are addressed without the `metrics` level (`task.rouge_l.tuned`, not
  `task.metrics.rouge_l.tuned`), as the gate files have always written them.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from workbench.evaluate import registry

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A finite number: ints are accepted, bools and strings are not."""
Count = Annotated[int, Field(strict=True, ge=0)]
Fraction = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=1)]
Percent = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=100)]
NonNegative = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0)]
ItemId = Annotated[int, Field(strict=True)] | str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    """Known fields typed and checked; other keys (from a newer wb, or free-form) kept as they are."""

    model_config = ConfigDict(extra="allow")


# --- eval/metrics.json ----------------------------------------------------------------------------------------------


class Stat(_Strict):
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


class CorpusScore(_Strict):
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


class DegenerateStat(_Strict):
    """The share of items whose answer is degenerate in one way (echo, cut_off, ...), per model."""

    tuned: Fraction
    base: Fraction | None = None
    tuned_items: Count = 0
    base_items: Count | None = None


class ClassScores(_Strict):
    precision: Fraction
    recall: Fraction
    f1: Fraction
    support: Count


class Confusion(_Strict):
    rows: list[str] = Field(description="Reference labels.")
    columns: list[str] = Field(description="Predicted labels, then `(none)` for answers that name no label.")
    matrix: list[list[Count]]


class ClassReport(_Strict):
    """Per-class scores and the confusion matrix of one model's answers to a label task."""

    labels: list[str]
    n: Count
    accuracy: Fraction
    macro_f1: Fraction
    unparsed: Count = Field(description="Answers that name no label (or several).")
    per_class: dict[str, ClassScores]
    confusion: Confusion


class JudgeSummary(_Strict):
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


class SetMetrics(_Strict):
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
            if registry.is_rate(name):
                stat.check_rate(name, f"{name}.")
        return metrics


class Overlap(_Strict):
    training_data: str | None = None
    items: Count
    fraction: Fraction
    ids: list[ItemId] = Field(default_factory=list)


class PreferenceMetrics(_Strict):
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


class EvalMetrics(_Strict):
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


class Continuation(_Strict):
    """One scored continuation: its exact text, the sum of its tokens' log-probabilities and how many tokens."""

    continuation: str = Field(description="The text scored after the context (delimiter and option, or letter).")
    loglik: Number = Field(description="Sum of the natural-log probabilities of its tokens given the context.")
    tokens: Count = Field(description="Its tokens: those of tokenize(context + continuation) after tokenize(context).")


class McScores(_Strict):
    """One model's log-likelihoods for one multiple-choice item, enough to recompute its scores with plain
    transformers: tokenize `context + continuation` without special tokens, and sum the log-probabilities of the
    tokens after the first len(tokenize(context)) (trailing whitespace of a rendered context is already moved into
    the continuation, as lm-evaluation-harness does)."""

    context: str = Field(description="The rendered question (few-shot examples included) the options continue.")
    choices: list[Continuation] = Field(description="Each option's text, in letter order (A, B, ...).")
    letter_context: str = Field(description="The question with its options listed, for letter scoring.")
    letters: list[Continuation] = Field(description="Each option's letter, in order.")
    predicted: str = Field(description="The letter of the most likely option (mc_accuracy's choice).")
    predicted_norm: str = Field(description="The letter chosen after dividing by option length (mc_accuracy_norm).")
    predicted_letter: str = Field(description="The most likely letter (mc_letter_accuracy's choice).")


class JudgeCall(_Strict):
    """One judge reply: which position the tuned answer had, the raw text, and what it was read as."""

    tuned_position: Literal["A", "B"]
    raw: str = Field(description="The judge's reply as generated.")
    parsed: Literal["A", "B", "tie"] | None = Field(None, description="The verdict read from it; null: unparsed.")
    preferred: Literal["tuned", "base", "tie"] | None = Field(None, description="That verdict as a side.")


class JudgeVerdict(_Strict):
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


class ScoreRow(_Strict):
    """One line of `eval/scores.jsonl`."""

    set: str
    id: ItemId
    instruction: str = ""
    input: str = ""
    reference: str = ""
    answers: list[str] | None = None
    answer_type: str | None = None
    options: dict[str, str] | None = Field(None, description="Multiple choice: letter -> option text.")
    scored_reference: str | None = None
    tuned: SideScores
    base: SideScores | None = None
    judge: JudgeVerdict | None = Field(None, description="The pairwise judge's verdict (task rows, --judge).")


# --- the train manifest and the cleaning stats ---------------------------------------------------------------------


class SourceUse(_Open):
    """One source of a training mixture: its records, its examples per epoch and share, what the run saw of it."""

    path: str
    records: Count = Field(description="Records read from the source (after max_samples).")
    train_records: Count = Field(description="Records left for training after the validation hold-out.")
    val_records: Count = Field(description="Records held out for this source's eval loss (eval_<name>_loss).")
    per_epoch: Count = Field(description="Examples of this source in one epoch of the mixture.")
    distinct_per_epoch: Count = Field(description="Distinct records among them (fewer when upsampled).")
    share: Fraction = Field(description="per_epoch / examples per epoch of all sources.")
    passes_per_epoch: Number = Field(description="per_epoch / train_records: above 1 upsampled, below subsampled.")
    epochs_run: Number | None = Field(None, description="Epochs of the mixture the run trained (fractional).")
    seen: Count | None = Field(None, description="Examples of this source trained on: per_epoch × epochs_run.")
    weight: Number | None = None
    epochs: Number | None = None


class TrainManifest(_Open):
    """`manifest.json` of a training run (the numbers a report and a gate read are typed)."""

    command: Literal["train"] = "train"
    method: str | None = None
    model: str | None = None
    template: str | None = None
    precision: str | None = None
    trainable_parameters: Count | None = None
    total_parameters: Count | None = None
    train_runtime_seconds: Number | None = None
    train_cpu_seconds: Number | None = None
    tokens_per_second: Number | None = None
    peak_rss_mb: Number | None = None
    gpu_peak_memory_mb: Number | None = None
    train_loss: Number | None = None
    best_eval_loss: Number | None = None
    metric_for_best: str | None = Field(None, description="What picked the best checkpoint (eval_loss, eval_<metric>).")
    best_metric: Number | None = Field(None, description="Its value at the best checkpoint.")
    global_step: Count | None = None
    examples: dict[str, Count] | None = Field(None, description="Training and validation examples.")
    sources: dict[str, SourceUse] | None = Field(None, description="A mixture's sources (data: as a list, replay).")
    eval_losses: dict[str, Number] | None = Field(None, description="A mixture's last eval loss per source.")
    tokens: dict[str, Count | None] | None = Field(None, description="Token counts per epoch and seen.")
    wall_seconds: Number | None = None
    seed: int | None = None
    warnings: list[str] = Field(default_factory=list)


class LogRow(_Open):
    """One line of `trainer_log.jsonl`. Preference methods add TRL's own names: DPO family and KTO the implicit
    rewards (`rewards/chosen`, `rewards/rejected`, `rewards/margins`, `rewards/accuracies`), the reward method
    `accuracy` and `margin`, GRPO `reward` and `kl` (KL to the reference); eval rows the same with `eval_`. A
    mixture's eval rows also hold `eval_<source>_loss` per source (checked as numbers like eval_loss;
    `source_eval_losses` reads them). Task metrics computed during training (the recipe's `eval_metrics`) are
    `eval_<metric>` keys (`eval_rouge_l`), checked like the typed numbers: finite numbers, never strings."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    step: Count | None = None
    loss: Number | None = None
    eval_loss: Number | None = None
    rewards_chosen: Number | None = Field(None, alias="rewards/chosen")
    rewards_rejected: Number | None = Field(None, alias="rewards/rejected")
    rewards_margins: Number | None = Field(None, alias="rewards/margins")
    rewards_accuracies: Number | None = Field(None, alias="rewards/accuracies")
    kl: Number | None = Field(None, description="Mean KL to the reference (GRPO, KTO).")
    reward: Number | None = Field(None, description="Mean reward of the sampled answers (GRPO).")
    accuracy: Number | None = Field(None, description="Reward model: share of pairs scored chosen > rejected.")
    margin: Number | None = Field(None, description="Reward model: mean reward(chosen) - reward(rejected).")

    @model_validator(mode="after")
    def _eval_numbers_are_numbers(self) -> LogRow:
        """Every other `eval_*` key (a task metric, a source's loss) is a finite number, never a string."""
        for key, value in (self.model_extra or {}).items():
            if key.startswith("eval_") and value is not None:
                ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
                if not ok:
                    raise ValueError(f"{key}: expected a finite number, got {value!r}")
        return self

    def eval_metrics(self) -> dict[str, float]:
        """The task metrics of this row, by registry name (`rouge_l` for `eval_rouge_l`)."""
        out = {}
        for key, value in (self.model_extra or {}).items():
            name = key.removeprefix("eval_")
            if key.startswith("eval_") and registry.get(name) is not None and isinstance(value, int | float):
                out[name] = float(value)
        return out

    def source_eval_losses(self) -> dict[str, float]:
        """`eval_<source>_loss` of this row, by source name."""
        return {
            k.removeprefix("eval_").removesuffix("_loss"): float(v)
            for k, v in (self.model_extra or {}).items()
            if k.startswith("eval_") and k.endswith("_loss")
        }


PREFERENCE_LOG_FIELDS = {
    "rewards/chosen": "rewards_chosen",
    "rewards/rejected": "rewards_rejected",
    "rewards/margins": "rewards_margins",
    "rewards/accuracies": "rewards_accuracies",
    "kl": "kl",
    "reward": "reward",
    "accuracy": "accuracy",
    "margin": "margin",
}
"""Per-step preference numbers of trainer_log.jsonl (log name -> LogRow field), in the report's order."""


class LengthBias(_Strict):
    """Which answer of the kept pairs is longer (UTF-8 bytes): DPO trained on mostly longer chosen answers learns
    length."""

    measure: Literal["utf8_bytes"] = "utf8_bytes"
    pairs: Count
    chosen_longer: Count
    rejected_longer: Count
    equal: Count
    chosen_longer_share: Fraction | None = Field(description="chosen_longer / pairs (null without pairs).")
    mean_length_ratio: Number | None = Field(description="Mean of len(chosen) / len(rejected) over the pairs.")
    max_share: Fraction = Field(description="The profile's threshold: warn above it (or below 1 - it).")
    biased: bool = Field(
        description="chosen_longer or rejected_longer is above max_share of the pairs (equal-length pairs count for "
        "neither); a warning was given."
    )


class KtoLabels(_Strict):
    desirable: Count
    undesirable: Count


class PreferenceCleanStats(_Strict):
    """What `wb clean` found in preference data, beyond the accounting."""

    kind: Literal["pair", "kto"]
    shapes: dict[str, Count] = Field(description="Records read per input shape (pairwise, conversation, scored, ...).")
    rules_not_applicable: list[str] = Field(default_factory=list, description="Profile rules skipped for this kind.")
    length_bias: LengthBias | None = Field(None, description="Pairs only.")
    labels: KtoLabels | None = Field(None, description="KTO only: kept examples per label.")


class CleanStats(_Open):
    """`<stem>.stats.json` of `wb clean` (the accounting is typed; histograms and the rest kept)."""

    read: Count
    kept: Count
    dropped: Count
    rejected: Count
    dropped_by_rule: dict[str, Count] = Field(default_factory=dict)
    rejected_by_kind: dict[str, Count] = Field(default_factory=dict)
    invariant_holds: bool | None = None
    kind: Literal["sft", "preference"] = Field("sft", description="What the input held.")
    preference: PreferenceCleanStats | None = Field(None, description="Preference data only.")
    warnings: list[str] = Field(default_factory=list)


# --- the summary (what `wb report` shows and `wb gate` checks) -----------------------------------------------------


class CleanSummary(_Strict):
    read: Count
    kept: Count
    dropped: Count
    rejected: Count
    dropped_fraction: Fraction | None = None
    rejected_fraction: Fraction | None = None
    removed_fraction: Fraction | None = None
    kept_fraction: Fraction | None = None
    dropped_by_rule: dict[str, Count] = Field(default_factory=dict)
    rejected_by_kind: dict[str, Count] = Field(default_factory=dict)
    invariant_holds: bool = True
    modified: dict[str, Any] | None = None
    pii_found: dict[str, Any] | None = None
    kept_output_tokens_histogram: dict[str, Any] | None = None
    contamination: dict[str, Any] | None = None
    source: str | None = None
    preference: PreferenceCleanStats | None = None


class TrainSummary(_Strict):
    method: str | None = None
    model: str | None = None
    template: str | None = None
    precision: str | None = None
    trainable_parameters: Count | None = None
    total_parameters: Count | None = None
    trainable_fraction: Fraction | None = None
    train_runtime_seconds: Number | None = None
    tokens_per_second: Number | None = None
    peak_rss_mb: Number | None = None
    gpu_peak_memory_mb: Number | None = None
    train_loss: Number | None = None
    best_eval_loss: Number | None = None
    metric_for_best: str | None = None
    best_metric: Number | None = None
    final_loss: Number | None = None
    final_eval_loss: Number | None = None
    first_loss: Number | None = None
    final_preference: dict[str, Number] | None = Field(
        None,
        description="Preference methods: the last logged value of each per-step number (rewards_accuracies, kl...).",
    )
    global_step: Count | None = None
    logged_steps: Count | None = None
    examples: dict[str, Count] | None = None
    tokens: dict[str, Count | None] | None = None
    wall_seconds: Number | None = None
    seed: int | None = None
    recipe: dict[str, Any] | None = None


class ReviewSummary(_Strict):
    reviewed: Count
    unreviewed: Count = 0
    tuned_preferred: Fraction | None = None
    verdicts: dict[str, Count] = Field(default_factory=dict)


class RunInfo(_Strict):
    name: str
    path: str
    kind: str


class RunSummary(_Strict):
    """Everything `wb report` shows and `wb gate` checks, by dotted path (`task.rouge_l.tuned`)."""

    model_config = ConfigDict(extra="forbid", title="RunSummary")

    wb_version: str
    run: RunInfo
    clean: CleanSummary | None = None
    train: TrainSummary | None = None
    task: SetMetrics | None = None
    forgetting: dict[str, SetMetrics] = Field(default_factory=dict)
    overlap: Overlap | None = None
    pref: PreferenceMetrics | None = None
    generation: dict[str, Any] = Field(default_factory=dict)
    suite: dict[str, Any] | None = None
    review: ReviewSummary | None = None
    has_base: bool = False
    missing: dict[str, str] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    files: dict[str, str] = Field(default_factory=dict)


# --- gate paths, derived from RunSummary ----------------------------------------------------------------------------

GATE_SECTIONS = ("task", "forgetting", "clean", "train", "overlap", "review", "pref")
"""The summary sections a gate may read (the rest describe the run rather than measure it)."""


def _unwrap(tp: Any) -> Any:
    """X for Optional[X] / Annotated[X, ...]; the type itself otherwise."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _is_number(tp: Any) -> bool:
    tp = _unwrap(tp)
    if tp in (int, float):
        return True
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else ()
    return bool(args) and all(_unwrap(a) in (int, float) for a in args if a is not type(None))


def _children(tp: Any) -> tuple[dict[str, Any], Any]:
    """(named children, type of any other key) of a node type."""
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        named = {n: f.annotation for n, f in tp.model_fields.items()}
        if tp is SetMetrics:
            return named, Stat  # a metric name addresses its Stat directly
        return named, None
    if typing.get_origin(tp) is dict:
        return {}, typing.get_args(tp)[1]
    return {}, None


def _fields_of(tp: Any) -> list[str]:
    named, other = _children(tp)
    out = [n for n, t in named.items() if _is_number(t) or _children(t) != ({}, None)]
    return out + (["<name>"] if other is not None else [])


def gate_path_problem(path: str) -> str | None:
    """Why `path` can never name a number of a run summary, or None when it is well-formed.

    Metric names under `task.` and `forgetting.<set>.` must be registered metrics."""
    parts = path.split(".")
    if any(not p for p in parts):
        return f"{path!r}: empty part in the dotted path"
    if parts[0] not in GATE_SECTIONS:
        return f"{path!r}: unknown section {parts[0]!r} (sections: {', '.join(GATE_SECTIONS)})"
    node: Any = RunSummary
    for depth, key in enumerate(parts):
        named, other = _children(node)
        where = ".".join(parts[:depth]) or "the summary"
        if key in named and not (_unwrap(node) is SetMetrics and key == "metrics"):
            node = named[key]
        elif other is not None and key not in named:
            if _unwrap(node) is SetMetrics and registry.get(key) is None:
                return f"{path!r}: unknown metric {key!r} (metrics: {', '.join(registry.names())})"
            node = other
        else:
            fields = ", ".join(_fields_of(node)) or "none"
            return f"{path!r}: {where} has no {key!r} (it has: {fields})"
    if not _is_number(node):
        fields = ", ".join(_fields_of(node))
        return f"{path!r}: not a number" + (f"; continue the path with one of: {fields}" if fields else "")
    return None


def gate_paths_help() -> str:
    """The gate's paths in words, generated from the schema (docs/gate.md, docs/run-folder.md, pipelines/gate.yaml)."""
    lines: list[str] = []
    for section in GATE_SECTIONS:
        lines.extend(_paths(RunSummary.model_fields[section].annotation, section, 0))
    return "\n".join(lines)


def _paths(tp: Any, prefix: str, depth: int) -> Iterator[str]:
    named, other = _children(tp)
    if _unwrap(tp) is SetMetrics:
        yield f"{prefix}.n"
        yield f"{prefix}.<metric>.<{'|'.join(STAT_FIELDS)}>"
        yield f"{prefix}.corpus.<bleu|chrf[_zh|_latin]>.<{'|'.join(_numbers_of(CorpusScore))}>"
        from workbench.evaluate.degenerate import DEGENERATE_KINDS

        kinds = "|".join(DEGENERATE_KINDS)
        yield f"{prefix}.degenerate.<{kinds}>.<{'|'.join(_numbers_of(DegenerateStat))}>"
        yield f"{prefix}.classification.<tuned|base>.macro_f1"
        if prefix == "task":
            yield f"{prefix}.judge.<{'|'.join(_numbers_of(JudgeSummary))}>"
        return
    numbers = [n for n, t in named.items() if _is_number(t)]
    if numbers:
        yield f"{prefix}.<{'|'.join(numbers)}>"
    for n, t in named.items():
        if not _is_number(t) and _children(t) != ({}, None) and depth < 3:
            yield from _paths(t, f"{prefix}.{n}", depth + 1)
    if other is not None:
        if _is_number(other):
            yield f"{prefix}.<name>"
        else:
            yield from _paths(other, f"{prefix}.<name>", depth + 1)


def _numbers_of(model: type[BaseModel]) -> list[str]:
    return [n for n, f in model.model_fields.items() if _is_number(f.annotation)]


STAT_FIELDS = tuple(_numbers_of(Stat))
"""The numbers of a STAT, the last segment of `task.<metric>.<field>`."""


def summary_numbers(summary: dict[str, Any]) -> dict[str, float]:
    """Every number of a summary dict by its gate path (the comparison of two runs lists these)."""
    out: dict[str, float] = {}

    def walk(node: Any, prefix: str, set_level: bool) -> None:
        if isinstance(node, bool) or node is None:
            return
        if isinstance(node, int | float):
            out[prefix] = float(node)
            return
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if set_level and key == "metrics" and isinstance(value, dict):
                for metric, stat in value.items():
                    walk(stat, f"{prefix}.{metric}", False)
            elif not (set_level and key in ("regressions", "settings")):
                walk(value, f"{prefix}.{key}", False)

    for section in GATE_SECTIONS:
        value = summary.get(section)
        if section == "forgetting":
            for name, sec in (value or {}).items():
                walk(sec, f"forgetting.{name}", True)
        elif section == "task":
            walk(value, "task", True)
        elif section == "overlap" and isinstance(value, dict):
            walk({k: v for k, v in value.items() if k != "ids"}, "overlap", False)
        else:
            walk(value, section, False)
    return out


def resolve(summary: dict[str, Any], path: str) -> Any:
    """The value at a gate path of a summary dict (metrics without their `metrics` level); KeyError if absent."""
    parts = path.split(".")
    node: Any = summary
    set_level = False
    for depth, key in enumerate(parts):
        if not isinstance(node, dict):
            raise KeyError(".".join(parts[:depth]))
        if set_level and key not in node and isinstance(node.get("metrics"), dict) and key in node["metrics"]:
            node = node["metrics"][key]
        elif key in node:
            node = node[key]
        else:
            raise KeyError(".".join(parts[: depth + 1]))
        set_level = (depth == 0 and key == "task") or (depth == 1 and parts[0] == "forgetting")
    return node
