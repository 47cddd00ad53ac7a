"""`<stem>.stats.json` of `wb clean` (`CleanStats`), which a run's report describes its data with."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from workbench.runfile.values import Count, Fraction, Number, Open, Strict


class LengthBias(Strict):
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


class KtoLabels(Strict):
    desirable: Count
    undesirable: Count


class PreferenceCleanStats(Strict):
    """What `wb clean` found in preference data, beyond the accounting."""

    kind: Literal["pair", "kto"]
    shapes: dict[str, Count] = Field(description="Records read per input shape (pairwise, conversation, scored, ...).")
    rules_not_applicable: list[str] = Field(default_factory=list, description="Profile rules skipped for this kind.")
    length_bias: LengthBias | None = Field(None, description="Pairs only.")
    labels: KtoLabels | None = Field(None, description="KTO only: kept examples per label.")


class CleanStats(Open):
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
