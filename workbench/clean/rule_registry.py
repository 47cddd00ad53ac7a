"""The rule registry: what a cleaning rule is (a parameter model, a builder of a `Check`, the data kinds and level it
applies to), the one `RULES` table every rule registers in with `@rule`, and the rule table of docs/cleaning.md
generated from it. It holds no rule itself, so the drivers (`workbench.clean.pipeline`, `workbench.clean.preference`),
the profile and the docs read the registry without the rules' regular expressions.

The shipped rules register when their modules are imported, in this order (the order of the docs table, the profile
schema and the "known rules" list): `workbench.clean.rules` (record rules), `workbench.clean.score_rules` (rules over
model-based scores), `workbench.clean.preference_rules`; importing `workbench.clean.profile` imports all three.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict

from workbench import text


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Check:
    """`drop` is true where the rule drops a record; `reason` says why (evaluated on dropped records only).

    `applies`, when given, is a cheap necessary condition for `drop`: the expensive `drop` expression then runs
    on the records that pass it only. `prepare`, when given, adds the columns `drop` and `reason` read to those
    records with frame operations (explode / group-by), which beat per-list expressions by an order of magnitude.
    """

    drop: pl.Expr
    reason: pl.Expr
    applies: pl.Expr | None = None
    prepare: Callable[[pl.DataFrame], pl.DataFrame] | None = None
    report_only: bool = False  # matches are counted and listed in the stats, the record is kept


DataKind = Literal["sft", "pair", "kto"]
ALL_KINDS: tuple[DataKind, ...] = ("sft", "pair", "kto")


@dataclass(frozen=True)
class Rule:
    """`kinds`: the data a rule applies to: `sft` records, preference `pair`s, `kto` examples. On preference data a
    rule over `output` (level `answer`) runs once per answer in `sides` (a pair's chosen and rejected; a KTO
    example's completion, `chosen` meaning a desirable one); a `pair` rule reads `chosen` and `rejected` together;
    a `file` rule compares records across the whole file (workbench/clean/preference.py resolves it)."""

    name: str
    description: str
    params: type[Params]
    build: Callable[[Any], Check]
    kinds: tuple[DataKind, ...] = ALL_KINDS
    level: Literal["answer", "pair", "file"] = "answer"
    sides: tuple[Literal["chosen", "rejected"], ...] = ("chosen", "rejected")


RULES: dict[str, Rule] = {}


def rule(
    name: str,
    description: str,
    params: type[Params],
    kinds: tuple[DataKind, ...] = ALL_KINDS,
    level: Literal["answer", "pair", "file"] = "answer",
    sides: tuple[Literal["chosen", "rejected"], ...] = ("chosen", "rejected"),
) -> Callable[[Callable[[Any], Check]], Any]:
    def register(build: Callable[[Any], Check]) -> Callable[[Any], Check]:
        RULES[name] = Rule(name, description, params, build, kinds, level, sides)
        return build

    return register


_KIND_NAMES = {"sft": "SFT", "pair": "pairs", "kto": "KTO"}
_LEVEL_NOTES = {"answer": "", "pair": " (both answers together)", "file": " (across the file)"}


def _param_doc(name: str, field: Any) -> str:
    if field.is_required():
        return f"`{name}` (required)"
    default = field.default
    if field.default_factory is not None or default is None:
        return f"`{name}`"
    shown = ("true" if default else "false") if isinstance(default, bool) else str(default)
    return f"`{name}: {shown}`"


def markdown_table() -> str:
    """The rule table of docs/cleaning.md, from the rules registered when called (importing `workbench.clean.profile`
    registers every shipped rule): what data each applies to, when it drops a record, its parameters and defaults."""
    lines = ["| rule | applies to | drops a record when | parameters |", "|---|---|---|---|"]
    for r in RULES.values():
        kinds = ", ".join(_KIND_NAMES[k] for k in r.kinds) + _LEVEL_NOTES[r.level]
        params = ", ".join(_param_doc(n, f) for n, f in r.params.model_fields.items())
        description = r.description.replace("|", "\\|").replace("<", "\\<")  # a table cell, not a tag
        lines.append(f"| `{r.name}` | {kinds} | {description} | {params} |")
    return "\n".join(lines)


# --- what a rule reads -------------------------------------------------------------------------------------

INSTRUCTION, INPUT, OUTPUT = pl.col("instruction"), pl.col("input"), pl.col("output")


def features() -> list[pl.Expr]:
    """Per-record measures that several rules and the stats share."""
    texts = [INSTRUCTION, INPUT, OUTPUT, pl.col("system"), text.history_text()]
    return [
        OUTPUT.str.len_chars().cast(pl.Int64).alias("_output_chars"),
        pl.sum_horizontal([t.str.len_chars().cast(pl.Int64) for t in texts]).alias("_total_chars"),
        text.token_count(OUTPUT).alias("_output_tokens"),
        pl.sum_horizontal([text.token_count(t) for t in texts]).alias("_total_tokens"),
    ]


def never() -> Check:
    """A check that drops nothing (a rule decided elsewhere, or one that does not apply)."""
    return Check(pl.lit(False), pl.lit(None, dtype=pl.String))
