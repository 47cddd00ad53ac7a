"""What every cleaning run ends with, whatever its record shape or engine: the accounting (`CleanTally`,
`read = kept + dropped + rejected`), the names of the output set (`OutputPaths`: `<out>`, `<stem>.dropped.jsonl`,
`<stem>.rejects.jsonl`, `<stem>.stats.json`, `<stem>.manifest.json`), and `publish`, which checks the accounting,
writes the stats and the manifest last and publishes the set (`OutputSet`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from workbench.clean import pii
from workbench.clean.profile import Profile
from workbench.io.jsontext import dumps_json
from workbench.io.reader import RecordReader, Reject
from workbench.io.sniff import SourceInfo
from workbench.manifest import build_manifest
from workbench.output import OutputSet
from workbench.records import mapping_notes
from workbench.runfile import cleaning

INVARIANT = "read = kept + dropped + rejected"

REPORTED_LISTED = 1000  # records listed in the stats under `reported` (rules with `action: report`)

# Output-token histogram bins stored in the stats for reports: 0, 1, 2-3, 4-7, ... , 65536+.
TOKEN_BIN_EDGES = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]


@dataclass
class CleanTally:
    """The running counts of one cleaning run, batch by batch; the `.stats.json` is written from them
    (`runfile.cleaning.CleanStats` types that file)."""

    read: int = 0
    kept: int = 0
    rejected: int = 0
    blank_lines: int = 0
    dropped_by_rule: Counter[str] = field(default_factory=Counter)
    rejected_by_kind: Counter[str] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)
    token_hist: Counter[int] = field(default_factory=Counter)
    reported_by_rule: Counter[str] = field(default_factory=Counter)
    tool_conversations: int = 0
    reported: list[dict[str, Any]] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        return sum(self.dropped_by_rule.values())

    @property
    def invariant_holds(self) -> bool:
        return self.read == self.kept + self.dropped + self.rejected

    def add_read(self, size: int, rejects: list[Reject], counts: Counter[str]) -> None:
        """A batch read: its records, its rejects and what the cleaning steps counted in it."""
        self.read += size
        self.rejected += len(rejects)
        self.rejected_by_kind.update(r.kind for r in rejects)
        self.counts.update(counts)

    def add_reported(self, reported: pl.DataFrame) -> None:
        for line, rule, reason, dropped in reported.iter_rows():
            self.reported_by_rule[rule] += 1
            if len(self.reported) < REPORTED_LISTED:
                self.reported.append({"line": line, "rule": rule, "reason": reason, "dropped_by_a_later_rule": dropped})

    def add_dropped(self, dropped: pl.DataFrame) -> None:
        if dropped.height:
            for rule, n in dropped.group_by("_rule").len().iter_rows():
                self.dropped_by_rule[rule] += n

    def add_kept(self, kept: pl.DataFrame) -> None:
        self.kept += kept.height
        if kept.height:
            edges = pl.Series(TOKEN_BIN_EDGES, dtype=pl.Int64)
            bins = edges.search_sorted(kept["_output_tokens"], side="right") - 1
            for b, n in bins.value_counts().iter_rows():
                self.token_hist[int(b)] += n

    def to_json(self, rule_order: list[str]) -> dict[str, Any]:
        names = [*rule_order, *(r for r in self.dropped_by_rule if r not in rule_order)]
        return {
            "read": self.read,
            "kept": self.kept,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "invariant": INVARIANT,
            "invariant_holds": self.invariant_holds,
            "dropped_by_rule": {r: self.dropped_by_rule.get(r, 0) for r in names},
            "rejected_by_kind": dict(sorted(self.rejected_by_kind.items())),
            "reported_by_rule": dict(sorted(self.reported_by_rule.items())),
            "reported": self.reported,
            "reported_left_out": sum(self.reported_by_rule.values()) - len(self.reported),
            "kept_tool_conversations": self.tool_conversations,
            "blank_lines": self.blank_lines,
            "modified": {
                "normalized": self.counts.get("normalized", 0),
                "placeholder_input": self.counts.get("placeholder_input", 0),
                "pii_redacted": self.counts.get("pii_redacted", 0),
                "bidi_controls_removed": self.counts.get("bidi_controls_removed", 0),
                "chinese_converted": self.counts.get("chinese_converted", 0),
            },
            "pii_found": {k: self.counts.get(f"found_{k}", 0) for k in pii.ALL_KINDS},
            "kept_output_tokens_histogram": {
                "edges": TOKEN_BIN_EDGES,
                "counts": [self.token_hist.get(i, 0) for i in range(len(TOKEN_BIN_EDGES))],
            },
        }


@dataclass(frozen=True)
class OutputPaths:
    kept: Path
    dropped: Path
    rejects: Path
    stats: Path
    manifest: Path

    @classmethod
    def for_output(cls, out: Path) -> OutputPaths:
        out = Path(out)
        stem = out.name.removesuffix(".gz").removesuffix(".jsonl").removesuffix(".json")
        side = out.with_name(stem)
        return cls(
            kept=out,
            dropped=side.with_name(f"{stem}.dropped.jsonl"),
            rejects=side.with_name(f"{stem}.rejects.jsonl"),
            stats=side.with_name(f"{stem}.stats.json"),
            manifest=side.with_name(f"{stem}.manifest.json"),
        )


@dataclass
class CleanResult:
    stats: CleanTally
    summary: dict[str, Any]
    paths: OutputPaths
    mapping: dict[str, str]
    source: SourceInfo


def extra_config(extra_fields: bool) -> dict[str, Any]:
    """What the manifest records of `--drop-extra-fields`."""
    return {"extra_fields": "keep" if extra_fields else "drop"}


def input_source(reader: RecordReader, input_path: Path) -> dict[str, Any]:
    """The stats' `input` section: what was read (format, compression, unit, encoding, layout) and its hash."""
    return {
        "path": str(input_path),
        "format": reader.info.format,
        "compression": reader.info.compression,
        "unit": reader.info.unit,
        "encoding": reader.info.encoding,
        **({"split": reader.dataset.split, "layout": reader.dataset.layout} if reader.dataset is not None else {}),
        "sha256": reader.sha256(),
    }


