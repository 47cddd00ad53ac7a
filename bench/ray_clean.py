"""`wb clean` on the local engine against the Ray Data engine (`--engine ray`), side by side, at growing sizes.

What is compared
----------------
* **local**: `workbench.clean.dispatch.run(input, output, workbench.clean.profile.load("default"))`, one process.
* **ray**: `workbench.clean.ray_engine.run(...)` on the same input and profile, on a local Ray cluster started in
  the child with this machine's cores (`ray.init(num_cpus=os.cpu_count())`), blocks of 32 MiB of JSON Lines.

Each engine runs in a fresh child process. Reported for each: wall time of the cleaning call (and, for Ray, the
cluster start-up on its own), CPU seconds of the child (Ray workers' CPU is not in it), the driver's peak RSS
(`os.wait4`), and for Ray the peak RSS of each worker process and the peak of their sum, sampled every 0.2 s with
psutil (processes whose command line starts with `ray::`; the object store is shared memory, counted in the RSS of
the processes that map it, so the sum over-counts shared pages). Both engines' outputs are compared: kept file byte
for byte, dropped lines after sorting, stats equal.

On 2 cores the Ray engine is not faster (its tasks share the two cores with the driver, the raylet and the object
store, and every stage passes Arrow blocks through shared memory); what it buys is that the per-record work and
the dedup shuffles run on as many nodes as a cluster has, with the driver holding only small state.

Input: `bench/clean_memory.py`'s generator (`mixed` corpus from `../shared/data`: real records with a third of
their words replaced, 3 % exact and 3 % near repeats).

Run from the repository root: `.venv/bin/python bench/ray_clean.py [--sizes 100000 1000000]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import ROOT, git_state, table, versions, write_report
from clean_memory import DEFAULT_DATA, DEFAULT_OUT, generate, load_average

WORKER = """
import json, os, sys, threading, time
from pathlib import Path
import workbench.clean.dispatch
import workbench.clean.profile
engine, src, dst = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
profile = workbench.clean.profile.load("default")
info = {}
if engine == "local":
    started = time.perf_counter()
    result = workbench.clean.dispatch.run(src, dst, profile)
    seconds = time.perf_counter() - started
else:
    import psutil, ray
    from workbench.clean import ray_engine
    t0 = time.perf_counter()
    with ray_engine.session(num_cpus=os.cpu_count()):
        info["startup_seconds"] = round(time.perf_counter() - t0, 1)
        peaks, total, stop = {}, [0.0], threading.Event()
        def sample():
            while not stop.is_set():
                now = 0.0
                for p in psutil.process_iter(["pid", "cmdline", "memory_info"]):
                    cmd = p.info["cmdline"] or []
                    if cmd and cmd[0].startswith("ray::") and p.info["memory_info"] is not None:
                        mb = p.info["memory_info"].rss / 2**20
                        peaks[p.info["pid"]] = max(peaks.get(p.info["pid"], 0.0), mb)
                        now += mb
                total[0] = max(total[0], now)
                stop.wait(0.2)
        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        started = time.perf_counter()
        result = ray_engine.run(src, dst, profile)
        seconds = time.perf_counter() - started
        stop.set(); thread.join()
        info.update({"worker_peak_rss_mb": round(max(peaks.values(), default=0.0), 1),
                     "workers_sum_peak_rss_mb": round(total[0], 1), "workers": len(peaks)})
s = result.summary
print(json.dumps({"seconds": round(seconds, 1), **info,
                  **{k: s[k] for k in ("read", "kept", "dropped", "rejected", "dropped_by_rule")}}))
