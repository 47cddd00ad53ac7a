"""Exact duplicates on a normalised key: the first record with a key is kept, later ones name it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
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
    """Streams batches; remembers the first line of every key seen so far.

    The memory is two sorted numpy arrays (key, first line): 16 bytes a distinct key, where a Python dict took
    about 100.
    """

    cfg: ExactConfig
    keys: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    firsts: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    def check(self, frame: pl.DataFrame) -> pl.Series:
        """For each record of the batch (`_line` + fields), the line of the earlier record it duplicates, or null."""
        keys = frame.select(key_expr(self.cfg).alias("k"))["k"].to_numpy().astype(np.uint64, copy=False)
        lines = frame["_line"].to_numpy().astype(np.int64, copy=False)
        out = np.full(len(keys), -1, dtype=np.int64)
        if len(self.keys):  # seen in an earlier batch
            at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
            earlier = self.keys[at] == keys
            out[earlier] = self.firsts[at[earlier]]
        else:
            earlier = np.zeros(len(keys), dtype=bool)
        # Within the batch (records in input order): every later record of a key names its first one.
        uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        later = (np.arange(len(keys)) != first[inverse]) & ~earlier
        out[later] = lines[first[inverse]][later]
        new = ~earlier[first]
        merged_keys = np.concatenate([self.keys, uniq[new]])
        order = np.argsort(merged_keys, kind="stable")
        self.keys = merged_keys[order]
        self.firsts = np.concatenate([self.firsts, lines[first[new]]])[order]
        series = pl.Series("duplicate_of", out, dtype=pl.Int64)
        return pl.select(pl.when(series >= 0).then(series)).to_series().alias("duplicate_of")
