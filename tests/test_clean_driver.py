"""The one cleaning driver (`workbench.clean.driver`): a record shape only decides, the driver reads, counts, writes
every drop and reject, runs the dedup stages and publishes the output set. A toy shape defined here (notes: one
`text` field, dropped when shorter than three characters) gets all of that without a line of driver code."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import IO

import orjson
import polars as pl

from tests.conftest import read_jsonl, write_jsonl
from workbench.clean import driver
from workbench.clean.driver import Finish, Shape, ShapeBatch
from workbench.clean.output import OutputPaths
from workbench.clean.pipeline import CleanedBatch
from workbench.clean.profile import Profile, from_dict
from workbench.io.options import DuplicateKeys
from workbench.io.reader import RecordReader, Reject, raw_text

SCHEMA = {"_line": pl.Int64, "text": pl.String}


class Notes(Shape):
    kind = "notes"

    def open(self, path: Path, batch_size: int, duplicate_keys: DuplicateKeys, split: str | None) -> RecordReader:
        return RecordReader(path, batch_size=batch_size, duplicate_keys=duplicate_keys, split=split)

    def batches(self, reader: RecordReader) -> Iterator[ShapeBatch]:
        for items, nbytes in reader.iter_items():
            good = [(n, o["text"]) for n, o, _ in items if isinstance(o, dict) and isinstance(o.get("text"), str)]
            rejects = [
                Reject(n, "line", "text", "no_text", "a note needs a text", raw_text(o, raw))
                for n, o, raw in items
                if not (isinstance(o, dict) and isinstance(o.get("text"), str))
            ]
            frame = pl.DataFrame({"_line": [n for n, _ in good], "text": [t for _, t in good]}, schema=SCHEMA)
            yield ShapeBatch(len(items), nbytes, frame.height, partial(_slice, frame), rejects)

    def clean(self, frame: pl.DataFrame) -> CleanedBatch:
        short = pl.col("text").str.len_chars() < 3
        frame = frame.with_columns(pl.col("text").str.len_chars().cast(pl.Int64).alias("_output_tokens"))
        dropped = frame.filter(short).with_columns(
            pl.lit("too_short").alias("_rule"),
            pl.format("{} characters", pl.col("text").str.len_chars()).alias("_reason"),
        )
        reported = pl.DataFrame(
            schema={"_line": pl.Int64, "_flag": pl.String, "_flag_reason": pl.String, "_rule": pl.Boolean}
        )
        return CleanedBatch(frame.filter(~short), dropped, Counter({"normalized": 0}), reported)

    def write_dropped(self, f: IO[bytes], dropped: pl.DataFrame) -> None:
        for line, rule, reason, text in dropped.select("_line", "_rule", "_reason", "text").iter_rows():
            f.write(orjson.dumps({"line": line, "rule": rule, "reason": reason, "record": {"text": text}}) + b"\n")

    def kept_lines(self, kept: pl.DataFrame) -> list[bytes]:
        return [orjson.dumps({"text": t}) + b"\n" for t in kept["text"]]

    @property
    def stage_columns(self) -> list[str]:
        return ["_line", "text", "_output_tokens"]

    def finish(self, profile: Profile) -> Finish:
        return Finish(config={"kind": self.kind})


def _slice(frame: pl.DataFrame, start: int, end: int) -> pl.DataFrame:
    return frame.slice(start, end - start)


def test_a_new_record_shape_gets_accounting_drops_rejects_and_the_output_set_from_the_driver(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "notes.jsonl", [{"text": "hello"}, {"text": "hi"}, {"title": "x"}, {"text": "你好呀"}])
    result = driver.run(Notes(), src, tmp_path / "out.jsonl", from_dict({"name": "t", "rules": {}}), batch_size=2)
    s = result.summary
    assert (s["read"], s["kept"], s["dropped"], s["rejected"]) == (4, 2, 1, 1) and s["invariant_holds"]
    assert s["dropped_by_rule"] == {"pii": 0, "too_short": 1} and s["rejected_by_kind"] == {"no_text": 1}
    assert read_jsonl(tmp_path / "out.jsonl") == [{"text": "hello"}, {"text": "你好呀"}]
    paths = OutputPaths.for_output(tmp_path / "out.jsonl")
    assert read_jsonl(paths.dropped) == [
        {"line": 2, "rule": "too_short", "reason": "2 characters", "record": {"text": "hi"}}
    ]
    assert [r["line"] for r in read_jsonl(paths.rejects)] == [3]
    manifest = json.loads(paths.manifest.read_text())
    assert manifest["config"]["kind"] == "notes" and set(manifest["outputs"]) == {"kept", "dropped", "rejects", "stats"}
