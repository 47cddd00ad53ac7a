"""Decontamination: drop training records that share a long token n-gram with any evaluation record.

The n-gram length follows common practice for benchmark decontamination (13 tokens, as in GPT-3's and
lm-evaluation-harness's overlap checks) for Latin-script text; for CJK text, where a token is one character,
the default is 20 characters, about as much text as 13 English words. An evaluation item shorter than n tokens
is matched by its whole token sequence (a training record that is the same text).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from workbench import preference_files, preference_records, preference_shapes
from workbench.dedup.shingles import record_ngrams
from workbench.errors import WbError
from workbench.frames import rows_to_frame
from workbench.io.reader import RecordReader
from workbench.records import RecordError, Row
from workbench.text import joined_text

FIELDS = ["instruction", "input", "output", "system", "history"]


class DecontaminateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ngram_latin: int = Field(13, ge=4, le=50, description="n-gram length in tokens for Latin-script text.")
    ngram_cjk: int = Field(20, ge=4, le=80, description="n-gram length in characters for CJK text.")


@dataclass
class EvalIndex:
    """The n-gram hashes of one or more evaluation files, each mapped to the first eval item holding it."""

    cfg: DecontaminateConfig
    grams: pl.DataFrame  # h (u64), item (str)
    items: dict[str, int] = field(default_factory=dict)  # file -> number of items
    leaked: dict[str, set[str]] = field(default_factory=dict)  # file -> items found in training data

    @classmethod
    def from_files(cls, paths: list[Path], cfg: DecontaminateConfig) -> EvalIndex:
        parts: list[pl.DataFrame] = []
        items: dict[str, int] = {}
        for path in paths:
            reader = RecordReader(Path(path))
            count = 0
            for lines, frame in _eval_frames(reader):
                grams = record_ngrams(frame.select(joined_text(FIELDS))[:, 0], cfg.ngram_latin, cfg.ngram_cjk)
                ref = pl.lit(f"{path}:{reader.info.unit} ") + pl.Series(lines).cast(pl.String)
                labels = pl.DataFrame({"item": pl.select(ref).to_series()}).with_row_index("rec")
                parts.append(grams.join(labels, on="rec").select("h", "item"))
                count += frame.height
            items[str(path)] = count
        grams = pl.concat(parts) if parts else pl.DataFrame(schema={"h": pl.UInt64, "item": pl.String})
        # `ord` is the item's position over all eval files: a record matching several items names the first.
        grams = grams.with_row_index("ord").unique("h", keep="first", maintain_order=True)
        return cls(cfg, grams, items, {str(p): set() for p in paths})

    def check(self, frame: pl.DataFrame) -> pl.Series:
        """For each record, the first eval item it shares an n-gram with, or null."""
        if frame.height == 0:
            return pl.Series("item", [], dtype=pl.String)
        grams = record_ngrams(frame.select(joined_text(FIELDS))[:, 0], self.cfg.ngram_latin, self.cfg.ngram_cjk)
        matched = grams.join(self.grams, on="h", how="inner")
        for item in matched["item"].unique().to_list():
            self.leaked.setdefault(item.rsplit(":", 1)[0], set()).add(item)
        hits = matched.group_by("rec").agg(pl.col("item").sort_by("ord").first())
        rec = pl.DataFrame({"rec": pl.arange(0, frame.height, eager=True, dtype=pl.UInt32)})
        return rec.join(hits, on="rec", how="left", maintain_order="left")["item"]

    def report(self, limit: int = 100) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for path, n in self.items.items():
            leaked = sorted(self.leaked.get(path, set()), key=_item_order)
            out[path] = {"items": n, "leaked_items": len(leaked), "leaked": leaked[:limit]}
        return out


def _eval_frames(reader: RecordReader) -> Iterator[tuple[list[int], pl.DataFrame]]:
    """The records of an eval file as frames of canonical rows. A preference file (pairs, KTO examples) counts
    its prompt and every answer: a pair's row holds chosen and rejected together as its output."""
    path = reader.path
    if preference_files.sniff_kind(path) is None:
        for batch in reader:
            if batch.rejects:
                r = batch.rejects[0]
                raise WbError(f"{path}:{r.unit} {r.line}: {r.error} (an eval file for --against must be valid)")
            yield batch.lines, rows_to_frame(batch.lines, batch.rows)
        return
    for items, _ in reader.iter_items():
        lines: list[int] = []
        rows: list[Row] = []
        for n, obj, _ in items:
            try:
                if isinstance(obj, RecordError):
                    raise obj
                ex = preference_records.to_canonical(obj)
            except preference_records.NoPreference:
                continue
            except RecordError as e:
                raise WbError(
                    f"{path}:{reader.info.unit} {n}: {e} (an eval file for --against must be valid)"
                ) from None
            system, history, user = preference_records.split_prompt(ex.prompt_messages)
            answer = (
                f"{ex.chosen}\n{ex.rejected}" if isinstance(ex, preference_shapes.PreferencePair) else ex.completion
            )
            lines.append(n)
            rows.append((user, "", answer, system, history))
        yield lines, rows_to_frame(lines, rows)


def _item_order(item: str) -> tuple[str, int]:
    path, _, pos = item.rpartition(" ")
    return path, int(pos) if pos.isdigit() else 0
