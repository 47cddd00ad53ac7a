"""`wb clean --engine ray`: the same cleaning and dedup steps as Ray Data operations.

The per-record work runs in Ray tasks on blocks of the input; the few decisions that need every record are
shuffles (group-bys on key partitions); the driver keeps only what is small and writes the output set:

1. **read + clean** (`map_batches`, one block a task): an uncompressed JSON Lines file is split into byte ranges
   on line boundaries (`byte_ranges`; the line numbers of each range come from a first `map` that counts line
   ends), and each task parses its range with the same reader (`RecordReader.read_range`) and mapping as the
   local engine. Other formats (JSON arrays, Parquet, CSV, compressed files, standard input) are parsed on the
   driver and handed to the tasks as Arrow blocks. Each task runs `clean_batch` (normalise, PII, rules) and
   the decontamination check, and computes each kept record's exact-duplicate key, LSH band keys and shingle set
   with the local engine's functions. Its output block holds the kept records with those columns and one row
   per dropped record, reject, tool conversation, reported record and leaked eval item (the JSON line the local
   engine would write, as bytes). The blocks are materialised in the object store.
2. **exact duplicates**: (key, line) rows, grouped by key partition (`groupby`, a hash shuffle); in each group the
   first line of a key is kept, later ones name it.
3. **near duplicates**: (band, band key, line) rows of the records that survived step 2, grouped by key
   partition; each group emits the candidate pairs of its buckets (`minhash.bucket_pair_codes`, as locally).
   The distinct pairs go to the driver; the shingle sets of the records in a pair are then grouped by pair
   (a second shuffle) and each group verifies its pairs on exact Jaccard similarity (`minhash.exact_jaccard`).
4. **resolution** on the driver: the keep-order greedy pass (`minhash.greedy_drops`) over the verified pairs only.
5. **final filter** (`map_batches`): exact and near drops are tagged with the local engine's reasons; the driver
   streams the kept and dropped lines into the output set (`OutputSet`), then writes stats and the manifest
   with the local engine's code (`pipeline.publish`).

Kept records come out in input order and every file holds what the local engine writes (the dropped file in
another order: sort by `line` to compare). Semantic dedup (one embedding model over all records) is local only.
Nothing here is imported unless `--engine ray` is asked for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io as stdio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa

from workbench import text
from workbench.clean.pipeline import (
    STAGE_COLUMNS,
    CleanResult,
    CleanTally,
    OutputPaths,
    _write_dropped,
    clean_batch,
    extra_config,
    publish,
)
from workbench.clean.profile import Profile
from workbench.clean.rules import score_rules
from workbench.dedup.contamination import EvalIndex
from workbench.dedup.exact import ExactConfig, key_expr
from workbench.dedup.minhash import NearConfig, NearDuplicates, bucket_pair_codes, exact_jaccard, greedy_drops
from workbench.dedup.stages import DedupStages, _tag
from workbench.errors import WbError
from workbench.frames import HISTORY_TYPE, record_lines, rows_to_frame
from workbench.io.jsontext import jsonl_line
from workbench.io.options import DuplicateKeys, resolve_mapping
from workbench.io.reader import Batch, RecordReader
from workbench.io.streams import byte_ranges, count_lines, is_stream
from workbench.output import OutputSet
from workbench.records import EXTRA

BLOCK_BYTES = 32 << 20  # most bytes of JSON Lines a read task parses (about 60,000 short records)
MIN_BLOCK_BYTES = 1 << 20

SIDE_KINDS = ("dropped", "reject", "conv", "reported", "leak", "meta")
SCHEMA: dict[str, pl.DataType] = {
    "_kind": pl.String(),
    "_line": pl.Int64(),
    "instruction": pl.String(),
    "input": pl.String(),
    "output": pl.String(),
    "system": pl.String(),
    "history": HISTORY_TYPE,
    EXTRA: pl.String(),
    "_output_tokens": pl.Int64(),
    "_exact": pl.UInt64(),
    "_size": pl.Int64(),
    "_bands": pl.List(pl.UInt64),
    "_set": pl.List(pl.UInt32),
    "_payload": pl.Binary(),
    "_rule": pl.String(),
}


# -- the Ray session ----------------------------------------------------------------------------------------------


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise WbError("--engine ray needs Ray Data: pip install 'wb[ray]'") from None
    return ray


@contextlib.contextmanager
def session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray, connected to `address` (a running cluster: `ray://host:10001`, `auto`) or to a local cluster started
    here with this machine's cores; quiet (no dashboard, no progress bars, no worker logs on the console).
    A session already open in this process (a notebook, a test) is used as it is and left open."""
    ray = _import_ray()
    for name in ("ray", "ray.data", "ray._private", "ray.util"):
        logging.getLogger(name).setLevel(logging.ERROR)
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.ERROR,
            "configure_logging": True,
        }
        if address:
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
            # Local workers import the same workbench as the driver (a source checkout on PYTHONPATH included).
            root = str(Path(__file__).resolve().parents[2])
            paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
            kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}}
        try:
            ray.init(**kwargs)
        except ConnectionError as err:
            raise WbError(f"--ray-address {address}: cannot connect ({err})") from None
        started = True
    from ray.data.context import ShuffleStrategy

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    ctx.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED  # no aggregator actors: quick on small groups
    ctx.execution_options.preserve_order = True  # blocks come back in input order: kept records stay in order
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


