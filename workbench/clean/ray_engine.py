"""`wb clean --engine ray`: the cleaning driver's steps (`clean.driver`) as Ray Data operations, for every record
shape (SFT records, preference pairs, KTO examples).

The per-record work runs in Ray tasks on blocks of the input (`clean.ray_blocks`); the few decisions that need
every record are shuffles (`dedup.ray_shuffles`) or small computations on the driver, which writes the output set:

1. **read + clean** (`map_batches`, one block a task): an uncompressed UTF-8 JSON Lines file of SFT records is
   split into byte ranges on line boundaries (`byte_ranges`; the line numbers of each range come from a first
   `map` that counts line ends), and each task parses its range with the same reader (`RecordReader.read_range`)
   and mapping as the local engine. Other inputs (other formats, compressed files, standard input, preference
   data) are read on the driver with the shape's reader and handed to the tasks as Arrow blocks. Each task runs
   the shape's cleaning (normalise, PII, rules, with the score columns the score rules read) and, for SFT
   records, decontamination and the dedup keys. The blocks are materialised in the object store.
2. **file-level rules** (preference data: `contradictory_pair`): the blocks' contradiction keys come to the
   driver, which finds the contradicted records; a second `map_batches` drops them, then decontaminates and
   keys what is left, as the local driver does after its last batch.
3. **exact and near duplicates** by shuffles, resolved on the driver (`dedup.ray_shuffles`).
4. **final filter** (`map_batches`): exact and near drops are tagged with the local engine's reasons; the driver
   streams the kept and dropped lines into the output set (`OutputSet`), then writes stats and the manifest
   with the local engine's code (`driver.finish`).

Kept records come out in input order and every file holds what the local engine writes (the dropped file in
another order: sort by `line` to compare). Semantic dedup (one embedding model over all records) is local only.
Nothing here is imported unless `--engine ray` is asked for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import polars as pl
import pyarrow as pa

from workbench.clean.driver import finish, start
from workbench.clean.output import REPORTED_LISTED, CleanResult, CleanTally
from workbench.clean.profile import Profile
from workbench.clean.ray_blocks import SIDE_KINDS, BlockWork, concat, dropped_frame, frame, of_kind, side_rows
from workbench.clean.score_rules import scores_read
from workbench.clean.shapes import shape_for
from workbench.dedup.ray_shuffles import exact_drops, near_drops
from workbench.dedup.stages import DedupStages, _tag
from workbench.errors import WbError
from workbench.io.options import DuplicateKeys, resolve_mapping
from workbench.io.streams import byte_ranges, count_lines, is_stream
from workbench.output import OutputSet

BLOCK_BYTES = 32 << 20  # most bytes of JSON Lines a read task parses (about 60,000 short records)
MIN_BLOCK_BYTES = 1 << 20


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
    kind: Literal["auto", "sft", "preference"] = "auto",
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
    shape = shape_for(input_path, profile, overrides, kind, scores, extra_fields)
    reader, paths = start(shape, input_path, output, profile, batch_size, duplicate_keys, split)
    stages = DedupStages.build(profile.dedup, profile.decontaminate, list(against or []))
    by_range = (
        shape.kind == "sft"
        and reader.dataset is None
        and not is_stream(Path(input_path))
        and reader.info.format == "jsonl"
        and reader.info.compression == "none"
        and reader.info.encoding == "utf-8"
    )
    stats = CleanTally()
    phase = on_phase or (lambda _: None)
    with session(address, num_cpus) as ray:
        side_tables: list[pl.DataFrame] = []
        refs = []
        if by_range:
            for _ in reader:  # the mapping is fixed from the first records, as the local reader does
                if reader.mapping is not None:
                    break
        else:
            empty = None
            for batch in shape.batches(reader):
                if batch.records:
                    refs.append(ray.put(batch.frame(0, batch.records).to_arrow()))
                elif not refs and empty is None:
                    empty = batch.frame(0, 0)
                side_tables.extend(side_rows(batch, 0, Counter()))
            if not refs and empty is not None:
                refs.append(ray.put(empty.to_arrow()))
        # Built once the file is read: a shape learns its kind (pairs or KTO) from the first record.
        work = BlockWork(
            shape=shape,
            evals=stages.evals,
            exact=profile.dedup.exact,
            near=profile.dedup.near,
            path=str(input_path),
            overrides=dict(overrides or {}),
            mapping=reader.mapping or resolve_mapping((), overrides),
            duplicate_keys=duplicate_keys,
            batch_size=batch_size,
            extra_fields=extra_fields,
            scored=bool(scores_read(profile.enabled_rules())),
        )
        parts = max(2, int(ray.cluster_resources().get("CPU", 1)) * 2)
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
            blocks = ray.data.from_arrow_refs(refs).map_batches(
                work.frame_block, batch_format="pyarrow", batch_size=None
            )
        phase("cleaning blocks")
        blocks = blocks.materialize()

        files = [paths.kept, paths.dropped, paths.rejects, paths.stats]
        with OutputSet(files, manifest=paths.manifest) as outputs:
            kept_f, dropped_f, rejects_f = (outputs.open(p) for p in (paths.kept, paths.dropped, paths.rejects))
            sides = _Sides(stats, dropped_f, rejects_f, on_batch)
            sides.read([*side_tables, *_side_tables(blocks)])
            if shape.stage_all:
                phase("contradictions and duplicates")
                drops = shape.file_drops(sides.keys)
                blocks = blocks.map_batches(work.restage(drops), batch_format="pyarrow", batch_size=None).materialize()
                sides.read(_side_tables(blocks))
            sides.finish(stages)

            found_exact = pl.DataFrame(schema={"_line": pl.Int64, "duplicate_of": pl.Int64})
            if work.exact is not None:
                phase("exact duplicates")
                found_exact = exact_drops(blocks, parts)
            found_near = pl.DataFrame(schema={"_line": pl.Int64, "duplicate_of": pl.Int64, "similarity": pl.Float64})
            if work.near is not None:
                phase("near duplicates")
                found_near = near_drops(ray, blocks, found_exact["_line"].to_numpy(), work.near, parts)

            phase("writing kept records")
            resolved = found_near.with_columns(pl.lit("near_duplicate").alias("_rule"))
            final = blocks.map_batches(
                _final_filter(work, found_exact, resolved), batch_format="pyarrow", batch_size=None
            )
            for table in final.iter_batches(batch_format="pyarrow", batch_size=None):
                done = pl.DataFrame(pl.from_arrow(table))
                kept = done.filter(pl.col("_kind") == "kept")
                for payload in kept["_payload"]:
                    kept_f.write(payload)
                stats.add_kept(kept)
                shape.add_kept(kept)
                dropped = done.filter(pl.col("_kind") == "dropped")
                for payload, rule in dropped.select("_payload", "_rule").iter_rows():
                    dropped_f.write(payload)
                    stats.dropped_by_rule[rule] += 1
            for _, payload in sorted(sides.conversations, key=lambda c: c[0]):
                kept_f.write(payload)
            stats.kept += len(sides.conversations)
            stats.tool_conversations = len(sides.conversations)
            if not by_range:
                stats.blank_lines = reader.blank_lines
            summary = finish(
                shape, outputs, paths, stats, profile, stages, reader, input_path, against, started, command
            )
    mapping = work.mapping if shape.kind == "sft" else shape.mapping
    return CleanResult(stats=stats, summary=summary, paths=paths, mapping=mapping, source=reader.info)


def _side_tables(blocks: Any) -> Iterator[pl.DataFrame]:
    cols = ["_kind", "_line", "_payload", "_rule", "_fwd", "_rev"]
    sides = blocks.map_batches(lambda t: of_kind(t, SIDE_KINDS, cols), batch_format="pyarrow", batch_size=None)
    return (pl.DataFrame(pl.from_arrow(t)) for t in sides.iter_batches(batch_format="pyarrow", batch_size=None))


class _Sides:
    """The driver's pass over the blocks' side rows: drops and rejects are written and counted as they come;
    conversations, reported records, leaks and file-level keys are kept for later."""

    def __init__(
        self, stats: CleanTally, dropped_f: Any, rejects_f: Any, on_batch: Callable[[int, int], None] | None
    ) -> None:
        self.stats, self.dropped_f, self.rejects_f, self.on_batch = stats, dropped_f, rejects_f, on_batch
        self.conversations: list[tuple[int, bytes]] = []
        self.reported: list[tuple[int, bytes]] = []
        self.leaked: set[str] = set()
        self.keys: list[pl.DataFrame] = []

    def read(self, tables: Any) -> None:
        stats = self.stats
        for side in tables:
            found = side.filter(pl.col("_kind") == "keys")
            if found.height:
                self.keys.append(found.select("_line", pl.col("_fwd").alias("fwd"), pl.col("_rev").alias("rev")))
            for kind, line, payload, rule in side.select("_kind", "_line", "_payload", "_rule").iter_rows():
                if kind == "dropped":
                    self.dropped_f.write(payload)
                    stats.dropped_by_rule[rule] += 1
                elif kind == "reject":
                    self.rejects_f.write(payload)
                    stats.rejected += 1
                    stats.rejected_by_kind[rule] += 1
                elif kind == "conv":
                    self.conversations.append((line, payload))
                elif kind == "reported":
                    self.reported.append((line, payload))
                elif kind == "leak":
                    self.leaked.add(payload.decode())
                elif kind == "meta":
                    meta = orjson.loads(payload)
                    stats.read += meta["read"]
                    stats.blank_lines += meta["blank_lines"]
                    stats.counts.update(meta["counts"])
                    if self.on_batch is not None and meta["read"]:
                        self.on_batch(meta["bytes"], meta["read"])

    def finish(self, stages: DedupStages) -> None:
        """Reported records in line order into the stats; leaked eval items into the eval index's report."""
        for _, payload in sorted(self.reported, key=lambda r: r[0]):
            line, rule, reason, later = orjson.loads(payload)
            self.stats.reported_by_rule[rule] += 1
            if len(self.stats.reported) < REPORTED_LISTED:
                self.stats.reported.append(
                    {"line": line, "rule": rule, "reason": reason, "dropped_by_a_later_rule": later}
                )
        if stages.evals is not None:
            for item in self.leaked:
                stages.evals.leaked.setdefault(item.rsplit(":", 1)[0], set()).add(item)


