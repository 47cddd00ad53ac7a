"""Peak memory of `wb clean` (profile `default`, deduplication on) as the input grows: this tree against a baseline.

What is compared
----------------
* **wb**: `workbench.clean.dispatch.run(input, output, workbench.clean.profile.load("default"))` of this working tree.
* **baseline**: the same call on the `workbench/` package of an earlier commit (`--baseline-ref`, default the commit
  this work started from), extracted with `git archive` into a temporary folder and imported from there.

Each run is a fresh child process; its peak RSS comes from `os.wait4` (that child alone), so the figures include
the interpreter, polars and numpy. The machine's load average is recorded before and after each run: on a machine
shared with other work, times vary with it, peak memory much less.

Input
-----
Generated, deterministic for a seed, from the real records in `../shared/data`, as two corpora (`--corpus`): `mixed`
(GPTeacher code instructions and the Chinese alpaca files, mostly English, ~550 characters a record) and `zh` (the
Chinese explanations alone, ~1,000 characters a record, shingled by character 5-grams). Each record is a real one
with about a third of its words (Chinese: characters) replaced by other words of the corpus, so that most records
are distinct for exact and near-duplicate detection; 3 % are exact repeats of an earlier record and 3 % near repeats
(a few words changed), so both dedup stages have work to do.

Run from the repository root: `.venv/bin/python bench/clean_memory.py [--sizes 20000 200000 1000000]`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from random import Random
from typing import Any

from benchlib import ROOT, git_state, table, versions, write_report

DEFAULT_DATA = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "bench" / "out"
BASELINE_REF = "8cd0664"  # main when issue 14 started: wb clean peaked at 2.05 GB on 200k records
TARGETS_MB = {200_000: 1024.0, 1_000_000: 2560.0}
REPEAT_RATE = 0.03
NEAR_REPEAT_RATE = 0.03
REPLACE_RATE = 0.35

_WORD = re.compile(r"[A-Za-z]+|[\u4e00-\u9fff]")


CORPORA = {
    # GPTeacher code instructions (4,535, English) and the Chinese explanations (183): mostly English, 550 chars
    "mixed": ("en_codegen_instruct.json", "zh_term_explanations.json", "zh_poetry_culture.json"),
    # the Chinese explanations alone: about 1,000 characters a record, shingled by character 5-grams
    "zh": ("zh_term_explanations.json", "zh_poetry_culture.json"),
}


def load_records(data_dir: Path, corpus: str = "mixed") -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for name in CORPORA[corpus]:
        for rec in json.loads((data_dir / name).read_text(encoding="utf-8")):
            answer = rec.get("output", rec.get("response", ""))
            out.append({"instruction": rec["instruction"], "input": rec.get("input", ""), "output": answer})
    return out


def _vocabulary(records: list[dict[str, str]]) -> tuple[list[str], list[str]]:
    latin: set[str] = set()
    cjk: set[str] = set()
    for rec in records:
        for field in rec.values():
            for w in _WORD.findall(field):
                (cjk if len(w) == 1 and w >= "\u4e00" else latin).add(w)
    return sorted(latin), sorted(cjk)


def _vary(text: str, rng: Random, rate: float, latin: list[str], cjk: list[str]) -> str:
    def swap(m: re.Match[str]) -> str:
        w = m.group(0)
        if rng.random() >= rate:
            return w
        return rng.choice(cjk) if len(w) == 1 and w >= "\u4e00" else rng.choice(latin)

    return _WORD.sub(swap, text)


def generate(path: Path, n: int, seed: int, data_dir: Path, corpus: str = "mixed") -> dict[str, Any]:
    """Write `n` JSONL records to `path`; the same seed gives the same bytes."""
    base = load_records(data_dir, corpus)
    latin, cjk = _vocabulary(base)
    rng = Random(seed)
    recent: list[dict[str, str]] = []
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for _ in range(n):
            roll = rng.random()
            if recent and roll < REPEAT_RATE:
                rec = rng.choice(recent)
            elif recent and roll < REPEAT_RATE + NEAR_REPEAT_RATE:
                rec = {k: _vary(v, rng, 0.02, latin, cjk) for k, v in rng.choice(recent).items()}
            else:
                rec = {k: _vary(v, rng, REPLACE_RATE, latin, cjk) for k, v in rng.choice(base).items()}
                recent = [*recent, rec][-1000:]
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return {"records": n, "bytes": path.stat().st_size}


def extract_baseline(ref: str, into: Path) -> Path:
    """`workbench/` and `pipelines/` of commit `ref`, unpacked under `into`; returns the folder to import from."""
    cmd = ["git", "archive", ref, "workbench", "pipelines"]
    archive = subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True).stdout
    tar = into / "baseline.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(into, filter="data")
    return into


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


WORKER = """
import json, sys, time
from pathlib import Path
import workbench, workbench.clean
started = time.perf_counter()
result = workbench.clean.dispatch.run(Path(sys.argv[1]), Path(sys.argv[2]), workbench.clean.profile.load("default"))
s = result.summary
print(json.dumps({"seconds": time.perf_counter() - started, "package": workbench.__file__,
                  **{k: s[k] for k in ("read", "kept", "dropped", "rejected", "dropped_by_rule")}}))