# -- per-block work (runs in Ray tasks) ---------------------------------------------------------------------------


def _frame(kind: str, **cols: Any) -> pl.DataFrame:
    """A frame of the block schema: the given columns, the rest null."""
    height = len(next(iter(cols.values())))
    frame = pl.DataFrame(
        {
            name: cols[name] if name in cols else pl.repeat(None, height, dtype=dtype, eager=True)
            for name, dtype in SCHEMA.items()
            if name != "_kind"
        }
    )
    return frame.with_columns(pl.lit(kind, dtype=pl.String).alias("_kind")).select(
        pl.col(name).cast(dt) for name, dt in SCHEMA.items()
    )


def _dropped_frame(dropped: pl.DataFrame) -> pl.DataFrame:
    """Dropped records as the lines the local engine writes to `.dropped.jsonl`, with their rule."""
    buf = stdio.BytesIO()
    _write_dropped(buf, dropped)
    payload = [line + b"\n" for line in buf.getvalue().split(b"\n") if line]
    return _frame("dropped", _line=dropped["_line"], _payload=payload, _rule=dropped["_rule"])


def _list_column(values: np.ndarray, sizes: np.ndarray, dtype: pl.DataType) -> pl.Series:
    offsets = pa.array(np.r_[0, np.cumsum(sizes)].astype(np.int32))
    return pl.Series(pl.from_arrow(pa.ListArray.from_arrays(offsets, pa.array(values)))).cast(dtype)


