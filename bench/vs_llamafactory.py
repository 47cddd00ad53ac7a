"""`wb train` against LLaMA-Factory 0.9.5 on the same records, model folder and settings, side by side.

LLaMA-Factory runs in its OWN virtual environment (never a wb dependency), with the torch wb pins, so both sides
run the same CPU kernels. Set it up once:

    python3 -m venv /work/bench-venvs/llamafactory
    /work/bench-venvs/llamafactory/bin/pip install torch==2.13.0            # the CPU build (local wheel folder)
    /work/bench-venvs/llamafactory/bin/pip install llamafactory==0.9.5      # pulls torchvision 0.29.1 -> torch 2.14.1
    /work/bench-venvs/llamafactory/bin/pip install torch==2.13.0            # back to the CPU build wb uses
    /work/bench-venvs/llamafactory/bin/pip uninstall -y torchvision torchaudio

The last step: PyPI's torchvision/torchaudio wheels are CUDA builds that cannot load against the CPU torch
(`libc10_cuda.so` missing); LLaMA-Factory needs neither for text training, but `llamafactory.data.mm_plugin`
imports torchaudio at the top, so the runner below puts an empty `torchaudio` module in its place when the real one
cannot be imported (`torchaudio_stub` in the JSON says whether it did). `--lf-python` points at another interpreter.

What runs (each side a fresh process, whole process timed, `os.wait4` for its CPU time and peak RSS):

* **LLaMA-Factory**: `llamafactory-cli train config.yaml` (its `cli.main`, through the runner): `stage: sft`,
  `template: smollm2` with `default_system` set to the system prompt of the model's own chat template (the
  template's default ends with a period the model's does not), `cutoff_len: 512`, `neat_packing: true` (packing
  without cross-attention: a 4D block-diagonal mask with sdpa on CPU), LoRA `lora_rank: 16`, `lora_alpha: 32`,
  `lora_dropout: 0.05`, `lora_target: all`, or `finetuning_type: full`; the data through a `dataset_info.json` in a
  temporary `dataset_dir` pointing at the local records; HF_HUB_OFFLINE=1, HF_DATASETS_OFFLINE=1 and a fresh
  datasets cache. `tokenized_path` makes it save its tokenized (packed) dataset, which the script reads after the
  run (untimed) to count the tokens it trained; saving 32 rows costs milliseconds.
* **wb**: `python -m workbench.cli train pipelines/train-lora.yaml` (or `train-full.yaml`) with overrides: the same
  data file and model folder, `epochs=1 val_size=0 max_length=512 batch_size=2 logging_steps=1`, the same lr,
  warmup, weight decay, seed and precision; `template: auto` is the model's chat template, the same text as
  LLaMA-Factory's `smollm2` with that system prompt, but for one thing: LLaMA-Factory joins an Alpaca record's
  instruction and input with a newline, wb with a blank line (one token more on wb's side for each record with an
  input); packing is on (wb's 4D block-diagonal mask, first-fit decreasing; LLaMA-Factory packs greedily into
  511 tokens).

Both: batch 2, gradient accumulation 1, lr 2e-4 (LoRA) or 2e-5 (full; wb's `train-full.yaml`), cosine, warmup
ratio 0.03, weight decay 0.01, max grad norm 1.0, AdamW (`adamw_torch_fused`, Trainer's default on both), seed 42,
one epoch (or `--epochs`, `--steps`), precision bf16 where the CPU has native bf16 units (what wb's `precision:
auto` picks; LLaMA-Factory `bf16: true`), else fp32 on both. With `--dpo`: DPO with LoRA (`stage: dpo`,
`pref_beta: 0.1`, `pref_loss: sigmoid`; wb `pipelines/train-dpo.yaml` with `preference.beta=0.1
preference.loss_type=sigmoid`), lr 5e-5 (wb's DPO default), warmup ratio 0.1, on pairs in the shape of
LLaMA-Factory's `data/dpo_en_demo.json` (ShareGPT `conversations` + `chosen` / `rejected` messages, its
`dataset_info.json` entry), read as is by both.

Records: `--records` Alpaca records (default 128: 96 English code tasks from GPTeacher, 32 Chinese: 16 term
explanations, 8 integer arithmetic, 8 poetry/culture) drawn with a fixed seed from `../shared/data` and shuffled;
deterministic. DPO pairs (default 32): LLaMA-Factory's pip package does not ship `dpo_en_demo.json` (it lives in its
repository's `data/` folder), so by default they are built locally in exactly that shape from the GPTeacher code
tasks: the human turn is the instruction (and input), `chosen` its own answer, `rejected` the answer to another task
of the draw, and every fourth pair starts with a system turn, as some demo pairs do. `--dpo-pairs FILE` reads a real
`dpo_en_demo.json` instead (its first N pairs, as is).

What is reported per side: train-loop seconds (each tool's own: LLaMA-Factory's `train_results.json`
`train_runtime`, wb's manifest `train_runtime_seconds`), whole-process wall and CPU seconds, peak RSS, tokens/s of the
loop and of the whole process, and the per-step loss curve (`trainer_log.jsonl` of each). Tokens: both rates divide
the SAME count, wb's real (non-padding) tokens of the sequences it trained (manifest `tokens.seen`), so the tokens/s
ratio is the time ratio; LLaMA-Factory's own count of its packed dataset is shown beside it as a check (they differ
only by truncation: LLaMA-Factory cuts prompt and answer in proportion at 511 tokens, wb cuts the end at 512), with the
tokens each side computed on (LLaMA-Factory pads every packed row to 512, wb pads a batch to its longest row; with
`--steps` short of an epoch, LLaMA-Factory's are its epoch's scaled by the share of the epoch it ran). The
loss curves cannot agree step by step to rounding: the two pack examples into sequences differently and shuffle them
with different generators, so a step trains other examples on each side; what must agree is the shape (first and
last loss, the epoch's mean, the correlation), and the script says how closely (largest relative gap per step).

The sides alternate (LLaMA-Factory first in the first configuration, wb first in the next, ...). Each side is
pinned with `taskset` to the same cores (`--threads 1`: the last core; 2: the last two) with OMP/MKL/RAYON/POLARS
threads set to the thread count; the 1-minute load average is sampled while each runs. Wall time on a shared machine
carries the load; CPU seconds and peak RSS much less: read them beside the load. Run under `nice -n 10`.

Writes `bench/out/vs_llamafactory.json` (`vs_llamafactory_dpo.json` with `--dpo`). A measurement, not a test: exit
status 0 unless a side fails (its log's last lines are printed). Run: see bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from random import Random
from typing import Any

from benchlib import ROOT, git_state, measure_child, table, versions, write_report

sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "bench" / "out"
DEFAULT_DATA = ROOT.parent / "shared" / "data"
DEFAULT_LF_PYTHON = Path("/work/bench-venvs/llamafactory/bin/python")
RECIPES = {
    "lora": ROOT / "pipelines" / "train-lora.yaml",
    "full": ROOT / "pipelines" / "train-full.yaml",
    "dpo": ROOT / "pipelines" / "train-dpo.yaml",
}
DRAW_SEED = 20240611  # the draw of records and pairs
SEED = 42  # training seed, both sides
CUTOFF = 512
BATCH = 2
LORA = {"r": 16, "alpha": 32, "dropout": 0.05}
LR = {"lora": 2e-4, "full": 2e-5, "dpo": 5e-5}
WARMUP = {"sft": 0.03, "dpo": 0.1}
WEIGHT_DECAY = 0.01
BETA = 0.1
# The system prompt SmolLM2-135M-Instruct's chat template adds when a conversation has none (no final period).
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
SYSTEM_TURN = "You are an expert programmer. Answer with working code and a short explanation."
# Targets of issue 27 (wb against LLaMA-Factory on CPU).
TARGET_WHOLE = 1.5  # whole-process tokens/s, wb / LLaMA-Factory
TARGET_LOOP = 2.0  # train-loop tokens/s
TARGET_RSS = 1.0  # peak RSS, wb / LLaMA-Factory

# Runs LLaMA-Factory's CLI in its venv; an empty torchaudio module stands in for a CUDA-only wheel (module docstring).
LF_RUNNER = r"""
import importlib.machinery, sys, types
try:
    import torchaudio  # noqa: F401
