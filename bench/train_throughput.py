"""Training throughput and memory of `wb train` (LoRA, packing) against a plain `transformers.Trainer` + PEFT script.

What is compared
----------------
* **wb**: `workbench.train.trainer.train(recipe)` with `pipelines/train-lora.yaml` (LoRA r 16, alpha 32, dropout
  0.05, all linear layers, lr 2e-4, cosine, packing on, `precision: auto`: its defaults; on a CPU with native bf16
  units auto is bf16 autocast) and the overrides the comparison needs:
  this data, one epoch, `val_size=0` (every record is trained on, no eval), `max_length`, and `batch_size` 2
  (`--wb-batch-size`): 2 packed sequences of 512 tokens carry more real tokens per step than the baseline's 4
  padded records (about 1,000 against 760 on the default draw), and on CPU a step of 2 × 512 runs more tokens
  per second than one of 4 × 512 (smaller activations stay in cache).
* **baseline**: what a user writes without wb: `AutoTokenizer`/`AutoModelForCausalLM.from_pretrained` on the same
  model folder, `peft.get_peft_model` with the same LoRA settings, each record rendered with
  `tokenizer.apply_chat_template` (the prompt, rendered with `add_generation_prompt=True`, masked with -100),
  truncated to the same `max_length`, `DataCollatorForSeq2Seq` padding to the longest sequence of the batch, no
  packing, batch 4 (`--batch-size`), `transformers.Trainer` with the same optimiser settings (lr, cosine, warmup,
  weight decay, seed), fp32 on CPU (what transformers does unless told otherwise). The baseline never imports wb.
* **wb-fp32**, **wb-bf16** (`--wb-precisions`, default `fp32`): wb again with `precision` forced, in the same run,
  for the gain of bf16 autocast alone; a forced side whose precision equals what auto picked is not run twice
  (the `wb` side stands for it).

Fairness: both sides train one epoch over the same records (the same examples, truncated at the same length), so
both process the same real (non-padding) tokens; tokens/s is real tokens / `train_runtime` (the Trainer's own
timing of `trainer.train()`: model loading, tokenising and saving the adapter are outside it, on both sides).
Each side counts the tokens it actually ran through the model, batch by batch, together with the padding.
With `--max-steps N` both stop after N optimiser steps: a wb step carries more real tokens than a baseline
step (packed sequences of up to `max_length` against padded records), so the totals differ and only the rates
compare; the full epoch is the fair measurement.

Each side runs in a fresh child process (baseline first, unless `--order wb-first`); its peak RSS and CPU time
come from `os.wait4` (that child alone), its GPU peak from `torch.cuda.max_memory_allocated` (reset before
training). The CPU time of training alone (`time.process_time()` around `trainer.train()`) gives a second rate,
real tokens per CPU second, less sensitive than wall time to other work on a shared machine; the 1-minute load
average is sampled every 5 s while each child runs. wb's peak RSS includes what `wb train` does after training
(per-example losses, saving), the baseline's its adapter saving. On `--device cuda` both run in bf16, and wb also
trains with `method: qlora` (4-bit NF4, needs bitsandbytes) in a third child, for QLoRA against LoRA memory and
speed.

The records are real: drawn with a fixed seed from the MIT-licensed files in `../shared/data` (GPTeacher code
tasks, Chinese term explanations, integer arithmetic, poetry), shaped as Alpaca records, not passed through
`wb clean` (the source files are curated; cleaning would only change the mix).

Run from the repository root: `.venv/bin/python bench/train_throughput.py` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from random import Random
from typing import Any

from benchlib import ROOT, git_state, measure_child, self_peak_rss_mb, table, versions, write_report

DEFAULT_OUT = ROOT / "bench" / "out"
DEFAULT_DATA = ROOT.parent / "shared" / "data"
RECIPE = ROOT / "pipelines" / "train-lora.yaml"

TARGET_SPEEDUP = 3.0  # wb (auto precision) against the fp32 padded baseline, real tokens/s
TARGET_RSS_SHARE = 0.5  # wb's peak RSS at most this share of the baseline's
IGNORE = -100

# Shares of the drawn records per source file (answer field in brackets). GPTeacher's code tasks are the bulk;
# Chinese term explanations are long in SmolLM2's tokens (about 680 on average, most cut at 512), arithmetic
# records short (about 47), so the lengths vary as in a real mixed instruction set.
MIX: dict[str, tuple[str, str, float]] = {
    "en_code": ("en_codegen_instruct.json", "response", 0.70),
    "zh_terms": ("zh_term_explanations.json", "output", 0.12),
    "zh_arith": ("zh_integer_arithmetic.json", "output", 0.10),
    "zh_poetry": ("zh_poetry_culture.json", "output", 0.08),
}

# Same hyperparameters on both sides (wb's come from pipelines/train-lora.yaml and the Recipe defaults; the
# script checks them before running).
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
OPTIM = {"lr": 2e-4, "scheduler": "cosine", "warmup_ratio": 0.03, "weight_decay": 0.01, "max_grad_norm": 1.0}
SEED = 42


# =====================================================================================================
# Records
# =====================================================================================================


def make_records(data_dir: Path, n: int, seed: int) -> tuple[list[dict[str, str]], dict[str, int]]:
    """n Alpaca records drawn without replacement per source in the MIX shares, shuffled; fixed by seed."""
    rng = Random(seed)
    sources = {
        name: [
            {"instruction": r["instruction"], "input": r.get("input") or "", "output": r[answer]}
            for r in json.loads((data_dir / file).read_text(encoding="utf-8"))
        ]
        for name, (file, answer, _) in MIX.items()
    }
    counts = {name: min(round(n * share), len(sources[name])) for name, (_, _, share) in MIX.items()}
    counts["en_code"] = min(n - sum(v for k, v in counts.items() if k != "en_code"), len(sources["en_code"]))
    records = [r for name, k in counts.items() for r in rng.sample(sources[name], k)]
    rng.shuffle(records)
    return records, counts


def write_records(path: Path, records: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")


# =====================================================================================================
# Workers (each runs in its own child process)
# =====================================================================================================


@dataclass
class WorkerArgs:
    records: Path
    model_dir: Path
    out: Path
    result: Path
    max_length: int
    batch_size: int
    max_steps: int | None
    device: str
    method: str = "lora"
    group_by_length: bool = False
    precision: str = "auto"


def _check_device(device: str) -> Any:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no GPU is visible to torch")
    return torch


def worker_wb(a: WorkerArgs) -> dict[str, Any]:
    """`wb train pipelines/train-lora.yaml data=... epochs=1 val_size=0 ...` through the library function."""
    started = time.perf_counter()
    torch = _check_device(a.device)
    from workbench.train import recipe as wrecipe
    from workbench.train.trainer import train

    overrides = [
        f"data={a.records}",
        "epochs=1",
        "val_size=0",
        f"max_length={a.max_length}",
        f"batch_size={a.batch_size}",
        f"method={a.method}",
        f"output_dir={a.out}",
        f"name=wb-{a.method}-{a.precision}",
        "logging_steps=5",
        f"precision={a.precision}",
    ]
    if a.max_steps:
        overrides.append(f"max_steps={a.max_steps}")
    recipe = wrecipe.load(RECIPE, overrides)
    shutil.rmtree(recipe.run_dir, ignore_errors=True)
    imported = time.perf_counter() - started
    at_end: dict[str, float] = {}

    def on_log(row: dict[str, Any]) -> None:
        if "train_runtime" in row:  # the Trainer's last log event: training is over
            at_end["rss"] = self_peak_rss_mb()

    result = train(recipe, on_log=on_log)
    m = result.manifest
    tokens = m["tokens"]
    losses = [row["loss"] for row in result.log if "loss" in row]
    return {
        "import_seconds": imported,
        "batch_size": a.batch_size,
        "train_seconds": m["train_runtime_seconds"],
        "train_cpu_seconds": m.get("train_cpu_seconds"),
        "steps": m["global_step"],
        "real_tokens": tokens["seen"],
        "padding_tokens": tokens["padding_seen"],
        "trained_tokens": tokens["trained_seen"],
        "examples": m["examples"]["train"],
        "sequences_per_epoch": tokens.get("sequences_per_epoch"),
        "train_loss": m["train_loss"],
        "last_logged_loss": losses[-1] if losses else None,
        "precision": m["precision"],
        "precision_reason": m.get("precision_reason"),
        "trainable_parameters": m["trainable_parameters"],
        "gpu_peak_mb": m["gpu_peak_memory_mb"],
        "peak_rss_training_mb": at_end.get("rss"),
        "torch_threads": torch.get_num_threads(),
        "recipe": m["config"],
    }


def baseline_encode(tokenizer: Any, record: dict[str, str], max_length: int) -> dict[str, list[int]]:
    """Chat template over the whole conversation; the prompt (rendered with the generation prompt) is masked."""
    user = f"{record['instruction']}\n\n{record['input']}" if record["input"] else record["instruction"]
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"][:max_length]
    labels = ([IGNORE] * len(prompt_ids) + ids[len(prompt_ids) :])[: len(ids)]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def worker_baseline(a: WorkerArgs) -> dict[str, Any]:
    """A plain transformers.Trainer + PEFT LoRA script, padded batches, no packing."""
    started = time.perf_counter()
    torch = _check_device(a.device)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    imported = time.perf_counter() - started
    bf16 = a.device == "cuda"
    tokenizer = AutoTokenizer.from_pretrained(a.model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with a.records.open(encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    rows = [baseline_encode(tokenizer, r, a.max_length) for r in records]
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.bfloat16 if bf16 else torch.float32)
    model = get_peft_model(
        model,
        LoraConfig(
            r=LORA["r"],
            lora_alpha=LORA["alpha"],
            lora_dropout=LORA["dropout"],
            target_modules=LORA["target_modules"],
            task_type="CAUSAL_LM",
        ),
    )

    class CountingTrainer(Trainer):
        """Measurement only: counts the real and padding tokens of every batch trained on."""

        real = padding = trained = 0

        def compute_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kw: Any) -> Any:
            mask = inputs["attention_mask"]
            self.real += int(mask.sum())
            self.padding += int(mask.numel() - mask.sum())
            self.trained += int((inputs["labels"][:, 1:] != IGNORE).sum())
            return super().compute_loss(model, inputs, *args, **kw)

    args = TrainingArguments(
        output_dir=str(a.out / "baseline"),
        per_device_train_batch_size=a.batch_size,
        num_train_epochs=1,
        max_steps=a.max_steps or -1,
        learning_rate=OPTIM["lr"],
        lr_scheduler_type=OPTIM["scheduler"],
        warmup_steps=OPTIM["warmup_ratio"],
        weight_decay=OPTIM["weight_decay"],
        max_grad_norm=OPTIM["max_grad_norm"],
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        seed=SEED,
        bf16=bf16,
        disable_tqdm=True,
        train_sampling_strategy="group_by_length" if a.group_by_length else "random",
    )
    trainer = CountingTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=IGNORE),
    )
    if bf16:
        torch.cuda.reset_peak_memory_stats()
    cpu_started = time.process_time()
    output = trainer.train()
    train_cpu = time.process_time() - cpu_started
    rss_training = self_peak_rss_mb()
    gpu_peak = round(torch.cuda.max_memory_allocated() / 2**20, 1) if bf16 else None
    model.save_pretrained(a.out / "baseline" / "adapter")
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    return {
        "import_seconds": imported,
        "batch_size": a.batch_size,
        "train_seconds": round(float(output.metrics["train_runtime"]), 2),
        "train_cpu_seconds": round(train_cpu, 1),
        "steps": output.global_step,
        "real_tokens": trainer.real,
        "padding_tokens": trainer.padding,
        "trained_tokens": trainer.trained,
        "examples": len(rows),
        "sequences_per_epoch": len(rows),
        "train_loss": output.training_loss,
        "last_logged_loss": losses[-1] if losses else None,
        "precision": "bf16" if bf16 else "fp32",
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "gpu_peak_mb": gpu_peak,
        "peak_rss_training_mb": rss_training,
        "torch_threads": torch.get_num_threads(),
        "group_by_length": a.group_by_length,
    }


WORKERS = {"wb": worker_wb, "baseline": worker_baseline}


# =====================================================================================================
# Measuring
# =====================================================================================================


class WorkerError(RuntimeError):
    pass


@dataclass
class Measurement:
    side: str
    train_seconds: float
    steps: int
    real_tokens: int
    padding_tokens: int
    trained_tokens: int
    peak_rss_mb: float
    cpu_seconds: float
    train_cpu_seconds: float
    wall_seconds: float
    load_before: float
    load_after: float
    load_mean: float
    load_max: float
    train_loss: float
    gpu_peak_mb: float | None
    torch_threads: int
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.real_tokens / self.train_seconds if self.train_seconds else 0.0

    @property
    def tokens_per_cpu_s(self) -> float:
        """Real tokens per CPU second of training: less sensitive than tokens/s to other work on the machine."""
        return self.real_tokens / self.train_cpu_seconds if self.train_cpu_seconds else 0.0

    @property
    def trained_tokens_per_s(self) -> float:
        return self.trained_tokens / self.train_seconds if self.train_seconds else 0.0

    @property
    def padding_fraction(self) -> float:
        slots = self.real_tokens + self.padding_tokens
        return self.padding_tokens / slots if slots else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "tokens_per_s": self.tokens_per_s,
            "tokens_per_cpu_s": self.tokens_per_cpu_s,
            "trained_tokens_per_s": self.trained_tokens_per_s,
            "padding_fraction": self.padding_fraction,
        }


def run_child(side: str, worker: str, a: WorkerArgs, env: dict[str, str]) -> Measurement:
    """Run one side in a fresh interpreter; peak RSS and CPU time from os.wait4 (that child alone)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", worker]
    cmd += ["--records-file", str(a.records), "--model-dir", str(a.model_dir), "--out-dir", str(a.out)]
    cmd += ["--result", str(a.result), "--max-length", str(a.max_length), "--batch-size", str(a.batch_size)]
    cmd += ["--device", a.device, "--method", a.method, "--precision", a.precision]
    cmd += ["--max-steps", str(a.max_steps)] if a.max_steps else []
    cmd += ["--baseline-group-by-length"] if a.group_by_length else []
    load_before = os.getloadavg()[0]
    child = measure_child(cmd, env)
    loads = child.loads or [load_before]
    if child.exit_code != 0:
        raise WorkerError(f"{side} worker failed with exit status {child.exit_code}")
    res = json.loads(a.result.read_text(encoding="utf-8"))
    return Measurement(
        side=side,
        train_seconds=res["train_seconds"],
        steps=res["steps"],
        real_tokens=res["real_tokens"],
        padding_tokens=res["padding_tokens"],
        trained_tokens=res["trained_tokens"],
        peak_rss_mb=child.peak_rss_mb,
        cpu_seconds=child.cpu_seconds,
        train_cpu_seconds=res.get("train_cpu_seconds") or 0.0,
        wall_seconds=child.wall_seconds,
        load_before=load_before,
        load_after=os.getloadavg()[0],
        load_mean=sum(loads) / len(loads),
        load_max=max(loads),
        train_loss=res["train_loss"],
        gpu_peak_mb=res["gpu_peak_mb"],
        torch_threads=res["torch_threads"],
        detail={k: v for k, v in res.items() if k not in Measurement.__dataclass_fields__},
    )


