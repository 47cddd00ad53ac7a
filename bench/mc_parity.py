"""Multiple-choice parity: wb's log-likelihood scoring against lm-evaluation-harness on the same items and model.

lm-evaluation-harness runs in a SEPARATE virtual environment, so its dependencies never touch wb's. Set it up once:

    python3 -m venv /work/bench-venv
    /work/bench-venv/bin/pip install torch==2.13.0          # the CPU build wb pins (from the local wheel folder)
    /work/bench-venv/bin/pip install "lm-eval[hf]==0.4.13"  # brings transformers 5.25.0, datasets 5.2.0, peft

(`--lm-eval-python` points at another interpreter.) Nothing is downloaded at run time: both sides read the embedded
model's local safetensors folder (`workbench.models.embedded.embedded_model_dir()`) with HF_HUB_OFFLINE=1 and
HF_DATASETS_OFFLINE=1, and lm-eval reads the items through a custom task YAML this script writes into a temporary
folder:

    task: wb_mc_parity            dataset_path: json, data_files: {test: <the probe file>}
    output_type: multiple_choice  doc_to_text: "Question: {{question}}\\nAnswer:"
    doc_to_choice: choices        doc_to_target: "{{['A','B','C','D',...].index(answer)}}"
    target_delimiter: " "         metric_list: acc, acc_norm

That is lm-eval's default zero-shot prompt, and wb's `--mc-prompt plain`: wb renders `Question: ...\\nAnswer:`, scores
" " + each option's text, moves trailing context whitespace into the continuation and tokenises context +
continuation once without special tokens (lm-eval's `_encode_pair`), and divides by the option's length in
characters for `acc_norm`. The wb side is `wb eval --model <embedded folder> --mc FILE --mc-prompt plain --no-probes
--precision fp32 -o DIR` (lm-eval runs the model in fp32 too: `dtype=float32`).

Reports acc / acc_norm of both, and every item where the two pick differently, with each option's log-likelihood on
both sides; the largest per-option log-likelihood difference over all items says how close the numbers are.

Speed: each side runs as its own process, one after the other (lm-eval first), pinned to the same core (`taskset -c
CORE`, default 1) with OMP_NUM_THREADS=MKL_NUM_THREADS=1 (`--threads`), and is timed from outside: items per second
of wall time and items per CPU-second (user + system time of the process and its children, from `getrusage`), both
for the whole process (imports, model load, dataset build and scoring: what a user waits for). Both sides do the same
work: the options of each item (lm-eval's default task; wb's default `--mc` scoring), and with `--letters` also
MMLU's `A. ... Answer:` letter prompt (a second lm-eval task; wb `--mc-letters`, `mc_letter_accuracy`). The 1-minute
load average at the start and end of each side is stored: on a shared machine it moves
both sides, so the ratio is the figure to read.

Writes `bench/out/mc_parity_<file stem>[_letters].json`. Run: `/work/main/.venv/bin/python bench/mc_parity.py` (a few
minutes on 2 cores).
A measurement, not a test: exit status 0 unless a side fails to run (then the error text is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import ROOT, git_state, table, versions, write_report

sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "bench" / "out"
DEFAULT_FILE = ROOT / "workbench" / "evaluate" / "probes" / "mc_general_en.jsonl"
DEFAULT_PYTHON = Path("/work/bench-venv/bin/python")
TASK = "wb_mc_parity"
LETTERS_TASK = "wb_mc_parity_letters"

LM_EVAL_RUNNER = r"""
import json, sys, time
import lm_eval
from lm_eval.tasks import TaskManager
model_dir, task_dir, out, batch, tasks = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5].split(",")
def context_of(arguments):
    if isinstance(arguments, dict):
        return arguments["gen_args_0"]["arg_0"]
    return arguments[0][0]
started = time.time()
res = lm_eval.simple_evaluate(
    model="hf",
    model_args=f"pretrained={model_dir},dtype=float32,device=cpu,trust_remote_code=False",
    tasks=tasks,
    task_manager=TaskManager(include_path=task_dir),
    batch_size=batch,
    log_samples=True,
    num_fewshot=0,
)
report = {"version": lm_eval.__version__, "seconds": time.time() - started}
for task in tasks:
    samples = []
    for s in res["samples"][task]:
        samples.append({
            "doc_id": s["doc_id"],
            "id": s["doc"].get("id"),
            "target": s["target"],
            "logliks": [float(r[0]) for r in s["filtered_resps"]],
            "acc": s["acc"],
            "acc_norm": s["acc_norm"],
            "context": context_of(s["arguments"]),
        })
    metrics = res["results"][task]
    report[task] = {"acc": metrics.get("acc,none"), "acc_norm": metrics.get("acc_norm,none"), "samples": samples}
