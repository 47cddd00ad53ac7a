"""Reading record files (format sniffing, compression, encodings, rejects, mapping) and writing them safely."""

from __future__ import annotations

import gzip
import hashlib
import io as pyio
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
import zstandard

from workbench.errors import WbError
from workbench.io.jsontext import dumps_json, jsonl_line
from workbench.io.options import parse_overrides, resolve_mapping
from workbench.io.reader import RecordReader, Reject
from workbench.io.sniff import sniff
from workbench.output import atomic_write, sha256_file

BOM = b"\xef\xbb\xbf"

RECORDS: list[dict[str, Any]] = [
    {"instruction": "把下面的句子翻译成英文", "input": "今天天气很好。", "output": "The weather is nice today."},
    {"instruction": "Tell a joke 😂", "input": "", "output": "Why did the 🐔 cross the road?"},
    {"instruction": "Summarise", "input": "Ünïcödé — «quotes», naïve café", "output": "ok\nsecond line\ttab"},
    {"instruction": "空输出", "input": "", "output": ""},
]
ROWS = [(r["instruction"], r["input"], r["output"], "", []) for r in RECORDS]


@dataclass
class Read:
    reader: RecordReader
    lines: list[int]
    rows: list[tuple[Any, ...]]
    rejects: list[Reject]
    batch_sizes: list[int]


def read_all(path: Path, overrides: dict[str, str] | None = None, batch_size: int = 50_000) -> Read:
    reader = RecordReader(path, overrides, batch_size=batch_size)
    out = Read(reader, [], [], [], [])
    for batch in reader:
        assert len(batch.lines) == len(batch.rows)
        out.lines += batch.lines
        out.rows += batch.rows
        out.rejects += batch.rejects
        out.batch_sizes.append(batch.size)
    return out


def jsonl(*objs: Any) -> bytes:
    return b"".join(json.dumps(o, ensure_ascii=False).encode() + b"\n" for o in objs)


