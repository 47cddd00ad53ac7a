"""Human review of base-vs-tuned answers: a CSV sample for reviewers, and folding their verdicts back in.

The sample is drawn (seeded) across regressions, improvements and ties of the task set, so a reviewer sees where the
tuned model got worse as well as where it got better. Reviewers fill `verdict` with one of VERDICTS (and may add a
`reviewer` column); `wb eval --import-review` saves the verdicts through `verdicts.VerdictStore`, the same store the
blind review writes, so both routes feed the same statistics.

Spreadsheets run a cell that begins with `=`, `+`, `-`, `@`, tab or CR as a formula, and model answers can begin so:
such a cell is written with a leading `'` (OWASP's CSV-injection advice), and `read_sample` strips it again. A cell
that already begins with `'` before one of those characters gets one more, so the escaping is undone exactly.
"""

from __future__ import annotations

import csv
import io as stdio
import random
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from workbench.errors import WbError
from workbench.evaluate.verdicts import VERDICTS
from workbench.output import atomic_write

COLUMNS = ("set", "id", "bucket", "instruction", "input", "reference", "base", "tuned", "verdict", "notes")
BUCKETS = ("regression", "improvement", "tie")

_FORMULA_START = re.compile(r"'*[=+\-@\t\r]")


def escape_cell(value: Any) -> str:
    """The cell text a spreadsheet shows as text, never runs as a formula."""
    text = str(value)
    return "'" + text if _FORMULA_START.match(text) else text


def unescape_cell(text: str) -> str:
    """The value `escape_cell` was given."""
    return text[1:] if text.startswith("'") and _FORMULA_START.match(text[1:]) else text


def bucket(row: dict[str, Any], metric: str = "rouge_l") -> str:
    tuned, base = row["tuned"].get(metric), row["base"].get(metric)
    if tuned is None or base is None:
        return "tie"
    delta = tuned - base
    return "regression" if delta < -1e-9 else "improvement" if delta > 1e-9 else "tie"


def sample(rows: list[dict[str, Any]], size: int, seed: int, metric: str = "rouge_l") -> list[dict[str, Any]]:
    """Up to `size` task rows with base answers: a third from each bucket where it has enough, the rest topped up."""
    rows = [r for r in rows if r["set"] == "task" and "base" in r]
    by_bucket: dict[str, list[dict[str, Any]]] = {b: [] for b in BUCKETS}
    for r in rows:
        by_bucket[bucket(r, metric)].append(r)
    rng = random.Random(seed)
    for b in BUCKETS:
        rng.shuffle(by_bucket[b])
    chosen: list[dict[str, Any]] = []
    share = size // len(BUCKETS)
    for b in BUCKETS:
        chosen.extend(by_bucket[b][:share])
    rest = [r for b in BUCKETS for r in by_bucket[b][share:]]
    rng.shuffle(rest)
    chosen.extend(rest[: max(0, size - len(chosen))])
    order = {id(r): i for i, r in enumerate(rows)}
    return sorted(chosen, key=lambda r: order[id(r)])


def render_sample(rows: list[dict[str, Any]], size: int, seed: int, metric: str = "rouge_l") -> bytes:
    """The review CSV's bytes; buckets (regression, improvement, tie) by the set's headline metric."""
    buffer = stdio.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180; a CR inside a cell is then quoted too
    writer.writerow(COLUMNS)
    for r in sample(rows, size, seed, metric):
        writer.writerow(
            escape_cell(cell)
            for cell in [
                r["set"],
                r["id"],
                bucket(r, metric),
                r["instruction"],
                r["input"],
                r["reference"],
                r["base"]["prediction"],
                r["tuned"]["prediction"],
                "",
                "",
            ]
        )
    return buffer.getvalue().encode("utf-8")


def write_sample(path: Path, rows: list[dict[str, Any]], size: int, seed: int, metric: str = "rouge_l") -> None:
    """The review CSV written on its own (`render_sample`)."""
    with atomic_write(path) as f:
        f.write(render_sample(rows, size, seed, metric))


def read_sample(path: Path) -> list[dict[str, str]]:
    """The rows of a (filled) review CSV, each cell as wb was given it (the formula escaping undone)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:  # newline="": a CR inside a cell stays one
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise WbError(f"{path}: cannot read the review file: {e}") from None
    reader = csv.DictReader(stdio.StringIO(text, newline=""))
    missing = [c for c in ("id", "bucket", "verdict") if c not in (reader.fieldnames or [])]
    if missing:
        raise WbError(f"{path}: missing column(s) {', '.join(missing)}; fill in the review_sample.csv wb wrote")
    return [{k: unescape_cell(v or "") for k, v in row.items() if k is not None} for row in reader]


def import_review(path: Path) -> dict[str, Any]:
    """Read a filled review CSV: verdict counts overall and per bucket, and the rows still without a verdict."""
    counts: Counter[str] = Counter()
    per_bucket: dict[str, Counter[str]] = {}
    unreviewed: list[str] = []
    items: list[dict[str, str]] = []
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for n, row in enumerate(read_sample(path), start=2):
        verdict = (row.get("verdict") or "").strip().lower()
        if not verdict:
            unreviewed.append(str(row["id"]))
            continue
        if verdict not in VERDICTS:
            raise WbError(f"{path}:line {n}: field verdict: {verdict!r} is not one of {', '.join(VERDICTS)}")
        counts[verdict] += 1
        per_bucket.setdefault(row["bucket"], Counter())[verdict] += 1
        item = {"set": row.get("set") or "task", "id": str(row["id"]), "verdict": verdict, "time": now}
        item |= {k: row[k].strip() for k in ("reviewer", "note") if (row.get(k) or "").strip()}
        if (row.get("notes") or "").strip():
            item["note"] = row["notes"].strip()
        items.append(item)
    reviewed = sum(counts.values())
    return {
        "file": str(path),
        "reviewed": reviewed,
        "unreviewed": len(unreviewed),
        "verdicts": {v: counts.get(v, 0) for v in VERDICTS},
        "tuned_preferred": round(counts["tuned"] / reviewed, 4) if reviewed else None,
        "by_bucket": {b: dict(c) for b, c in sorted(per_bucket.items())},
        "items": items,
    }