except (ImportError, OSError):
    stub = types.ModuleType("torchaudio")
    stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    sys.modules["torchaudio"] = stub
    print("vs_llamafactory: torchaudio stubbed", file=sys.stderr)
sys.argv = ["llamafactory-cli", *sys.argv[1:]]
from llamafactory.cli import main
sys.exit(main())
"""

# Reads LLaMA-Factory's tokenized dataset (after the run, untimed): rows, real tokens, trained tokens, computed slots.
LF_COUNTER = r"""
import json, sys
from datasets import DatasetDict, load_from_disk
data = load_from_disk(sys.argv[1])
train = data["train"] if isinstance(data, DatasetDict) else data
cols = train.column_names
out = {"rows": len(train)}
if "chosen_input_ids" in cols:
    chosen, rejected = train["chosen_input_ids"], train["rejected_input_ids"]
    out["tokens"] = sum(len(c) + len(r) for c, r in zip(chosen, rejected))
    out["slots"] = out["tokens"]
    out["trained"] = sum(sum(x != -100 for x in l) for k in ("chosen_labels", "rejected_labels") for l in train[k])
else:
    out["tokens"] = sum(sum(m != 0 for m in mask) for mask in train["attention_mask"])
    out["slots"] = sum(len(ids) for ids in train["input_ids"])
    out["trained"] = sum(sum(x != -100 for x in l) for l in train["labels"])
