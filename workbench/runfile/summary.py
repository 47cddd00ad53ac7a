"""The summary of a run (`RunSummary`): everything `wb report` shows and `wb gate` checks, by dotted path."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from workbench.runfile.cleaning import PreferenceCleanStats
from workbench.runfile.evals import Overlap, PreferenceMetrics, SetMetrics
from workbench.runfile.values import Count, Fraction, Number, Strict


class CleanSummary(Strict):
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


class TrainSummary(Strict):
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


class PreferenceRate(Strict):
    """Tuned preferred over base: tuned = 1, base = 0, tie = 1/2 per item, both_bad left out (counted apart)."""

    value: Fraction | None = None
    lower: Fraction | None = Field(None, description="The 95% percentile-bootstrap interval's lower end.")
    upper: Fraction | None = None
    n: Count = Field(0, description="Items in the rate (both_bad left out).")


class ReviewerSummary(Strict):
    reviewed: Count
    verdicts: dict[str, Count] = Field(default_factory=dict)
    tuned_preferred: PreferenceRate = Field(default_factory=PreferenceRate)
    both_bad: Fraction | None = Field(None, description="Share of this reviewer's verdicts that are both_bad.")


class ReviewAgreement(Strict):
    """Cohen's kappa of two raters (two reviewers, or a reviewer and the local judge) on the items both judged."""

    raters: list[str]
    n: Count
    kappa: Number | None = Field(None, description="None when it carries no information: see note.")
    agreement: Fraction | None = Field(None, description="Share of the shared items given the same verdict.")
    note: str | None = None


class ReviewNote(Strict):
    reviewer: str
    set: str
    id: str
    verdict: str
    note: str


class ReviewSummary(Strict):
    """The human verdicts (eval/review/<reviewer>.json, merged): counts, preference rate, agreement, notes."""

    reviewed: Count = Field(description="Items with at least one verdict.")
    unreviewed: Count = Field(0, description="Rows of an imported review CSV left without a verdict.")
    stale: Count = Field(
        0,
        description="Verdicts on items no longer in scores.jsonl (the evaluation was rerun on other items since): "
        "kept in the reviewers' files, left out of every other figure here.",
    )
    tuned_preferred: PreferenceRate = Field(default_factory=PreferenceRate)
    both_bad: Fraction | None = Field(None, description="Share of all verdicts that are both_bad.")
    verdicts: dict[str, Count] = Field(default_factory=dict)
    reviewers: dict[str, ReviewerSummary] = Field(default_factory=dict)
    kappa: list[ReviewAgreement] = Field(default_factory=list, description="Each pair of reviewers.")
    judge: list[ReviewAgreement] = Field(default_factory=list, description="Each reviewer, and all, vs the judge.")
    notes: list[ReviewNote] = Field(default_factory=list)


class RunInfo(Strict):
    name: str
    path: str
    kind: str


class RunSummary(Strict):
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