def publish(
    outputs: OutputSet,
    paths: OutputPaths,
    stats: CleanTally,
    profile: Profile,
    stage_names: list[str],
    reader: RecordReader,
    input_path: Path,
    against: list[Path] | None,
    started: float,
    command: str,
    contamination: dict[str, Any] | None = None,
    warnings: list[str] | None = None,
    semantic_precision: Any = None,
    score_source: dict[str, Any] | None = None,
    scores: Path | None = None,
    first_drops: list[str] | None = None,
    sections: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Check the accounting, write the stats, build the manifest and publish the set: the end of every engine's run
    and of the preference cleaner. Returns the stats summary. `score_source`/`scores`: the model-based scores the
    score rules read, and their file. `first_drops`: drop reasons counted before the profile's rules; `sections`:
    extra top-level stats sections (the preference cleaner's `kind` and `preference`); `config`: extra manifest
    config."""
    drop_order = [*(first_drops or []), *profile.rule_order, "pii", *stage_names]
    if not stats.invariant_holds:  # a bug, not a user error
        raise AssertionError(f"accounting broken: {stats.to_json(drop_order)}")
    mapping = reader.mapping or {}
    source = input_source(reader, input_path)
    summary = {
        "input": source,
        "mapping": mapping,
        "mapping_notes": mapping_notes(mapping),
        "profile": profile.as_dict(),
        **stats.to_json(drop_order),
        **(sections or {}),
    }
    if contamination is not None:
        summary["contamination"] = contamination
    if semantic_precision is not None:
        summary["semantic_precision"] = semantic_precision  # what `auto` became, and why
    if score_source is not None:
        summary["scores"] = score_source
    summary["warnings"] = list(warnings or [])
    cleaning.CleanStats.model_validate(summary)  # the accounting as the run schema types it
    outputs.write(paths.stats, dumps_json(summary))
    manifest = build_manifest(
        command=command,
        started=started,
        inputs={
            "data": Path(input_path),
            **{f"against[{i}]": Path(p) for i, p in enumerate(against or [])},
            **({"scores": Path(scores)} if scores is not None else {}),
        },
        outputs={
            "kept": outputs.entry(paths.kept),
            "dropped": outputs.entry(paths.dropped),
            "rejects": outputs.entry(paths.rejects),
            "stats": outputs.entry(paths.stats),
        },
        config={"profile": profile.as_dict(), "mapping": mapping, **(config or {})},
    )
    manifest["inputs"]["data"] = {**manifest["inputs"]["data"], "sha256": source["sha256"]}
    outputs.publish(manifest)
    return summary
