"""Fuzzing `wb clean`: real records mutated at random (bytes flipped, fields dropped, types changed, lines cut,
shapes mixed). Every run exits 0 or 2 with one line, never a traceback, and `read = kept + dropped + rejected`
holds with every non-blank line of a JSON Lines file read. Seeded: a failure names the seed that reproduces it."""

from __future__ import annotations

import gzip
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import DEMO_DATA

RUNS = 30
RECORDS_PER_RUN = 100  # 3,000 mutated records in all


def _records(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # the demo data holds a few broken lines on purpose
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


BASE = _records(DEMO_DATA)
ODD_VALUES: list[Any] = [
    None,
    0,
    -1.5e308,
    True,
    [],
    {},
    ["a", "b"],
    [["u", "a"], ["u"]],
    {"nested": {"deeper": [1, 2, 3]}},
    "",
    "x" * 5000,
    "\u202eevil\u202c",
    "\x00\x07\x1b[31m",
    "💥" * 50,
    "'=HYPERLINK(1)",
    "<noinput>",
]
JUNK_BYTES = [b"\x00", b"\xff", b"\xc3", b"\xe4\xb8", b'"', b"{", b"}", b"[", b"]", b",", b":", b"\\", b"\n", b"\r"]


def as_conversation(rec: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    user = (rec.get("instruction") or "") + ("\n\n" + rec["input"] if rec.get("input") else "")
    turns = [("user", user), ("assistant", rec.get("output", ""))]
    if rng.random() < 0.3:  # a fault: an extra turn of either side, in front or at the end
        turns.insert(rng.choice([0, len(turns)]), (rng.choice(["user", "assistant", "system", "tool"]), "extra"))
    if rng.random() < 0.5:
        return {"messages": [{"role": r, "content": c} for r, c in turns]}
    names = {"user": "human", "assistant": "gpt", "system": "system", "tool": "function"}
    return {"conversations": [{"from": names[r], "value": c} for r, c in turns]}


def mutate_record(rec: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    rec = dict(rec)
    if rng.random() < 0.2:
        rec = as_conversation(rec, rng)
    for _ in range(rng.randint(0, 2)):
        action = rng.random()
        keys = list(rec)
        if action < 0.3 and keys:
            del rec[rng.choice(keys)]
        elif action < 0.7 and keys:
            rec[rng.choice(keys)] = rng.choice(ODD_VALUES)
        else:
            rec[rng.choice(["system", "history", "response", "prompt", "extra", "output"])] = rng.choice(ODD_VALUES)
    return rec


def mutate_line(line: bytes, rng: random.Random) -> bytes:
    action = rng.random()
    if action < 0.25 and line:  # bytes flipped
        data = bytearray(line)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            data[i : i + 1] = rng.choice(JUNK_BYTES)
        return bytes(data)
    if action < 0.4 and line:  # line cut
        return line[: rng.randrange(len(line))]
    if action < 0.45:  # a key named twice
        return line.replace(b'"output":', b'"output": "first", "output":', 1)
    if action < 0.5:
        return rng.choice([b"", b"   ", b"null", b"[1, 2]", b'"just a string"', b"[" * 3000, b"\xef\xbb\xbf{}"])
    return line


def fuzzed_file(seed: int) -> bytes:
    rng = random.Random(seed)
    picked = rng.sample(BASE, RECORDS_PER_RUN)
    lines = []
    for rec in picked:
        rec = mutate_record(rec, rng) if rng.random() < 0.6 else rec
        line = json.dumps(rec, ensure_ascii=rng.random() < 0.2).encode()
        lines.append(mutate_line(line, rng) if rng.random() < 0.4 else line)
    data = (b"\r\n" if rng.random() < 0.2 else b"\n").join(lines) + b"\n"
    if rng.random() < 0.1:
        data = data[: rng.randrange(len(data))]  # the file cut mid-line
    return data


ACCOUNTING = re.compile(r"read ([\d,]+) = kept ([\d,]+) \+ dropped ([\d,]+) \+ rejected ([\d,]+)")


@pytest.mark.parametrize("seed", range(RUNS))
def test_mutated_records_end_in_exit_0_or_2_with_exact_accounting(tmp_path: Path, wb: Any, seed: int) -> None:
    data = fuzzed_file(seed)
    compressed = seed % 5 == 4
    src = tmp_path / ("raw.jsonl.gz" if compressed else "raw.jsonl")
    src.write_bytes(gzip.compress(data, mtime=0) if compressed else data)
    result = wb("clean", src, "-o", tmp_path / "out" / "clean.jsonl")  # a traceback fails the test here
    assert result.exit_code in (0, 2), f"seed {seed}: exit {result.exit_code}\n{result.output}"
    if result.exit_code == 2:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), f"seed {seed}: {result.stderr}"
        return
    match = ACCOUNTING.search(result.stdout)
    assert match, f"seed {seed}: no accounting line in\n{result.stdout}"
    read, kept, dropped, rejected = (int(g.replace(",", "")) for g in match.groups())
    assert read == kept + dropped + rejected, f"seed {seed}"
    stats = json.loads((tmp_path / "out" / "clean.stats.json").read_text())
    assert (stats["read"], stats["kept"], stats["dropped"], stats["rejected"]) == (read, kept, dropped, rejected)
    if stats["input"]["format"] == "jsonl":  # every non-blank line is a record: read, kept, dropped or rejected
        text = data.removeprefix(b"\xef\xbb\xbf")
        assert read == sum(1 for line in text.split(b"\n") if line.strip()), f"seed {seed}"
    kept_lines = (tmp_path / "out" / "clean.jsonl").read_text(encoding="utf-8").splitlines()
    rejects = (tmp_path / "out" / "clean.rejects.jsonl").read_text(encoding="utf-8").splitlines()
    assert (len(kept_lines), len(rejects)) == (kept, rejected), f"seed {seed}"
