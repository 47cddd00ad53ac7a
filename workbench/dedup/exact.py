"""Exact duplicates on a normalised key: the first record with a key is kept, later ones name it."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from workbench import text
from workbench.records import PROMPT_FIELDS, FieldName


class ExactConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fields: list[FieldName] = Field(
        default_factory=lambda: list(PROMPT_FIELDS),
        description="Fields that make the key: instruction+input (same prompt) or add output (same record).",
    )
    ignore_case: bool = True
    ignore_whitespace: bool = True
    ignore_punctuation: bool = True


def key_expr(cfg: ExactConfig) -> pl.Expr:
    """A 64-bit hash of the normalised key (`workbench.text.duplicate_key`)."""
    return text.duplicate_key(cfg.fields, cfg.ignore_case, cfg.ignore_whitespace, cfg.ignore_punctuation)


@dataclass
class ExactDuplicates:
    """Streams batches; remembers the first line of every key seen so far."""

    cfg: ExactConfig
    seen: dict[int, int] = field(default_factory=dict)

    def check(self, frame: pl.DataFrame) -> pl.Series:
        """For each record of the batch (`_line` + fields), the line of the earlier record it duplicates, or null."""
        keys = frame.select(key_expr(self.cfg).alias("k"))["k"].to_list()
        lines = frame["_line"].to_list()
        out: list[int | None] = []
        seen = self.seen
        for key, line in zip(keys, lines, strict=True):
            first = seen.get(key)
            if first is None:
                seen[key] = line
            out.append(first)
        return pl.Series("duplicate_of", out, dtype=pl.Int64)
