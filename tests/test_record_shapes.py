"""The record shapes seed data comes in, beyond the full Alpaca form."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import read_jsonl, write_jsonl

from workbench.io.options import resolve_mapping
from workbench.io.reader import RecordReader

# The two seed shapes: a prompt in `input` only, and an instruction without an input.
INPUT_OUTPUT = [
    {"input": "把“我爱你”翻译成英文。", "output": "I love you."},
    {"input": "What is the capital of France?", "output": "Paris."},
    {"input": "", "output": "no prompt at all"},
]
INSTRUCTION_OUTPUT = [
    {"instruction": "写一句关于春天的诗。", "output": "春眠不觉晓，处处闻啼鸟。"},
    {"instruction": "2+2=", "output": "4"},
]


def test_input_output_records_use_the_input_as_the_instruction(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "seed.jsonl", INPUT_OUTPUT)
    reader = RecordReader(src)
    rows = [row for batch in reader for row in batch.rows]
    assert reader.mapping == {"instruction": "input", "output": "output"}
    assert rows[0] == ("把“我爱你”翻译成英文。", "", "I love you.", "", [])  # not also repeated as the input
    assert rows[1][:3] == ("What is the capital of France?", "", "Paris.")


def test_clean_keeps_input_output_records_and_says_the_input_is_the_prompt(tmp_path: Path, wb: Any) -> None:
    src = write_jsonl(tmp_path / "seed.jsonl", INPUT_OUTPUT)
    res = wb("clean", src, "-o", tmp_path / "clean.jsonl")
    assert res.exit_code == 0, res.output
    line = " ".join(res.output.split())
    assert "instruction←input, output←output (no instruction column: the 'input' column is the prompt" in line
    kept = read_jsonl(tmp_path / "clean.jsonl")
    assert [(k["instruction"], k["input"]) for k in kept] == [
        ("把“我爱你”翻译成英文。", ""),
        ("What is the capital of France?", ""),
    ]
    stats = json.loads((tmp_path / "clean.stats.json").read_text(encoding="utf-8"))
    assert stats["mapping"] == {"instruction": "input", "output": "output"}
    assert stats["mapping_notes"] == [
        "no instruction column: the 'input' column is the prompt, stored as the instruction"
    ]
    assert (
        stats["dropped_by_rule"]["empty_instruction"] == stats["dropped"] == 1
    )  # the record with an empty input has no prompt
    assert stats["read"] == stats["kept"] + stats["dropped"] + stats["rejected"] == 3


def test_instruction_output_records_need_no_input(tmp_path: Path, wb: Any) -> None:
    src = tmp_path / "seed.json"
    src.write_text(json.dumps(INSTRUCTION_OUTPUT, ensure_ascii=False), encoding="utf-8")
    res = wb("clean", src, "-o", tmp_path / "clean.jsonl")
    assert res.exit_code == 0, res.output
    kept = read_jsonl(tmp_path / "clean.jsonl")
    assert [(k["instruction"], k["input"], k["output"]) for k in kept] == [
        ("写一句关于春天的诗。", "", "春眠不觉晓，处处闻啼鸟。"),
        ("2+2=", "", "4"),
    ]
    stats = json.loads((tmp_path / "clean.stats.json").read_text(encoding="utf-8"))
    assert stats["mapping_notes"] == []


def test_stats_and_validate_read_input_output_records_the_same_way(tmp_path: Path, wb: Any) -> None:
    src = write_jsonl(tmp_path / "seed.jsonl", INPUT_OUTPUT[:2])
    res = wb("stats", src, "--json")
    d = json.loads(res.stdout)
    assert d["records"] == 2 and d["rejected"] == 0
    assert d["mapping_notes"] and d["field_usage"]["input"] == 0
    assert "note: no instruction column" in wb("stats", src).output
    assert wb("validate", src).exit_code == 0


def test_an_explicit_input_mapping_is_respected(tmp_path: Path) -> None:
    assert resolve_mapping(["input", "output"], {"input": "input"}) == {"input": "input", "output": "output"}
    assert resolve_mapping(["instruction", "input", "output"]) == {
        "instruction": "instruction",
        "input": "input",
        "output": "output",
    }
    # `context` is an input alias: a file of context + answer reads the context as the prompt.
    assert resolve_mapping(["context", "answer"]) == {"instruction": "context", "output": "answer"}


# One file, three shapes: a prompt in `input` only, an instruction alone, an instruction with its input.
MIXED = [
    {"input": "把“我爱你”翻译成英文。", "output": "I love you."},
    {"instruction": "写一句关于春天的诗。", "output": "春眠不觉晓，处处闻啼鸟。"},
    {"instruction": "Translate to English", "input": "Bonjour, ça va ? 👋", "output": "Hello, how are you?"},
]
MIXED_ROWS = [
    ("把“我爱你”翻译成英文。", "", "I love you.", "", []),
    ("写一句关于春天的诗。", "", "春眠不觉晓，处处闻啼鸟。", "", []),
    ("Translate to English", "Bonjour, ça va ? 👋", "Hello, how are you?", "", []),
]


def test_a_file_mixing_input_output_and_instruction_records_reads_each_by_its_own_shape(
    tmp_path: Path, wb: Any
) -> None:
    for order in ([0, 1, 2], [0, 2, 1], [2, 0, 1], [1, 0, 2]):
        src = write_jsonl(tmp_path / "mixed.jsonl", [MIXED[i] for i in order])
        for batch_size in (1, 2, 50_000):  # the file's mapping is fixed from the first batch, whatever it holds
            got = [
                (line, row)
                for b in RecordReader(src, batch_size=batch_size)
                for line, row in zip(b.lines, b.rows, strict=True)
            ]
            assert got == [(n, MIXED_ROWS[i]) for n, i in enumerate(order, start=1)], (order, batch_size)
        res = wb("clean", src, "-o", tmp_path / "clean.jsonl")
        assert res.exit_code == 0, res.output
        kept = read_jsonl(tmp_path / "clean.jsonl")
        assert [(k["instruction"], k["input"], k["output"]) for k in kept] == [MIXED_ROWS[i][:3] for i in order]
        stats = json.loads((tmp_path / "clean.stats.json").read_text(encoding="utf-8"))
        assert stats["read"] == stats["kept"] == 3 and stats["rejected"] == 0


def test_an_explicit_input_mapping_reads_every_record_as_it_says(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "mixed.jsonl", MIXED)
    reader = RecordReader(src, {"input": "input"})
    batches = list(reader)
    assert [row for b in batches for row in b.rows] == MIXED_ROWS[1:]
    assert [(r.line, r.field, r.kind) for b in batches for r in b.rejects] == [(1, "instruction", "missing_field")]