@dataclasses.dataclass(frozen=True)
class BlockWork:
    """What a task needs to clean one block: the profile, the eval index, the dedup settings, how to read."""

    profile: Profile
    evals: EvalIndex | None
    exact: ExactConfig | None
    near: NearConfig | None
    path: str
    overrides: dict[str, str]
    mapping: dict[str, str]
    duplicate_keys: DuplicateKeys
    batch_size: int
    extra_fields: bool = True

    def side_rows(self, batch: Batch, blank_lines: int, counts: Counter[str]) -> list[pl.DataFrame]:
        """Rejects, tool conversations and the block's counts (what reading found)."""
        parts = []
        if batch.rejects:
            parts.append(
                _frame(
                    "reject",
                    _line=[r.line for r in batch.rejects],
                    _payload=[jsonl_line(r.to_json()) for r in batch.rejects],
                    _rule=[r.kind for r in batch.rejects],
                )
            )
        if batch.conversations:
            parts.append(
                _frame(
                    "conv",
                    _line=[n for n, _ in batch.conversations],
                    _payload=[jsonl_line(c) for _, c in batch.conversations],
                )
            )
        meta = {"read": batch.size, "bytes": batch.bytes_read, "blank_lines": blank_lines, "counts": dict(counts)}
        parts.append(_frame("meta", _line=[0], _payload=[orjson.dumps(meta)]))
        return parts

    def clean(self, frame: pl.DataFrame) -> tuple[list[pl.DataFrame], Counter[str]]:
        """`clean_batch` + decontamination, then the dedup keys of the kept records."""
        cleaned = clean_batch(frame, self.profile)
        evals = None
        if self.evals is not None:  # a fresh record of leaks per block: the driver merges them
            evals = dataclasses.replace(self.evals, leaked={k: set() for k in self.evals.leaked})
        kept, contaminated = DedupStages(exact=None, near=None, semantic=None, evals=evals).stream(cleaned.kept)
        parts = []
        for dropped in (cleaned.dropped, *contaminated):
            if dropped.height:
                parts.append(_dropped_frame(dropped))
        if cleaned.reported.height:
            rep = cleaned.reported
            payload = [orjson.dumps(list(row)) for row in rep.iter_rows()]
            parts.append(_frame("reported", _line=rep["_line"], _payload=payload))
        if evals is not None:
            items = sorted(i for found in evals.leaked.values() for i in found)
            if items:
                parts.append(_frame("leak", _line=[0] * len(items), _payload=[i.encode() for i in items]))
        cols: dict[str, Any] = {c: kept[c] for c in STAGE_COLUMNS}
        if self.exact is not None:
            cols["_exact"] = kept.select(key_expr(self.exact).cast(pl.UInt64))[:, 0]
        if self.near is not None and kept.height:
            near = NearDuplicates(self.near)
            near.add(kept)
            keys = np.concatenate(near.keys)
            cols["_bands"] = _list_column(keys.ravel(), np.full(len(keys), keys.shape[1]), pl.List(pl.UInt64))
            cols["_set"] = _list_column(np.concatenate(near.sets), np.concatenate(near.set_sizes), pl.List(pl.UInt32))
            cols["_size"] = pl.Series(np.concatenate(near.sizes).astype(np.int64))
        parts.append(_frame("kept", **cols))
        return parts, cleaned.counts

    def range_block(self, table: pa.Table) -> pa.Table:
        """Read, clean and key one byte range (a block of `start`, `end`, `first` rows)."""
        parts: list[pl.DataFrame] = []
        for start, end, first in zip(*(table[c].to_pylist() for c in ("start", "end", "first")), strict=True):
            reader = RecordReader(
                Path(self.path), self.overrides, self.batch_size, self.duplicate_keys, extra_fields=self.extra_fields
            )
            reader.mapping = self.mapping
            for batch in reader.read_range(start, end, first):
                frames, counts = self.clean(rows_to_frame(batch.lines, batch.rows, batch.extras))
                blank, reader.blank_lines = reader.blank_lines, 0
                parts.extend([*frames, *self.side_rows(batch, blank, counts)])
        return _concat(parts)

    def frame_block(self, table: pa.Table) -> pa.Table:
        """Clean and key one block of records parsed on the driver (`_line` + fields)."""
        frame = pl.DataFrame(pl.from_arrow(table))
        frames, counts = self.clean(frame)
        meta = {"read": 0, "bytes": 0, "blank_lines": 0, "counts": dict(counts)}
        return _concat([*frames, _frame("meta", _line=[0], _payload=[orjson.dumps(meta)])])


def _concat(parts: list[pl.DataFrame]) -> pa.Table:
    return pl.concat(parts).to_arrow() if parts else _frame("meta", _line=[]).to_arrow()


def _kind(table: pa.Table, kinds: tuple[str, ...], columns: list[str]) -> pa.Table:
    frame = pl.DataFrame(pl.from_arrow(table))
    return frame.filter(pl.col("_kind").is_in(list(kinds))).select(columns).to_arrow()


# -- shuffles: exact keys, LSH buckets, pair verification ---------------------------------------------------------


def _with_part(column: str, parts: int) -> Callable[[pa.Table], pa.Table]:
    def add(table: pa.Table) -> pa.Table:
        """A `_part` column: the key modulo the number of partitions the shuffle groups by."""
        return table.append_column("_part", pa.array((table[column].to_numpy() % parts).astype(np.int64)))

    return add


