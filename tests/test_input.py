"""Input as a hostile or unlucky user hands it over: one-line JSON documents, UTF-16/32, duplicate keys, bidi
controls, a --map to a missing column, standard input, pipes and FIFOs."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import read_jsonl, write_jsonl
from test_io import PLAIN, RECORDS, ROWS, jsonl, put, read_all

from workbench.clean.dispatch import run
from workbench.clean.profile import load
from workbench.errors import WbError
from workbench.io.reader import RecordReader
from workbench.io.sniff import sniff

SHAREGPT = {"conversations": [{"from": "human", "value": "Capital of France?"}, {"from": "gpt", "value": "Paris."}]}


def wb_process(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=False,
    )


# -- JSON documents of any layout ------------------------------------------------------------------------------


def test_a_one_line_object_holding_the_records_is_read_as_json(tmp_path: Path) -> None:
    path = put(tmp_path, "data.jsonl", json.dumps({"data": RECORDS}, ensure_ascii=False))
    got = read_all(path)
    assert sniff(path).format == "json" and got.rows == ROWS and got.rejects == []


def test_an_object_whose_first_line_opens_the_list_with_a_record_is_read_as_json(tmp_path: Path) -> None:
    lines = [json.dumps(r, ensure_ascii=False) for r in RECORDS]
    text = '{"train": [' + lines[0] + ",\n" + ",\n".join(lines[1:]) + "\n]}\n"
    got = read_all(put(tmp_path, "data.json", text))
    assert got.rows == ROWS and [(r.line) for r in got.rejects] == []


def test_a_one_record_conversation_file_is_still_json_lines(tmp_path: Path) -> None:
    path = put(tmp_path, "one.jsonl", json.dumps(SHAREGPT))
    assert sniff(path).format == "jsonl"
    assert read_all(path).rows == [("Capital of France?", "", "Paris.", "", [])]


# -- Unicode encodings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_utf16_and_utf32_with_a_bom_read_like_utf8(tmp_path: Path, encoding: str, fmt: str) -> None:
    bom = {"utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff", "utf-32-le": b"\xff\xfe\x00\x00"}
    bom["utf-32-be"] = b"\x00\x00\xfe\xff"
    data = bom[encoding] + PLAIN[fmt].decode("utf-8").encode(encoding)
    got = read_all(put(tmp_path, f"wide.{fmt}", data))
    assert got.rows == ROWS and got.rejects == []
    assert got.reader.info.encoding == encoding[:6]


def test_utf16_in_gzip_reads_like_utf8(tmp_path: Path) -> None:
    data = gzip.compress(b"\xff\xfe" + PLAIN["jsonl"].decode().encode("utf-16-le"))
    assert read_all(put(tmp_path, "wide.jsonl.gz", data)).rows == ROWS


def test_broken_utf16_is_refused_naming_the_encoding(tmp_path: Path) -> None:
    good = b"\xff\xfe" + PLAIN["jsonl"].decode().encode("utf-16-le")
    path = put(tmp_path, "bad.jsonl", good[:40] + b"\x00\xdc" + good[40:])  # a lone low surrogate
    with pytest.raises(WbError, match=r"UTF-16 byte-order mark but byte \d+ is not valid UTF-16"):
        read_all(path)


def test_utf16_clean_keeps_every_record_and_rejects_none(tmp_path: Path) -> None:
    src = put(tmp_path, "wide.jsonl", b"\xff\xfe" + PLAIN["jsonl"].decode().encode("utf-16-le"))
    s = run(src, tmp_path / "clean.jsonl", load("default")).summary
    assert (s["read"], s["rejected"], s["input"]["encoding"]) == (4, 0, "utf-16")


# -- duplicate keys ----------------------------------------------------------------------------------------------


def test_an_object_naming_a_key_twice_is_rejected_as_duplicate_key(tmp_path: Path) -> None:
    dup = '{"instruction": "Capital of France?", "output": "Paris.", "output": "Lyon."}'
    nested = (
        '{"messages": [{"role": "user", "content": "hi", "content": "bye"}, {"role": "assistant", "content": "a"}]}'
    )
    tricky = json.dumps({"instruction": 'say "x": twice', "output": 'a "b": c', "input": '"k" : v'})
    got = read_all(put(tmp_path, "dup.jsonl", "\n".join([dup, jsonl(RECORDS[0]).decode().strip(), nested, tricky])))
    assert [(r.line, r.field, r.kind) for r in got.rejects] == [
        (1, "output", "duplicate_key"),
        (3, "content", "duplicate_key"),
    ]
    assert "'output' appears twice" in got.rejects[0].error
    assert got.rows == [ROWS[0], ('say "x": twice', '"k" : v', 'a "b": c', "", [])]


def test_duplicate_keys_may_be_allowed_and_the_last_value_wins(tmp_path: Path) -> None:
    path = put(tmp_path, "dup.jsonl", '{"instruction": "Q?", "output": "first", "output": "last"}\n')
    got = RecordReader(path, duplicate_keys="last")
    assert [row for batch in got for row in batch.rows] == [("Q?", "", "last", "", [])]


def test_a_json_array_item_naming_a_key_twice_is_rejected_by_its_index(tmp_path: Path) -> None:
    text = '[{"instruction": "a", "output": "b"}, {"instruction": "c", "instruction": "d", "output": "e"}]'
    got = read_all(put(tmp_path, "dup.json", text))
    assert got.rows == [("a", "", "b", "", [])]
    assert [(r.line, r.field, r.kind) for r in got.rejects] == [(2, "instruction", "duplicate_key")]


# -- bidi controls -----------------------------------------------------------------------------------------------


def test_bidi_controls_are_removed_and_counted_while_rtl_text_and_joiners_stay(tmp_path: Path) -> None:
    records = [
        {"instruction": "Check the file name", "input": "", "output": "invoice\u202egpj.exe is safe"},
        {"instruction": "\u2066isolated\u2069 text", "input": "", "output": "שלום עולם مرحبا 👨\u200d👩\u200d👧"},
        {"instruction": "Plain", "input": "", "output": "Nothing to remove here."},
    ]
    result = run(write_jsonl(tmp_path / "raw.jsonl", records), tmp_path / "clean.jsonl", load("default"))
    kept = read_jsonl(tmp_path / "clean.jsonl")
    assert [r["output"] for r in kept] == [
        "invoicegpj.exe is safe",
        "שלום עולם مرحبا 👨\u200d👩\u200d👧",
        records[2]["output"],
    ]
    assert kept[1]["instruction"] == "isolated text"
    assert result.summary["modified"]["bidi_controls_removed"] == 2


# -- --map to a missing column -----------------------------------------------------------------------------------


def test_map_to_a_column_the_file_lacks_is_one_line_before_anything_is_written(tmp_path: Path, wb: Any) -> None:
    src = write_jsonl(tmp_path / "raw.jsonl", RECORDS)
    result = wb("clean", src, "-o", tmp_path / "out" / "clean.jsonl", "--map", "output=nonexistent")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {src}: --map output=nonexistent: the file has no column 'nonexistent' (it has input, instruction, output)"
    ]
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


# -- standard input, pipes, FIFOs --------------------------------------------------------------------------------


def test_clean_reads_standard_input_given_as_dash(tmp_path: Path) -> None:
    data = PLAIN["jsonl"]
    proc = wb_process("clean", "-", "-o", str(tmp_path / "clean.jsonl"), stdin=data)
    assert proc.returncode == 0, proc.stderr
    assert b"read 4 = kept" in proc.stdout
    stats = json.loads((tmp_path / "clean.stats.json").read_text())
    assert stats["input"]["sha256"] == hashlib.sha256(data).hexdigest() and stats["read"] == 4


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_clean_reads_dev_stdin_from_a_pipe_in_every_format(tmp_path: Path, fmt: str) -> None:
    proc = wb_process("clean", "/dev/stdin", "-o", str(tmp_path / "clean.jsonl"), "-q", stdin=gzip.compress(PLAIN[fmt]))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "clean.stats.json").read_text())["read"] == 4


def test_clean_reads_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "records.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with fifo.open("wb") as f:
            for i in range(3):  # in pieces, as a slow producer writes
                f.write(PLAIN["jsonl"] if i == 0 else jsonl({"instruction": f"Q{i}?", "output": f"Answer {i}."}))

    writer = threading.Thread(target=feed)
    writer.start()
    result = run(fifo, tmp_path / "clean.jsonl", load("default"))
    writer.join()
    assert result.stats.read == 6 and result.source.format == "jsonl"


def test_validate_checks_every_file_when_one_is_missing(tmp_path: Path, wb: Any) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", RECORDS)
    b = write_jsonl(tmp_path / "b.jsonl", RECORDS)
    result = wb("validate", a, tmp_path / "missing.jsonl", b)
    assert result.exit_code == 2
    assert f"error: {tmp_path / 'missing.jsonl'}: no such file" in result.stderr
    assert f"{a}: 4 records valid" in result.stdout and f"{b}: 4 records valid" in result.stdout
