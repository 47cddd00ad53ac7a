"""Where one `wb train` run spends its time and memory outside the optimiser steps: phase by phase.

Runs `wb train` (LoRA SFT at issue 27's settings, or `--dpo`) on the records `bench/vs_llamafactory.py` draws, in a
child process pinned to one core with one thread. The child marks phase boundaries (wall clock and its own CPU time)
by wrapping the run driver's functions where the trainer modules call them (`begin`, `prepare`, `apply_method`,
`run`, `save_weights`, `per_example_losses`, `read_log`, `finish`; TRL's path likewise) and a Trainer callback for
the steps; the parent samples the child's RSS (`/proc/<pid>/status` VmRSS) every `--interval` seconds (default
0.25) and takes the peak from `wait4`. Nothing in wb changes: the markers only wrap what runs anyway.

Prints and writes `bench/out/train_phases.json` (`train_phases_dpo.json`): per phase its seconds, CPU seconds, RSS
at its end and the largest RSS sampled in it, and the RSS samples themselves. Timing carries the machine's load
(reported); RSS much less. Run: `nice -n 10 .venv/bin/python bench/train_phases.py [--dpo] [--steps N]`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import ROOT, git_state, table, write_report

sys.path.insert(0, str(ROOT / "bench"))

import vs_llamafactory as vs  # the same records, pairs, settings and overrides)

from workbench.train.memory import train_environment  # vs_llamafactory puts the repository on the path

# The child: marks, wrapped driver functions, a step callback, then wb's CLI as `python -m workbench.cli` runs it.
CHILD = r"""
import atexit, json, os, sys, time
_path = os.environ["WB_PHASES"]
def mark(name):
    with open(_path, "a") as f:
        f.write(json.dumps({"mark": name, "t": time.time(), "cpu": time.process_time()}) + "\n")
mark("start")
import torch, transformers, peft, trl  # noqa: F401
import workbench.cli
from workbench.train import hf, trainer, trl_trainers
mark("imports")
def wrap(mod, name):
    f = getattr(mod, name, None)
    if f is None:
        return
    def w(*a, **k):
        mark(name)
        return f(*a, **k)
    setattr(mod, name, w)
for mod in (trainer, trl_trainers):
    for n in ("begin", "prepare", "apply_method", "_policy", "_build", "run", "save_weights", "_save",
              "per_example_losses", "read_log", "finish"):
        wrap(mod, n)
