"""`wb clean` as a library function: read → validate → normalise → PII → filter, batch by batch.

Each batch is a polars frame; the steps are frame-in, frame-out functions (`normalize_frame`, `pii_frame`,
`apply_rules`), so they run unchanged on any engine that hands out Arrow batches. Outputs are one set
(`OutputSet`), staged beside the target and published together: `<out>` (kept records),
`<out stem>.dropped.jsonl`, `<out stem>.rejects.jsonl`, `<out stem>.stats.json`, and last
`<out stem>.manifest.json`, which names every file with its SHA-256 (`check_complete` verifies it).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from workbench import runfile, text
from workbench.clean import pii
from workbench.clean.profile import NormalizeConfig, PiiConfig, Profile
from workbench.clean.rules import RULES, features, score_rules
from workbench.dedup.stages import STAGES, DedupStages
from workbench.errors import WbError
from workbench.frames import HISTORY_TYPE, rows_to_frame, write_dropped, write_records
from workbench.io.jsontext import dumps_json, jsonl_line
from workbench.io.options import DuplicateKeys
from workbench.io.reader import Batch, RecordReader
from workbench.io.sniff import SourceInfo, sniff
from workbench.io.streams import is_stream
from workbench.manifest import build_manifest
from workbench.output import OutputSet
from workbench.records import EXTRA, FIELDS, mapping_notes

STRING_FIELDS = ("instruction", "input", "output", "system")  # the plain-text fields (history is a list)
INVARIANT = "read = kept + dropped + rejected"

REPORTED_LISTED = 1000  # records listed in the stats under `reported` (rules with `action: report`)

# Output-token histogram bins stored in the stats for reports: 0, 1, 2-3, 4-7, ... , 65536+.
TOKEN_BIN_EDGES = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]


def normalize_frame(
    df: pl.DataFrame, cfg: NormalizeConfig, fields: tuple[str, ...] = STRING_FIELDS
) -> tuple[pl.DataFrame, Counter[str]]:
    """Unicode/whitespace normalisation of every text field (`fields` and history), then placeholder inputs
    become empty."""

    opts = (cfg.unicode, cfg.strip_control, cfg.strip_zero_width, cfg.whitespace, cfg.keep_as_written)
    new = df.with_columns(
        *(text.normalize_series(df[c], *opts) for c in fields),
        pl.col("history").list.eval(pl.element().list.eval(text.normalize(pl.element(), *opts))),
    )
    changed = pl.any_horizontal([new[c] != df[c] for c in (*fields, "history")])
    bidi = pl.any_horizontal(
        [pl.col(c).str.contains(text.BIDI_CONTROL_PATTERN) for c in fields]
        + [text.history_text().str.contains(text.BIDI_CONTROL_PATTERN)]
    )
    converted = 0
    if cfg.chinese is not None:
        before = new
        conv = cfg.chinese
        new = new.with_columns(
            *(text.convert_chinese_series(new[c], conv) for c in fields),
            _convert_history(new["history"], conv),
        )
        converted = int(new.select(pl.any_horizontal([new[c] != before[c] for c in (*fields, "history")]).sum()).item())
        changed = pl.any_horizontal([new[c] != df[c] for c in (*fields, "history")])
    placeholders = [p.lower() for p in cfg.placeholder_inputs]
    is_placeholder = (pl.col("input") != "") & pl.col("input").str.to_lowercase().is_in(placeholders)
    counts = Counter(
        {
            "normalized": int(new.select(changed.sum()).item()),
            "placeholder_input": int(new.select(is_placeholder.sum()).item()),
            "bidi_controls_removed": int(df.select(bidi.sum()).item()) if cfg.strip_control else 0,
            "chinese_converted": converted,
        }
    )
    new = new.with_columns(pl.when(is_placeholder).then(pl.lit("")).otherwise(pl.col("input")).alias("input"))
    return new, counts


def _convert_history(history: pl.Series, conversion: text.ChineseConversion) -> pl.Series:
    """OpenCC over every turn of a history column (list of [user, assistant]); most records have no history."""
    rows = history.to_list()
    if not any(rows):
        return history
    conv = text.chinese_converter(conversion)
    out = [[[conv.convert(t) for t in turn] for turn in rec] if rec else rec for rec in rows]
    return pl.Series("history", out, dtype=history.dtype)


def pii_frame(
    df: pl.DataFrame, cfg: PiiConfig, fields: tuple[str, ...] = STRING_FIELDS
) -> tuple[pl.DataFrame, Counter[str]]:
    """Find personal data in `fields` and history; redact it in place or mark the record in `_pii` for dropping,
    per the profile.

    A vectorised candidate pattern picks the few records that may hold personal data; only those are
    checked exactly in Python.
    """
    counts: Counter[str] = Counter()
    df = df.with_columns(pl.lit(None, dtype=pl.String).alias("_pii"))
    if cfg.action == "keep" or not cfg.kinds or df.height == 0:
        return df, counts
    kinds = tuple(cfg.kinds)
    candidate = pl.any_horizontal(
        [pl.col(c).str.contains(pii.CANDIDATE_PATTERN) for c in fields]
        + [text.history_text().str.contains(pii.CANDIDATE_PATTERN)]
    )
    df = df.with_row_index("_i")
    cand = df.filter(candidate)
    if cand.height == 0:
        return df.drop("_i"), counts
    updates: dict[str, list[Any]] = {c: [] for c in (*fields, "history", "_pii")}
    for row in cand.select(*fields, "history").iter_rows(named=True):
        found: set[str] = set()
        for c in fields:
            new_text, hit = pii.redact(row[c], kinds)
            updates[c].append(new_text)
            found.update(hit)
        history = []
        for pair in row["history"] or []:
            new_pair = []
            for turn in pair:
                new_text, hit = pii.redact(turn, kinds)
                new_pair.append(new_text)
                found.update(hit)
            history.append(new_pair)
        updates["history"].append(history)
        ordered = [k for k in pii.ALL_KINDS if k in found]
        counts.update(f"found_{k}" for k in ordered)
        updates["_pii"].append(f"contains personal data: {', '.join(ordered)}" if ordered else None)
    redacted = sum(1 for r in updates["_pii"] if r)
    if cfg.action == "redact":
        counts["pii_redacted"] = redacted
        keep_cols = {c: updates[c] for c in (*fields, "history")}
        updates = {**keep_cols, "_pii": [None] * cand.height}
    patch = cand.with_columns(
        *(pl.Series(c, updates[c], dtype=pl.String) for c in (*fields, "_pii")),
        pl.Series("history", updates["history"], dtype=HISTORY_TYPE),
    )
    merged = pl.concat([df.filter(~candidate), patch]).sort("_i")
    return merged.drop("_i"), counts


def apply_rules(df: pl.DataFrame, profile: Profile) -> pl.DataFrame:
    """Add `_rule` and `_reason`: the first rule (in profile order) that drops each record, and why.

    Each rule sees only the records no earlier rule dropped and, where it declares one, that pass its cheap
    `applies` pre-condition; its reason is computed for the records it drops only.
    """
    df = df.lazy().with_columns(features()).collect().with_row_index("_i")
    rule_col = pl.Series("_rule", [None] * df.height, dtype=pl.String)
    reason_col = pl.Series("_reason", [None] * df.height, dtype=pl.String)
    flag_col = pl.Series("_flag", [None] * df.height, dtype=pl.String)
    flag_reason_col = pl.Series("_flag_reason", [None] * df.height, dtype=pl.String)
    remaining = df
    for name, params in profile.enabled_rules():
        check = RULES[name].build(params)
        if check.report_only:  # `action: report`: the first such rule that matches is noted; nothing is dropped
            unflagged = remaining.filter(flag_col.gather(remaining["_i"]).is_null())
            hits = unflagged.lazy().filter(check.drop).collect().rechunk()
            if hits.height:
                flag_col.scatter(hits["_i"], name)
                flag_reason_col.scatter(
                    hits["_i"], hits.lazy().select(check.reason.cast(pl.String)).collect().to_series()
                )
            continue
        # Lazy evaluation everywhere: polars then computes sub-expressions a rule repeats only once.
        candidates = remaining if check.applies is None else remaining.lazy().filter(check.applies).collect()
        if candidates.height == 0:
            continue
        if check.prepare is not None:
            candidates = check.prepare(candidates)
        # rechunk: polars 2.1 can return a leading empty chunk here, and `pl.format` over it panics.
        hits = candidates.lazy().filter(check.drop).collect().rechunk()
        if hits.height == 0:
            continue
        rule_col.scatter(hits["_i"], name)
        reason_col.scatter(hits["_i"], hits.lazy().select(check.reason.cast(pl.String)).collect().to_series())
        remaining = remaining.filter(~pl.col("_i").is_in(hits["_i"].implode()))
    pii_hits = remaining.filter(pl.col("_pii").is_not_null())
    if pii_hits.height:
        rule_col.scatter(pii_hits["_i"], "pii")
        reason_col.scatter(pii_hits["_i"], pii_hits["_pii"])
    return df.drop("_i").with_columns(rule_col, reason_col, flag_col, flag_reason_col)


@dataclass
class CleanedBatch:
    kept: pl.DataFrame
    dropped: pl.DataFrame
    counts: Counter[str]
    reported: pl.DataFrame  # `_line`, `_flag` (rule), `_flag_reason`, `_rule` (true when a later rule dropped it)


CLEAN_CHUNK = 8192  # records through the rules at once: their feature columns are the batch's largest transient


def clean_batch(df: pl.DataFrame, profile: Profile) -> CleanedBatch:
    """`clean_frame` on a batch, `CLEAN_CHUNK` records at a time (every step is per record, so the result is the
    same; peak memory is bounded by the chunk: 25,000 Chinese records of 1,000 characters took 450 MB at once)."""
    if df.height <= CLEAN_CHUNK:
        return clean_frame(df, profile)
    parts = [clean_frame(df.slice(start, CLEAN_CHUNK), profile) for start in range(0, df.height, CLEAN_CHUNK)]
    counts: Counter[str] = Counter()
    for part in parts:
        counts.update(part.counts)
    return CleanedBatch(
        kept=pl.concat([p.kept for p in parts]),
        dropped=pl.concat([p.dropped for p in parts]),
        counts=counts,
        reported=pl.concat([p.reported for p in parts]),
    )


def clean_frame(df: pl.DataFrame, profile: Profile) -> CleanedBatch:
    """All cleaning steps on one batch of canonical records."""
    df, counts = normalize_frame(df, profile.normalize)
    df, pii_counts = pii_frame(df, profile.pii)
    counts.update(pii_counts)
    df = apply_rules(df, profile)
    is_dropped = pl.col("_rule").is_not_null()
    deciding = score_rules(profile.enabled_rules())
    if deciding:  # the score that decided a score rule's drop, beside its reason
        name = pl.lit(None, dtype=pl.String)
        value = pl.lit(None, dtype=pl.Float64)
        for rule_name, (score, *_) in deciding.items():
            name = pl.when(pl.col("_rule") == rule_name).then(pl.lit(score)).otherwise(name)
            value = pl.when(pl.col("_rule") == rule_name).then(pl.col(f"_score_{score}")).otherwise(value)
        decided = pl.when(name.is_not_null()).then(pl.struct(name.alias("name"), value.alias("value")))
        df = df.with_columns(decided.alias("score"))
    reported = df.filter(pl.col("_flag").is_not_null()).select("_line", "_flag", "_flag_reason", is_dropped)
    return CleanedBatch(kept=df.filter(~is_dropped), dropped=df.filter(is_dropped), counts=counts, reported=reported)


@dataclass
class CleanTally:
    """The running counts of one cleaning run, batch by batch; the `.stats.json` is written from them
    (`runfile.CleanStats` types that file)."""

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

    def add_batch(self, batch: Batch, counts: Counter[str]) -> None:
        self.read += batch.size
        self.rejected += len(batch.rejects)
        self.rejected_by_kind.update(r.kind for r in batch.rejects)
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


def _write_dropped(f: Any, dropped: pl.DataFrame) -> None:
    """`line`, `rule`, `reason` (and what the rule found), then the `record` with its own extra fields: a record's
    field named `rule` stays inside `record`."""
    found = [c for c in ("duplicate_of", "similarity", "eval_item", "score") if c in dropped.columns]
    columns = [pl.col("_line").alias("line"), pl.col("_rule").alias("rule"), pl.col("_reason").alias("reason")]
    write_dropped(f, dropped, [*columns, *(pl.col(c) for c in found)])


STAGE_COLUMNS = ["_line", *FIELDS, EXTRA, "_output_tokens"]


def _score_table(
    input_path: Path, profile: Profile, scores: Path | None
) -> tuple[pl.DataFrame | None, dict[str, Any] | None]:
    """The score columns the profile's score rules read (None when it has none), and where they came from."""
    from workbench.clean.scores import from_scored_file

    needed = score_rules(profile.enabled_rules())
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