def check_recipe() -> list[str]:
    """Differences between pipelines/train-lora.yaml (with Recipe defaults) and the baseline's settings."""
    sys.path.insert(0, str(ROOT))
    from workbench.train import recipe as wrecipe

    r = wrecipe.load(RECIPE)
    want = {
        "method": ("lora", r.method),
        "lora.r": (LORA["r"], r.lora.r),
        "lora.alpha": (LORA["alpha"], r.lora.alpha),
        "lora.dropout": (LORA["dropout"], r.lora.dropout),
        "lora.target_modules": (LORA["target_modules"], r.lora.target_modules),
        "lr": (OPTIM["lr"], r.lr),
        "scheduler": (OPTIM["scheduler"], r.scheduler),
        "warmup_ratio": (OPTIM["warmup_ratio"], r.warmup_ratio),
        "weight_decay": (OPTIM["weight_decay"], r.weight_decay),
        "max_grad_norm": (OPTIM["max_grad_norm"], r.max_grad_norm),
        "grad_accum": (1, r.grad_accum),
        "seed": (SEED, r.seed),
        "packing": (True, r.packing),
    }
    return [f"{k}: baseline {b!r}, wb {w!r}" for k, (b, w) in want.items() if b != w]


def print_table(results: list[Measurement]) -> None:
    gpu = any(m.gpu_peak_mb is not None for m in results)
    head = ["side", "precision", "batch", "steps", "real tokens", "padding", "train s", "tokens/s", "train CPU s"]
    head += ["tok/CPU-s"]
    head += ["peak RSS MB"] + (["GPU peak MB"] if gpu else []) + ["load mean/max", "loss"]
    rows = []
    for m in results:
        row = [
            m.side,
            str(m.detail.get("precision", "")),
            str(m.detail.get("batch_size", "")),
            f"{m.steps:,}",
            f"{m.real_tokens:,}",
            f"{m.padding_fraction:.1%}",
            f"{m.train_seconds:.1f}",
            f"{m.tokens_per_s:,.1f}",
            f"{m.train_cpu_seconds:,.0f}",
            f"{m.tokens_per_cpu_s:,.1f}",
            f"{m.peak_rss_mb:,.0f}",
        ]
        row += [f"{m.gpu_peak_mb:,.0f}" if m.gpu_peak_mb is not None else "-"] if gpu else []
        row += [f"{m.load_mean:.1f}/{m.load_max:.1f}", f"{m.train_loss:.3f}"]
        rows.append(row)
    print(table(head, rows))