_callbacks = hf.callbacks
def callbacks(*a, **k):
    from transformers import TrainerCallback
    class Marks(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            mark("train_begin")
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == 0:
                mark("step_1")
        def on_step_end(self, args, state, control, **kw):
            mark(f"step_{state.global_step}_end")
        def on_train_end(self, args, state, control, **kw):
            mark("train_end")
    return [*_callbacks(*a, **k), Marks()]
hf.callbacks = callbacks
atexit.register(mark, "exit")
sys.argv = ["wb", *sys.argv[1:]]
workbench.cli.main()
"""


def sample(pid: int) -> tuple[float, float] | None:
    """(VmRSS MB, CPU seconds) of a live process, or None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    tick = os.sysconf("SC_CLK_TCK")
    return rss / 1024, (int(stat[11]) + int(stat[12])) / tick


def phases(marks: list[dict[str, Any]], samples: list[tuple[float, float, float]]) -> list[dict[str, Any]]:
    """Consecutive marks folded into named phases; each with seconds, CPU seconds, RSS at its end and its max."""
    names = {
        "start": "python start + imports (torch, transformers, peft, trl, wb)",
        "imports": "CLI: recipe, checks",
        "begin": "begin: tokenizer + model load",
        "prepare": "prepare: read, tokenise, pack",
        "apply_method": "apply_method (LoRA), Trainer built",
        "_policy": "policy (LoRA), reference",
        "_build": "Trainer built",
        "run": "train(): optimizer, dataloader",
        "train_begin": "train begin -> first step",
        "step_1": "first step",
        "step_1_end": "steps 2..N",
        "train_end": "after the steps: Trainer's end",
        "save_weights": "save weights",
        "_save": "save weights",
        "per_example_losses": "per-example loss pass",
        "read_log": "read log + loss.svg",
        "finish": "manifest + report, exit",
    }
    kept = [m for m in marks if not (m["mark"].startswith("step_") and m["mark"] not in ("step_1", "step_1_end"))]
    last_step = [m for m in marks if m["mark"].startswith("step_") and m["mark"].endswith("_end")]
    if last_step and last_step[-1]["mark"] != "step_1_end":
        kept.append({**last_step[-1], "mark": "steps_end"})
        kept.sort(key=lambda m: m["t"])
        names["steps_end"] = "after the last step: Trainer's end"
        names["train_end"] = "Trainer end -> train() returns"
    out = []
    for a, b in itertools.pairwise(kept):
        inside = [s[1] for s in samples if a["t"] <= s[0] <= b["t"]]
        at_end = [s[1] for s in samples if s[0] <= b["t"]]
        out.append(
            {
                "phase": names.get(a["mark"], a["mark"]),
                "from": a["mark"],
                "seconds": round(b["t"] - a["t"], 2),
                "cpu_seconds": round(b["cpu"] - a["cpu"], 2),
                "rss_end_mb": round(at_end[-1], 1) if at_end else None,
                "rss_max_mb": round(max(inside), 1) if inside else None,
            }
        )
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--dpo", action="store_true")
    p.add_argument("--steps", type=int)
    p.add_argument("--records", type=int)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--cpus", help="taskset cores (default: the last `--threads` cores, as vs_llamafactory.py)")
    p.add_argument("--interval", type=float, default=0.25)
    p.add_argument("--data-dir", type=Path, default=vs.DEFAULT_DATA)
    p.add_argument("--out-dir", type=Path, default=vs.DEFAULT_OUT)
    p.add_argument("--tag", default="", help="a suffix for the JSON's name (e.g. before / after)")
    p.add_argument("overrides", nargs="*", help="extra recipe overrides (key=value)")
    args = p.parse_args()
    from workbench.models.embedded import embedded_model_dir

    model_dir = embedded_model_dir()
    work = Path(tempfile.mkdtemp(prefix="wb-phases-"))
    n = args.records or (32 if args.dpo else 128)
    items: Any = vs.make_pairs(args.data_dir, n) if args.dpo else vs.make_records(args.data_dir, n)[0]
    data = work / ("pairs.json" if args.dpo else "records.json")
    data.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    cfg = vs.Config(args.threads, "lora", args.dpo, args.steps, args.precision, args.cpus or vs.pin(args.threads, True))
    out = work / "wb"
    out.mkdir()
    overrides = vs.wb_overrides(cfg, model_dir, data, out) + args.overrides
    recipe = vs.RECIPES["dpo" if args.dpo else "lora"]
    marks_path = work / "marks.jsonl"
    env = {**vs.child_env(args.threads, work), "PYTHONPATH": str(ROOT), "WB_PHASES": str(marks_path)}
    env = train_environment(env)  # from the start: `wb train` would restart after the child's own imports
    cmd = [sys.executable, "-c", CHILD, "train", str(recipe), *overrides]
    if cfg.cpus:
        cmd = ["taskset", "-c", cfg.cpus, *cmd]
    load_before = os.getloadavg()[0]
    t0 = time.time()
    with (work / "output.log").open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        samples: list[tuple[float, float, float]] = []
        loads = []
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # the child's own peak RSS and CPU time at its end
            if pid:
                break
            s = sample(proc.pid)
            if s is not None:
                samples.append((time.time(), *s))
            if len(samples) % 20 == 0:
                loads.append(os.getloadavg()[0])
            time.sleep(args.interval)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - t0
    if proc.returncode:
        print((work / "output.log").read_text()[-3000:])
        return 1
    marks = [json.loads(x) for x in marks_path.read_text().splitlines()]
    rows = phases(marks, samples)
    peak = usage.ru_maxrss / 1024
    manifest = json.loads((out / "run" / "manifest.json").read_text())
    head = ["phase", "s", "CPU s", "RSS end MB", "RSS max MB"]
    print(
        table(
            head,
            [
                [
                    r["phase"],
                    f"{r['seconds']:.1f}",
                    f"{r['cpu_seconds']:.1f}",
                    f"{r['rss_end_mb']}",
                    f"{r['rss_max_mb']}",
                ]
                for r in rows
            ],
            left=1,
        )
    )
    loop = float(manifest["train_runtime_seconds"])
    print(
        f"whole {wall:.1f} s, train loop {loop:.1f} s (outside it {wall - loop:.1f} s), peak RSS (wait4) "
        f"{peak:,.0f} MB, load {load_before:.2f} -> {os.getloadavg()[0]:.2f} "
        f"(mean {statistics.fmean(loads or [0]):.2f})"
    )
    name = f"train_phases{'_dpo' if args.dpo else ''}{'_' + args.tag if args.tag else ''}.json"
    report = {
        "command": " ".join(sys.argv),
        "cpu": vs.cpu_info(),
        "wb_source": git_state(),
        "overrides": overrides,
        "whole_seconds": round(wall, 2),
        "train_runtime_seconds": loop,
        "peak_rss_mb": round(peak, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "load": {"before": load_before, "after": os.getloadavg()[0], "samples": loads},
        "tokens": manifest.get("tokens"),
        "phases": rows,
        "marks": [{**m, "t": round(m["t"] - t0, 3)} for m in marks],
        "rss_samples": [(round(t - t0, 2), round(r, 1), round(c, 2)) for t, r, c in samples],
    }
    print(f"results: {write_report(args.out_dir / name, report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
