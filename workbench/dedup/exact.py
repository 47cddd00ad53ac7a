"""Exact duplicates on a normalised key: the first record with a key is kept, later ones name it."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from workbench.dedup.shingles import joined_text
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
    """A 64-bit hash of the normalised key (fields kept apart, so "ab"+"c" differs from "a"+"bc")."""
    parts = []
    for f in cfg.fields:
        e = joined_text([f])
        if cfg.ignore_case:
            e = e.str.to_lowercase()
        if cfg.ignore_punctuation:
            e = e.str.replace_all(r"[\p{P}\p{S}]+", "")
        if cfg.ignore_whitespace:
            e = e.str.replace_all(r"\s+", "")
        parts.append(e)
    return pl.concat_str(parts, separator="\x1e").hash(7)


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