"""


def run_child(pythonpath: Path, src: Path, dst: Path) -> dict[str, Any]:
    shutil.rmtree(dst.parent, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    load_before = load_average()
    started = time.perf_counter()
    proc = subprocess.Popen(
        # cwd: `python -c` puts the working directory first on sys.path, so it must be the tree measured
        [sys.executable, "-c", WORKER, str(src), str(dst)],
        env=env,
        stdout=subprocess.PIPE,
        cwd=pythonpath,
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"worker failed with {status}")
    res = json.loads(out)
    if Path(res["package"]).resolve().parent.parent != pythonpath.resolve():
        raise RuntimeError(f"the worker imported {res['package']}, not the tree under {pythonpath}")
    shutil.rmtree(dst.parent, ignore_errors=True)
    return {
        **res,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "load_before": load_before,
        "load_after": load_average(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000, 1_000_000])
    ap.add_argument("--baseline-ref", default=BASELINE_REF)
    ap.add_argument("--no-baseline", action="store_true", help="Measure this tree only.")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--corpus", nargs="+", choices=sorted(CORPORA), default=["mixed", "zh"])
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wb-clean-memory-"))
    try:
        baseline = None if args.no_baseline else extract_baseline(args.baseline_ref, work)
        rows: list[dict[str, Any]] = []
        for corpus in args.corpus:
            for n in args.sizes:
                src = work / f"input-{corpus}-{n}.jsonl"
                info = generate(src, n, args.seed, args.data, corpus)
                for impl, path in (("baseline", baseline), ("wb", ROOT)):
                    if path is None:
                        continue
                    res = run_child(path, src, work / impl / "clean.jsonl")
                    rows.append(
                        {"implementation": impl, "corpus": corpus, "records": n, "input_bytes": info["bytes"], **res}
                    )
                    print(
                        f"{impl:8} {corpus:5} {n:>9,} records: peak RSS {res['peak_rss_mb']:8.1f} MiB, "
                        f"{res['wall_seconds']:7.1f} s (load {res['load_before']} -> {res['load_after']})",
                        flush=True,
                    )
                src.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    head = ["implementation", "corpus", "records", "input MB", "peak RSS MiB", "wall s", "cpu s", "kept", "load"]
    body = [
        [
            r["implementation"],
            r["corpus"],
            f"{r['records']:,}",
            f"{r['input_bytes'] / 1e6:.0f}",
            f"{r['peak_rss_mb']:.0f}",
            f"{r['wall_seconds']:.0f}",
            f"{r['cpu_seconds']:.0f}",
            f"{r['kept']:,}",
            f"{r['load_before']}-{r['load_after']}",
        ]
        for r in rows
    ]
    print(table(head, body, left=2))
    targets = {
        f"{r['corpus']} {n:,}": {"target_mb": t, "wb_mb": r["peak_rss_mb"], "met": r["peak_rss_mb"] < t}
        for n, t in TARGETS_MB.items()
        for r in rows
        if r["implementation"] == "wb" and r["records"] == n
    }
    for name, t in targets.items():
        print(
            f"target {name} records: wb peak RSS {t['wb_mb']:.0f} MiB < {t['target_mb']:.0f}: "
            + ("met" if t["met"] else "NOT met")
        )
    report = {
        "benchmark": "clean_memory",
        "git": git_state(),
        "baseline_ref": None if args.no_baseline else args.baseline_ref,
        "versions": versions(["polars", "numpy", "orjson", "datasketch"]),
        "cpus": os.cpu_count(),
        "results": rows,
        "targets": targets,
    }
    print(f"wrote {write_report(args.out / 'clean_memory.json', report)}")


if __name__ == "__main__":
    main()