print(json.dumps(out))
"""

LF_VERSIONS = r"""
import json, platform
from importlib.metadata import version, PackageNotFoundError
out = {"python": platform.python_version()}
for p in ("llamafactory", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "torchaudio"):
    try:
        out[p] = version(p)
    except PackageNotFoundError:
        out[p] = None
print(json.dumps(out))
"""


# =====================================================================================================
# Data
# =====================================================================================================


def _read(data_dir: Path, name: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads((data_dir / name).read_text(encoding="utf-8"))
    return rows


def make_records(data_dir: Path, n: int) -> tuple[list[dict[str, str]], dict[str, int]]:
    """n Alpaca records, three English code tasks to one Chinese record (of those: half term explanations, a
    quarter arithmetic, a quarter poetry), drawn without replacement with a fixed seed and shuffled."""
    rng = Random(DRAW_SEED)
    zh = n // 4
    counts = {"en_code": n - zh, "zh_terms": zh - 2 * (zh // 4), "zh_arith": zh // 4, "zh_poetry": zh // 4}
    files = {
        "en_code": ("en_codegen_instruct.json", "response"),
        "zh_terms": ("zh_term_explanations.json", "output"),
        "zh_arith": ("zh_integer_arithmetic.json", "output"),
        "zh_poetry": ("zh_poetry_culture.json", "output"),
    }
    records: list[dict[str, str]] = []
    for name, k in counts.items():
        file, answer = files[name]
        source = _read(data_dir, file)
        for r in rng.sample(source, k):
            records.append({"instruction": r["instruction"], "input": r.get("input") or "", "output": r[answer]})
    rng.shuffle(records)
    return records, counts


def make_pairs(data_dir: Path, n: int) -> list[dict[str, Any]]:
    """n pairs in the shape of LLaMA-Factory's data/dpo_en_demo.json, built from GPTeacher's code tasks: the task as
    the human turn, its own answer chosen, the answer to another task of the draw rejected; every fourth pair opens
    with a system turn."""
    rng = Random(DRAW_SEED)
    tasks = rng.sample(_read(data_dir, "en_codegen_instruct.json"), 2 * n)
    pairs = []
    for i in range(n):
        task, other = tasks[i], tasks[n + i]
        prompt = f"{task['instruction']}\n\n{task['input']}" if task.get("input") else task["instruction"]
        turns = [{"from": "system", "value": SYSTEM_TURN}] if i % 4 == 3 else []
        pairs.append(
            {
                "conversations": [*turns, {"from": "human", "value": prompt}],
                "chosen": {"from": "gpt", "value": task["response"]},
                "rejected": {"from": "gpt", "value": other["response"]},
            }
        )
    return pairs


def dataset_info(dpo: bool, file_name: str) -> dict[str, Any]:
    """LLaMA-Factory's dataset_info.json entry: Alpaca columns, or dpo_en_demo's own entry (ranking, ShareGPT)."""
    if not dpo:
        return {"wb_bench": {"file_name": file_name}}
    columns = {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}
    return {"wb_bench": {"file_name": file_name, "ranking": True, "formatting": "sharegpt", "columns": columns}}


# =====================================================================================================
# The two sides
# =====================================================================================================


@dataclass
class Config:
    """One configuration both sides run: threads, method (lora, full) and whether it is DPO."""

    threads: int
    method: str
    dpo: bool
    steps: int | None
    precision: str
    cpus: str | None
    epochs: int = 1

    @property
    def label(self) -> str:
        return f"{'dpo-' if self.dpo else ''}{self.method}-t{self.threads}"

    @property
    def lr(self) -> float:
        return LR["dpo"] if self.dpo else LR[self.method]

    @property
    def warmup(self) -> float:
        return WARMUP["dpo" if self.dpo else "sft"]


@dataclass
class Run:
    side: str
    config: str
    exit_code: int
    wall_seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    load_before: float
    load_after: float
    load_mean: float
    loop_seconds: float | None = None
    loop_cpu_seconds: float | None = None
    steps: int | None = None
    losses: list[float] = field(default_factory=list)
    train_loss: float | None = None
    tokens: int | None = None  # this side's own count of the real tokens it trained (LLaMA-Factory: see run_lf)
    tokens_per_epoch: int | None = None  # real tokens of one epoch of its (packed) sequences
    computed: int | None = None  # tokens it ran through the model, padding included
    sequences_per_epoch: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    log: str = ""


def child_env(threads: int, work: Path) -> dict[str, str]:
    env = dict(os.environ)
    n = str(threads)
    env.update(
        {
            "OMP_NUM_THREADS": n,
            "MKL_NUM_THREADS": n,
            "RAYON_NUM_THREADS": n,
            "POLARS_MAX_THREADS": n,
            "TOKENIZERS_PARALLELISM": "false",
            "CUDA_VISIBLE_DEVICES": "",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_CACHE": str(work / "hf_datasets"),  # fresh: nothing cached from an earlier run
            "WANDB_DISABLED": "true",
        }
    )
    return env


def measured(cmd: list[str], env: dict[str, str], log: Path, cpus: str | None, cwd: Path) -> tuple[Any, float]:
    """Run cmd (pinned to `cpus`), its output to `log`; (benchlib.Child, load before)."""
    pinned = ["taskset", "-c", cpus, *cmd] if cpus else cmd
    wrapped = ["sh", "-c", 'exec "$@" >"$VS_LF_LOG" 2>&1', "sh", *pinned]  # exec: wait4 sees the side itself
    load_before = os.getloadavg()[0]
    child = measure_child(wrapped, env={**env, "VS_LF_LOG": str(log)}, cwd=cwd)
    return child, load_before


def _run_row(side: str, c: Config, child: Any, load_before: float, log: Path) -> Run:
    loads = child.loads or [load_before]
    return Run(
        side=side,
        config=c.label,
        exit_code=child.exit_code,
        wall_seconds=round(child.wall_seconds, 2),
        cpu_seconds=round(child.cpu_seconds, 2),
        peak_rss_mb=round(child.peak_rss_mb, 1),
        load_before=load_before,
        load_after=os.getloadavg()[0],
        load_mean=round(statistics.fmean(loads), 2),
        log=str(log),
    )


def _fail(side: str, log: Path, code: int) -> None:
    tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]) if log.exists() else ""
    raise SystemExit(f"{side} failed (exit {code}); the end of {log}:\n{tail}")


def lf_yaml(c: Config, model_dir: Path, data_dir: Path, out: Path) -> str:
    """LLaMA-Factory's training config for configuration c."""
    cfg: dict[str, Any] = {
        "model_name_or_path": str(model_dir),
        "trust_remote_code": False,
        "stage": "dpo" if c.dpo else "sft",
        "do_train": True,
        "finetuning_type": "full" if c.method == "full" else "lora",
        "dataset": "wb_bench",
        "dataset_dir": str(data_dir),
        "template": "smollm2",
        "default_system": SYSTEM,
        "cutoff_len": CUTOFF,
        "overwrite_cache": True,
        "tokenized_path": str(out / "tokenized"),
        "output_dir": str(out / "run"),
        "logging_steps": 1,
        "plot_loss": False,
        "report_to": "none",
        "disable_tqdm": True,
        "per_device_train_batch_size": BATCH,
        "gradient_accumulation_steps": 1,
        "learning_rate": c.lr,
        "num_train_epochs": float(c.epochs),
        "lr_scheduler_type": "cosine",
        "warmup_ratio": c.warmup,
        "weight_decay": WEIGHT_DECAY,
        "max_grad_norm": 1.0,
        "seed": SEED,
        "data_seed": SEED,
        "bf16": c.precision == "bf16",
        # transformers 5.6 (LLaMA-Factory's) refuses bf16 without a GPU unless told the run is on the CPU
        "use_cpu": True,
    }
    if c.method != "full":
        cfg.update({"lora_rank": LORA["r"], "lora_alpha": LORA["alpha"], "lora_dropout": LORA["dropout"]})
        cfg["lora_target"] = "all"
    if c.dpo:
        cfg.update({"pref_beta": BETA, "pref_loss": "sigmoid"})
    else:
        cfg["neat_packing"] = True
    if c.steps:
        cfg["max_steps"] = c.steps
    return "".join(f"{k}: {json.dumps(v)}\n" for k, v in cfg.items())


