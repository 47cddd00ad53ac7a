"""Peak memory of GaLore against full fine-tuning with AdamW, on the same steps of the embedded model.

Both are full-parameter training of SmolLM2-135M through `wb train`: `method: full` (the Trainer's AdamW) against
`method: galore` (GaLore's AdamW, rank `--rank`, on the attention and MLP linear layers). Same records (the first
`--records` well-formed ones of `data/demo/raw.jsonl`), same `--steps` optimiser steps of `--batch` packed sequences
of `--length` tokens, fp32 weights, bf16 autocast where the CPU has it (as `precision: auto` picks). Each run is its
own child process, so the parent reads each one's own peak resident memory; the child also sums the optimiser's
state tensors after the last step (AdamW: two fp32 moments per weight; GaLore: the moments of the projected
gradients plus each projection matrix) and, on a GPU, the manifest's `gpu_peak_memory_mb`. The baseline (`full`)
runs first, then GaLore, `--repeat` times alternating. Reports the ratio galore / full for each figure.

Run: `.venv/bin/python bench/galore_memory.py` (a few minutes on 2 cores); writes `bench/out/galore_memory.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib

ROOT = benchlib.ROOT
RAW = ROOT / "data" / "demo" / "raw.jsonl"


def records() -> list[dict[str, str]]:
    """The demo's well-formed Alpaca records with an instruction and an output (broken lines skipped)."""
    out = []
    for line in RAW.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        fields = ("instruction", "input", "output")
        if not isinstance(r, dict) or not all(isinstance(r.get(k, ""), str) for k in fields):
            continue  # the demo's deliberately broken records (numbers, lists where text belongs)
        if r.get("instruction", "").strip() and r.get("output", "").strip():
            out.append({"instruction": r["instruction"], "input": r.get("input", ""), "output": r["output"]})
    return out


def child(method: str, work: Path, steps: int, batch: int, length: int, rank: int, n: int) -> dict[str, Any]:
    """One training run in this process: its peak RSS, optimiser state and losses."""
    sys.path.insert(0, str(ROOT))
    import torch

    from workbench.train import hf
    from workbench.train.recipe import Recipe
    from workbench.train.trainer import train

    measured: dict[str, Any] = {}
    make = hf.trainer_class

    def measuring() -> Any:
        class Measured(make()):  # type: ignore[misc]
            def train(self, *a: Any, **kw: Any) -> Any:
                out = super().train(*a, **kw)
                total = 0
                for state in self.optimizer.state.values():
                    for value in state.values():
                        tensor = getattr(value, "ortho_matrix", value)  # GaLore's projector holds its matrix
                        if torch.is_tensor(tensor):
                            total += tensor.numel() * tensor.element_size()
                measured["optimizer_state_mb"] = round(total / 2**20, 1)
                measured["optimizer"] = type(self.optimizer).__name__
                return out

        return Measured

    hf.trainer_class = measuring
    data = work / "train.jsonl"
    recipe = Recipe.model_validate(
        {
            "name": method,
            "method": method,
            "model": "embedded",
            "data": data,
            "output_dir": work / "runs",
            "val_size": 0,
            "max_samples": n,
            "max_length": length,
            "packing": True,
            "max_steps": steps,
            "batch_size": batch,
            "lr": 1e-5,
            "logging_steps": 1,
            "save_steps": 10_000,
            "galore": {"rank": rank, "update_proj_gap": 200, "scale": 0.25},
        }
    )
    started = time.perf_counter()
    result = train(recipe)
    measured.update(
        {
            "method": method,
            "peak_rss_mb": round(benchlib.self_peak_rss_mb(), 1),
            "gpu_peak_memory_mb": result.manifest["gpu_peak_memory_mb"],
            "trainable_parameters": result.manifest["trainable_parameters"],
            "precision": result.manifest.get("precision"),
            "losses": [round(r["loss"], 4) for r in result.log if "loss" in r],
            "train_cpu_seconds": result.manifest["train_cpu_seconds"],
            "wall_seconds": round(time.perf_counter() - started, 1),
        }
    )
    return measured


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--rank", type=int, default=128)
    p.add_argument("--records", type=int, default=48, help="records trained on (default 48)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "galore_memory.json")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        print(json.dumps(child(args.child, args.work, args.steps, args.batch, args.length, args.rank, args.records)))
        return 0
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="galore-bench-") as tmp:
        for i in range(args.repeat):
            for method in ("full", "galore"):
                work = Path(tmp) / f"{method}-{i}"
                work.mkdir()
                with (work / "train.jsonl").open("w", encoding="utf-8") as f:
                    for r in records():
                        f.write(json.dumps(r, ensure_ascii=False) + "\n")
                cmd = [sys.executable, __file__, "--child", method, "--work", str(work)]
                cmd += ["--steps", str(args.steps), "--batch", str(args.batch), "--length", str(args.length)]
                cmd += ["--rank", str(args.rank), "--records", str(args.records)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    print(done.stderr[-4000:], file=sys.stderr)
                    return 1
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"{method} run {i + 1}: {rows[-1]['peak_rss_mb']} MiB peak RSS", file=sys.stderr, flush=True)
    by = {m: [r for r in rows if r["method"] == m] for m in ("full", "galore")}

    def best(method: str, key: str) -> float | None:
        values = [r[key] for r in by[method] if r[key] is not None]
        return min(values) if values else None

    table_rows = []
    for key in ("peak_rss_mb", "optimizer_state_mb", "gpu_peak_memory_mb", "train_cpu_seconds"):
        full, galore = best("full", key), best("galore", key)
        ratio = f"{galore / full:.2f}" if full and galore is not None else "-"
        table_rows.append([key, str(full), str(galore), ratio])
    print(benchlib.table(["figure (min of runs)", "full AdamW", f"GaLore r{args.rank}", "galore / full"], table_rows))
    print(f"load average: {os.getloadavg()[0]:.1f}")
    if args.out:  # always set (default bench/out/galore_memory.json)
        report = {
            "benchmark": "galore_memory",
            "settings": vars(args) | {"out": str(args.out), "work": None, "child": None},
            "git": benchlib.git_state(),
            "versions": benchlib.versions(["torch", "transformers", "peft", "galore-torch"]),
            "load_average": os.getloadavg(),
            "runs": rows,
        }
        benchlib.write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
