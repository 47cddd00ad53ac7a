"""A training run's `manifest.json` (`TrainManifest`) and `trainer_log.jsonl` (one `LogRow` per line)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from workbench import metric_specs
from workbench.runfile.values import Count, Fraction, Number, Open


class SourceUse(Open):
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


class TrainManifest(Open):
    """`manifest.json` of a training run (the numbers a report and a gate read are typed)."""

    command: Literal["train"] = "train"
    method: str | None = None
    model: str | None = None
    template: str | None = None
    template_sha256: str | None = Field(
        None, description="Fingerprint of the template: sha256 of its rendering of a fixed conversation."
    )
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


class LogRow(Open):
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
            if key.startswith("eval_") and metric_specs.get(name) is not None and isinstance(value, int | float):
                out[name] = float(value)
        return out

    def source_eval_losses(self) -> dict[str, float]:
        """`eval_<source>_loss` of this row, by source name."""
        return {
            k.removeprefix("eval_").removesuffix("_loss"): float(v)
            for k, v in (self.model_extra or {}).items()
            if k.startswith("eval_") and k.endswith("_loss")
        }


@dataclass(frozen=True)
class LogKey:
    """A number the Trainer (or a TRL trainer, under TRL's own name) logs, as wb keeps, prints and shows it."""

    name: str
    preference: bool = False  # a preference method's number: kept with `eval_` too
    reported: bool = False  # a typed `LogRow` field (`/` read as `_`), charted and tabled by the report
    shown: str | None = None  # its label on `wb train`'s step lines; None: not printed there
    eval_shown: bool = False  # `eval_<name>` is printed there too

    @property
    def field(self) -> str:
        return self.name.replace("/", "_")


LOG_KEYS: tuple[LogKey, ...] = (
    LogKey("loss", shown="loss"),
    LogKey("eval_loss", shown="eval_loss"),
    LogKey("learning_rate", shown="lr"),
    LogKey("grad_norm"),
    LogKey("tokens_per_second"),
    LogKey("epoch"),
    # TRL's preference trainers: DPO family and KTO the implicit rewards; RewardTrainer accuracy and margin; GRPO
    # the sampled answers' reward and KL to the reference.
    LogKey("rewards/chosen", preference=True, reported=True),
    LogKey("rewards/rejected", preference=True, reported=True),
    LogKey("rewards/margins", preference=True, reported=True, shown="rewards/margins"),
    LogKey("rewards/accuracies", preference=True, reported=True, shown="rewards/accuracies", eval_shown=True),
    LogKey("kl", preference=True, reported=True, shown="kl"),
    LogKey("reward", preference=True, reported=True, shown="reward"),
    LogKey("reward_std", preference=True),
    LogKey("accuracy", preference=True, reported=True, shown="accuracy", eval_shown=True),
    LogKey("margin", preference=True, reported=True),
    LogKey("num_tokens", preference=True),
)
"""The one list of trainer_log.jsonl's logged numbers: what training keeps (`kept_log_keys`), what `wb train` prints
on its step lines (`shown_log_keys`) and the preference numbers the report charts (`PREFERENCE_LOG_FIELDS`)."""

PREFERENCE_LOG_FIELDS = {k.name: k.field for k in LOG_KEYS if k.reported}
"""Per-step preference numbers of trainer_log.jsonl (log name -> LogRow field), in the report's order."""


def kept_log_keys() -> tuple[str, ...]:
    """The logged numbers a run keeps in trainer_log.jsonl (besides the recipe's `eval_<metric>`s)."""
    preference = [k.name for k in LOG_KEYS if k.preference]
    return (*(k.name for k in LOG_KEYS), *(f"eval_{n}" for n in preference))


def shown_log_keys() -> tuple[tuple[str, str], ...]:
    """(key, label) of the numbers `wb train` prints on a step line, in this order."""
    shown = [(k.name, k.shown) for k in LOG_KEYS if k.shown]
    return (*shown, *((f"eval_{k.name}", f"eval_{k.name}") for k in LOG_KEYS if k.eval_shown))