def run_lf(c: Config, lf_python: Path, model_dir: Path, data_dir: Path, work: Path) -> Run:
    out = work / f"{c.label}-llamafactory"
    out.mkdir(parents=True)
    config = out / "config.yaml"
    config.write_text(lf_yaml(c, model_dir, data_dir, out), encoding="utf-8")
    log = out / "output.log"
    child, load_before = measured(
        [str(lf_python), "-c", LF_RUNNER, "train", str(config)], child_env(c.threads, out), log, c.cpus, out
    )
    if child.exit_code != 0:
        _fail("LLaMA-Factory", log, child.exit_code)
    run = _run_row("llamafactory", c, child, load_before, log)
    metrics = json.loads((out / "run" / "train_results.json").read_text(encoding="utf-8"))
    rows = [json.loads(x) for x in (out / "run" / "trainer_log.jsonl").read_text(encoding="utf-8").splitlines()]
    losses = [float(r["loss"]) for r in rows if r.get("loss") is not None]
    counted = subprocess.run(
        [str(lf_python), "-c", LF_COUNTER, str(out / "tokenized")],
        env=child_env(c.threads, out),
        capture_output=True,
        text=True,
        check=False,
    )
    if counted.returncode != 0:
        raise SystemExit(f"reading LLaMA-Factory's tokenized dataset failed:\n{counted.stderr[-3000:]}")
    count = json.loads(counted.stdout.strip().splitlines()[-1])
    total = max((int(r.get("total_steps") or 0) for r in rows), default=0)
    steps = int(metrics.get("global_step") or len(losses) or total)
    per_epoch = max(1, math.ceil(count["rows"] / BATCH))
    share = steps / per_epoch  # epochs run (exact for whole epochs; a share of the epoch's tokens otherwise)
    run.loop_seconds = float(metrics["train_runtime"])
    run.steps = steps
    run.losses = losses
    run.train_loss = metrics.get("train_loss")
    run.tokens = round(count["tokens"] * share)
    run.computed = round(count["slots"] * share)
    run.sequences_per_epoch = count["rows"]
    run.tokens_per_epoch = count["tokens"]
    run.extra = {
        "tokens_per_epoch": count["tokens"],
        "trained_tokens_per_epoch": count["trained"],
        "computed_per_epoch": count["slots"],
        "steps_per_epoch": per_epoch,
        "torchaudio_stub": "torchaudio stubbed" in log.read_text(encoding="utf-8", errors="replace"),
        "train_metrics": metrics,
    }
    return run


