"""DPO training throughput and memory of `wb train` (method dpo) against a plain TRL `DPOTrainer` script.

What is compared
----------------
* **wb**: `workbench.train.trainer.train(recipe)` with `pipelines/train-dpo.yaml` and the overrides the comparison
  needs: these pairs, `max_steps`, `val_size=0` / no eval data, `max_length`, `batch_size`, `lr`, `beta`. wb renders
  each prompt with the model's chat template, checks the truncation rules, and hands the strings to TRL's
  DPOTrainer with a LoRA config (reference = the policy with its adapter disabled).
* **baseline**: what a user writes with TRL alone: `AutoModelForCausalLM` / `AutoTokenizer` on the same model folder,
  the pairs as TRL's conversational shape (`prompt` messages, `chosen` / `rejected` assistant messages), a
  `peft.LoraConfig` with the same settings (r 16, alpha 32, dropout 0.05, all linear layers) passed as
  `peft_config`, and a `DPOConfig` with the same optimiser settings (lr, schedule, warmup, weight decay, seed),
  beta, max_length, batch size and steps; `gradient_checkpointing` and `bf16` off (TRL's defaults turn both on, wb
  turns them off on CPU). The baseline never imports wb.

Both sides run TRL's own loss and count tokens the same way (TRL's `num_tokens`: the non-padding tokens of the
chosen and rejected sequences of every batch), so tokens/s = num_tokens / `train_runtime` (the Trainer's timing
of `trainer.train()`; model loading, tokenising and saving are outside it). Each side runs in its own fresh
interpreter; its peak RSS and CPU time come from `os.wait4` (that child alone), and the 1-minute load average is
sampled while it runs. The ratio wb / baseline is the number to read: near 1.0 means wb's checks and run folder cost
nothing in the training loop.

Data: the shipped bilingual preference set (`data/preference/prefs.jsonl`, or `--pairs FILE`).

Run from the repository root: `.venv/bin/python bench/dpo_throughput.py --max-steps 10` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import ROOT, git_state, measure_child, self_peak_rss_mb, table, versions, write_report

DEFAULT_OUT = ROOT / "bench" / "out"
DEFAULT_PAIRS = ROOT / "data" / "preference" / "prefs.jsonl"
RECIPE = ROOT / "pipelines" / "train-dpo.yaml"
LORA = {"r": 16, "alpha": 32, "dropout": 0.05}
SEED = 42


def worker_wb(a: argparse.Namespace) -> dict[str, Any]:
    from workbench.train import recipe as wrecipe
    from workbench.train.trainer import train

    overrides = [
        f"data={a.pairs}",
        "eval_data=null",
        "val_size=0",
        f"max_steps={a.max_steps}",
        f"max_length={a.max_length}",
        f"batch_size={a.batch_size}",
        f"lr={a.lr}",
        f"preference.beta={a.beta}",
        f"output_dir={a.work}",
        "name=wb-dpo",
        "logging_steps=1",
        f"seed={SEED}",
        "scheduler=cosine",
        "warmup_ratio=0.1",
    ]
    recipe = wrecipe.load(RECIPE, overrides, model=str(a.model_dir))
    at_end: dict[str, float] = {}

    def on_log(row: dict[str, Any]) -> None:
        if "train_runtime" in row:
            at_end["rss"] = self_peak_rss_mb()

    result = train(recipe, on_log=on_log)
    m = result.manifest
    losses = [r["loss"] for r in result.log if "loss" in r]
    return {
        "train_seconds": m["train_runtime_seconds"],
        "train_cpu_seconds": m["train_cpu_seconds"],
        "steps": m["global_step"],
        "tokens": m["tokens"]["seen"],
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "precision": m["precision"],
        "peak_rss_training_mb": at_end.get("rss"),
    }


def worker_baseline(a: argparse.Namespace) -> dict[str, Any]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    rows = []
    for line in Path(a.pairs).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        prompt = ([{"role": "system", "content": r["system"]}] if r.get("system") else []) + [
            {"role": "user", "content": r["prompt"]}
        ]
        rows.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                "rejected": [{"role": "assistant", "content": r["rejected"]}],
            }
        )
    tokenizer = AutoTokenizer.from_pretrained(str(a.model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(a.model_dir), dtype="float32")
    args = DPOConfig(
        output_dir=str(Path(a.work) / "baseline"),
        max_steps=a.max_steps,
        per_device_train_batch_size=a.batch_size,
        learning_rate=a.lr,
        lr_scheduler_type="cosine",
        warmup_steps=0.1,
        weight_decay=0.01,
        max_grad_norm=1.0,
        beta=a.beta,
        max_length=a.max_length,
        seed=SEED,
        logging_steps=1,
        logging_first_step=True,
        save_strategy="no",
        report_to=[],
        gradient_checkpointing=False,
        bf16=False,
        disable_tqdm=True,
    )
    peft = LoraConfig(**{"r": LORA["r"], "lora_alpha": LORA["alpha"], "lora_dropout": LORA["dropout"]},
                      target_modules="all-linear", task_type="CAUSAL_LM")  # fmt: skip
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer, peft_config=peft
    )
    cpu = time.process_time()
    out = trainer.train()
    cpu = time.process_time() - cpu
    rss = self_peak_rss_mb()
    trainer.save_model(str(Path(a.work) / "baseline" / "adapter"))
    logs = [r for r in trainer.state.log_history if "loss" in r]
    counted = [r["num_tokens"] for r in trainer.state.log_history if "num_tokens" in r]
    return {
        "train_seconds": out.metrics["train_runtime"],
        "train_cpu_seconds": cpu,
        "steps": out.global_step,
        "tokens": int(counted[-1]) if counted else None,
        "first_loss": logs[0]["loss"] if logs else None,
        "last_loss": logs[-1]["loss"] if logs else None,
        "precision": "fp32",
        "peak_rss_training_mb": rss,
    }


WORKERS = {"wb": worker_wb, "baseline": worker_baseline}


def run_child(side: str, a: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    result = Path(a.work) / f"{side}.result.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side, "--work", str(a.work)]
    cmd += ["--pairs", str(a.pairs), "--model-dir", str(a.model_dir), "--max-steps", str(a.max_steps)]
    cmd += ["--max-length", str(a.max_length), "--batch-size", str(a.batch_size), "--lr", str(a.lr)]
    cmd += ["--beta", str(a.beta)]
    child = measure_child(cmd, env)
    if child.exit_code != 0:
        raise SystemExit(f"{side} worker failed with exit status {child.exit_code}")
    res: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    res |= {
        "side": side,
        "peak_rss_mb": child.peak_rss_mb,
        "cpu_seconds": child.cpu_seconds,
        "wall_seconds": child.wall_seconds,
        "load_mean": sum(child.loads) / len(child.loads) if child.loads else os.getloadavg()[0],
        "tokens_per_s": (res["tokens"] or 0) / res["train_seconds"] if res["train_seconds"] else 0.0,
        "tokens_per_cpu_s": (res["tokens"] or 0) / res["train_cpu_seconds"] if res["train_cpu_seconds"] else 0.0,
    }
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS, help="preference pairs (prompt/chosen/rejected)")
    p.add_argument("--max-steps", type=int, default=10)
    p.add_argument("--max-length", type=int, default=384)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of every child (default: inherited)")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    p.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.worker:
        res = WORKERS[a.worker](a)
        (Path(a.work) / f"{a.worker}.result.json").write_text(json.dumps(res), encoding="utf-8")
        return 0
    from workbench.models.base import resolve_model

    a.model_dir = resolve_model("embedded")
    a.work = a.out_dir / f"dpo-{dt.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"
    a.work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    if a.threads:
        env["OMP_NUM_THREADS"] = str(a.threads)
    started = dt.datetime.now(dt.UTC)
    results = {}
    for side in ("baseline", "wb"):
        results[side] = r = run_child(side, a, env)
        print(
            f"  {side}: {r['tokens']:,} tokens in {r['train_seconds']:.1f} s = {r['tokens_per_s']:,.1f} tokens/s, "
            f"peak RSS {r['peak_rss_mb']:,.0f} MB, load {r['load_mean']:.1f}, loss {r['first_loss']:.3f} -> "
            f"{r['last_loss']:.3f}",
            flush=True,
        )
    b, w = results["baseline"], results["wb"]
    ratio = {
        "tokens_per_s": w["tokens_per_s"] / b["tokens_per_s"] if b["tokens_per_s"] else None,
        "tokens_per_cpu_s": w["tokens_per_cpu_s"] / b["tokens_per_cpu_s"] if b["tokens_per_cpu_s"] else None,
        "peak_rss": w["peak_rss_mb"] / b["peak_rss_mb"] if b["peak_rss_mb"] else None,
    }
    rows = [
        [s, f"{r['tokens']:,}", f"{r['tokens_per_s']:.1f}", f"{r['tokens_per_cpu_s']:.1f}", f"{r['peak_rss_mb']:,.0f}"]
        for s, r in results.items()
    ]
    rows.append(["wb / baseline", "", f"{ratio['tokens_per_s']:.2f}", f"{ratio['tokens_per_cpu_s']:.2f}",
                 f"{ratio['peak_rss']:.2f}"])  # fmt: skip
    print(table(["side", "tokens", "tokens/s", "tokens/CPU s", "peak RSS MB"], rows))
    report = {
        "date": started.isoformat(timespec="seconds"),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "git": git_state(),
        "versions": versions(["torch", "transformers", "peft", "trl", "datasets"]),
        "results": results,
        "ratio_wb_over_baseline": ratio,
    }
    path = write_report(a.out_dir / "dpo_throughput.json", report)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
