"""Fuzzing `wb clean`: real records mutated at random (bytes flipped, fields dropped, types changed, lines cut,
shapes mixed). A file of records, however broken, is read to the end with exit 0 and `read = kept + dropped +
rejected` holds, each count equal to its output file's lines and every non-blank line of a JSON Lines file read; a
file that cannot be read (no record in it, a first line that opens a broken JSON document, a cut gzip stream) is
refused with one line naming it and exit 2, and only such a file. Never a traceback. Seeded: a failure names the
seed that reproduces it."""

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


def expected_refusal(data: bytes, cut_stream: bool) -> str | None:
    """What the one error line of `wb clean` on this file must say, or None where the file must be read to the end
    (exit 0). Told from the mutations: a cut compressed stream cannot be decompressed; a file without a non-blank
    line is empty; a first non-blank line that opens a JSON document (`[`, a lone `{`, or ending in `[`) makes the file
    one JSON document, which a fuzzed file of lines never is. Any other file is JSON Lines, whose bad lines are
    rejected one by one."""
    if cut_stream:
        return r"(cannot decompress|compressed data is truncated or corrupt)"
    first = next((t for line in data.split(b"\n") if (t := line.removeprefix(b"\xef\xbb\xbf").strip())), None)
    if first is None:
        return "file is empty"
    if first.startswith(b"[") or first == b"{" or first.endswith(b"["):
        return "not valid JSON"
    return None


ACCOUNTING = re.compile(r"read ([\d,]+) = kept ([\d,]+) \+ dropped ([\d,]+) \+ rejected ([\d,]+)")


@pytest.mark.parametrize("seed", range(RUNS))
def test_mutated_records_end_in_exit_0_with_exact_accounting_unless_the_file_cannot_be_read(
    tmp_path: Path, wb: Any, seed: int
) -> None:
    data = fuzzed_file(seed)
    compressed = seed % 5 == 4
    cut_stream = seed % 10 == 9  # every other compressed file is cut in the middle of its gzip stream
    src = tmp_path / ("raw.jsonl.gz" if compressed else "raw.jsonl")
    blob = gzip.compress(data, mtime=0) if compressed else data
    src.write_bytes(blob[: len(blob) // 2] if cut_stream else blob)
    result = wb("clean", src, "-o", tmp_path / "out" / "clean.jsonl")  # a traceback fails the test here
    refusal = expected_refusal(data, cut_stream)
    if refusal is not None:
        assert result.exit_code == 2, f"seed {seed}: expected a refusal ({refusal}), got\n{result.output}"
        assert re.fullmatch(rf"error: {re.escape(str(src))}: {refusal}.*", result.stderr.strip()), (
            f"seed {seed}: {result.stderr}"
        )
        assert not (tmp_path / "out").exists(), f"seed {seed}: a refused file leaves no output"
        return
    assert result.exit_code == 0, f"seed {seed}: exit {result.exit_code}\n{result.output}"
    match = ACCOUNTING.search(result.stdout)
    assert match, f"seed {seed}: no accounting line in\n{result.stdout}"
    read, kept, dropped, rejected = (int(g.replace(",", "")) for g in match.groups())
    assert read == kept + dropped + rejected, f"seed {seed}"
    stats = json.loads((tmp_path / "out" / "clean.stats.json").read_text())
    assert (stats["read"], stats["kept"], stats["dropped"], stats["rejected"]) == (read, kept, dropped, rejected)
    assert stats["input"]["format"] == "jsonl", f"seed {seed}"
    text = data.removeprefix(b"\xef\xbb\xbf")  # every non-blank line is a record: kept, dropped or rejected
    assert read == sum(1 for line in text.split(b"\n") if line.strip()), f"seed {seed}"
    out = {
        name: (tmp_path / "out" / f"clean{suffix}.jsonl").read_text(encoding="utf-8").splitlines()
        for name, suffix in [("kept", ""), ("dropped", ".dropped"), ("rejected", ".rejects")]
    }
    assert {k: len(v) for k, v in out.items()} == {"kept": kept, "dropped": dropped, "rejected": rejected}, (
        f"seed {seed}"
    )
    assert dropped > 0 and rejected > 0, f"seed {seed}: the fuzzed file should have both drops and rejects"