json.dump(report, open(out, "w"), ensure_ascii=False)
"""


WB_RUNNER = r"""
import json, sys, time
from pathlib import Path
from workbench.evaluate import pipeline
from workbench.evaluate.config import EvalConfig
from workbench.models.generate import GenerationSettings
model_dir, items, out, batch = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
letters = sys.argv[5] == "1"
config = EvalConfig(
    probes=[], mc=[items], mc_prompt="plain", mc_letters=letters, base=False,
    generation=GenerationSettings(batch_size=batch, precision="fp32"), cache=False,
)
started = time.time()
result = pipeline.evaluate(model_dir, config, out / "wb")
seconds = time.time() - started
rows = [json.loads(x) for x in (out / "wb" / "scores.jsonl").read_text(encoding="utf-8").splitlines()]
section = result.metrics.model_dump(mode="json", exclude_none=True)["forgetting"][Path(items).stem]["metrics"]
letter_acc = section["mc_letter_accuracy"]["tuned"] if letters else None
json.dump({"seconds": seconds, "acc": section["mc_accuracy"]["tuned"], "acc_norm": section["mc_accuracy_norm"]["tuned"],
           "letter_acc": letter_acc, "rows": rows}, open(out / "wb.json", "w"), ensure_ascii=False)
"""


def run_pinned(name: str, argv: list[str], env: dict[str, str], core: int | None, threads: int) -> dict[str, Any]:
    """Runs one side as its own process (pinned to `core` when given, `threads` threads) and times it from outside:
    wall seconds, CPU seconds (user + system of the process and its children) and the load around it."""
    env = {**env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if core is not None:
        if shutil.which("taskset") is None:
            raise SystemExit("taskset not found: install util-linux or pass --core -1 (no pinning)")
        argv = ["taskset", "-c", str(core), *argv]
    load_before = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-25:])
        raise SystemExit(f"{name} failed (exit {done.returncode}):\n{tail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "load_1min": [load_before, os.getloadavg()[0]], "core": core}


def task_yaml(items: Path, n_choices: int, letters_task: bool = False) -> str:
    """lm-eval's default zero-shot prompt over the options, or (letters_task) MMLU's: the question, `A. ...` lines
    and `Answer:`, each letter a continuation, which is what wb's `mc_letter_accuracy` scores."""
    letters = [chr(ord("A") + i) for i in range(n_choices)]
    if letters_task:
        text = (
            "{{question}}{% for c in choices %}\n{{'"
            + "".join(letters)
            + "'[loop.index0]}}. {{c}}{% endfor %}\nAnswer:"
        )
        head = f"task: {LETTERS_TASK}\ndoc_to_text: {json.dumps(text)}\ndoc_to_choice: {json.dumps(letters)}\n"
    else:
        head = f'task: {TASK}\ndoc_to_text: "Question: {{{{question}}}}\\nAnswer:"\ndoc_to_choice: choices\n'
    return (
        head + "dataset_path: json\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    test: {json.dumps(str(items))}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        f'doc_to_target: "{{{{{letters}.index(answer)}}}}"\n'
        'target_delimiter: " "\n'
        "metric_list:\n"
        "  - metric: acc\n"
        "    aggregation: mean\n"
        "    higher_is_better: true\n"
        "  - metric: acc_norm\n"
        "    aggregation: mean\n"
        "    higher_is_better: true\n"
    )


def run_lm_eval(
    python: Path,
    model_dir: Path,
    items: Path,
    n_choices: int,
    batch: int,
    work: Path,
    core: int | None,
    threads: int,
    letters: bool,
) -> dict[str, Any]:
    task_dir = work / "tasks"
    task_dir.mkdir()
    tasks = [TASK, LETTERS_TASK] if letters else [TASK]
    for task in tasks:
        yaml = task_yaml(items, n_choices, letters_task=task == LETTERS_TASK)
        (task_dir / f"{task}.yaml").write_text(yaml, encoding="utf-8")
    out = work / "lm_eval.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["HF_DATASETS_CACHE"] = str(work / "hf_datasets")  # a fresh cache: nothing left over from elsewhere
    argv = [str(python), "-c", LM_EVAL_RUNNER, str(model_dir), str(task_dir), str(out), str(batch), ",".join(tasks)]
    process = run_pinned("lm-eval", argv, env, core, threads)
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    main = result.pop(TASK)
    return {**result, **main, "letters": result.pop(LETTERS_TASK, None), "process": process}


