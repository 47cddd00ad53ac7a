"""The dedup stages as one unit the cleaning driver (`clean.driver`) drives: decontamination and exact duplicates
stream batch by batch; near-duplicates collect signatures and are resolved once every batch has been seen.

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
from workbench.dedup.semantic import SemanticConfig, SemanticDuplicates

STAGES = ("contamination", "exact_duplicate", "near_duplicate", "semantic_duplicate")


class DedupConfig(BaseModel):
    """Which dedup stages run; a stage listed (even with no parameters) is on, an absent one is off."""

    model_config = ConfigDict(extra="forbid")

    exact: ExactConfig | None = Field(None, description="Exact duplicates on a normalised key.")
    near: NearConfig | None = Field(None, description="Near-duplicates with MinHash + LSH.")
    semantic: SemanticConfig | None = Field(
        None, description="Semantic duplicates by sentence-embedding cosine (needs the [semantic] extra)."
    )


def _tag(frame: pl.DataFrame, rule: str, reason: pl.Expr) -> pl.DataFrame:
    # rechunk: `pl.format` over a filtered frame with an empty leading chunk panics in polars 2.1.
    return frame.rechunk().with_columns(pl.lit(rule).alias("_rule"), reason.alias("_reason"))


@dataclass
class DedupStages:
    exact: ExactDuplicates | None
    near: NearDuplicates | None
    semantic: SemanticDuplicates | None
    evals: EvalIndex | None

    @classmethod
    def build(
        cls, cfg: DedupConfig, decontaminate: DecontaminateConfig, against: list[Path], spill_dir: Path | None = None
    ) -> DedupStages:
        """The stages of a profile; `spill_dir` (a scratch folder) holds near-duplicate state kept on disk."""
        return cls(
            exact=ExactDuplicates(cfg.exact) if cfg.exact is not None else None,
            near=NearDuplicates(cfg.near, spill_dir) if cfg.near is not None else None,
            semantic=SemanticDuplicates(cfg.semantic) if cfg.semantic is not None else None,
            evals=EvalIndex.from_files(against, decontaminate) if against else None,
        )

    @property
    def names(self) -> list[str]:
        """The stages that run, in order: the names their drops carry."""
        on = (self.evals is not None, self.exact is not None, self.near is not None, self.semantic is not None)
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

    @property
    def warnings(self) -> list[str]:
        return self.semantic.warnings if self.semantic is not None else []

    @property
    def needs_all_records(self) -> bool:
        """Near and semantic duplicates are decided once every batch has been seen."""
        return self.near is not None or self.semantic is not None

    def collect(self, kept: pl.DataFrame) -> None:
        """Remember a batch of kept records for the stages that decide at the end."""
        if self.near is not None:
            self.near.add(kept)
        if self.semantic is not None:
            self.semantic.add(kept)

    def resolve(self) -> pl.DataFrame:
        """Records the end-of-input stages drop: `_line`, `_rule`, `duplicate_of`, `similarity`."""
        parts: list[pl.DataFrame] = []
        if self.near is not None:
            parts.append(self.near.resolve().with_columns(pl.lit("near_duplicate").alias("_rule")))
        if self.semantic is not None:
            exclude = set(parts[0]["_line"].to_list()) if parts else set()
            parts.append(self.semantic.resolve(exclude).with_columns(pl.lit("semantic_duplicate").alias("_rule")))
        schema = {"_line": pl.Int64, "duplicate_of": pl.Int64, "similarity": pl.Float64, "_rule": pl.String}
        return pl.concat(parts).sort("_line") if parts else pl.DataFrame(schema=schema)

    @staticmethod
    def split(part: pl.DataFrame, resolved: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Split a stored batch of kept records by the resolved drops: (kept, dropped)."""
        marked = part.join(resolved, on="_line", how="left", maintain_order="left")
        hit = pl.col("_rule").is_not_null()
        kind = pl.when(pl.col("_rule") == "near_duplicate").then(pl.lit("Jaccard")).otherwise(pl.lit("cosine"))
        reason = pl.format(
            "{} of line {} ({} {})",
            pl.col("_rule").str.replace("_", "-"),
            pl.col("duplicate_of"),
            kind,
            pl.col("similarity").round(2),
        )
        dropped = marked.filter(hit).rechunk().with_columns(reason.alias("_reason"))
        return marked.filter(~hit).drop("duplicate_of", "similarity", "_rule"), dropped
