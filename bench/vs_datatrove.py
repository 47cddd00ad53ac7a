"""wb's near-duplicate detection against datatrove's default MinHash dedup, whole process side by side: speed, peak
memory and how far the two agree.

What is compared
----------------
* **wb**: `workbench.clean.dispatch.run(corpus, out, profile)` with the profile of `dedup_quality.py`'s quality runs:
  only the near-duplicate stage, at its defaults (MinHash over word 3-grams / CJK character 5-grams, 128 permutations,
  every LSH candidate verified at Jaccard >= 0.8, keep the first). wb's venv.
* **datatrove** 0.10.1: its four MinHash stages with the default `MinhashConfig` (word 5-grams of simplified text,
  14 buckets x 8 hashes, 64-bit xxhash, no verification), `JsonlReader -> MinhashDedupSignature`,
  `MinhashDedupBuckets`, `MinhashDedupCluster`, `JsonlReader -> MinhashDedupFilter (+ exclusion writer) ->
  JsonlWriter`, each on a `LocalPipelineExecutor` with one worker (its tasks then run in the process itself), as in
  datatrove's `examples/minhash_deduplication.py` without the token counter. Its own venv; the same records, written
  as one JSONL file, read with an adapter that gives the text wb compares (instruction, input and output joined by
  newlines). The pipeline is `dedup_quality.py`'s `worker_datatrove`, with one shard and one worker.

Both read the same generated corpus (`dedup_quality.py`'s generator: real records of `../shared/data` recombined,
10% of them with one planted near-duplicate). Each side is a fresh child process pinned to one core (`taskset`)
with one thread (OMP/MKL/OpenBLAS/polars/rayon set to 1), measured by `benchlib.measure_child`: wall time, CPU
seconds and peak RSS from `os.wait4` (the process and every descendant it waited for, like `/usr/bin/time`), so
imports, reading and writing count. The sides run alternately (`--rounds`); the load average is sampled while
each runs. Memory is robust to other work on the machine; wall time is not (CPU seconds are the steadier figure).

Agreement: the records each removes (wb: `near_duplicate` drops; datatrove: its exclusion writer), how many both
remove, and each side's precision and recall against the planted pairs (`dedup_quality.score`, exact Jaccard on
wb's shingles).

Run from the repository root: `.venv/bin/python bench/vs_datatrove.py` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import dedup_quality as dq
from benchlib import ROOT, git_state, measure_child, table, write_report

SCRIPT = Path(__file__).resolve()
DEFAULT_OUT = ROOT / "bench" / "out"
TARGET_SPEEDUP = 8.0  # wb >= 8x datatrove's speed
TARGET_MEMORY = 2.0  # wb's peak RSS <= 2x datatrove's
ONE_THREAD = {
    k: "1"
    for k in (
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "POLARS_MAX_THREADS",
        "RAYON_NUM_THREADS",
        "TOKENIZERS_PARALLELISM",
    )
}
ONE_THREAD["TOKENIZERS_PARALLELISM"] = "false"


def worker(args: argparse.Namespace) -> int:
    """In the child: `dedup_quality`'s worker, its output (datatrove logs every task) to `--log`."""
    log = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    ns = argparse.Namespace(input=args.input, output=args.output, mode="near", language=args.language, workers=1)
    result = dq.WORKERS[args.worker](ns)
    Path(args.result).write_text(json.dumps(result), encoding="utf-8")
    return 0


def cpu_info() -> dict[str, Any]:
    """The CPU's model name and whether it has AMX / AVX512-BF16 (Linux /proc/cpuinfo)."""
    model, flags = platform.processor() or "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return {"model": model, "cpus": os.cpu_count(), "amx": "amx_tile" in flags, "avx512_bf16": "avx512_bf16" in flags}