def wb_overrides(c: Config, model_dir: Path, data: Path, out: Path) -> list[str]:
    """`wb train` overrides for configuration c (the run folder is `out/run`)."""
    overrides = [
        f"data={data}",
        f"model={model_dir}",
        f"output_dir={out}",
        "name=run",
        f"epochs={c.epochs}",
        "val_size=0",
        f"max_length={CUTOFF}",
        f"batch_size={BATCH}",
        "grad_accum=1",
        "logging_steps=1",
        f"lr={c.lr}",
        "scheduler=cosine",
        f"warmup_ratio={c.warmup}",
        f"weight_decay={WEIGHT_DECAY}",
        "max_grad_norm=1.0",
        f"seed={SEED}",
        f"precision={c.precision}",
        "template=auto",
    ]
    if c.method != "full":
        overrides += [f"lora.r={LORA['r']}", f"lora.alpha={LORA['alpha']}", f"lora.dropout={LORA['dropout']}"]
        overrides.append("lora.target_modules=all-linear")
    if c.dpo:
        overrides += ["eval_data=null", f"preference.beta={BETA}", "preference.loss_type=sigmoid"]
        overrides.append(f"preference.weights={'full' if c.method == 'full' else 'lora'}")
    else:
        overrides.append("packing=true")
    if c.steps:
        overrides.append(f"max_steps={c.steps}")
    return overrides


def run_wb(c: Config, model_dir: Path, data: Path, work: Path) -> Run:
    out = work / f"{c.label}-wb"
    out.mkdir(parents=True)
    overrides = wb_overrides(c, model_dir, data, out)
    recipe = RECIPES["dpo" if c.dpo else c.method]
    env = {**child_env(c.threads, out), "PYTHONPATH": str(ROOT)}
    log = out / "output.log"
    cmd = [sys.executable, "-m", "workbench.cli", "train", str(recipe), *overrides]
    child, load_before = measured(cmd, env, log, c.cpus, ROOT)
    if child.exit_code != 0:
        _fail("wb", log, child.exit_code)
    run = _run_row("wb", c, child, load_before, log)
    m = json.loads((out / "run" / "manifest.json").read_text(encoding="utf-8"))
    rows = [json.loads(x) for x in (out / "run" / "trainer_log.jsonl").read_text(encoding="utf-8").splitlines()]
    tokens = m.get("tokens") or {}
    run.loop_seconds = float(m["train_runtime_seconds"])
    run.loop_cpu_seconds = m.get("train_cpu_seconds")
    run.steps = int(m["global_step"])
    run.losses = [float(r["loss"]) for r in rows if "loss" in r]
    run.train_loss = m.get("train_loss")
    run.tokens = tokens.get("seen")
    run.computed = (tokens.get("seen") or 0) + (tokens.get("padding_seen") or 0) if not c.dpo else tokens.get("seen")
    run.sequences_per_epoch = tokens.get("sequences_per_epoch") or m.get("examples", {}).get("train")
    run.tokens_per_epoch = tokens.get("all_per_epoch")
    run.extra = {
        "tokens": tokens,
        "precision": m.get("precision"),
        "precision_reason": m.get("precision_reason"),
        "examples": m.get("examples"),
        "manifest_peak_rss_mb": m.get("peak_rss_mb"),
        "wall_seconds_manifest": m.get("wall_seconds"),
    }
    return run