@dataclass
class Options:
    records: int
    seed: int
    max_length: int
    batch_size: int
    wb_batch_size: int
    max_steps: int | None
    skip_baseline: bool
    wb_precisions: list[str]
    threads: int | None
    device: str
    order: str
    group_by_length: bool
    keep: bool
    out_dir: Path
    data_dir: Path


def main_bench(o: Options) -> int:
    from workbench.models.base import resolve_model

    drift = check_recipe()
    if drift:
        print(f"WARNING: wb's recipe differs from the baseline's settings: {'; '.join(drift)}", file=sys.stderr)
    model_dir = resolve_model("embedded", on_status=lambda s: print(s, flush=True))
    records, counts = make_records(o.data_dir, o.records, o.seed)
    # One folder per invocation (records, both runs, the children's results), so that runs never collide.
    work = o.out_dir / f"train-{dt.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"
    data = work / f"records-{o.records}-seed{o.seed}.jsonl"
    write_records(data, records)
    print(f"{len(records)} records ({', '.join(f'{k} {v}' for k, v in counts.items())}): {data}")
    env = dict(os.environ)
    if o.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    threads, why = _threads(o.threads)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    print(f"torch threads in every child: {threads or 'torch default'} ({why})")
    sides: list[tuple[str, str, str, str]] = [("baseline", "baseline", "lora", "fp32"), ("wb", "wb", "lora", "auto")]
    if o.order == "wb-first":
        sides.reverse()
    if o.skip_baseline:
        sides = [s for s in sides if s[0] != "baseline"]
    auto = _auto_precision(o.device)
    print(f"wb's precision auto here: {auto[0]} ({auto[1]})")
    sides += [(f"wb-{p}", "wb", "lora", p) for p in o.wb_precisions if p != auto[0]]
    if o.device == "cuda":
        sides.append(("wb-qlora", "wb", "qlora", "auto"))
    started = dt.datetime.now(dt.UTC)
    print(f"load average before: {os.getloadavg()}; order: {', '.join(s[0] for s in sides)}", flush=True)
    results: list[Measurement] = []
    for side, worker, method, prec in sides:
        a = WorkerArgs(
            data,
            model_dir,
            work,
            work / f"{side}.result.json",
            o.max_length,
            o.wb_batch_size if worker == "wb" else o.batch_size,
            o.max_steps,
            o.device,
            method,
            o.group_by_length and worker == "baseline",
            prec,
        )
        try:
            m = run_child(side, worker, a, env)
        except WorkerError as err:
            if side != "wb-qlora":
                raise
            print(f"  {side}: skipped ({err}; QLoRA needs bitsandbytes and a GPU)", file=sys.stderr)
            continue
        results.append(m)
        print(
            f"  {side}: {m.real_tokens:,} real tokens in {m.train_seconds:.1f} s = {m.tokens_per_s:,.1f} tokens/s, "
            f"padding {m.padding_fraction:.1%}, peak RSS {m.peak_rss_mb:,.0f} MB, load {m.load_before:.1f} -> "
            f"{m.load_after:.1f}",
            flush=True,
        )
    by_side = {m.side: m for m in results}
    print()
    print_table(results)
    report: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(o).items()},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            **versions(("torch", "transformers", "peft", "accelerate", "bitsandbytes")),
            "load_average_end": os.getloadavg(),
        },
        "wb_source": git_state(),
        "records": {"path": str(data), "count": len(records), "by_source": counts, "mix": MIX},
        "settings": {"lora": LORA, "optim": OPTIM, "seed": SEED, "recipe": str(RECIPE.relative_to(ROOT))},
        "recipe_drift": drift,
        "threads": {"children": threads, "why": why},
        "results": [m.as_dict() for m in results],
    }
    wb, base = by_side.get("wb"), by_side.get("baseline")
    report["auto_precision"] = {"precision": auto[0], "reason": auto[1]}
    pair = _precision_pair(results)
    if pair is not None:
        fp32, bf16 = pair
        gain = bf16.tokens_per_s / fp32.tokens_per_s if fp32.tokens_per_s else float("inf")
        report["bf16_vs_fp32"] = {
            "tokens_per_s": {"fp32": fp32.tokens_per_s, "bf16": bf16.tokens_per_s, "ratio": gain},
            "tokens_per_cpu_s_ratio": bf16.tokens_per_cpu_s / fp32.tokens_per_cpu_s if fp32.tokens_per_cpu_s else None,
            "peak_rss_mb": {"fp32": fp32.peak_rss_mb, "bf16": bf16.peak_rss_mb},
            "train_loss": {"fp32": fp32.train_loss, "bf16": bf16.train_loss},
        }
        print(
            f"\nwb bf16 vs wb fp32: {bf16.tokens_per_s:,.1f} vs {fp32.tokens_per_s:,.1f} tokens/s ({gain:.2f}x), "
            f"peak RSS {bf16.peak_rss_mb:,.0f} vs {fp32.peak_rss_mb:,.0f} MB, loss {bf16.train_loss:.4f} vs "
            f"{fp32.train_loss:.4f}"
        )
    if wb and base:
        ratio = wb.tokens_per_s / base.tokens_per_s if base.tokens_per_s else float("inf")
        rss_share = wb.peak_rss_mb / base.peak_rss_mb if base.peak_rss_mb else float("inf")
        rss_ok = rss_share <= TARGET_RSS_SHARE
        cpu_ratio = wb.tokens_per_cpu_s / base.tokens_per_cpu_s if base.tokens_per_cpu_s else float("inf")
        print(f"\nthroughput ratio wb/baseline (real tokens/s): {ratio:.2f}x (target >= {TARGET_SPEEDUP}x)")
        print(f"same by CPU time (real tokens per CPU second of training): {cpu_ratio:.2f}x")
        print(f"peak RSS wb/baseline: {wb.peak_rss_mb:,.0f} / {base.peak_rss_mb:,.0f} MB")
        if base.real_tokens != wb.real_tokens:
            print(f"note: real tokens differ: wb {wb.real_tokens:,}, baseline {base.real_tokens:,}")
        targets = {
            "throughput_ratio": {"target": f">= {TARGET_SPEEDUP}x", "value": ratio, "met": ratio >= TARGET_SPEEDUP},
            "peak_rss_share": {"target": f"<= {TARGET_RSS_SHARE:.0%}", "value": rss_share, "met": rss_ok},
        }
        if wb.gpu_peak_mb is not None and base.gpu_peak_mb is not None:
            gpu_ok = wb.gpu_peak_mb <= base.gpu_peak_mb
            targets["gpu_peak"] = {"target": "wb <= baseline", "value": wb.gpu_peak_mb, "met": gpu_ok}
        report["throughput_ratio"] = ratio
        report["throughput_ratio_cpu_time"] = cpu_ratio
        report["targets"] = targets
        print("targets:")
        for name, t in targets.items():
            print(f"  {name:<17} {t['target']:<15} {t['value']:>10.2f}  {'met' if t['met'] else 'NOT met'}")
    qlora = by_side.get("wb-qlora")
    if wb and qlora:
        report["qlora_vs_lora"] = {
            "tokens_per_s_ratio": qlora.tokens_per_s / wb.tokens_per_s if wb.tokens_per_s else None,
            "gpu_peak_mb": {"lora": wb.gpu_peak_mb, "qlora": qlora.gpu_peak_mb},
        }
        print(
            f"QLoRA vs LoRA (wb): {qlora.tokens_per_s:,.0f} vs {wb.tokens_per_s:,.0f} tokens/s, GPU peak "
            f"{qlora.gpu_peak_mb} vs {wb.gpu_peak_mb} MB"
        )
    for m in results:  # a child keeps its own torch threads busy; load beyond that is other work
        if m.load_mean > m.torch_threads + 0.5:
            print(
                f"note: other work ran beside {m.side} (mean 1-minute load {m.load_mean:.1f} with its own "
                f"{m.torch_threads} threads): compare the rates per CPU second"
            )
    print(f"\nresults: {write_report(o.out_dir / 'train_throughput.json', report)}")
    if not o.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _threads(asked: int | None) -> tuple[int | None, str]:
    """Torch threads for the children: as asked, else 1 on a busy machine (1-minute load above CPUs - 1), where
    OpenMP threads that do not each get a core wait for each other at every operation; else torch's default."""
    if asked:
        return asked, "--threads"
    load1, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if load1 > cpus - 1 and cpus > 1:
        return 1, f"the machine is busy (load {load1:.2f} on {cpus} CPUs); --threads N overrides"
    return None, "torch's own choice"