def run_side(side: str, python: Path, corpus: dq.Corpus, work: Path, core: int | None, language: str) -> dict[str, Any]:
    """One measured child; returns what it reported plus wait4's figures."""
    result = work / f"{side}.result.json"
    result.unlink(missing_ok=True)
    if side == "wb":
        out = work / "wb" / "out.jsonl"
        shutil.rmtree(out.parent, ignore_errors=True)
        io_args = ["--input", str(corpus.path), "--output", str(out)]
    else:
        io_args = ["--input", str(work / "dt-input"), "--output", str(work / "dt")]
    cmd = [str(python), str(SCRIPT), "--worker", side, "--result", str(result), "--log", str(work / f"{side}.log")]
    cmd += [*io_args, "--language", language]
    if core is not None:
        cmd = ["taskset", "-c", str(core), *cmd]
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(ROOT)}
    child = measure_child(cmd, env)
    if child.exit_code != 0:
        tail = (work / f"{side}.log").read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"{side} failed with exit status {child.exit_code}; end of its log:\n{tail}")
    res: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    records = corpus.records
    return {
        "side": side,
        "wall_seconds": child.wall_seconds,
        "cpu_seconds": child.cpu_seconds,
        "peak_rss_mb": child.peak_rss_mb,
        "work_seconds": res["seconds"],  # inside the child, imports excluded
        "records_per_s": records / child.wall_seconds,
        "records_per_cpu_s": records / child.cpu_seconds,
        "load_1min": child.loads,
        "details": res,
    }


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("wall_seconds", "cpu_seconds", "peak_rss_mb", "work_seconds", "records_per_s", "records_per_cpu_s")
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def agreement(corpus: dq.Corpus, work: Path, wb_dropped: Path, shards: list[str]) -> dict[str, Any]:
    """Removed records of each side, their overlap, and each side's quality against the planted pairs."""
    truth = dq.Truth.load(corpus.truth)
    drops = {"wb": dq.wb_drops(wb_dropped), "datatrove": dq.datatrove_drops(work / "dt", shards)}
    pairs = {(min(c, b), max(c, b)) for c, b in truth.copy_of.items()}
    for d in drops.values():
        pairs |= {(min(x, k), max(x, k)) for x, k in d.partner.items()}
    jacc = dq.exact_jaccard(corpus.path, pairs)
    threshold = 0.8
    quality = {side: dq.score(truth, d, jacc, threshold) for side, d in drops.items()}
    wb_set, dt_set = set(drops["wb"].partner), set(drops["datatrove"].partner)
    both = wb_set & dt_set
    return {
        "removed": {"wb": len(wb_set), "datatrove": len(dt_set)},
        "removed_by_both": len(both),
        "removed_by_wb_only": len(wb_set - dt_set),
        "removed_by_datatrove_only": len(dt_set - wb_set),
        "jaccard_of_removed_sets": len(both) / len(wb_set | dt_set) if wb_set | dt_set else 1.0,
        "planted_pairs": len(truth.copy_of),
        "quality": {
            side: {k: q[k] for k in ("dropped", "precision", "recall", "recall_jaccard_ge_threshold", "false_drops")}
            for side, q in quality.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--records", type=int, default=90_681, help="base records (default 90,681: 99,749 with copies)")
    p.add_argument("--lang", choices=["en", "zh"], default="en", help="corpus language (default en)")
    p.add_argument("--seed", type=int, default=20240611, help="seed of the generator (dedup_quality's default)")
    p.add_argument("--rounds", type=int, default=1, help="runs of each side, alternating wb, datatrove (default 1)")
    p.add_argument("--core", type=int, help="CPU both sides are pinned to (default: the last one; -1: not pinned)")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help="where the corpus and results go")
    p.add_argument("--data-dir", type=Path, default=dq.DEFAULT_DATA, help="real records to recombine")
    p.add_argument("--wb-python", type=Path, default=dq.WB_PYTHON, help="wb's interpreter (.venv/bin/python)")
    p.add_argument("--datatrove-python", type=Path, default=dq.DATATROVE_PYTHON, help="datatrove's interpreter")
    p.add_argument("--keep", action="store_true", help="keep the corpus and both outputs")
    for hidden in ("worker", "result", "log", "input", "output", "language"):
        p.add_argument(f"--{hidden}", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return worker(a)
    if not a.datatrove_python.exists():
        print(f"error: {a.datatrove_python} not found; create it with:\n  {dq.DATATROVE_INSTALL}", file=sys.stderr)
        return 2
    core = (os.cpu_count() or 1) - 1 if a.core is None else (None if a.core < 0 else a.core)
    if core is not None and shutil.which("taskset") is None:
        print("note: taskset not found; the sides run unpinned", file=sys.stderr)
        core = None
    work = a.out_dir.resolve() / f"vs-datatrove-{a.lang}-{a.records}-seed{a.seed}"
    src = dq.load_sources(a.data_dir)
    corpus = dq.build_corpus(work / "corpus.jsonl", a.lang, a.records, a.seed, 0.10, [0.01, 0.02, 0.05, 0.1], src, 450)
    del src
    shards = dq.write_shards(corpus, work / "dt-input", 1)  # the same records as one JSONL file for datatrove
    print(
        f"corpus: {corpus.records:,} records ({corpus.bases:,} + {corpus.copies:,} planted copies, {a.lang}), "
        f"{corpus.bytes / 1e6:.1f} MB; both sides pinned to CPU {core if core is not None else '-'}, one thread"
    )
    language = "eng"  # datatrove's default word tokenizer (its MinhashDedupSignature default)
    runs: dict[str, list[dict[str, Any]]] = {"wb": [], "datatrove": []}
    load_before = os.getloadavg()
    started = time.time()
    for r in range(a.rounds):
        for side, python in (("wb", a.wb_python), ("datatrove", a.datatrove_python)):
            res = run_side(side, python, corpus, work, core, language)
            runs[side].append(res)
            loads = res["load_1min"] or [os.getloadavg()[0]]
            print(
                f"  round {r + 1} {side:<9} wall {res['wall_seconds']:7.1f} s  CPU {res['cpu_seconds']:7.1f} s  "
                f"peak RSS {res['peak_rss_mb']:6.0f} MB  load {min(loads):.1f}-{max(loads):.1f}"
            )
    load_after = os.getloadavg()
    med = {side: median_run(rs) for side, rs in runs.items()}
    wb, dt = med["wb"], med["datatrove"]
    ratios = {
        "speed_wall": dt["wall_seconds"] / wb["wall_seconds"],
        "speed_cpu": dt["cpu_seconds"] / wb["cpu_seconds"],
        "memory": wb["peak_rss_mb"] / dt["peak_rss_mb"],
    }
    agree = agreement(corpus, work, Path(runs["wb"][-1]["details"]["dropped_file"]), shards)
    loads = [x for rs in runs.values() for r in rs for x in r["load_1min"]]
    head = ["side", "wall s", "CPU s", "records/s", "records/CPU s", "peak RSS MB", "removed", "precision"]
    head += ["recall", "recall J>=0.8"]
    rows = []
    for side in ("wb", "datatrove"):
        q = agree["quality"][side]
        rows.append(
            [
                side,
                f"{med[side]['wall_seconds']:.1f}",
                f"{med[side]['cpu_seconds']:.1f}",
                f"{med[side]['records_per_s']:,.0f}",
                f"{med[side]['records_per_cpu_s']:,.0f}",
                f"{med[side]['peak_rss_mb']:,.0f}",
                f"{agree['removed'][side]:,}",
                dq._pct(q["precision"]),
                dq._pct(q["recall"]),
                dq._pct(q["recall_jaccard_ge_threshold"]),
            ]
        )
    print()
    print(table(head, rows))
    print(
        f"\nwb / datatrove: {ratios['speed_wall']:.1f}x faster (wall), {ratios['speed_cpu']:.1f}x per CPU-second; "
        f"peak memory {ratios['memory']:.2f}x datatrove's"
    )
    print(
        f"removed by both {agree['removed_by_both']:,}, by wb only {agree['removed_by_wb_only']:,}, by datatrove "
        f"only {agree['removed_by_datatrove_only']:,} (Jaccard of the two sets {agree['jaccard_of_removed_sets']:.3f})"
    )
    if loads:
        print(f"load average (1 min) while the sides ran: {min(loads):.1f}-{max(loads):.1f}")
    goals = {
        "speed": {"target": f">= {TARGET_SPEEDUP:g}x", "wall": ratios["speed_wall"], "cpu": ratios["speed_cpu"]},
        "memory": {"target": f"<= {TARGET_MEMORY:g}x", "value": ratios["memory"]},
    }
    goals["speed"]["met"] = min(ratios["speed_wall"], ratios["speed_cpu"]) >= TARGET_SPEEDUP
    goals["memory"]["met"] = ratios["memory"] <= TARGET_MEMORY
    for name, g in goals.items():
        print(f"  {name:<7} {g['target']:<7} {'met' if g['met'] else 'NOT met'}")
    report = {
        "corpus": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(corpus).items()},
        "settings": {"rounds": a.rounds, "core": core, "threads": 1, "datatrove_workers": 1, "language": language},
        "machine": {
            "cpu": cpu_info(),
            "platform": platform.platform(),
            "load_1min_before": load_before[0],
            "load_1min_after": load_after[0],
            "load_1min_sampled": [min(loads), max(loads)] if loads else None,
            "wb_venv": dq._versions(a.wb_python, ["polars", "numpy"]),
            "datatrove_venv": dq._versions(a.datatrove_python, ["datatrove", "numpy", "spacy", "xxhash", "orjson"]),
        },
        "wb_source": git_state(),
        "seconds": time.time() - started,
        "runs": runs,
        "median": med,
        "ratios": ratios,
        "agreement": agree,
        "targets": goals,
    }
    path = write_report(a.out_dir / f"vs_datatrove_{a.lang}.json", report)
    print(f"\nresults: {path}")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