# =====================================================================================================
# Comparing
# =====================================================================================================


def loss_agreement(wb: list[float], lf: list[float]) -> dict[str, Any]:
    """How closely wb's per-step losses follow LLaMA-Factory's (the anchor) over the steps both logged."""
    n = min(len(wb), len(lf))
    if n == 0:
        return {"steps_compared": 0}
    a, b = wb[:n], lf[:n]
    gaps = [abs(x - y) / abs(y) for x, y in zip(a, b, strict=True) if y]
    out: dict[str, Any] = {
        "steps_compared": n,
        "first": {"wb": a[0], "llamafactory": b[0]},
        "last": {"wb": a[-1], "llamafactory": b[-1]},
        "mean": {"wb": statistics.fmean(a), "llamafactory": statistics.fmean(b)},
        "max_relative_gap": max(gaps) if gaps else None,
        "mean_relative_gap": statistics.fmean(gaps) if gaps else None,
        "relative_gap_of_means": abs(statistics.fmean(a) - statistics.fmean(b)) / abs(statistics.fmean(b)),
    }
    if n >= 3 and statistics.pstdev(a) > 0 and statistics.pstdev(b) > 0:
        out["pearson"] = statistics.correlation(a, b)
    return out


def compare(wb: Run, lf: Run) -> dict[str, Any]:
    """Ratios wb / LLaMA-Factory (speed: > 1 means wb is faster; memory: < 1 means wb needs less), on one token count:
    wb's real tokens of the sequences it trained, for both sides."""
    tokens = wb.tokens or lf.tokens or 0

    def rate(seconds: float | None) -> float:
        return tokens / seconds if seconds else 0.0

    loop = {"wb": rate(wb.loop_seconds), "llamafactory": rate(lf.loop_seconds)}
    whole = {"wb": rate(wb.wall_seconds), "llamafactory": rate(lf.wall_seconds)}
    per_cpu = {"wb": tokens / wb.cpu_seconds, "llamafactory": tokens / lf.cpu_seconds}
    ratios = {
        "loop_tokens_per_s": loop["wb"] / loop["llamafactory"] if loop["llamafactory"] else None,
        "whole_tokens_per_s": whole["wb"] / whole["llamafactory"] if whole["llamafactory"] else None,
        "whole_tokens_per_cpu_s": per_cpu["wb"] / per_cpu["llamafactory"],
        "peak_rss": wb.peak_rss_mb / lf.peak_rss_mb,
    }
    targets: dict[str, dict[str, Any]] = {}
    for name, bound, at_least in (
        ("whole_tokens_per_s", TARGET_WHOLE, True),
        ("loop_tokens_per_s", TARGET_LOOP, True),
        ("peak_rss", TARGET_RSS, False),
    ):
        v = ratios[name]
        met = v is not None and (v >= bound if at_least else v <= bound)
        targets[name] = {"target": f"{'>=' if at_least else '<='} {bound}x", "value": v, "met": met}
    epoch = {"wb": wb.tokens_per_epoch, "llamafactory": lf.tokens_per_epoch}
    return {
        "tokens": tokens,
        "tokens_source": "wb manifest tokens.seen (real tokens of the sequences wb trained), used for both rates",
        "tokens_per_epoch": epoch,
        "tokens_per_epoch_difference": (lf.tokens_per_epoch - wb.tokens_per_epoch) / wb.tokens_per_epoch
        if wb.tokens_per_epoch and lf.tokens_per_epoch
        else None,
        "computed_tokens": {"wb": wb.computed, "llamafactory": lf.computed},
        "loop_tokens_per_s": loop,
        "whole_tokens_per_s": whole,
        "whole_tokens_per_cpu_s": per_cpu,
        "ratios_wb_over_llamafactory": ratios,
        "targets": targets,
        "loss": loss_agreement(wb.losses, lf.losses),
    }


def cpu_info() -> dict[str, Any]:
    model, flags = "?", ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1]
    except OSError:
        pass
    names = set(flags.split())
    return {
        "model_name": model,
        "cpus": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in names,
        "amx_bf16": "amx_bf16" in names,
        "avx2": "avx2" in names,
    }


def pin(threads: int, wanted: bool) -> str | None:
    """The cores a side is pinned to: the last `threads` cores (core 1 alone on a 2-core machine), or None."""
    if not wanted or shutil.which("taskset") is None:
        return None
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    return ",".join(str(c) for c in cores[-threads:])