def attach_scores(frame: pl.DataFrame, table: pl.DataFrame) -> pl.DataFrame:
    """A batch with its records' score columns, joined on the line."""
    from workbench.clean.scores import attach

    return attach(frame, table)


def run(
    input_path: Path,
    output: Path,
    profile: Profile,
    overrides: dict[str, str] | None = None,
    batch_size: int = 25_000,
    on_batch: Callable[[int, int], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
    against: list[Path] | None = None,
    command: str = "clean",
    duplicate_keys: DuplicateKeys = "reject",
    split: str | None = None,
    scores: Path | None = None,
    extra_fields: bool = True,
) -> CleanResult:
    """Clean the SFT records of `input_path` into `output` under `profile`; `on_batch(bytes, records)` and
    `on_phase(text)` report progress. (`workbench.clean.dispatch.run` sends preference data to
    `workbench.clean.preference`.)

    `against`: evaluation files whose passages must not appear in the training data (decontamination).
    `input_path` may be `-` (standard input) or a pipe/FIFO, read once as a stream. `duplicate_keys`: reject an
    object naming a key twice (`duplicate_key`), or keep the `last` value.
    `scores`: a score file for the score rules (`wb score` output or a run's sample_losses.jsonl); without it the
    score rules read the `scores` objects of the input itself (`wb score` output).
    With near-duplicate detection on, kept records wait in Arrow files beside the output until every batch has
    been seen; the output is then written from them.

    `extra_fields`: keep each record's fields wb does not use (`id`, `source`, `meta`, ...) in the kept and dropped
    files, after wb's own (`records.EXTRA`); False leaves them out (the rejects hold every record as written)."""
    for name, _ in profile.enabled_rules():
        if "sft" not in RULES[name].kinds:
            raise WbError(
                f"profile {profile.name}: rule {name} is for preference data, and {input_path} holds SFT records"
            )
    started = time.time()
    reader = RecordReader(
        Path(input_path),
        overrides,
        batch_size=batch_size,
        duplicate_keys=duplicate_keys,
        split=split,
        extra_fields=extra_fields,
    )
    paths = OutputPaths.for_output(Path(output))
    if Path(input_path).resolve() in {Path(p).resolve() for p in (paths.kept, paths.dropped, paths.rejects)}:
        raise WbError(f"{output}: output would overwrite the input file; choose another -o")
    if profile.normalize.chinese is not None:
        text.chinese_converter(profile.normalize.chinese)  # a missing OpenCC is one line before any file is written
    table, score_source = _score_table(Path(input_path), profile, scores)
    stats = CleanTally()
    files = [paths.kept, paths.dropped, paths.rejects, paths.stats]
    with OutputSet(files, manifest=paths.manifest) as outputs:
        stages = DedupStages.build(
            profile.dedup, profile.decontaminate, list(against or []), spill_dir=outputs.scratch("dedup")
        )
        kept_f = outputs.open(paths.kept)
        dropped_f = outputs.open(paths.dropped)
        rejects_f = outputs.open(paths.rejects)
        stage_dir = outputs.scratch("kept") if stages.needs_all_records else None
        conversations: list[dict[str, Any]] = []  # tool-calling conversations: validated, kept whole
        for i, batch in enumerate(reader):
            conversations.extend(conv for _, conv in batch.conversations)
            # A batch goes through every step `CLEAN_CHUNK` records at a time, so only one chunk's frames exist at
            # once (a batch without rows still passes once: its counts); the dropped file stays as a whole batch
            # writes it: the rules' drops, then each stage's.
            counts: Counter[str] = Counter()
            stage_drops: dict[str, list[pl.DataFrame]] = {name: [] for name in STAGES}
            for c, start in enumerate(range(0, max(len(batch.rows), 1), CLEAN_CHUNK)):
                end = start + CLEAN_CHUNK
                frame = rows_to_frame(batch.lines[start:end], batch.rows[start:end], batch.extras[start:end])
                if table is not None:
                    frame = attach_scores(frame, table)
                cleaned = clean_frame(frame, profile)
                del frame
                counts.update(cleaned.counts)
                _write_dropped(dropped_f, cleaned.dropped)
                stats.add_dropped(cleaned.dropped)
                stats.add_reported(cleaned.reported)
                kept, dedup_dropped = stages.stream(cleaned.kept)
                del cleaned
                for dropped in dedup_dropped:
                    stage_drops[dropped["_rule"][0]].append(dropped)
                if stage_dir is not None:
                    stages.collect(kept)
                    kept.select(STAGE_COLUMNS).write_ipc(stage_dir / f"{i:06d}.{c:04d}.arrow")
                else:
                    write_records(kept_f, kept)
                    stats.add_kept(kept)
                del kept
            for dropped in (d for name in STAGES for d in stage_drops[name]):
                _write_dropped(dropped_f, dropped)
                stats.add_dropped(dropped)
            for rej in batch.rejects:
                rejects_f.write(jsonl_line(rej.to_json()))
            stats.add_batch(batch, counts)
            if on_batch is not None:
                on_batch(batch.bytes_read, batch.size)
            del batch  # before the next one is read
        if stage_dir is not None:
            if on_phase is not None:
                on_phase("resolving duplicates, writing kept records")
            resolved = stages.resolve()
            for part in sorted(stage_dir.glob("*.arrow")):
                kept, dropped = stages.split(pl.read_ipc(part), resolved)
                write_records(kept_f, kept)
                stats.add_kept(kept)
                _write_dropped(dropped_f, dropped)
                stats.add_dropped(dropped)
                part.unlink()
        for conv in conversations:  # after the Alpaca-shaped records, in input order
            kept_f.write(jsonl_line(conv))
        stats.kept += len(conversations)
        stats.tool_conversations = len(conversations)
        stats.blank_lines = reader.blank_lines
        contamination = stages.evals.report() if stages.evals is not None else None
        semantic = stages.semantic.precision_used if stages.semantic is not None else None
        summary = publish(
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
            contamination=contamination,
            warnings=stages.warnings,
            semantic_precision=semantic,
            score_source=score_source,
            scores=scores,
            config=extra_config(extra_fields),
        )
        mapping = reader.mapping or {}
    return CleanResult(stats=stats, summary=summary, paths=paths, mapping=mapping, source=reader.info)


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
    runfile.CleanStats.model_validate(summary)  # the accounting as the run schema types it
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