"""


def run_child(engine: str, src: Path, dst: Path) -> dict[str, Any]:
    shutil.rmtree(dst.parent, ignore_errors=True)
    dst.parent.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    load_before = load_average()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, engine, str(src), str(dst)], env=env, stdout=subprocess.PIPE, cwd=ROOT
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{engine} worker failed with {status}")
    return {
        **json.loads(out.decode().strip().splitlines()[-1]),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "driver_cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "driver_peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "load_before": load_before,
        "load_after": load_average(),
    }


def same_outputs(local: Path, ray: Path) -> dict[str, bool]:
    def side(p: Path, suffix: str) -> Path:
        return p.with_name(p.name.removesuffix(".jsonl") + suffix)

    def sorted_lines(p: Path) -> list[bytes]:
        return sorted(p.read_bytes().splitlines())

    stats = [json.loads(side(p, ".stats.json").read_text()) for p in (local, ray)]
    return {
        "kept_identical": local.read_bytes() == ray.read_bytes(),
        "rejects_identical": side(local, ".rejects.jsonl").read_bytes() == side(ray, ".rejects.jsonl").read_bytes(),
        "dropped_identical_sorted": sorted_lines(side(local, ".dropped.jsonl"))
        == sorted_lines(side(ray, ".dropped.jsonl")),
        "stats_identical": stats[0] == stats[1],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT / "ray_clean")
    ap.add_argument("--seed", type=int, default=20261201)
    args = ap.parse_args()
    args.out = args.out.resolve()  # the children run from the repository root

    results: list[dict[str, Any]] = []
    for n in args.sizes:
        src = args.out / f"mixed-{n}.jsonl"
        if not src.exists():
            print(f"generating {n:,} records", flush=True)
            generate(src, n, args.seed, args.data)
        row: dict[str, Any] = {"records": n, "bytes": src.stat().st_size}
        for engine in ("local", "ray"):
            print(f"{n:,} records: {engine}", flush=True)
            row[engine] = run_child(engine, src, args.out / engine / "clean.jsonl")
            print(f"  {row[engine]}", flush=True)
        row["agreement"] = same_outputs(args.out / "local" / "clean.jsonl", args.out / "ray" / "clean.jsonl")
        row["ray_over_local_seconds"] = round(row["ray"]["seconds"] / row["local"]["seconds"], 2)
        results.append(row)
        for engine in ("local", "ray"):
            shutil.rmtree(args.out / engine, ignore_errors=True)

    growth = {}
    if len(results) > 1:
        a, b = results[0], results[-1]
        for engine in ("local", "ray"):
            growth[engine] = {
                "records": round(b["records"] / a["records"], 1),
                "seconds": round(b[engine]["seconds"] / a[engine]["seconds"], 2),
                "driver_peak_rss": round(b[engine]["driver_peak_rss_mb"] / a[engine]["driver_peak_rss_mb"], 2),
            }
    rows = []
    for r in results:
        lo, ra = r["local"], r["ray"]
        rows.append(
            [
                f"{r['records']:,}",
                f"{lo['seconds']:.1f}",
                f"{ra['seconds']:.1f} (+{ra['startup_seconds']:.0f} start)",
                f"{r['ray_over_local_seconds']:.2f}",
                f"{lo['driver_peak_rss_mb']:,.0f}",
                f"{ra['driver_peak_rss_mb']:,.0f}",
                f"{ra['worker_peak_rss_mb']:,.0f} / {ra['workers_sum_peak_rss_mb']:,.0f}",
                "yes" if all(r["agreement"].values()) else f"NO {r['agreement']}",
            ]
        )
    head = ["records", "local s", "ray s", "ray/local", "local MiB", "ray driver MiB", "ray worker max/sum MiB"]
    print(table([*head, "same output"], rows))
    if growth:
        print("growth from the smallest to the largest size:", json.dumps(growth))
    report = {
        "benchmark": "ray_clean",
        "cores": os.cpu_count(),
        "git": git_state(),
        "versions": versions(["polars", "pyarrow", "ray", "numpy"]),
        "results": results,
        "growth": growth,
    }
    print(f"wrote {write_report(args.out.parent / 'ray_clean.json', report)}")


if __name__ == "__main__":
    main()