def print_runs(runs: list[Run]) -> None:
    head = ["config", "side", "steps", "seqs/epoch", "loop s", "whole s", "CPU s", "peak RSS MB", "loss first→last"]
    head += ["load"]
    rows = []
    for r in runs:
        curve = f"{r.losses[0]:.4f}→{r.losses[-1]:.4f}" if r.losses else "-"
        rows.append(
            [
                r.config,
                r.side,
                str(r.steps),
                str(r.sequences_per_epoch),
                f"{r.loop_seconds:.1f}" if r.loop_seconds is not None else "-",
                f"{r.wall_seconds:.1f}",
                f"{r.cpu_seconds:.1f}",
                f"{r.peak_rss_mb:,.0f}",
                curve,
                f"{r.load_before:.1f}→{r.load_after:.1f}",
            ]
        )
    print(table(head, rows, left=2))


def print_comparison(label: str, cmp: dict[str, Any]) -> None:
    r = cmp["ratios_wb_over_llamafactory"]
    loss = cmp["loss"]

    def x(v: float | None) -> str:
        return f"{v:.2f}x" if v is not None else "-"

    epoch, computed = cmp["tokens_per_epoch"], cmp["computed_tokens"]
    print(
        f"\n{label}: {cmp['tokens']:,} tokens trained (wb's count, both rates); real tokens per epoch wb "
        f"{epoch['wb']:,}, LLaMA-Factory {epoch['llamafactory']:,}; computed with padding wb {computed['wb']:,}, "
        f"LLaMA-Factory {computed['llamafactory']:,}"
    )
    print(
        f"  tokens/s loop: wb {cmp['loop_tokens_per_s']['wb']:.1f}, LLaMA-Factory "
        f"{cmp['loop_tokens_per_s']['llamafactory']:.1f} ({x(r['loop_tokens_per_s'])}); whole process: wb "
        f"{cmp['whole_tokens_per_s']['wb']:.1f}, LLaMA-Factory {cmp['whole_tokens_per_s']['llamafactory']:.1f} "
        f"({x(r['whole_tokens_per_s'])}); per CPU second {x(r['whole_tokens_per_cpu_s'])}; peak RSS {x(r['peak_rss'])}"
    )
    if loss.get("steps_compared"):
        print(
            f"  loss over {loss['steps_compared']} steps: first {loss['first']['wb']:.4f} / "
            f"{loss['first']['llamafactory']:.4f}, last {loss['last']['wb']:.4f} / {loss['last']['llamafactory']:.4f}"
            f", mean {loss['mean']['wb']:.4f} / {loss['mean']['llamafactory']:.4f} (wb / LLaMA-Factory); largest "
            f"relative gap per step {loss['max_relative_gap']:.1%}, mean {loss['mean_relative_gap']:.1%}"
            + (f", correlation {loss['pearson']:.2f}" if "pearson" in loss else "")
        )
    for name, t in cmp["targets"].items():
        value = f"{t['value']:.2f}" if t["value"] is not None else "-"
        print(f"  target {name:<20} {t['target']:<8} {value:>6}  {'met' if t['met'] else 'NOT met'}")