def _first_of_key(table: pa.Table) -> pa.Table:
    """One key partition: every record after the first of its key, with the line it duplicates."""
    frame = pl.DataFrame(pl.from_arrow(table)).sort("_exact", "_line")
    first = pl.col("_line").first().over("_exact").alias("duplicate_of")
    return (
        frame.with_columns(first)
        .filter(pl.col("_line") != pl.col("duplicate_of"))
        .select("_line", "duplicate_of")
        .to_arrow()
    )


def _bucket_pairs(table: pa.Table) -> pa.Table:
    """One key partition of (band, key, line) rows: the candidate pairs of its buckets, coded a << 32 | b (a < b)."""
    frame = pl.DataFrame(pl.from_arrow(table)).sort("_band", "_key", "_line")
    codes = [np.empty(0, dtype=np.uint64)]
    for (_band,), part in frame.group_by("_band", maintain_order=True):
        lines = part["_line"].to_numpy()
        codes.append(bucket_pair_codes(lines, part["_key"].to_numpy()))
    return pa.table({"code": pa.array(np.unique(np.concatenate(codes)), pa.uint64())})


def _verify_pairs(threshold: float) -> Callable[[pa.Table], pa.Table]:
    def verify(table: pa.Table) -> pa.Table:
        """One partition of (pair, line, size, set) rows, two a pair: the pairs at or above the threshold."""
        frame = pl.DataFrame(pl.from_arrow(table)).sort("_pair", "_line")
        sets = frame["_set"]
        offsets = np.r_[0, np.cumsum(sets.list.len().to_numpy())]
        values = sets.explode().to_numpy().astype(np.uint32) if frame.height else np.empty(0, np.uint32)
        n = frame.height // 2
        pairs = np.stack([np.arange(n) * 2, np.arange(n) * 2 + 1], 1)
        sims = exact_jaccard(values, offsets, pairs)
        lines, sizes = frame["_line"].to_numpy(), frame["_size"].to_numpy()
        keep = sims >= threshold
        return pa.table(
            {
                "a": lines[0::2][keep],
                "b": lines[1::2][keep],
                "size_a": sizes[0::2][keep],
                "size_b": sizes[1::2][keep],
                "similarity": sims[keep],
            }
        )

    return verify


def _collect(ds: Any) -> pl.DataFrame:
    tables = [pl.DataFrame(pl.from_arrow(t)) for t in ds.iter_batches(batch_format="pyarrow", batch_size=None)]
    tables = [t for t in tables if t.width]
    return pl.concat(tables) if tables else pl.DataFrame()


