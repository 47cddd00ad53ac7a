"""Scores by record line, for the clean rules that read them (`ifd_max`, `ppl_answer_max`, `reward_min`,
`keep_top_fraction`, `loss_top_fraction`). Pure polars, no deep-learning stack.

Where scores come from:
- the file being cleaned itself, when it is `wb score` output (each record carries a `scores` object): keyed by the
  record's line in that file;
- `--scores FILE`: either a `wb score` output (keyed by its own lines, so it must be the file being cleaned or
  line-aligned with it) or rows with a `line` and numeric fields, such as a run's `sample_losses.jsonl`
  (`{"line", "loss", "tokens"}`: `line` is the line of the training data file, the file to clean).

Per score the table holds each line's value and its rank: the position in descending order of the value (ties: the
lower line first), over every line that has the score; fraction rules compare ranks, so the number of records they
keep or drop is exact and the same in every batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from workbench.errors import WbError
from workbench.io.reader import read_objects
from workbench.runfile.folder import SAMPLE_LOSSES

NOT_SCORES = frozenset({"line", "tokens", "answer_tokens", "truncated"})


def column(name: str) -> str:
    return f"_score_{name}"


def rank_column(name: str) -> str:
    return f"_rank_{name}"


def count_column(name: str) -> str:
    return f"_count_{name}"


@dataclass
class ScoreTable:
    source: str
    values: dict[str, dict[int, float]] = field(default_factory=dict)  # score → line → value

    @property
    def names(self) -> list[str]:
        return sorted(self.values)

    def add(self, line: int, scores: dict[str, Any], where: str) -> None:
        for name, value in scores.items():
            if name in NOT_SCORES or value is None or isinstance(value, bool):
                continue
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise WbError(f"{where}: score {name!r}: expected a finite number, got {value!r}")
            self.values.setdefault(name, {})[line] = float(value)

    def require(self, names: list[str], rule: str) -> None:
        for name in names:
            if name not in self.values:
                have = ", ".join(self.names) or "none"
                raise WbError(
                    f"rule {rule}: needs the score {name!r}, which {self.source} does not hold (it has: {have}); "
                    "run `wb score` first or pass --scores FILE"
                )

    def frame(self, names: list[str]) -> pl.DataFrame:
        """`_line` with value, rank and count columns of each score (lines without a score: null)."""
        lines = sorted({n for name in names for n in self.values.get(name, {})})
        out = pl.DataFrame({"_line": pl.Series(lines, dtype=pl.Int64)})
        for name in names:
            vals = self.values.get(name, {})
            ranked = sorted(vals, key=lambda n: (-vals[n], n))
            rank = {n: r for r, n in enumerate(ranked)}
            out = out.with_columns(
                pl.Series(column(name), [vals.get(n) for n in lines], dtype=pl.Float64),
                pl.Series(rank_column(name), [rank.get(n) for n in lines], dtype=pl.Int64),
                pl.lit(len(vals), dtype=pl.Int64).alias(count_column(name)),
            )
        return out


def attach(df: pl.DataFrame, table: pl.DataFrame) -> pl.DataFrame:
    """The batch with the score columns joined on `_line` (order kept)."""
    return df.join(table, on="_line", how="left", maintain_order="left")


def from_scored_file(path: Path, inline: bool = False) -> ScoreTable:
    """The `scores` objects of a `wb score` output, by line; or rows with `line` + numbers (sample_losses.jsonl).
    `inline`: `path` is the file being cleaned, whose records without `scores` simply have none."""
    table = ScoreTable(str(path))
    if Path(path).name == SAMPLE_LOSSES and not Path(path).exists():
        raise WbError(f"{path}: not found: wb train writes it when the recipe sets sample_losses: true")
    for n, row in read_objects(Path(path)):
        scores = row.get("scores")
        if isinstance(scores, dict):
            table.add(n, scores, f"{path}:line {n}")
        elif scores is None and "scores" in row:
            continue  # a record wb score did not score (a tool-calling conversation)
        elif inline:
            continue
        elif "line" in row:
            line = row["line"]
            if not isinstance(line, int) or isinstance(line, bool) or line < 1:
                raise WbError(f"{path}:line {n}: line: expected a positive integer, got {line!r}")
            table.add(line, {k: v for k, v in row.items() if k != "line"}, f"{path}:line {n}")
        else:
            raise WbError(f"{path}:line {n}: neither a `scores` object (wb score) nor a `line` (sample_losses.jsonl)")
    return table