def run_wb(
    model_dir: Path, items: Path, batch: int, work: Path, core: int | None, threads: int, letters: bool
) -> dict[str, Any]:
    """`wb eval --mc ITEMS --mc-prompt plain --no-probes --precision fp32` (`--mc-letters` with `letters`) as a
    library call, in its own process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-c", WB_RUNNER, str(model_dir), str(items), str(work), str(batch), str(int(letters))]
    process = run_pinned("wb", argv, env, core, threads)
    result: dict[str, Any] = json.loads((work / "wb.json").read_text(encoding="utf-8"))
    return {**result, "process": process}


def compare(wb: dict[str, Any], lm: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    by_doc = {s["doc_id"]: s for s in lm["samples"]}
    differing = []
    max_gap = 0.0
    context_mismatch = 0
    for k, (item, row) in enumerate(zip(items, wb["rows"], strict=True)):
        s = by_doc[k]
        ours = [c["loglik"] for c in row["tuned"]["mc"]["choices"]]
        theirs = s["logliks"]
        gap = max(abs(a - b) for a, b in zip(ours, theirs, strict=True))
        max_gap = max(max_gap, gap)
        if s.get("context") is not None and s["context"] != row["tuned"]["mc"]["context"]:
            context_mismatch += 1
        letters = list(row["options"])
        wb_pick, wb_norm = row["tuned"]["mc"]["predicted"], row["tuned"]["mc"]["predicted_norm"]
        texts = list(row["options"].values())
        lm_pick = letters[max(range(len(theirs)), key=lambda i: theirs[i])]
        lm_norm = letters[max(range(len(theirs)), key=lambda i: theirs[i] / len(texts[i]))]
        if (wb_pick, wb_norm) != (lm_pick, lm_norm) or int(row["tuned"]["mc_accuracy"]) != int(s["acc"]):
            differing.append(
                {
                    "id": item.get("id", k),
                    "answer": row["reference"],
                    "wb": {"acc_pick": wb_pick, "acc_norm_pick": wb_norm, "logliks": ours},
                    "lm_eval": {"acc_pick": lm_pick, "acc_norm_pick": lm_norm, "logliks": theirs},
                    "largest_gap": gap,
                }
            )
    return {"differing": differing, "max_loglik_gap": max_gap, "context_mismatches": context_mismatch}


def compare_letters(wb: dict[str, Any], letters: dict[str, Any]) -> dict[str, Any]:
    """wb's letter scores (`mc_letter_accuracy`) against lm-eval's MMLU-prompt task on the same items."""
    by_doc = {s["doc_id"]: s for s in letters["samples"]}
    max_gap, differ, mismatch = 0.0, 0, 0
    for k, row in enumerate(wb["rows"]):
        s = by_doc[k]
        ours = [c["loglik"] for c in row["tuned"]["mc"]["letters"]]
        max_gap = max(max_gap, *(abs(a - b) for a, b in zip(ours, s["logliks"], strict=True)))
        mismatch += int(s["context"] != row["tuned"]["mc"]["letter_context"])
        differ += int(int(row["tuned"]["mc_letter_accuracy"]) != int(s["acc"]))
    return {"max_loglik_gap": max_gap, "context_mismatches": mismatch, "items_scored_differently": differ}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", type=Path, default=DEFAULT_FILE, help="A JSONL MC file (question, choices, answer).")
    ap.add_argument("--limit", type=int, default=None, help="Only the first N items (a quick check).")
    ap.add_argument("--lm-eval-python", type=Path, default=DEFAULT_PYTHON)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--core", type=int, default=1, help="The core both sides are pinned to (taskset); -1: none.")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS / MKL_NUM_THREADS of both sides.")
    ap.add_argument(
        "--letters",
        action="store_true",
        help="Both sides also score MMLU's letter prompt (lm-eval a second task, wb --mc-letters: mc_letter_accuracy).",
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()

    from workbench.models.embedded import embedded_model_dir

    if not args.lm_eval_python.is_file():
        raise SystemExit(f"{args.lm_eval_python}: no such interpreter; set up the bench venv (top of this file)")
    model_dir = embedded_model_dir()
    items = [json.loads(x) for x in args.file.read_text(encoding="utf-8").splitlines() if x.strip()]
    items = items[: args.limit] if args.limit else items
    n_choices = max(len(it["choices"]) for it in items)
    with tempfile.TemporaryDirectory(prefix="wb-mc-parity-") as tmp:
        work = Path(tmp)
        subset = work / f"{args.file.stem}.jsonl"
        subset.write_text("".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items), encoding="utf-8")
        load = os.getloadavg()
        core = None if args.core < 0 else args.core
        lm = run_lm_eval(
            args.lm_eval_python, model_dir, subset, n_choices, args.batch_size, work, core, args.threads, args.letters
        )
        wb = run_wb(model_dir, subset, args.batch_size, work, core, args.threads, args.letters)
    found = compare(wb, lm, items)
    letters = compare_letters(wb, lm["letters"]) if lm["letters"] is not None else None
    n = len(items)
    pinned = f"core {core}" if core is not None else "not pinned"
    print(
        f"{n} items of {args.file.name}, embedded model {model_dir.name}, fp32, zero-shot, {pinned}, {args.threads} thr"
    )
    work_done = "options and letters (wb --mc-letters)" if letters is not None else "options"
    print(f"both sides score: {work_done}")
    rows = []
    for name, side in (("wb", wb), (f"lm-eval {lm['version']}", lm)):
        p = side["process"]
        rows.append(
            [
                name,
                f"{side['acc']:.4f}",
                f"{side['acc_norm']:.4f}",
                f"{p['wall_s']:.1f}",
                f"{p['cpu_s']:.1f}",
                f"{n / p['wall_s']:.3f}",
                f"{n / p['cpu_s']:.3f}",
                f"{p['load_1min'][0]:.1f}-{p['load_1min'][1]:.1f}",
            ]
        )
    head = ["scorer", "acc", "acc_norm", "wall s", "CPU s", "items/s", "items/CPU-s", "load"]
    print(table(head, rows))
    speed = {
        "items_per_s": lm["process"]["wall_s"] / wb["process"]["wall_s"],
        "items_per_cpu_s": lm["process"]["cpu_s"] / wb["process"]["cpu_s"],
    }
    print(f"wb / lm-eval: {speed['items_per_s']:.2f}x items/s, {speed['items_per_cpu_s']:.2f}x items per CPU-second")
    print(f"largest per-option log-likelihood difference: {found['max_loglik_gap']:.2e} nats")
    print(f"items whose rendered context differs: {found['context_mismatches']}")
    print(f"items where the picks differ: {len(found['differing'])}")
    for d in found["differing"]:
        print(
            f"  {d['id']} (answer {d['answer']}): wb {d['wb']['acc_pick']}/{d['wb']['acc_norm_pick']}, "
            f"lm-eval {d['lm_eval']['acc_pick']}/{d['lm_eval']['acc_norm_pick']}"
        )
        print(f"    wb      {[round(x, 5) for x in d['wb']['logliks']]}")
        print(f"    lm-eval {[round(x, 5) for x in d['lm_eval']['logliks']]}")
    if letters is not None:
        lm_letter_acc = lm["letters"]["acc"]
        print(
            f"letters: wb mc_letter_accuracy {wb['letter_acc']:.4f}, lm-eval (MMLU prompt) acc {lm_letter_acc:.4f}; "
            f"largest difference {letters['max_loglik_gap']:.2e} nats; contexts differing "
            f"{letters['context_mismatches']}; items scored differently {letters['items_scored_differently']}"
        )
    report = {
        "file": str(args.file),
        "lm_eval_letters_task": args.letters,
        "letters": letters,
        "items": len(items),
        "model": str(model_dir),
        "load_average_at_start": load,
        "threads": args.threads,
        "speed_ratio_wb_over_lm_eval": speed,
        "wb": {k: v for k, v in wb.items() if k != "rows"},
        "lm_eval": {k: v for k, v in lm.items() if k not in ("samples", "letters")},
        **found,
        "git": git_state(),
        "versions": versions(["torch", "transformers"]),
    }
    name = f"mc_parity_{args.file.stem}{'_letters' if args.letters else ''}.json"
    path = write_report(args.out / name, report)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