def _final_filter(work: BlockWork, exact: pl.DataFrame, resolved: pl.DataFrame) -> Callable[[pa.Table], pa.Table]:
    shape = work.shape

    def step(table: pa.Table) -> pa.Table:
        """The kept records of a block as the lines the local engine writes: kept, or dropped as a duplicate."""
        blocks = pl.DataFrame(pl.from_arrow(table))
        kept = blocks.filter(pl.col("_kind") == "kept").select(work.kept_columns)
        out: list[pl.DataFrame] = []
        dup = kept.join(exact, on="_line", how="left", maintain_order="left")["duplicate_of"]
        hit = dup.is_not_null()
        if hit.any():
            dupes = kept.filter(hit).with_columns(dup.filter(hit).alias("duplicate_of"))
            tagged = _tag(dupes, "exact_duplicate", pl.format("exact duplicate of line {}", pl.col("duplicate_of")))
            out.append(dropped_frame(shape, tagged))
            kept = kept.filter(~hit)
        # As locally: records waiting for the near-duplicate decision keep only the shape's staged columns.
        kept, near = DedupStages.split(kept.drop("score", strict=False), resolved)
        if near.height:
            out.append(dropped_frame(shape, near))
        answers = {c: kept[c] for c in ("chosen", "rejected", "label") if c in kept.columns}
        lines = shape.kept_lines(kept)
        out.append(frame("kept", _line=kept["_line"], _output_tokens=kept["_output_tokens"], _payload=lines, **answers))
        return concat(out)

    return step
