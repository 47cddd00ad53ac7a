"""SFT records as a record shape of the cleaning driver (`clean.driver.Shape`): read with `RecordReader` (any
format, `--map`, tool-calling conversations kept whole), cleaned by `pipeline.clean_frame`, written as wb's
canonical records (`frames.write_records`) with each record's own extra fields, and, where the profile has score
rules, joined to the scores they read (`clean.scores`: `wb score` output or `--scores FILE`)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import IO, Any

import polars as pl

from workbench.clean.driver import Finish, Shape, ShapeBatch
from workbench.clean.output import extra_config
from workbench.clean.pipeline import CleanedBatch, clean_frame
from workbench.clean.profile import Profile
from workbench.clean.rule_registry import RULES
from workbench.clean.score_rules import scores_read
from workbench.errors import WbError
from workbench.frames import record_lines, rows_to_frame, write_dropped, write_records
from workbench.io.options import DuplicateKeys
from workbench.io.reader import Batch, RecordReader
from workbench.io.sniff import sniff
from workbench.io.streams import is_stream
from workbench.records import EXTRA, FIELDS

STAGE_COLUMNS = ["_line", *FIELDS, EXTRA, "_output_tokens"]


class SftShape(Shape):
    """SFT records under `profile`: `overrides` (`--map`), `scores` (`--scores FILE`), `extra_fields` (keep each
    record's fields wb does not use, after wb's own; False leaves them out, the rejects hold every record)."""

    kind = "sft"

    def __init__(
        self,
        profile: Profile,
        overrides: dict[str, str] | None = None,
        scores: Path | None = None,
        extra_fields: bool = True,
    ) -> None:
        self.profile = profile
        self.overrides = overrides
        self.scores = scores
        self.extra_fields = extra_fields
        self.table: pl.DataFrame | None = None  # the score columns the score rules read, by line
        self.score_source: dict[str, Any] | None = None
        self.reader: RecordReader | None = None

    def open(self, path: Path, batch_size: int, duplicate_keys: DuplicateKeys, split: str | None) -> RecordReader:
        for name, _ in self.profile.enabled_rules():
            if "sft" not in RULES[name].kinds:
                raise WbError(
                    f"profile {self.profile.name}: rule {name} is for preference data, and {path} holds SFT records"
                )
        self.reader = RecordReader(
            path,
            self.overrides,
            batch_size=batch_size,
            duplicate_keys=duplicate_keys,
            split=split,
            extra_fields=self.extra_fields,
        )
        return self.reader

    @property
    def mapping(self) -> dict[str, str]:
        return (self.reader.mapping if self.reader is not None else None) or {}

    def prepare(self, input_path: Path) -> None:
        self.table, self.score_source = score_table(input_path, self.profile, self.scores)

    def batches(self, reader: RecordReader) -> Iterator[ShapeBatch]:
        for batch in reader:
            yield self.batch(batch)
            del batch  # before the next one is read

    def batch(self, batch: Batch) -> ShapeBatch:
        """A reader's batch for the driver: its rows become frames a chunk at a time."""
        return ShapeBatch(
            size=batch.size,
            nbytes=batch.bytes_read,
            records=len(batch.rows),
            frame=partial(_rows_frame, batch),
            rejects=batch.rejects,
            conversations=batch.conversations,
        )

    def clean(self, frame: pl.DataFrame) -> CleanedBatch:
        if self.table is not None:
            from workbench.clean.scores import attach

            frame = attach(frame, self.table)
        return clean_frame(frame, self.profile)

    def write_dropped(self, f: IO[bytes], dropped: pl.DataFrame) -> None:
        """`line`, `rule`, `reason` (and what the rule found), then the `record` with its own extra fields: a
        record's field named `rule` stays inside `record`."""
        found = [c for c in ("duplicate_of", "similarity", "eval_item", "score") if c in dropped.columns]
        columns = [pl.col("_line").alias("line"), pl.col("_rule").alias("rule"), pl.col("_reason").alias("reason")]
        write_dropped(f, dropped, [*columns, *(pl.col(c) for c in found)])

    def write_kept(self, f: IO[bytes], kept: pl.DataFrame) -> None:
        write_records(f, kept)

    def kept_lines(self, kept: pl.DataFrame) -> list[bytes]:
        return record_lines(kept)

    @property
    def stage_columns(self) -> list[str]:
        return STAGE_COLUMNS

    def finish(self, profile: Profile) -> Finish:
        return Finish(score_source=self.score_source, scores=self.scores, config=extra_config(self.extra_fields))


def _rows_frame(batch: Batch, start: int, end: int) -> pl.DataFrame:
    return rows_to_frame(batch.lines[start:end], batch.rows[start:end], batch.extras[start:end])


def score_table(
    input_path: Path, profile: Profile, scores: Path | None
) -> tuple[pl.DataFrame | None, dict[str, Any] | None]:
    """The score columns the profile's score rules read (None when it has none), and where they came from."""
    from workbench.clean.scores import from_scored_file

    needed = scores_read(profile.enabled_rules())
    if not needed:
        if scores is not None:
            raise WbError(f"--scores {scores}: profile {profile.name} has no rule over scores (e.g. ifd_max)")
        return None, None
    source = Path(scores) if scores is not None else Path(input_path)
    if scores is None and (is_stream(source) or sniff(source).format != "jsonl" or sniff(source).compression != "none"):
        raise WbError(
            f"{input_path}: the profile's score rules need scores: clean the JSONL that `wb score` wrote, or pass "
            "--scores FILE"
        )
    table = from_scored_file(source, inline=scores is None)
    names: list[str] = []
    for rule_name, wanted in needed.items():
        table.require(wanted, rule_name)
        names.extend(n for n in wanted if n not in names)
    counts = {n: len(table.values[n]) for n in names}
    return table.frame(names), {"path": str(source), "scores": counts, "rules": needed}
