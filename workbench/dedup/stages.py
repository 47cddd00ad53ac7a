"""The dedup stages as one unit the clean pipeline drives: decontamination and exact duplicates stream batch by
batch; near-duplicates collect signatures and are resolved once every batch has been seen.

All steps take and return polars frames of canonical records (`_line` + fields), so the same code can run as
map steps on a distributed engine (see `workbench/dedup/README.md`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from workbench.dedup.contamination import DecontaminateConfig, EvalIndex
from workbench.dedup.exact import ExactConfig, ExactDuplicates
from workbench.dedup.minhash import NearConfig, NearDuplicates

STAGES = ("contamination", "exact_duplicate", "near_duplicate")


class DedupConfig(BaseModel):
    """Which dedup stages run; a stage listed (even with no parameters) is on, an absent one is off."""

    model_config = ConfigDict(extra="forbid")

    exact: ExactConfig | None = Field(None, description="Exact duplicates on a normalised key.")
    near: NearConfig | None = Field(None, description="Near-duplicates with MinHash + LSH.")


def _tag(frame: pl.DataFrame, rule: str, reason: pl.Expr) -> pl.DataFrame:
    return frame.with_columns(pl.lit(rule).alias("_rule"), reason.alias("_reason"))


@dataclass
class DedupStages:
    exact: ExactDuplicates | None
    near: NearDuplicates | None
    evals: EvalIndex | None

    @classmethod
    def build(cls, cfg: DedupConfig, decontaminate: DecontaminateConfig, against: list[Path]) -> DedupStages:
        return cls(
            exact=ExactDuplicates(cfg.exact) if cfg.exact is not None else None,
            near=NearDuplicates(cfg.near) if cfg.near is not None else None,
            evals=EvalIndex.from_files(against, decontaminate) if against else None,
        )

    @property
    def names(self) -> list[str]:
        """The stages that run, in order: the names their drops carry."""
        on = (self.evals is not None, self.exact is not None, self.near is not None)
        return [name for name, enabled in zip(STAGES, on, strict=True) if enabled]

    def stream(self, kept: pl.DataFrame) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
        """Decontaminate and drop exact duplicates in one batch of kept records: (kept, dropped per stage)."""
        dropped: list[pl.DataFrame] = []
        if self.evals is not None and kept.height:
            item = self.evals.check(kept)
            hit = item.is_not_null()
            n = self.evals.cfg
            reason = pl.format(
                f"shares a {n.ngram_latin}-token (CJK: {n.ngram_cjk}-character) passage with eval item {{}}",
                pl.col("eval_item"),
            )
            dropped.append(
                _tag(kept.filter(hit).with_columns(item.filter(hit).alias("eval_item")), "contamination", reason)
            )
            kept = kept.filter(~hit)
        if self.exact is not None and kept.height:
            dup = self.exact.check(kept)
            hit = dup.is_not_null()
            dupes = kept.filter(hit).with_columns(dup.filter(hit).alias("duplicate_of"))
            reason = pl.format("exact duplicate of line {}", pl.col("duplicate_of"))
            dropped.append(_tag(dupes, "exact_duplicate", reason))
            kept = kept.filter(~hit)
        return kept, [d for d in dropped if d.height]

    def near_duplicates(self, part: pl.DataFrame, resolved: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Split a stored batch of kept records by the resolved near-duplicates: (kept, dropped)."""
        marked = part.join(resolved, on="_line", how="left", maintain_order="left")
        hit = pl.col("duplicate_of").is_not_null()
        reason = pl.format(
            "near-duplicate of line {} (estimated Jaccard {})", pl.col("duplicate_of"), pl.col("similarity").round(2)
        )
        dropped = _tag(marked.filter(hit), "near_duplicate", reason)
        return marked.filter(~hit).drop("duplicate_of", "similarity"), dropped
