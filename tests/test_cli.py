"""The `wb` command line: exit codes, one-line errors, printed accounting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import DEMO_DATA, write_jsonl

GOOD = [
    {"instruction": "把下面的句子翻译成英文。", "input": "我爱机器学习。", "output": "I love machine learning."},
    {"instruction": "What is 2+2?", "input": "", "output": "4"},
]


def test_clean_prints_the_accounting_line_and_writes_all_outputs(tmp_path: Path, wb: Any) -> None:
    result = wb("clean", DEMO_DATA, "-o", tmp_path / "clean.jsonl")
    assert result.exit_code == 0, result.output
    assert "read 183 = kept 166 + dropped 14 + rejected 3" in result.stdout
    assert "dropped: refusal" in result.stdout
    for name in (
        "clean.jsonl",
        "clean.dropped.jsonl",
        "clean.rejects.jsonl",
        "clean.stats.json",
        "clean.manifest.json",
    ):
        assert (tmp_path / name).is_file()


def test_clean_default_output_goes_to_the_working_directory(
    tmp_path: Path, wb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_jsonl(tmp_path / "raw.jsonl", GOOD)
    monkeypatch.chdir(tmp_path)
    assert wb("clean", src, "-q").exit_code == 0
    assert (tmp_path / "raw.clean.jsonl").is_file()


def test_strict_turns_rejects_into_exit_2(tmp_path: Path, wb: Any) -> None:
    src = write_jsonl(tmp_path / "raw.jsonl", [*GOOD, '{"instruction": "x", "output": 5}'])
    result = wb("clean", src, "-o", tmp_path / "c.jsonl", "--strict", "-q")
    assert result.exit_code == 2
    assert "1 record(s) rejected (--strict)" in result.stderr
    assert wb("clean", src, "-o", tmp_path / "c.jsonl", "-q").exit_code == 0


def test_map_option_renames_a_column_and_the_mapping_is_stored(tmp_path: Path, wb: Any) -> None:
    src = write_jsonl(tmp_path / "raw.jsonl", [{"q": "Capital of France?", "a": "Paris."}])
    result = wb("clean", src, "-o", tmp_path / "c.jsonl", "--map", "instruction=q", "--map", "output=a")
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "c.stats.json").read_text())
    assert stats["mapping"] == {"instruction": "q", "output": "a"} and stats["kept"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["clean", "missing.jsonl"], "missing.jsonl: no such file"),
        (["clean", "{data}", "--profile", "nope.yaml"], "nope.yaml: profile not found"),
        (["clean", "{data}", "--map", "output"], "expected FIELD=COLUMN"),
        (["clean", "{data}", "--map", "answer=x"], "unknown field 'answer'"),
        (["validate", "{empty}"], "file is empty"),
        (["stats", "{dir}"], "is a directory"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(
    tmp_path: Path, wb: Any, args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = write_jsonl(tmp_path / "raw.jsonl", GOOD)
    (tmp_path / "empty.jsonl").write_text("")
    filled = [a.format(data=data, empty=tmp_path / "empty.jsonl", dir=tmp_path) for a in args]
    result = wb(*filled)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_validate_exits_0_on_valid_data_and_2_naming_line_and_field(tmp_path: Path, wb: Any) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", GOOD)
    result = wb("validate", good)
    assert result.exit_code == 0 and "2 records valid" in result.stdout
    bad = write_jsonl(
        tmp_path / "bad.jsonl", [GOOD[0], '{"instruction": "x"}', "{not json", '{"instruction": "x", "output": ["a"]}']
    )
    result = wb("validate", bad)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == f"{bad}:line 2: output: Field required"
    assert lines[1].startswith(f"{bad}:line 3: record: bad JSON")
    assert lines[2].startswith(f"{bad}:line 4: output: Input should be a valid string")
    assert lines[-1] == f"{bad}: 3 of 4 records invalid"


def test_stats_reports_lengths_scripts_and_duplicate_prompts(tmp_path: Path, wb: Any) -> None:
    records = [*GOOD, GOOD[1], {"instruction": "what is 2+2", "input": "", "output": "four"}]
    src = write_jsonl(tmp_path / "raw.jsonl", records)
    result = wb("stats", src, "--json")
    assert result.exit_code == 0
    d = json.loads(result.stdout)
    assert d["records"] == 4
    assert d["duplicate_prompts"]["top"] == [{"count": 3, "prompt": "What is 2+2?"}]
    assert d["output_script"] == {"latin": 2, "no_letters": 2}  # "4" is an answer, not an empty one
    assert d["lengths"]["instruction.tokens"]["max"] == 11  # the Chinese instruction: 11 characters and a full stop
    text = wb("stats", src)
    assert text.exit_code == 0 and "duplicate prompts: 1 groups, 3 records" in text.stdout


def test_stats_counts_numeric_answers_apart_from_empty_ones(tmp_path: Path, wb: Any) -> None:
    records = [
        {"instruction": "2+2等于几？", "output": "4"},
        {"instruction": "圆周率保留两位小数", "output": "3.14"},
        {"instruction": "一年有几个月？", "output": "１２"},
        {"instruction": "What year?", "output": "1969."},
        {"instruction": "说点什么", "output": ""},
        {"instruction": "Say nothing", "output": " \n "},
        {"instruction": "你好", "output": "你好！"},
    ]
    src = write_jsonl(tmp_path / "numbers.jsonl", records)
    result = wb("stats", src, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["output_script"] == {"cjk": 1, "empty": 2, "no_letters": 4}
    text = wb("stats", src)
    assert "output script: cjk 14.3%, empty 28.6%, no_letters 57.1%" in text.stdout


def test_wb_entry_point_starts_without_torch_and_shows_no_traceback(tmp_path: Path) -> None:
    code = (
        "import sys; from workbench.cli import main; sys.argv = ['wb', 'clean', 'nope.jsonl'];\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 2, e.code\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "error: nope.jsonl: no such file"


def test_validate_checks_several_files_and_fails_if_any_is_invalid(tmp_path: Path, wb: Any) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", GOOD)
    bad = write_jsonl(tmp_path / "bad.jsonl", ['{"instruction": "x"}'])
    result = wb("validate", good, bad)
    assert result.exit_code == 2
    assert f"{good}: 2 records valid" in result.stdout
    assert f"{bad}: 1 of 1 records invalid" in result.stderr