def _auto_precision(device: str) -> tuple[str, str]:
    """What wb's `precision: auto` picks for training here, and why (asked of wb's own precision module)."""
    sys.path.insert(0, str(ROOT))
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from workbench.precision import for_training

    choice = for_training("auto")
    return choice.name, choice.reason


def _precision_pair(results: list[Measurement]) -> tuple[Measurement, Measurement] | None:
    """The wb sides that ran fp32 and bf16 (auto counts as what it picked), or None."""
    wb_sides = {m.detail.get("precision"): m for m in results if m.side.startswith("wb") and m.side != "wb-qlora"}
    if "fp32" in wb_sides and "bf16" in wb_sides:
        return wb_sides["fp32"], wb_sides["bf16"]
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--records", type=int, default=256, help="records to draw (default 256)")
    p.add_argument("--seed", type=int, default=20240611, help="seed of the draw (default 20240611)")
    p.add_argument("--max-length", type=int, default=512, help="tokens per example / packed sequence (default 512)")
    p.add_argument("--batch-size", type=int, default=4, help="the baseline's padded records per step (default 4)")
    p.add_argument("--wb-batch-size", type=int, default=2, help="wb's packed sequences per step (default 2)")
    p.add_argument("--max-steps", type=int, help="stop both sides after N optimiser steps (default: one epoch)")
    p.add_argument("--skip-baseline", action="store_true", help="run wb only")
    p.add_argument("--threads", type=int, help="torch threads in every child (default: torch's, 1 when busy)")
    p.add_argument(
        "--wb-precisions",
        default="fp32",
        help="wb again with precision forced, comma-separated from fp32,bf16 (default fp32; '' for none)",
    )
    p.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="cpu (baseline fp32, wb auto) or cuda (bf16, + QLoRA)"
    )
    p.add_argument("--order", choices=["baseline-first", "wb-first"], default="baseline-first")
    p.add_argument(
        "--baseline-group-by-length",
        action="store_true",
        help="a stronger baseline: batches of similar length (train_sampling_strategy=group_by_length)",
    )
    p.add_argument("--keep", action="store_true", help="keep the records and both run folders in --out-dir")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT.relative_to(ROOT)}")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="the real records (../shared/data)")
    p.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--records-file", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--method", default="lora", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="auto", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.wb_precisions = [x.strip() for x in args.wb_precisions.split(",") if x.strip()]
    if not set(args.wb_precisions) <= {"fp32", "bf16"}:
        p.error("--wb-precisions: a comma-separated list of fp32 and bf16")
    optional = [args.max_steps] if args.max_steps is not None else []
    if min([args.records, args.batch_size, args.wb_batch_size, *optional]) < 1:
        p.error("--records, --batch-size, --wb-batch-size and --max-steps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.worker:
        a = WorkerArgs(
            args.records_file,
            args.model_dir,
            args.out_dir,
            args.result,
            args.max_length,
            args.batch_size,
            args.max_steps,
            args.device,
            args.method,
            args.baseline_group_by_length,
            args.precision,
        )
        result = WORKERS[args.worker](a)
        result["self_peak_rss_mb"] = self_peak_rss_mb()
        args.result.write_text(json.dumps(result), encoding="utf-8")
        return 0
    o = Options(
        args.records,
        args.seed,
        args.max_length,
        args.batch_size,
        args.wb_batch_size,
        args.max_steps,
        args.skip_baseline,
        args.wb_precisions,
        args.threads,
        args.device,
        args.order,
        args.baseline_group_by_length,
        args.keep,
        args.out_dir,
        args.data_dir,
    )
    o.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return main_bench(o)
    except WorkerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