def put(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def csv_bytes(records: list[dict[str, Any]]) -> bytes:
    buf = pyio.BytesIO()
    pl.DataFrame(records).write_csv(buf)
    return buf.getvalue()


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    buf = pyio.BytesIO()
    frame.write_parquet(buf)
    return buf.getvalue()


PLAIN: dict[str, bytes] = {
    "jsonl": jsonl(*RECORDS),
    "json": json.dumps(RECORDS, ensure_ascii=False, indent=2).encode(),
    "csv": csv_bytes(RECORDS),
    "parquet": parquet_bytes(pl.DataFrame(RECORDS)),
}


# --- format sniffing ------------------------------------------------------------------------------------------


def test_json_lines_named_json_is_read_as_json_lines(tmp_path: Path) -> None:
    path = put(tmp_path, "data.json", PLAIN["jsonl"])
    got = read_all(path)
    assert got.reader.info.format == "jsonl"
    assert got.rows == ROWS
    assert got.lines == [1, 2, 3, 4]


def test_json_array_named_jsonl_is_read_as_array(tmp_path: Path) -> None:
    path = put(tmp_path, "data.jsonl", PLAIN["json"])
    got = read_all(path)
    assert got.reader.info.format == "json"
    assert got.reader.info.unit == "item"
    assert got.rows == ROWS
    assert got.lines == [1, 2, 3, 4]


def test_compact_json_array_on_one_line_is_read_as_array(tmp_path: Path) -> None:
    path = put(tmp_path, "data.jsonl", json.dumps(RECORDS, ensure_ascii=False))
    assert read_all(path).rows == ROWS


def test_csv_is_recognised_by_content(tmp_path: Path) -> None:
    path = put(tmp_path, "export.txt", PLAIN["csv"])
    got = read_all(path)
    assert got.reader.info.format == "csv"
    assert got.rows == ROWS


def test_parquet_written_with_polars_is_recognised_by_content(tmp_path: Path) -> None:
    path = put(tmp_path, "records.jsonl", PLAIN["parquet"])
    got = read_all(path)
    assert got.reader.info.format == "parquet"
    assert got.reader.info.unit == "row"
    assert got.rows == ROWS


def test_pretty_printed_json_object_holding_one_list_of_records_is_read(tmp_path: Path) -> None:
    doc = {"version": "1.0", "description": "演示数据", "data": RECORDS}
    path = put(tmp_path, "dataset.json", json.dumps(doc, ensure_ascii=False, indent=4))
    got = read_all(path)
    assert got.reader.info.format == "json"
    assert got.rows == ROWS


def test_json_object_with_two_lists_is_refused_naming_the_file(tmp_path: Path) -> None:
    doc = {"train": RECORDS, "test": RECORDS}
    path = put(tmp_path, "splits.json", json.dumps(doc, indent=2))
    with pytest.raises(WbError, match="exactly one list") as exc:
        read_all(path)
    assert str(path) in str(exc.value)


def test_json_object_with_no_list_is_refused(tmp_path: Path) -> None:
    path = put(tmp_path, "one.json", json.dumps(RECORDS[0], indent=2))
    with pytest.raises(WbError, match="found 0 lists"):
        read_all(path)


def test_broken_json_array_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    text = json.dumps(RECORDS, ensure_ascii=False, indent=2)
    path = put(tmp_path, "broken.json", text[: len(text) // 2])
    with pytest.raises(WbError, match="not valid JSON") as exc:
        read_all(path)
    assert str(path) in str(exc.value)


def test_json_array_item_that_is_not_an_object_is_rejected_by_index(tmp_path: Path) -> None:
    path = put(tmp_path, "a.json", json.dumps([RECORDS[0], "just a string", RECORDS[1]]))
    got = read_all(path)
    assert got.rows == ROWS[:2]
    assert got.lines == [1, 3]
    [rej] = got.rejects
    assert (rej.line, rej.unit, rej.kind) == (2, "item", "not_an_object")
    assert rej.raw == '"just a string"'


# --- compression ----------------------------------------------------------------------------------------------


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data)


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
@pytest.mark.parametrize(("compression", "compress", "suffix"), [("gzip", _gzip, ".gz"), ("zstd", _zstd, ".zst")])
def test_compressed_input_gives_the_same_rows_as_plain(
    tmp_path: Path, fmt: str, compression: str, compress: Any, suffix: str
) -> None:
    plain = read_all(put(tmp_path, f"plain.{fmt}", PLAIN[fmt]))
    packed = read_all(put(tmp_path, f"packed.{fmt}{suffix}", compress(PLAIN[fmt])))
    assert plain.reader.info.compression == "none"
    assert packed.reader.info.compression == compression
    assert packed.reader.info.format == fmt
    assert packed.rows == plain.rows == ROWS
    assert packed.lines == plain.lines


def test_compression_is_detected_by_content_not_extension(tmp_path: Path) -> None:
    path = put(tmp_path, "data.jsonl", _zstd(PLAIN["jsonl"]))
    info = sniff(path)
    assert (info.format, info.compression) == ("jsonl", "zstd")


def test_corrupt_gzip_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = put(tmp_path, "bad.jsonl.gz", b"\x1f\x8b" + b"this is not deflate data" * 10)
    with pytest.raises(WbError, match="cannot decompress") as exc:
        read_all(path)
    assert str(path) in str(exc.value)


def _big_jsonl(n: int = 30_000) -> bytes:
    return b"".join(
        orjson.dumps({"instruction": f"问题 {i}", "output": f"answer {i * 7919} 🙂"}) + b"\n" for i in range(n)
    )


def test_truncated_gzip_is_refused_naming_the_file(tmp_path: Path) -> None:
    packed = _gzip(_big_jsonl())
    path = put(tmp_path, "cut.jsonl.gz", packed[: len(packed) * 3 // 4])
    with pytest.raises(WbError) as exc:
        read_all(path)
    assert str(path) in str(exc.value)


def test_truncated_zstd_is_refused_naming_the_file(tmp_path: Path) -> None:
    packed = _zstd(_big_jsonl())
    path = put(tmp_path, "cut.jsonl.zst", packed[: len(packed) * 3 // 4])
    with pytest.raises(WbError) as exc:
        read_all(path)
    assert str(path) in str(exc.value)


# --- text encoding and line structure -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_bom_at_file_start_is_ignored(tmp_path: Path, fmt: str) -> None:
    got = read_all(put(tmp_path, f"bom.{fmt}", BOM + PLAIN[fmt]))
    assert got.rejects == []
    assert got.rows == ROWS


def test_bom_in_gzip_compressed_json_lines_is_ignored(tmp_path: Path) -> None:
    got = read_all(put(tmp_path, "bom.jsonl.gz", _gzip(BOM + PLAIN["jsonl"])))
    assert got.rows == ROWS


def test_crlf_line_ends_are_handled(tmp_path: Path) -> None:
    data = PLAIN["jsonl"].replace(b"\n", b"\r\n") + b'{"instruction": "x", "output": }\r\n'
    got = read_all(put(tmp_path, "crlf.jsonl", data))
    assert got.reader.info.format == "jsonl"
    assert got.rows == ROWS  # \r is not glued onto any value
    [rej] = got.rejects
    assert rej.line == 5
    assert rej.raw == '{"instruction": "x", "output": }'


def test_crlf_csv_is_read_without_carriage_returns_in_values(tmp_path: Path) -> None:
    data = 'instruction,input,output\r\n你好,,世界\r\n"a, b",ctx,"two\nlines"\r\n'.encode()
    got = read_all(put(tmp_path, "crlf.csv", data))
    assert got.rows == [("你好", "", "世界", "", []), ("a, b", "ctx", "two\nlines", "", [])]


def test_blank_lines_are_counted_not_read_as_records(tmp_path: Path) -> None:
    lines = jsonl(*RECORDS).splitlines(keepends=True)
    data = b"\n" + lines[0] + b"   \n\t\n" + lines[1] + b"\r\n" + lines[2] + lines[3] + b"\n\n"
    got = read_all(put(tmp_path, "blanks.jsonl", data))
    assert got.rows == ROWS
    assert got.rejects == []
    assert got.reader.blank_lines == 6
    assert got.lines == [2, 5, 7, 8]  # line numbers count the blank lines


def test_duplicated_lines_are_each_read_with_their_own_line_number(tmp_path: Path) -> None:
    line = jsonl(RECORDS[0])
    got = read_all(put(tmp_path, "dups.jsonl", line * 3))
    assert got.rows == [ROWS[0]] * 3
    assert got.lines == [1, 2, 3]


def test_one_megabyte_line_is_read_intact(tmp_path: Path) -> None:
    huge = "数据🙂x" * 100_000  # 1.0 MB of UTF-8 in one value
    data = jsonl(RECORDS[0], {"instruction": "long", "output": huge}, RECORDS[1])
    got = read_all(put(tmp_path, "huge.jsonl", data))
    assert len(huge.encode()) >= 1_000_000
    assert got.rows == [ROWS[0], ("long", "", huge, "", []), ROWS[1]]


def test_json_lines_whose_first_record_has_a_100kb_output_is_read(tmp_path: Path) -> None:
    long_output = "长" * 40_000  # 120 kB of UTF-8
    data = jsonl({"instruction": "write a long essay", "output": long_output}, RECORDS[0])
    got = read_all(put(tmp_path, "long_first.jsonl", data))
    assert got.rows == [("write a long essay", "", long_output, "", []), ROWS[0]]


# --- rejects --------------------------------------------------------------------------------------------------


def test_broken_json_line_is_rejected_with_its_line_number_and_raw_text(tmp_path: Path) -> None:
    broken = '{"instruction": "未闭合", "output": "oops'
    data = jsonl(RECORDS[0], RECORDS[1]) + broken.encode() + b"\n" + jsonl(RECORDS[2])
    got = read_all(put(tmp_path, "broken.jsonl", data))
    assert got.rows == [ROWS[0], ROWS[1], ROWS[2]]
    assert got.lines == [1, 2, 4]
    [rej] = got.rejects
    assert (rej.line, rej.unit, rej.kind, rej.field) == (3, "line", "bad_json", "")
    assert rej.raw == broken
    assert rej.error.startswith("bad JSON")
    assert rej.to_json() == {
        "line": 3,
        "unit": "line",
        "field": "",
        "kind": "bad_json",
        "error": rej.error,
        "raw": broken,
    }


def test_broken_first_line_is_rejected_and_the_rest_is_read(tmp_path: Path) -> None:
    data = b'{"instruction": "cut off", "output": \n' + jsonl(*RECORDS)
    got = read_all(put(tmp_path, "broken_first.jsonl", data))
    assert [(r.line, r.kind) for r in got.rejects] == [(1, "bad_json")]
    assert got.rows == ROWS


@pytest.mark.parametrize("value", ["[1, 2]", "42", '"a string"', "null", "true"])
def test_line_that_is_not_an_object_is_rejected_as_not_an_object(tmp_path: Path, value: str) -> None:
    data = jsonl(RECORDS[0]) + value.encode() + b"\n" + jsonl(RECORDS[1])
    got = read_all(put(tmp_path, "mixed.jsonl", data))
    assert got.rows == [ROWS[0], ROWS[1]]
    [rej] = got.rejects
    assert (rej.line, rej.kind, rej.raw) == (2, "not_an_object", value)


def test_invalid_utf8_in_a_line_is_rejected_not_a_crash(tmp_path: Path) -> None:
    bad = b'{"instruction": "caf\xe9 \xff\xfe", "output": "x"}'
    data = jsonl(RECORDS[0]) + bad + b"\n" + jsonl(RECORDS[1])
    got = read_all(put(tmp_path, "latin1.jsonl", data))
    assert got.rows == [ROWS[0], ROWS[1]]
    [rej] = got.rejects
    assert rej.line == 2
    assert rej.kind == "bad_json"
    assert "\ufffd" in rej.raw
    assert rej.raw.startswith('{"instruction": "caf')
    json.dumps(rej.to_json())  # the reject itself can be written out


def test_record_errors_become_rejects_naming_the_field(tmp_path: Path) -> None:
    data = jsonl(
        RECORDS[0],
        {"instruction": "no answer"},
        {"instruction": "2+3", "output": 5},
    )
    got = read_all(put(tmp_path, "bad_records.jsonl", data))
    assert got.rows == [ROWS[0]]
    assert [(r.line, r.field, r.kind) for r in got.rejects] == [
        (2, "output", "missing_field"),
        (3, "output", "wrong_type"),
    ]
    assert orjson.loads(got.rejects[1].raw) == {"instruction": "2+3", "output": 5}


def test_chat_file_converts_dialogues_and_rejects_those_without_alpaca_form(tmp_path: Path) -> None:
    def msg(role: str, content: str) -> dict[str, str]:
        return {"role": role, "content": content}

    data = jsonl(
        {"messages": [msg("system", "简洁"), msg("user", "你好"), msg("assistant", "你好！👋")]},
        {"messages": [msg("user", "q"), msg("assistant", "a"), msg("user", "no answer")]},
        {"messages": [msg("user", "q"), msg("tool", "{}"), msg("assistant", "a")]},
    )
    got = read_all(put(tmp_path, "chat.jsonl", data))
    assert got.rows == [("你好", "", "你好！👋", "简洁", [])]
    assert [(r.line, r.field, r.kind) for r in got.rejects] == [
        (2, "messages[2]", "not_convertible"),
        (3, "messages[1]", "invalid_tool_conversation"),  # a tool result that answers no call
    ]


def test_line_numbers_stay_correct_across_batches(tmp_path: Path) -> None:
    lines = [json.dumps({"instruction": f"问题 {n}", "output": f"答 {n}"}, ensure_ascii=False) for n in range(1, 11)]
    lines[4] = '{"instruction": "问题 5", "output": '  # line 5 broken
    lines[7] = "[8]"  # line 8 not an object
    got = read_all(put(tmp_path, "ten.jsonl", "\n".join(lines) + "\n"), batch_size=3)
    assert got.batch_sizes == [3, 3, 3, 1]
    assert got.lines == [1, 2, 3, 4, 6, 7, 9, 10]
    assert [r[0] for r in got.rows] == [f"问题 {n}" for n in got.lines]
    assert [(r.line, r.kind) for r in got.rejects] == [(5, "bad_json"), (8, "not_an_object")]


def test_item_numbers_stay_correct_across_batches_for_a_json_array(tmp_path: Path) -> None:
    items: list[Any] = [{"instruction": f"q{n}", "output": f"a{n}"} for n in range(1, 11)]
    items[6] = {"instruction": "q7"}
    got = read_all(put(tmp_path, "ten.json", json.dumps(items)), batch_size=3)
    assert got.batch_sizes == [3, 3, 3, 1]
    assert got.lines == [1, 2, 3, 4, 5, 6, 8, 9, 10]
    assert [r[0] for r in got.rows] == [f"q{n}" for n in got.lines]
    assert [(r.line, r.unit, r.kind) for r in got.rejects] == [(7, "item", "missing_field")]


# --- column mapping -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (["prompt", "response"], {"instruction": "prompt", "output": "response"}),
        (["query", "answer"], {"instruction": "query", "output": "answer"}),
        (
            ["question", "context", "completion"],
            {"instruction": "question", "input": "context", "output": "completion"},
        ),
        (
            ["system_prompt", "question", "response", "id"],
            {"system": "system_prompt", "instruction": "question", "output": "response"},
        ),
    ],
)
def test_resolve_mapping_recognises_common_aliases(keys: list[str], expected: dict[str, str]) -> None:
    assert resolve_mapping(keys) == expected


def test_canonical_column_is_preferred_over_an_alias() -> None:
    assert resolve_mapping(["response", "output", "prompt", "instruction"]) == {
        "instruction": "instruction",
        "output": "output",
    }


def test_override_wins_over_alias() -> None:
    mapping = resolve_mapping(["instruction", "output", "chosen"], parse_overrides(["output=chosen"]))
    assert mapping == {"instruction": "instruction", "output": "chosen"}


def test_reader_applies_aliases(tmp_path: Path) -> None:
    data = jsonl({"question": "什么是熵？", "answer": "A measure of disorder 🔥", "id": 1})
    got = read_all(put(tmp_path, "qa.jsonl", data))
    assert got.reader.mapping == {"instruction": "question", "output": "answer"}
    assert got.rows == [("什么是熵？", "", "A measure of disorder 🔥", "", [])]


def test_reader_applies_map_overrides(tmp_path: Path) -> None:
    data = jsonl({"prompt": "Pick one", "chosen": "the good one", "rejected": "the bad one", "response": "unused"})
    got = read_all(put(tmp_path, "dpo.jsonl", data), parse_overrides(["output=chosen"]))
    assert got.rows == [("Pick one", "", "the good one", "", [])]


def test_parse_overrides_trims_whitespace() -> None:
    assert parse_overrides([" output = response ", "instruction=问题"]) == {"output": "response", "instruction": "问题"}


@pytest.mark.parametrize("item", ["output", "=response", "output=", "  =  ", ""])
def test_bad_map_syntax_is_a_user_error(item: str) -> None:
    with pytest.raises(WbError, match="expected FIELD=COLUMN"):
        parse_overrides([item])


def test_map_to_unknown_field_is_a_user_error() -> None:
    with pytest.raises(WbError, match="unknown field 'answer'"):
        resolve_mapping(["q", "a"], parse_overrides(["answer=a"]))


def test_column_mapped_to_two_fields_is_a_user_error() -> None:
    with pytest.raises(WbError, match="'text' is mapped to both"):
        resolve_mapping(["text"], parse_overrides(["instruction=text", "output=text"]))


def test_reader_refuses_a_column_mapped_twice(tmp_path: Path) -> None:
    path = put(tmp_path, "t.jsonl", jsonl({"prompt": "p", "response": "r"}))
    with pytest.raises(WbError, match="mapped to both"):
        read_all(path, parse_overrides(["output=prompt"]))


def test_system_prompt_first_seen_after_record_1000_is_kept(tmp_path: Path) -> None:
    late = {"instruction": "q", "input": "上下文", "output": "a", "system": "You are terse."}
    data = jsonl(*[RECORDS[0]] * 1000, late)
    got = read_all(put(tmp_path, "late.jsonl", data))
    assert got.rows[-1] == ("q", "上下文", "a", "You are terse.", [])


def test_aliases_still_apply_when_the_first_batch_is_all_broken(tmp_path: Path) -> None:
    data = b'{"prompt": "cut",}\n' * 3 + jsonl(*[{"prompt": "p", "response": "r"}] * 3)
    got = read_all(put(tmp_path, "late_alias.jsonl", data), batch_size=3)
    assert [r.line for r in got.rejects] == [1, 2, 3]
    assert got.rows == [("p", "", "r", "", [])] * 3


# --- files that cannot be read at all ------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"\n\n  \r\n", BOM, BOM + b"\n"])
def test_empty_file_is_a_user_error_naming_the_file(tmp_path: Path, content: bytes) -> None:
    path = put(tmp_path, "empty.jsonl", content)
    with pytest.raises(WbError, match="empty") as exc:
        RecordReader(path)
    assert str(path) in str(exc.value)


def test_empty_gzip_file_is_a_user_error(tmp_path: Path) -> None:
    path = put(tmp_path, "empty.jsonl.gz", _gzip(b""))
    with pytest.raises(WbError, match="empty"):
        RecordReader(path)


def test_missing_file_is_a_user_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "data.jsonl"
    with pytest.raises(WbError, match="no such file") as exc:
        RecordReader(path)
    assert str(path) in str(exc.value)


def test_directory_is_a_user_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "dataset"
    path.mkdir()
    with pytest.raises(WbError, match="is a directory") as exc:
        RecordReader(path)
    assert str(path) in str(exc.value)


# --- CSV and Parquet ------------------------------------------------------------------------------------------


def test_csv_empty_input_cells_read_as_empty_string(tmp_path: Path) -> None:
    data = "instruction,input,output\n写诗,,春眠不觉晓\nTranslate,bonjour,hello\n".encode()
    got = read_all(put(tmp_path, "d.csv", data))
    assert got.rows == [("写诗", "", "春眠不觉晓", "", []), ("Translate", "bonjour", "hello", "", [])]


def test_csv_numbers_stay_text(tmp_path: Path) -> None:
    got = read_all(put(tmp_path, "n.csv", "prompt,answer\n2+3,5\n1/3,0.333\n"))
    assert got.rows == [("2+3", "", "5", "", []), ("1/3", "", "0.333", "", [])]


def test_parquet_with_null_input_and_history_reads_them(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "instruction": ["问", "q2"],
            "input": [None, "ctx"],
            "output": ["答🙂", "a2"],
            "system": [None, "sys"],
            "history": [None, [["u", "v"]]],
        },
        schema={
            "instruction": pl.String,
            "input": pl.String,
            "output": pl.String,
            "system": pl.String,
            "history": pl.List(pl.List(pl.String)),
        },
    )
    got = read_all(put(tmp_path, "h.parquet", parquet_bytes(frame)))
    assert got.rows == [("问", "", "答🙂", "", []), ("q2", "ctx", "a2", "sys", [["u", "v"]])]


def test_parquet_with_int_output_column_rejects_each_row_as_wrong_type(tmp_path: Path) -> None:
    frame = pl.DataFrame({"question": ["2+3", "10*10"], "answer": [5, 100]})
    got = read_all(put(tmp_path, "math.parquet", parquet_bytes(frame)))
    assert got.rows == []
    assert [(r.line, r.unit, r.field, r.kind) for r in got.rejects] == [
        (1, "row", "answer (as output)", "wrong_type"),
        (2, "row", "answer (as output)", "wrong_type"),
    ]
    assert "got int" in got.rejects[0].error
    assert orjson.loads(got.rejects[1].raw) == {"question": "10*10", "answer": 100}


def test_parquet_with_int_canonical_output_column_names_output(tmp_path: Path) -> None:
    frame = pl.DataFrame({"instruction": ["2+3"], "output": [5]})
    [rej] = read_all(put(tmp_path, "math.parquet", parquet_bytes(frame))).rejects
    assert (rej.field, rej.kind) == ("output", "wrong_type")


def test_a_csv_whose_columns_map_to_nothing_is_refused_before_any_record_naming_its_columns(
    tmp_path: Path, wb: Any
) -> None:
    src = put(tmp_path, "qa.csv", BOM + "q,a\r\n你好,hi\r\n2+2,4\r\n".encode())
    with pytest.raises(WbError) as err:
        read_all(src)
    assert str(err.value) == (
        f"{src}: line 1 (the header): no column is read as the instruction or the output (columns: q, a); "
        "name them with --map FIELD=COLUMN, e.g. --map instruction=q --map output=a"
    )
    res = wb("clean", src, "-o", tmp_path / "clean.jsonl")
    assert res.exit_code == 2 and res.stderr.strip().splitlines() == [f"error: {err.value}"]
    assert not (tmp_path / "clean.jsonl").exists()
    got = read_all(src, parse_overrides(["instruction=q", "output=a"]))  # the suggested --map reads every row
    assert got.rows == [("你好", "", "hi", "", []), ("2+2", "", "4", "", [])] and got.rejects == []


def test_a_table_with_an_instruction_but_no_output_column_is_refused_naming_the_output(tmp_path: Path) -> None:
    src = put(tmp_path, "q.parquet", parquet_bytes(pl.DataFrame({"question": ["什么是熵？"], "回答": ["无序的度量"]})))
    with pytest.raises(
        WbError,
        match=r"columns: no column is read as the output \(columns: question, 回答\); "
        r"name them with --map FIELD=COLUMN, e.g. --map output=回答$",
    ):
        read_all(src)


# --- writing --------------------------------------------------------------------------------------------------


def test_atomic_write_writes_the_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "clean.jsonl"  # parent is created
    with atomic_write(target) as f:
        f.write(jsonl(*RECORDS))
    assert target.read_bytes() == jsonl(*RECORDS)
    assert os.listdir(target.parent) == ["clean.jsonl"]


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_atomic_write_leaves_no_file_when_the_block_raises(tmp_path: Path, exc_type: type[BaseException]) -> None:
    target = tmp_path / "clean.jsonl"
    with pytest.raises(exc_type), atomic_write(target) as f:
        f.write(b'{"partial": ')
        raise exc_type()
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_atomic_write_keeps_the_old_file_when_the_block_raises(tmp_path: Path) -> None:
    target = tmp_path / "clean.jsonl"
    target.write_bytes(b"old content \xe4\xb8\xad\n")
    with pytest.raises(ValueError, match="boom"), atomic_write(target) as f:
        f.write(b"new half-written")
        raise ValueError("boom")
    assert target.read_bytes() == b"old content \xe4\xb8\xad\n"
    assert os.listdir(tmp_path) == ["clean.jsonl"]


def test_atomic_write_replaces_the_old_file_on_success(tmp_path: Path) -> None:
    target = tmp_path / "stats.json"
    target.write_bytes(b"old")
    with atomic_write(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["stats.json"]


def test_atomic_write_output_has_ordinary_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "clean.jsonl") as f:
            f.write(b"{}\n")
    finally:
        os.umask(old)
    assert (tmp_path / "clean.jsonl").stat().st_mode & 0o777 == 0o644


def test_dumps_json_sorts_keys_and_keeps_non_ascii_as_utf8() -> None:
    got = dumps_json({"zeta": [1, {"b": 2, "a": 1}], "alpha": "中文 🎉", "mid": None})
    assert (
        got
        == (
            '{\n  "alpha": "中文 🎉",\n  "mid": null,\n  "zeta": [\n    1,\n    {\n      "a": 1,\n      "b": 2\n'
            "    }\n  ]\n}\n"
        ).encode()
    )
    assert b"\\u" not in got


def test_dumps_json_does_not_depend_on_insertion_order() -> None:
    a = {"kept": 3, "dropped": {"too_short": 1, "pii": 2}, "名字": "值"}
    b = {"名字": "值", "dropped": {"pii": 2, "too_short": 1}, "kept": 3}
    assert dumps_json(a) == dumps_json(b)
    assert orjson.loads(dumps_json(a)) == a


def test_jsonl_line_is_one_line_even_with_newlines_in_values() -> None:
    line = jsonl_line({"output": "第一行\n第二行\r\n", "emoji": "🙂"})
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert orjson.loads(line) == {"output": "第一行\n第二行\r\n", "emoji": "🙂"}
    assert "🙂".encode() in line


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    data = PLAIN["jsonl"] * 50
    path = put(tmp_path, "d.jsonl", data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_a_file_mixing_alpaca_and_conversation_records_validates_each_by_its_own_shape(tmp_path: Path) -> None:
    share = {"conversations": [{"from": "human", "value": "Capital of France?"}, {"from": "gpt", "value": "Paris."}]}
    chat = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
    broken_chat = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
    data = jsonl(RECORDS[0], share, RECORDS[1], chat, broken_chat, {"instruction": "no output"})
    got = read_all(put(tmp_path, "mixed.jsonl", data))
    assert got.rows == [ROWS[0], ("Capital of France?", "", "Paris.", "", []), ROWS[1], ("2+2?", "", "4", "", [])]
    assert [(r.line, r.field, r.kind) for r in got.rejects] == [
        (5, "messages[1]", "not_convertible"),
        (6, "output", "missing_field"),
    ]


def test_reading_holds_one_batch_of_records_at_a_time(tmp_path: Path) -> None:
    """The decoded records and raw lines of a batch are let go once the batch is made, and a batch before the next
    one is read: reading three batches peaks no higher than reading the first (Python's own allocations, traced),
    where holding the previous batch's records while parsing the next took about 1.4 times as much."""
    import tracemalloc

    rng = random.Random(4)
    words = ["model", "naïve", "café", "token", "Ünïcödé", "🙂", "layer"]
    records = [
        {"instruction": f"解释第{i}项" if i % 2 else f"Explain item {i}", "input": "", "output": "，".join(
            "".join(rng.choice("的一是在不了有和人这中大为上个国我") for _ in range(20)) for _ in range(15)
        ) if i % 2 else " ".join(rng.choice(words) for _ in range(150))}
        for i in range(4500)
    ]  # fmt: skip
    path = put(tmp_path, "three.jsonl", jsonl(*records))
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        first_peak, rows = 0, 0
        for batch in RecordReader(path, batch_size=1500):
            first_peak = first_peak or tracemalloc.get_traced_memory()[1] - base
            rows += len(batch.rows)
            del batch  # as `wb clean` does before reading the next one
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert rows == 4500
    assert peak < 1.1 * first_peak, (peak, first_peak)