# -- the driver ---------------------------------------------------------------------------------------------------


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
    kind: str = "sft",
    scores: Path | None = None,
    extra_fields: bool = True,
    address: str | None = None,
    block_bytes: int | None = None,
    num_cpus: int | None = None,
) -> CleanResult:
    """`workbench.clean.dispatch.run` on Ray Data: the same arguments and output set, plus where the cluster is
    (`address`; None starts a local one with `num_cpus` cores) and how many bytes of JSON Lines a task reads
    (default: enough blocks for two tasks a core, 1 to 32 MiB each)."""
    started = time.time()
    if profile.dedup.semantic is not None:
        raise WbError(f"profile {profile.name}: semantic dedup runs on the local engine only; drop --engine ray")
    if kind == "preference":
        raise WbError(f"{input_path}: preference data is cleaned by the local engine only; drop --engine ray")
    if scores is not None or score_rules(profile.enabled_rules()):
        raise WbError(f"profile {profile.name}: score rules run on the local engine only; drop --engine ray")
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
        text.chinese_converter(profile.normalize.chinese)
    stages = DedupStages.build(profile.dedup, profile.decontaminate, list(against or []))
    by_range = (
        reader.dataset is None
        and not is_stream(Path(input_path))
        and reader.info.format == "jsonl"
        and reader.info.compression == "none"
        and reader.info.encoding == "utf-8"
    )
    stats = CleanTally()
    phase = on_phase or (lambda _: None)
    with session(address, num_cpus) as ray:
        if by_range:
            for _ in reader:  # the mapping is fixed from the first records, as the local reader does
                if reader.mapping is not None:
                    break
        work = BlockWork(
            profile=profile,
            evals=stages.evals,
            exact=profile.dedup.exact,
            near=profile.dedup.near,
            path=str(input_path),
            overrides=dict(overrides or {}),
            mapping=reader.mapping or resolve_mapping((), overrides),
            duplicate_keys=duplicate_keys,
            batch_size=batch_size,
            extra_fields=extra_fields,
        )
        parts = max(2, int(ray.cluster_resources().get("CPU", 1)) * 2)
        side_tables: list[pl.DataFrame] = []
        if by_range:
            size = Path(input_path).stat().st_size
            # At most BLOCK_BYTES a task, and two tasks a core where the input allows (1 MiB at least).
            block = block_bytes or max(MIN_BLOCK_BYTES, min(BLOCK_BYTES, -(-size // parts)))
            ranges = byte_ranges(Path(input_path), block)
            path = str(input_path)
            items = [{"i": i, "start": a, "end": b} for i, (a, b) in enumerate(ranges)]
            counted = ray.data.from_items(items, override_num_blocks=len(items)).map(
                lambda r: {**r, "n": count_lines(Path(path), r["start"], r["end"])}
            )
            ends = np.cumsum([r["n"] for r in sorted(counted.take_all(), key=lambda r: r["i"])])
            firsts = np.r_[1, ends[:-1] + 1].tolist()
            items = [{"start": a, "end": b, "first": f} for (a, b), f in zip(ranges, firsts, strict=True)]
            blocks = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                work.range_block, batch_format="pyarrow", batch_size=None
            )
        else:
            refs = []
            for batch in reader:
                refs.append(ray.put(rows_to_frame(batch.lines, batch.rows, batch.extras).to_arrow()))
                side_tables.extend(work.side_rows(batch, 0, Counter()))
            blocks = ray.data.from_arrow_refs(refs).map_batches(
                work.frame_block, batch_format="pyarrow", batch_size=None
            )
        phase("cleaning blocks")
        blocks = blocks.materialize()

        files = [paths.kept, paths.dropped, paths.rejects, paths.stats]
        with OutputSet(files, manifest=paths.manifest) as outputs:
            kept_f, dropped_f, rejects_f = (outputs.open(p) for p in (paths.kept, paths.dropped, paths.rejects))
            side_cols = ["_kind", "_line", "_payload", "_rule"]
            sides = blocks.map_batches(
                lambda t: _kind(t, SIDE_KINDS, side_cols), batch_format="pyarrow", batch_size=None
            )
            conversations: list[tuple[int, bytes]] = []
            reported: list[tuple[int, bytes]] = []
            leaked: set[str] = set()
            side_iter = (
                pl.DataFrame(pl.from_arrow(t)) for t in sides.iter_batches(batch_format="pyarrow", batch_size=None)
            )
            for side in [*side_tables, *side_iter]:
                for kind, line, payload, rule in side.select(side_cols).iter_rows():
                    if kind == "dropped":
                        dropped_f.write(payload)
                        stats.dropped_by_rule[rule] += 1
                    elif kind == "reject":
                        rejects_f.write(payload)
                        stats.rejected += 1
                        stats.rejected_by_kind[rule] += 1
                    elif kind == "conv":
                        conversations.append((line, payload))
                    elif kind == "reported":
                        reported.append((line, payload))
                    elif kind == "leak":
                        leaked.add(payload.decode())
                    elif kind == "meta":
                        meta = orjson.loads(payload)
                        stats.read += meta["read"]
                        stats.blank_lines += meta["blank_lines"]
                        stats.counts.update(meta["counts"])
                        if on_batch is not None and meta["read"]:
                            on_batch(meta["bytes"], meta["read"])
            for _, payload in sorted(reported, key=lambda r: r[0]):
                line, rule, reason, later = orjson.loads(payload)
                stats.reported_by_rule[rule] += 1
                if len(stats.reported) < 1000:
                    stats.reported.append(
                        {"line": line, "rule": rule, "reason": reason, "dropped_by_a_later_rule": later}
                    )
            if stages.evals is not None:
                for item in leaked:
                    stages.evals.leaked.setdefault(item.rsplit(":", 1)[0], set()).add(item)

            exact_drops = pl.DataFrame(schema={"_line": pl.Int64, "duplicate_of": pl.Int64})
            if work.exact is not None:
                phase("exact duplicates")
                keyed = blocks.map_batches(
                    lambda t: _kind(t, ("kept",), ["_line", "_exact"]), batch_format="pyarrow", batch_size=None
                ).map_batches(_with_part("_exact", parts), batch_format="pyarrow", batch_size=None)
                found = _collect(
                    keyed.groupby("_part", num_partitions=parts).map_groups(_first_of_key, batch_format="pyarrow")
                )
                if found.height:
                    exact_drops = found.sort("_line")

            near_drops = pl.DataFrame(schema={"_line": pl.Int64, "duplicate_of": pl.Int64, "similarity": pl.Float64})
            if work.near is not None:
                phase("near duplicates")
                near_drops = _near(ray, blocks, exact_drops["_line"].to_numpy(), work.near, parts)

            phase("writing kept records")
            resolved = near_drops.with_columns(pl.lit("near_duplicate").alias("_rule"))
            finish = _final_filter(exact_drops, resolved)
            final = blocks.map_batches(finish, batch_format="pyarrow", batch_size=None)
            for table in final.iter_batches(batch_format="pyarrow", batch_size=None):
                frame = pl.DataFrame(pl.from_arrow(table))
                kept = frame.filter(pl.col("_kind") == "kept")
                for payload in kept["_payload"]:
                    kept_f.write(payload)
                stats.add_kept(kept)
                dropped = frame.filter(pl.col("_kind") == "dropped")
                for payload, rule in dropped.select("_payload", "_rule").iter_rows():
                    dropped_f.write(payload)
                    stats.dropped_by_rule[rule] += 1
            for _, payload in sorted(conversations, key=lambda c: c[0]):
                kept_f.write(payload)
            stats.kept += len(conversations)
            stats.tool_conversations = len(conversations)
            if not by_range:
                stats.blank_lines = reader.blank_lines
            contamination = stages.evals.report() if stages.evals is not None else None
            names = stages.names
            summary = publish(
                outputs,
                paths,
                stats,
                profile,
                names,
                reader,
                input_path,
                against,
                started,
                command,
                contamination=contamination,
                config=extra_config(extra_fields),
            )
    return CleanResult(stats=stats, summary=summary, paths=paths, mapping=work.mapping, source=reader.info)


def _near(ray: Any, blocks: Any, exact_lines: np.ndarray, cfg: NearConfig, parts: int) -> pl.DataFrame:
    """Near-duplicate drops (`_line`, `duplicate_of`, `similarity`) among the kept records not dropped as exact
    duplicates: LSH buckets by shuffle, verification by shuffle, resolution here."""
    empty = pl.DataFrame(schema={"_line": pl.Int64, "duplicate_of": pl.Int64, "similarity": pl.Float64})
    gone = pl.Series(exact_lines, dtype=pl.Int64).implode()

    def survivors(table: pa.Table, columns: list[str]) -> pl.DataFrame:
        frame = pl.DataFrame(pl.from_arrow(table))
        return frame.filter((pl.col("_kind") == "kept") & ~pl.col("_line").is_in(gone)).select(columns)

    def band_rows(table: pa.Table) -> pa.Table:
        frame = survivors(table, ["_line", "_bands"])
        rows = frame.with_columns(pl.int_ranges(pl.col("_bands").list.len()).cast(pl.List(pl.UInt16)).alias("_band"))
        rows = rows.explode("_bands", "_band").rename({"_bands": "_key"})
        return rows.with_columns((pl.col("_key") % parts).cast(pl.Int64).alias("_part")).to_arrow()

    banded = blocks.map_batches(band_rows, batch_format="pyarrow", batch_size=None)
    codes = _collect(banded.groupby("_part", num_partitions=parts).map_groups(_bucket_pairs, batch_format="pyarrow"))
    if codes.height == 0:
        return empty
    code = np.unique(codes["code"].to_numpy().astype(np.uint64))
    a = (code >> np.uint64(32)).astype(np.int64)
    b = (code & np.uint64(0xFFFFFFFF)).astype(np.int64)
    ends = np.r_[a, b]
    pair_of = np.r_[np.arange(len(code)), np.arange(len(code))]
    order = np.argsort(ends, kind="stable")
    ends, pair_of = ends[order], pair_of[order]
    ends_ref = ray.put((ends, pair_of))

    def pair_rows(table: pa.Table) -> pa.Table:
        """Each record in a candidate pair, once per pair it is in, with its shingle set and size."""
        e, p = ray.get(ends_ref)
        frame = survivors(table, ["_line", "_size", "_set"])
        lines = frame["_line"].to_numpy()
        lo, hi = np.searchsorted(e, lines, "left"), np.searchsorted(e, lines, "right")
        count = hi - lo
        take = np.repeat(np.arange(len(lines)), count)
        spans = [np.arange(x, y) for x, y in zip(lo[count > 0], hi[count > 0], strict=True)]
        pos = np.concatenate(spans) if spans else np.empty(0, dtype=np.int64)
        pair = p[pos.astype(np.int64)] if len(pos) else np.empty(0, dtype=np.int64)
        rows = frame.select(pl.all().gather(take)).with_columns(pl.Series("_pair", pair, dtype=pl.Int64))
        return rows.with_columns((pl.col("_pair") % parts).alias("_part")).to_arrow()

    paired = blocks.map_batches(pair_rows, batch_format="pyarrow", batch_size=None)
    verified = _collect(
        paired.groupby("_part", num_partitions=parts).map_groups(_verify_pairs(cfg.threshold), batch_format="pyarrow")
    )
    if verified.height == 0:
        return empty
    lines = np.unique(np.r_[verified["a"].to_numpy(), verified["b"].to_numpy()])
    sizes = np.zeros(len(lines), dtype=np.int64)
    sizes[np.searchsorted(lines, verified["a"].to_numpy())] = verified["size_a"].to_numpy()
    sizes[np.searchsorted(lines, verified["b"].to_numpy())] = verified["size_b"].to_numpy()
    pairs = np.stack(
        [np.searchsorted(lines, verified["a"].to_numpy()), np.searchsorted(lines, verified["b"].to_numpy())], 1
    )
    rows = greedy_drops(lines, sizes, pairs, verified["similarity"].to_numpy(), cfg.keep)
    return pl.DataFrame(rows, schema=empty.schema, orient="row")


def _final_filter(exact_drops: pl.DataFrame, resolved: pl.DataFrame) -> Callable[[pa.Table], pa.Table]:
    def finish(table: pa.Table) -> pa.Table:
        """The kept records of a block as the lines the local engine writes: kept, or dropped as a duplicate."""
        frame = pl.DataFrame(pl.from_arrow(table))
        kept = frame.filter(pl.col("_kind") == "kept").select(STAGE_COLUMNS)
        out: list[pl.DataFrame] = []
        dup = kept.join(exact_drops, on="_line", how="left", maintain_order="left")["duplicate_of"]
        hit = dup.is_not_null()
        if hit.any():
            dupes = kept.filter(hit).with_columns(dup.filter(hit).alias("duplicate_of"))
            tagged = _tag(dupes, "exact_duplicate", pl.format("exact duplicate of line {}", pl.col("duplicate_of")))
            out.append(_dropped_frame(tagged))
            kept = kept.filter(~hit)
        kept, near = DedupStages.split(kept, resolved)
        if near.height:
            out.append(_dropped_frame(near))
        payload = record_lines(kept)
        out.append(_frame("kept", _line=kept["_line"], _output_tokens=kept["_output_tokens"], _payload=payload))
        return _concat(out)

    return finish
