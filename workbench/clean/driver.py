"""The one cleaning driver: reads a file batch by batch, runs a record shape's cleaning on each chunk, writes and
counts every drop, runs the dedup stages, writes the kept records and publishes the output set.

A record shape (`Shape`: SFT records in `clean.sft`, preference pairs and KTO examples in `clean.preference`)
only decides: how its records are read into a frame, which of them its rules drop and why (`Shape.clean`), how a
kept or dropped record is written, and what it adds to the stats. The driver does the rest, the same way for
every shape, so `read = kept + dropped + rejected` holds by construction. The Ray engine (`clean.ray_engine`) runs
the same shapes' steps in Ray tasks and checks and publishes through the same functions (`start`, `publish`).

Two orders of work, both kept byte for byte from the engines they replace:

- a shape without a file-level rule (SFT): each chunk's kept records go through decontamination and exact
  duplicates at once; with near or semantic dedup on they then wait in Arrow files until every batch is seen;
- a shape with one (`stage_all`: preference data's `contradictory_pair` needs every pair first): kept records
  wait in Arrow files; then each file meets the file-level drops, then the dedup stages.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import polars as pl

from workbench import text
from workbench.clean import pipeline
from workbench.clean.output import CleanResult, CleanTally, OutputPaths, publish
from workbench.clean.pipeline import CleanedBatch
from workbench.clean.profile import Profile
from workbench.dedup.stages import STAGES, DedupStages
from workbench.errors import WbError
from workbench.io.jsontext import jsonl_line
from workbench.io.options import DuplicateKeys
from workbench.io.reader import RecordReader, Reject
from workbench.output import OutputSet


@dataclass
class ShapeBatch:
    """One batch of a file as a shape hands it to the driver."""

    size: int  # records read (the accounting's `read`)
    nbytes: int  # bytes read, for progress
    records: int  # records to clean: `frame(start, end)` gives them
    frame: Callable[[int, int], pl.DataFrame]
    rejects: list[Reject] = field(default_factory=list)
    dropped: list[tuple[bytes, str]] = field(default_factory=list)  # lines dropped while reading, with their rule
    conversations: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # kept whole, after the rest


@dataclass
class Finish:
    """What a shape adds to the stats and the manifest (`publish`'s arguments of the same names)."""

    first_drops: list[str] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    score_source: dict[str, Any] | None = None
    scores: Path | None = None


class Shape(ABC):
    """A record shape: what the driver asks of SFT records, preference pairs and KTO examples alike. A new shape
    implements the abstract methods; the others have the defaults of a shape without file-level rules."""

    kind = ""  # the stats' name of the data: `sft` or `preference`
    stage_all = False  # kept records wait for a file-level decision (`file_drops`) before the dedup stages

    @property
    def mapping(self) -> dict[str, str]:
        """The field mapping the result reports (`--map` and what the reader recognised)."""
        return {}

    @abstractmethod
    def open(self, path: Path, batch_size: int, duplicate_keys: DuplicateKeys, split: str | None) -> RecordReader:
        """The reader of `path`."""
        raise NotImplementedError

    def prepare(self, input_path: Path) -> None:
        """Work before the first batch that may fail on the user's input (an SFT profile's scores)."""
        return None

    @abstractmethod
    def batches(self, reader: RecordReader) -> Iterator[ShapeBatch]:
        """The file's batches, each converted to this shape's frame."""
        raise NotImplementedError

    @abstractmethod
    def clean(self, frame: pl.DataFrame) -> CleanedBatch:
        """Normalise, find personal data and apply the rules to one chunk: what is kept and dropped (with `_rule`
        and `_reason`), and why; kept records carry `_output_tokens` (the stats' length histogram)."""
        raise NotImplementedError

    @abstractmethod
    def write_dropped(self, f: IO[bytes], dropped: pl.DataFrame) -> None:
        """Dropped records (`_line`, `_rule`, `_reason` and the record) as the dropped file's lines."""
        raise NotImplementedError

    def write_kept(self, f: IO[bytes], kept: pl.DataFrame) -> None:
        """Kept records as the output's lines."""
        for line in self.kept_lines(kept):
            f.write(line)

    @abstractmethod
    def kept_lines(self, kept: pl.DataFrame) -> list[bytes]:
        """The lines `write_kept` writes, one a record."""
        raise NotImplementedError

    @property
    @abstractmethod
    def stage_columns(self) -> list[str]:
        """The columns of a kept record the dedup stages and the writers need (what waits in Arrow files)."""
        raise NotImplementedError

    def file_keys(self, kept: pl.DataFrame) -> pl.DataFrame | None:
        """What a file-level rule needs of a chunk's kept records (`stage_all` shapes)."""
        return None

    def file_drops(self, keys: list[pl.DataFrame]) -> pl.DataFrame | None:
        """The records a file-level rule drops, from every chunk's `file_keys` (`_line`, `_reason`, ...)."""
        return None

    def before_dedup(self, df: pl.DataFrame, drops: pl.DataFrame | None) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Staged kept records as the dedup stages see them, less the file-level drops: (kept, dropped)."""
        return df, df.clear()

    def add_kept(self, kept: pl.DataFrame) -> None:
        """Note kept records for the shape's own stats."""
        return None

    def finish(self, profile: Profile) -> Finish:
        """What the shape adds to the stats and the manifest, once every record is written."""
        return Finish()


def start(
    shape: Shape,
    input_path: Path,
    output: Path,
    profile: Profile,
    batch_size: int,
    duplicate_keys: DuplicateKeys,
    split: str | None,
) -> tuple[RecordReader, OutputPaths]:
    """The checks of every engine before anything is written: the reader, outputs that would overwrite the input,
    a missing OpenCC, the shape's own (`Shape.prepare`)."""
    reader = shape.open(Path(input_path), batch_size, duplicate_keys, split)
    paths = OutputPaths.for_output(Path(output))
    if Path(input_path).resolve() in {Path(p).resolve() for p in (paths.kept, paths.dropped, paths.rejects)}:
        raise WbError(f"{output}: output would overwrite the input file; choose another -o")
    if profile.normalize.chinese is not None:
        text.chinese_converter(profile.normalize.chinese)  # a missing OpenCC is one line before any file is written
    shape.prepare(Path(input_path))
    return reader, paths


def _write_dropped(shape: Shape, f: IO[bytes], stats: CleanTally, dropped: pl.DataFrame) -> None:
    shape.write_dropped(f, dropped)
    stats.add_dropped(dropped)


def run(
    shape: Shape,
    input_path: Path,
    output: Path,
    profile: Profile,
    batch_size: int = 25_000,
    on_batch: Callable[[int, int], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
    against: list[Path] | None = None,
    command: str = "clean",
    duplicate_keys: DuplicateKeys = "reject",
    split: str | None = None,
) -> CleanResult:
    """Clean `input_path` (records of `shape`) into `output` under `profile` on this process; `on_batch(bytes,
    records)` and `on_phase(text)` report progress, `against` names the eval files to decontaminate against."""
    started = time.time()
    reader, paths = start(shape, input_path, output, profile, batch_size, duplicate_keys, split)
    stats = CleanTally()
    files = [paths.kept, paths.dropped, paths.rejects, paths.stats]
    with OutputSet(files, manifest=paths.manifest) as outputs:
        stages = DedupStages.build(
            profile.dedup, profile.decontaminate, list(against or []), spill_dir=outputs.scratch("dedup")
        )
        kept_f, dropped_f, rejects_f = (outputs.open(p) for p in (paths.kept, paths.dropped, paths.rejects))
        staged = shape.stage_all or stages.needs_all_records
        stage_dir = outputs.scratch("kept") if staged else None
        conversations: list[dict[str, Any]] = []  # tool-calling conversations: validated, kept whole
        keys: list[pl.DataFrame] = []
        for i, batch in enumerate(shape.batches(reader)):
            conversations.extend(conv for _, conv in batch.conversations)
            for line, rule in batch.dropped:
                dropped_f.write(line)
                stats.dropped_by_rule[rule] += 1
            # A batch goes through every step `CLEAN_CHUNK` records at a time, so only one chunk's frames exist at
            # once; the dropped file stays as a whole batch writes it: the rules' drops, then each stage's.
            counts: Counter[str] = Counter()
            stage_drops: dict[str, list[pl.DataFrame]] = {name: [] for name in STAGES}
            for c, begin in enumerate(range(0, batch.records, pipeline.CLEAN_CHUNK)):
                cleaned = shape.clean(batch.frame(begin, begin + pipeline.CLEAN_CHUNK))
                counts.update(cleaned.counts)
                _write_dropped(shape, dropped_f, stats, cleaned.dropped)
                stats.add_reported(cleaned.reported)
                part = None if stage_dir is None else stage_dir / f"{i:06d}.{c:04d}.arrow"
                if shape.stage_all:
                    assert part is not None
                    found = shape.file_keys(cleaned.kept)
                    if found is not None:
                        keys.append(found)
                    cleaned.kept.write_ipc(part)
                    continue
                kept, dedup_dropped = stages.stream(cleaned.kept)
                del cleaned
                for dropped in dedup_dropped:
                    stage_drops[dropped["_rule"][0]].append(dropped)
                if part is not None:
                    stages.collect(kept)
                    kept.select(shape.stage_columns).write_ipc(part)
                else:
                    shape.write_kept(kept_f, kept)
                    _add_kept(shape, stats, kept)
                del kept
            for dropped in (d for name in STAGES for d in stage_drops[name]):
                _write_dropped(shape, dropped_f, stats, dropped)
            for rej in batch.rejects:
                rejects_f.write(jsonl_line(rej.to_json()))
            stats.add_read(batch.size, batch.rejects, counts)
            if on_batch is not None:
                on_batch(batch.nbytes, batch.size)
            del batch  # before the next one is read
        if stage_dir is not None:
            parts = sorted(stage_dir.glob("*.arrow"))
            if shape.stage_all:
                if on_phase is not None:
                    on_phase("contradictions and duplicates")
                drops = shape.file_drops(keys)
                for part in parts:
                    df, dropped = shape.before_dedup(pl.read_ipc(part), drops)
                    _write_dropped(shape, dropped_f, stats, dropped)
                    df, dedup_dropped = stages.stream(df)
                    for d in dedup_dropped:
                        _write_dropped(shape, dropped_f, stats, d)
                    stages.collect(df)
                    df.write_ipc(part)
            elif on_phase is not None:
                on_phase("resolving duplicates, writing kept records")
            resolved = stages.resolve() if stages.needs_all_records else None
            for part in parts:
                df = pl.read_ipc(part)
                if resolved is not None:
                    df, dropped = stages.split(df, resolved)
                    _write_dropped(shape, dropped_f, stats, dropped)
                shape.write_kept(kept_f, df)
                _add_kept(shape, stats, df)
                part.unlink()
        for conv in conversations:  # after the records of the shape, in input order
            kept_f.write(jsonl_line(conv))
        stats.kept += len(conversations)
        stats.tool_conversations = len(conversations)
        stats.blank_lines = reader.blank_lines
        summary = finish(shape, outputs, paths, stats, profile, stages, reader, input_path, against, started, command)
    return CleanResult(stats=stats, summary=summary, paths=paths, mapping=shape.mapping, source=reader.info)


def _add_kept(shape: Shape, stats: CleanTally, kept: pl.DataFrame) -> None:
    stats.add_kept(kept)
    shape.add_kept(kept)


def finish(
    shape: Shape,
    outputs: OutputSet,
    paths: OutputPaths,
    stats: CleanTally,
    profile: Profile,
    stages: DedupStages,
    reader: RecordReader,
    input_path: Path,
    against: list[Path] | None,
    started: float,
    command: str,
) -> dict[str, Any]:
    """`publish` with the dedup stages' reports and the shape's own sections: the end of every engine's run."""
    done = shape.finish(profile)
    return publish(
        outputs,
        paths,
        stats,
        profile,
        stages.names,
        reader,
        input_path,
        against,
        started,
        command,
        contamination=stages.evals.report() if stages.evals is not None else None,
        warnings=[*stages.warnings, *done.warnings],
        semantic_precision=stages.semantic.precision_used if stages.semantic is not None else None,
        score_source=done.score_source,
        scores=done.scores,
        first_drops=done.first_drops,
        sections=done.sections,
        config=done.config,
    )
