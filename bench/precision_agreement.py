"""bf16 autocast against fp32 on the embedded SmolLM2-135M: the loss curve of a LoRA run and greedy eval answers.

1. **Training**: `wb train pipelines/train-lora.yaml` on `--records` real records (the draw of
   `train_throughput.py`), `max_steps` 30, `max_length` 256, batch 2, logging every step, once with `precision=fp32`
   and once with `precision=bf16`, in this process one after the other (same seed, same data order). Reports the
   per-step gap of the bf16 loss to the fp32 loss (absolute and relative), the final losses and each run's time.
2. **Greedy answers** on `data/demo/eval.jsonl` (50 items; `--limit`), `max_new_tokens` 64, batch 16, with fp32 and
   with bf16 generation: the base model, the fp32-trained adapter (inference precision alone), and end to end (the
   bf16-trained adapter answering in bf16 against the fp32 one in fp32). Reports how many answers are identical,
   and the mean absolute difference of the reference losses (`wb eval`'s task loss) between the precisions.

Writes `bench/out/precision_agreement.json`. Run: `.venv/bin/python bench/precision_agreement.py` (~10 min on 2
cores). A measurement, not a test: exit status 0 either way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import ROOT, git_state, versions, write_report

sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "bench" / "out"
DEFAULT_DATA = ROOT.parent / "shared" / "data"
EVAL = ROOT / "data" / "demo" / "eval.jsonl"
RECIPE = ROOT / "pipelines" / "train-lora.yaml"


def train_both(data: Path, out: Path, steps: int) -> dict[str, Any]:
    from workbench.train import recipe as wrecipe
    from workbench.train.trainer import train

    runs: dict[str, Any] = {}
    for prec in ("fp32", "bf16"):
        overrides = [
            f"data={data}",
            f"max_steps={steps}",
            "max_length=256",
            "batch_size=2",
            "val_size=0",
            "logging_steps=1",
            "lr=3e-4",
            f"output_dir={out}",
            f"name=agree-{prec}",
            f"precision={prec}",
        ]
        recipe = wrecipe.load(RECIPE, overrides)
        shutil.rmtree(recipe.run_dir, ignore_errors=True)
        load = os.getloadavg()
        t = time.perf_counter()
        result = train(recipe)
        runs[prec] = {
            "run_dir": str(result.run_dir),
            "seconds": round(time.perf_counter() - t, 1),
            "train_runtime_seconds": result.manifest["train_runtime_seconds"],
            "tokens_per_second": result.manifest["tokens_per_second"],
            "precision": result.manifest["precision"],
            "precision_reason": result.manifest["precision_reason"],
            "losses": [row["loss"] for row in result.log if "loss" in row],
            "load_before": load,
            "load_after": os.getloadavg(),
        }
        print(f"  train {prec}: {runs[prec]['seconds']} s, {runs[prec]['tokens_per_second']} tokens/s", flush=True)
    runs["curve"] = curve(runs["fp32"]["losses"], runs["bf16"]["losses"])
    return runs


def answers(target: str | None, base_only: bool, items: list[dict[str, Any]], precision: str) -> dict[str, Any]:
    from workbench.models.generate import GenerationSettings, generate, prompt_for, reference_losses
    from workbench.models.targets import load, resolve_target

    loaded = load([resolve_target(target or "embedded")])
    if base_only and loaded.adapters:
        loaded.use(None)
    prompts = [prompt_for(loaded, it) for it in items]
    settings = GenerationSettings(max_new_tokens=64, batch_size=16, precision=precision)  # type: ignore[arg-type]
    t = time.perf_counter()
    texts = generate(loaded, prompts, settings, cache=None)
    seconds = time.perf_counter() - t
    losses = reference_losses(loaded, items, 1024, 8, precision=precision)
    return {"answers": texts, "losses": losses, "seconds": round(seconds, 1)}


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    same = sum(x == y for x, y in zip(a["answers"], b["answers"], strict=True))
    pairs = [(x, y) for x, y in zip(a["losses"], b["losses"], strict=True) if x is not None and y is not None]
    diffs = [abs(x - y) for x, y in pairs]
    return {
        "identical_answers": same,
        "items": len(a["answers"]),
        "share": same / len(a["answers"]),
        "reference_loss_mean_abs_diff": sum(diffs) / len(diffs) if diffs else None,
        "reference_loss_max_abs_diff": max(diffs) if diffs else None,
        "seconds": {"a": a["seconds"], "b": b["seconds"]},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=120, help="training records drawn (default 120)")
    p.add_argument("--steps", type=int, default=30, help="optimiser steps (default 30)")
    p.add_argument("--limit", type=int, default=50, help="eval items (default 50)")
    p.add_argument("--seed", type=int, default=20240611)
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument(
        "--runs-from", type=Path, help="reuse the agree-fp32 and agree-bf16 run folders of an earlier run (no training)"
    )
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from train_throughput import make_records, write_records

    work = args.out_dir / f"agree-{os.getpid()}"
    records, _ = make_records(args.data_dir, args.records, args.seed)
    data = work / "train.jsonl"
    write_records(data, records)
    items = [json.loads(x) for x in EVAL.read_text(encoding="utf-8").splitlines() if x.strip()][: args.limit]
    started = os.getloadavg()
    print(f"load before: {started}", flush=True)
    runs = reuse(args.runs_from) if args.runs_from is not None else train_both(data, work / "runs", args.steps)
    c = runs["curve"]
    print(
        f"loss curve over {c['steps']} steps: max |bf16 - fp32| {c['max_abs_gap']:.4f} "
        f"({c['max_rel_gap']:.2%} of the fp32 loss), mean {c['mean_abs_gap']:.4f} ({c['mean_rel_gap']:.2%}); "
        f"last {c['last']['fp32']:.4f} vs {c['last']['bf16']:.4f}",
        flush=True,
    )
    fp32_run, bf16_run = runs["fp32"]["run_dir"], runs["bf16"]["run_dir"]
    gen: dict[str, Any] = {}
    for label, target, base_only, precs in (
        ("base", fp32_run, True, ("fp32", "bf16")),
        ("tuned_fp32_adapter", fp32_run, False, ("fp32", "bf16")),
    ):
        a, b = (answers(target, base_only, items, prec) for prec in precs)
        gen[label] = compare(a, b)
        gen[f"_{label}_fp32"] = a
    end_to_end = answers(bf16_run, False, items, "bf16")
    gen["end_to_end"] = compare(gen["_tuned_fp32_adapter_fp32"], end_to_end)
    for label in ("base", "tuned_fp32_adapter", "end_to_end"):
        g = gen[label]
        print(
            f"  greedy {label}: {g['identical_answers']}/{g['items']} answers identical ({g['share']:.0%}); "
            f"reference loss |diff| mean {g['reference_loss_mean_abs_diff']:.4f}, max "
            f"{g['reference_loss_max_abs_diff']:.4f}; seconds fp32 {g['seconds']['a']} bf16 {g['seconds']['b']}",
            flush=True,
        )
    ended = os.getloadavg()
    print(f"load after: {ended}")
    report = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "load_before": started,
        "load_after": ended,
        "wb_source": git_state(),
        "versions": versions(("torch", "transformers", "peft")),
        "training": runs,
        "greedy": {k: v for k, v in gen.items() if not k.startswith("_")},
    }
    print(f"results: {write_report(args.out_dir / 'precision_agreement.json', report)}")
    if args.runs_from is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def reuse(folder: Path) -> dict[str, Any]:
    """The training half from two finished run folders (their manifests and logs)."""
    runs: dict[str, Any] = {}
    for prec in ("fp32", "bf16"):
        run = folder / f"agree-{prec}"
        manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
        log = [json.loads(x) for x in (run / "trainer_log.jsonl").read_text(encoding="utf-8").splitlines() if x]
        runs[prec] = {
            "run_dir": str(run),
            "train_runtime_seconds": manifest["train_runtime_seconds"],
            "tokens_per_second": manifest["tokens_per_second"],
            "precision": manifest["precision"],
            "precision_reason": manifest["precision_reason"],
            "losses": [row["loss"] for row in log if "loss" in row],
        }
    runs["curve"] = curve(runs["fp32"]["losses"], runs["bf16"]["losses"])
    return runs


def curve(a: list[float], b: list[float]) -> dict[str, Any]:
    """The gap of the bf16 loss curve `b` to the fp32 one `a`, step by step."""
    gaps = [abs(x - y) for x, y in zip(b, a, strict=True)]
    rel = [g / y for g, y in zip(gaps, a, strict=True)]
    return {
        "steps": len(a),
        "max_abs_gap": max(gaps),
        "mean_abs_gap": sum(gaps) / len(gaps),
        "max_rel_gap": max(rel),
        "mean_rel_gap": sum(rel) / len(rel),
        "first": {"fp32": a[0], "bf16": b[0]},
        "last": {"fp32": a[-1], "bf16": b[-1]},
    }


if __name__ == "__main__":
    raise SystemExit(main())