# =====================================================================================================
# Main
# =====================================================================================================


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads per side (default: 1 2)")
    p.add_argument("--method", nargs="+", choices=["lora", "full"], help="default: lora full (SFT), lora (--dpo)")
    p.add_argument("--records", type=int, help="SFT records (default 128) or, with --dpo, pairs (default 32)")
    p.add_argument(
        "--epochs",
        type=int,
        default=1,
        help="epochs on both sides (default 1; DPO's curve over one epoch of "
        "32 pairs is noise around ln 2, over 4 it falls on both)",
    )
    p.add_argument("--steps", type=int, help="stop both sides after N optimiser steps (default: the epochs')")
    p.add_argument("--dpo", action="store_true", help="DPO against LLaMA-Factory's stage: dpo (instead of SFT)")
    p.add_argument("--dpo-pairs", type=Path, help="a dpo_en_demo.json to read (its first N pairs) instead of ours")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="auto: what wb picks here")
    p.add_argument("--no-pin", action="store_true", help="do not pin the sides to cores with taskset")
    p.add_argument("--cpus", help="taskset cores for both sides (default: the last N cores for N threads)")
    p.add_argument("--lf-python", type=Path, default=DEFAULT_LF_PYTHON, help="LLaMA-Factory's venv interpreter")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="the real records (../shared/data)")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    p.add_argument("--keep", action="store_true", help="keep the data, configs, logs and run folders")
    args = p.parse_args(argv)
    if args.records is not None and args.records < 4:
        p.error("--records: at least 4")
    if args.epochs < 1:
        p.error("--epochs: at least 1")
    if args.steps is not None and args.steps < 1:
        p.error("--steps: at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.lf_python.is_file():
        raise SystemExit(f"{args.lf_python}: no such interpreter; set up LLaMA-Factory's venv (top of this file)")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from workbench.models.embedded import embedded_model_dir
    from workbench.precision import for_training

    model_dir = embedded_model_dir(on_status=print)
    choice = for_training(args.precision)
    cpu = cpu_info()
    print(f"CPU: {cpu['model_name']} ({cpu['cpus']} CPUs; AVX512-BF16 {cpu['avx512_bf16']}, AMX {cpu['amx_bf16']})")
    print(f"precision on both sides: {choice.name} ({choice.reason})")
    started = dt.datetime.now(dt.UTC)
    work = args.out_dir / f"vs-llamafactory-{started:%Y%m%d-%H%M%S}-{os.getpid()}"
    data_dir = work / "data"
    data_dir.mkdir(parents=True)
    n = args.records or (32 if args.dpo else 128)
    counts: dict[str, int] = {}
    if args.dpo and args.dpo_pairs:
        items: list[Any] = json.loads(args.dpo_pairs.read_text(encoding="utf-8"))[:n]
        source = str(args.dpo_pairs)
    elif args.dpo:
        items, source = make_pairs(args.data_dir, n), "built from en_codegen_instruct.json (dpo_en_demo's shape)"
    else:
        items, counts = make_records(args.data_dir, n)
        source = f"drawn from {args.data_dir} (seed {DRAW_SEED})"
    data = data_dir / ("pairs.json" if args.dpo else "records.json")
    data.write_text(json.dumps(items, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    (data_dir / "dataset_info.json").write_text(json.dumps(dataset_info(args.dpo, data.name), indent=1) + "\n")
    print(f"{len(items)} {'pairs' if args.dpo else 'records'} ({source}): {data}")
    lf_versions = json.loads(
        subprocess.run([str(args.lf_python), "-c", LF_VERSIONS], capture_output=True, text=True, check=True).stdout
    )
    print(f"LLaMA-Factory {lf_versions['llamafactory']} (torch {lf_versions['torch']}) in {args.lf_python}")

    methods = args.method or (["lora"] if args.dpo else ["lora", "full"])
    configs = [
        Config(t, m, args.dpo, args.steps, choice.name, args.cpus or pin(t, not args.no_pin), args.epochs)
        for t in args.threads
        for m in methods
    ]
    runs: list[Run] = []
    comparisons: dict[str, Any] = {}
    for i, c in enumerate(configs):
        order = ["llamafactory", "wb"] if i % 2 == 0 else ["wb", "llamafactory"]
        print(f"\n{c.label}: cores {c.cpus or 'any'}, order {' then '.join(order)}", flush=True)
        done: dict[str, Run] = {}
        for side in order:
            if side == "llamafactory":
                r = run_lf(c, args.lf_python, model_dir, data_dir, work)
            else:
                r = run_wb(c, model_dir, data, work)
            done[side] = r
            runs.append(r)
            print(
                f"  {side}: {r.steps} steps, loop {r.loop_seconds:.1f} s, whole {r.wall_seconds:.1f} s "
                f"(CPU {r.cpu_seconds:.1f} s), peak RSS {r.peak_rss_mb:,.0f} MB, load {r.load_before:.1f} -> "
                f"{r.load_after:.1f}",
                flush=True,
            )
        comparisons[c.label] = compare(done["wb"], done["llamafactory"])
    print()
    print_runs(runs)
    for label, cmp in comparisons.items():
        print_comparison(label, cmp)
    report: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "cpu": cpu,
        "load_average_end": os.getloadavg(),
        "precision": {"name": choice.name, "reason": choice.reason},
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "model": str(model_dir),
        "data": {"kind": "dpo pairs" if args.dpo else "alpaca records", "count": len(items), "source": source},
        "records_by_source": counts,
        "settings": {
            "cutoff": CUTOFF,
            "batch": BATCH,
            "lora": LORA,
            "lr": LR,
            "warmup_ratio": WARMUP,
            "weight_decay": WEIGHT_DECAY,
            "seed": SEED,
            "beta": BETA if args.dpo else None,
            "system_prompt": SYSTEM,
        },
        "versions": {
            "wb_side": versions(["torch", "transformers", "peft", "trl", "accelerate"]),
            "llamafactory_side": lf_versions,
        },
        "wb_source": git_state(),
        "configs": [asdict(c) for c in configs],
        "runs": [asdict(r) for r in runs],
        "comparisons": comparisons,
    }
    name = "vs_llamafactory_dpo.json" if args.dpo else "vs_llamafactory.json"
    print(f"\nresults: {write_report(args.out_dir / name, report)}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
