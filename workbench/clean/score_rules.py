"""Rules over model-based scores (`wb score`, a run's sample_losses.jsonl): drop records whose IFD, answer perplexity
or reward is past a limit, keep the best share by a score, drop the share the trained model fit worst.

They read score columns the pipeline joins on each record's line (`workbench.clean.scores`): `_score_<name>` (the
value), `_rank_<name>` (position in descending order over every scored line) and `_count_<name>`. A record without
the score is kept (the comparison is null). Each takes its main parameter as a scalar too (`ifd_max: 1.0`);
`scores_read` tells the drivers which scores the enabled rules need joined.
"""

from __future__ import annotations

from typing import ClassVar

import polars as pl
from pydantic import Field

from workbench import score_specs
from workbench.clean import rules  # noqa: F401  (the record rules register first: the docs table's order)
from workbench.clean.rule_registry import Check, Params, rule


class ScoreParams(Params):
    """Parameters of a rule over a score; `scores()` names the scores it reads, `scalar` the field a bare value sets."""

    scalar: ClassVar[str] = ""

    def scores(self) -> list[str]:
        return []  # each rule's parameters name theirs


def _value(name: str) -> pl.Expr:
    return pl.col(f"_score_{name}")


def _num(expr: pl.Expr) -> pl.Expr:
    return expr.round(4).cast(pl.String)


class IfdMaxParams(ScoreParams):
    scalar: ClassVar[str] = "max"
    # Cherry-LLM: IFD >= 1 means the answer is no more likely after the prompt than without it (a mismatched pair).
    max: float = Field(1.0, gt=0, description="Drop records whose IFD (loss with prompt / loss without) exceeds this.")

    def scores(self) -> list[str]:
        return ["ifd"]


@rule(
    "ifd_max",
    "Instruction-following difficulty above the limit: the prompt does not help predict the answer (mismatched pair).",
    IfdMaxParams,
    kinds=("sft",),  # scores are joined on SFT records
)
def ifd_max(p: IfdMaxParams) -> Check:
    v = _value("ifd")
    return Check(
        v > p.max,
        pl.format(f"ifd {{}} > ifd_max {p.max}: the prompt does not help the model predict the answer", _num(v)),
    )


class PplAnswerMaxParams(ScoreParams):
    scalar: ClassVar[str] = "max"
    max: float = Field(gt=1, description="Drop records whose answer perplexity (given the prompt) exceeds this.")

    def scores(self) -> list[str]:
        return ["ppl_answer"]


@rule(
    "ppl_answer_max",
    "Answer perplexity given the prompt above the limit (noisy or garbled answers).",
    PplAnswerMaxParams,
    kinds=("sft",),  # scores are joined on SFT records
)
def ppl_answer_max(p: PplAnswerMaxParams) -> Check:
    v = _value("ppl_answer")
    return Check(v > p.max, pl.format(f"ppl_answer {{}} > ppl_answer_max {p.max}", _num(v)))


class RewardMinParams(ScoreParams):
    scalar: ClassVar[str] = "min"
    min: float = Field(description="Drop records whose reward model score is below this.")

    def scores(self) -> list[str]:
        return ["reward"]


@rule("reward_min", "Reward model score below the limit.", RewardMinParams, kinds=("sft",))
def reward_min(p: RewardMinParams) -> Check:
    v = _value("reward")
    return Check(v < p.min, pl.format(f"reward {{}} < reward_min {p.min}", _num(v)))


def _keep_count(fraction: float, n: pl.Expr) -> pl.Expr:
    return (n.cast(pl.Float64) * fraction).round(0).cast(pl.Int64)


class KeepTopFractionParams(ScoreParams):
    score: str = Field(description="The score to rank by: reward, ifd, ppl_answer, loss (sample_losses), ...")
    fraction: float = Field(gt=0, le=1, description="Share of the scored records to keep, the best first.")
    higher_is_better: bool | None = Field(
        None,
        description="Which end is best; default: lower for perplexities and losses, higher otherwise (reward, ifd: "
        "Cherry-LLM keeps the records of highest IFD below 1; pair it with ifd_max).",
    )

    def scores(self) -> list[str]:
        return [self.score]


@rule("keep_top_fraction", "Keep only the best share of the records by a score.", KeepTopFractionParams, kinds=("sft",))
def keep_top_fraction(p: KeepTopFractionParams) -> Check:
    higher = p.higher_is_better if p.higher_is_better is not None else score_specs.higher_is_better(p.score)
    rank, n = pl.col(f"_rank_{p.score}"), pl.col(f"_count_{p.score}")
    keep = _keep_count(p.fraction, n)
    position = rank if higher else n - 1 - rank  # 0 = best
    which = "highest" if higher else "lowest"
    return Check(
        position >= keep,
        pl.format(
            f"{p.score} {{}} ranks {{}} of {{}}: outside the {which} {p.fraction:g} kept by keep_top_fraction",
            _num(_value(p.score)),
            (position + 1).cast(pl.String),
            n.cast(pl.String),
        ),
    )


class LossTopFractionParams(ScoreParams):
    scalar: ClassVar[str] = "fraction"
    fraction: float = Field(gt=0, lt=1, description="Share of the records with the highest training loss to drop.")
    score: str = Field("loss", description="The per-example loss column (sample_losses.jsonl writes `loss`).")

    def scores(self) -> list[str]:
        return [self.score]


@rule(
    "loss_top_fraction",
    "The share of records the trained model fit worst (highest per-example training loss): often mislabelled or noise.",
    LossTopFractionParams,
    kinds=("sft",),  # scores are joined on SFT records
)
def loss_top_fraction(p: LossTopFractionParams) -> Check:
    rank, n = pl.col(f"_rank_{p.score}"), pl.col(f"_count_{p.score}")
    return Check(
        rank < _keep_count(p.fraction, n),
        pl.format(
            f"{p.score} {{}} is the {{}}th highest of {{}}: in the top {p.fraction:g} dropped by loss_top_fraction",
            _num(_value(p.score)),
            (rank + 1).cast(pl.String),
            n.cast(pl.String),
        ),
    )


def scores_read(enabled: list[tuple[str, Params]]) -> dict[str, list[str]]:
    """Rule name → the scores it reads, for the enabled rules that read scores."""
    return {name: p.scores() for name, p in enabled if isinstance(p, ScoreParams)}
