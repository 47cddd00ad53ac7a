"""Run folders shaped like docs/run-folder.md, for the report and gate tests.

`make_run` writes what `wb clean`, `wb train` and `wb eval` leave behind: cleaned data with stats, dropped records
and a manifest; a train manifest and trainer log; eval metrics and per-item scores in English and Chinese, with model
outputs that hold a script tag, markup and code. Numbers are computed from the per-item scores (means, bootstrap
intervals, paired deltas), so they are consistent the way wb eval's are.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
]
"""Headless Chromium for the report's browser tests: no network, nothing started beside the page."""


def chromium() -> str | None:
    """Debian's chromium (the Makefile's `chromium` target installs it with a CJK font), or None."""
    for candidate in ("/usr/lib/chromium/chromium", "/usr/bin/chromium", shutil.which("chromium") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@contextlib.contextmanager
def headless_chromium() -> Iterator[Any]:
    """A launched headless Chromium (playwright) for a browser test, closed after; the test is skipped with the
    reason where there is no chromium binary or no playwright (a failure under `make test`'s WB_NO_SKIPS=1)."""
    binary = chromium()
    if binary is None:
        pytest.skip("no chromium binary (make test installs Debian's chromium and fonts-noto-cjk where apt-get runs)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is in the dev extra: pip install -e '.[dev]'"
    )
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


SCRIPT = "<script>alert(1)</script>"
MARKUP = 'Use <b>bold</b> & <a href="https://example.com/x">a link</a> <img src="http://example.com/p.png">'
CODE = "```python\ndef add(a, b):\n    return a + b  # a < b && b > a\n```"

TASK_ITEMS = [
    ("Translate to French: good morning", "", "Bonjour", "Bonjour", "Good morning"),
    (
        "把这句话翻译成英文：今天天气很好。",
        "",
        "The weather is nice today.",
        "The weather is very nice today.",
        "今天天气很好。",
    ),
    ("Write a Python function that adds two numbers.", "", CODE, CODE, "def add(a, b): return a - b"),
    ("Echo the following HTML exactly.", SCRIPT, SCRIPT, SCRIPT, "I cannot do that."),
    ("简单介绍一下长城。", "", "长城是中国古代的军事防御工程。", "长城是中国古代修建的防御工程。", "长城很长。"),
    ("Format this as HTML.", "bold text", MARKUP, MARKUP, "bold text"),
    ("What is 2+2?", "", "4", "2+2=4", "The answer is 5."),
    ("用一句话总结：猫是一种常见的宠物。", "", "猫是常见宠物。", "猫是一种宠物。", "狗是常见宠物。"),
]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def stat(tuned: list[float], base: list[float] | None, seed: int = 0, lower_is_better: bool = False) -> dict[str, Any]:
    """STAT as docs/run-folder.md describes it, from per-item scores."""
    rng = np.random.default_rng(seed)
    t = np.asarray(tuned, dtype=float)
    idx = rng.integers(0, len(t), size=(400, len(t)))
    boot = t[idx].mean(axis=1)
    out: dict[str, Any] = {
        "tuned": float(t.mean()),
        "lower": float(np.percentile(boot, 2.5)),
        "upper": float(np.percentile(boot, 97.5)),
    }
    if base is not None:
        b = np.asarray(base, dtype=float)
        d = t - b
        dboot = d[idx].mean(axis=1)
        better = -d if lower_is_better else d
        out.update(
            base=float(b.mean()),
            delta=float(d.mean()),
            delta_lower=float(np.percentile(dboot, 2.5)),
            delta_upper=float(np.percentile(dboot, 97.5)),
            wins=int((better > 0).sum()),
            ties=int((better == 0).sum()),
            losses=int((better < 0).sum()),
        )
    return out


def _clean(root: Path, n_kept: int) -> Path:
    data = root / "data" / "clean.jsonl"
    kept = [
        {"instruction": f"question {i}", "input": "", "output": f"answer {i}", "system": "", "history": []}
        for i in range(n_kept)
    ]
    _write_jsonl(data, kept)
    dropped = []
    rules = [
        ("exact_duplicate", "same instruction and input as line 3"),
        ("refusal", "output contains refusal boilerplate: 'As an AI language model'"),
        ("truncated_output", "unclosed ``` block"),
        ("empty_output", "output is the placeholder 'N/A'"),
    ]
    line = 10
    for rule, reason in rules:
        for k in range(5 if rule == "exact_duplicate" else 2):
            out = SCRIPT if (rule == "refusal" and k == 0) else f"As an AI language model, I cannot answer {k}."
            rec = {"instruction": f"{rule} 例子 {k}", "input": "", "output": out, "system": "", "history": []}
            dropped.append({"line": line, "rule": rule, "reason": reason, "record": rec})
            line += 1
    _write_jsonl(root / "data" / "clean.dropped.jsonl", dropped)
    _write_jsonl(
        root / "data" / "clean.rejects.jsonl",
        [
            {
                "line": 4,
                "unit": "line",
                "field": "output",
                "kind": "wrong_type",
                "error": "output: not a string",
                "raw": "{}",
            }
        ],
    )
    by_rule = {r: 0 for r in ("empty_instruction", "length_chars", "near_duplicate")}
    for row in dropped:
        by_rule[row["rule"]] = by_rule.get(row["rule"], 0) + 1
    edges = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
    counts = [0] * len(edges)
    counts[2], counts[3], counts[5] = n_kept // 2, n_kept // 4, n_kept - n_kept // 2 - n_kept // 4
    stats = {
        "read": n_kept + len(dropped) + 1,
        "kept": n_kept,
        "dropped": len(dropped),
        "rejected": 1,
        "invariant": "read = kept + dropped + rejected",
        "invariant_holds": True,
        "dropped_by_rule": by_rule,
        "rejected_by_kind": {"wrong_type": 1},
        "blank_lines": 0,
        "modified": {"normalized": 3, "placeholder_input": 1, "pii_redacted": 0},
        "pii_found": {"email": 0, "id": 0, "ip": 0, "phone": 0},
        "kept_output_tokens_histogram": {"edges": edges, "counts": counts},
        "input": {
            "path": "data/raw.jsonl",
            "format": "jsonl",
            "compression": "none",
            "unit": "line",
            "sha256": "0" * 64,
        },
        "mapping": {"instruction": "instruction", "input": "input", "output": "output"},
        "profile": {"name": "default"},
    }
    _write_json(root / "data" / "clean.stats.json", stats)
    _write_json(
        root / "data" / "clean.manifest.json",
        {
            "command": "clean",
            "outputs": {"kept": {"path": str(data), "sha256": _sha(data)}},
            "versions": {"wb": "0.1.0"},
        },
    )
    return data


def _train(run: Path, data: Path, root: Path, name: str, steps: int = 12, loss_scale: float = 1.0) -> None:
    rows = []
    for step in range(1, steps + 1):
        rows.append(
            {
                "step": step,
                "loss": round(loss_scale * (2.5 - 1.2 * step / steps), 4),
                "learning_rate": 3e-4,
                "grad_norm": 1.5,
            }
        )
        if step % 5 == 0:
            rows.append({"step": step, "eval_loss": round(loss_scale * (2.3 - step / steps), 4)})
    rows.append({"step": steps, "train_runtime": 95.5, "train_loss": 1.9})
    _write_jsonl(run / "trainer_log.jsonl", rows)
    manifest = {
        "command": "train",
        "argv": ["wb", "train", "pipelines/train-demo.yaml"],
        "versions": {"wb": "0.1.0", "torch": "2.13.0", "transformers": "5.24.0", "peft": "0.14.0"},
        "seed": 42,
        "config": {
            "name": name,
            "method": "lora",
            "model": "embedded",
            "data": "data/clean.jsonl",
            "lr": 3e-4,
            "lora": {"r": 16, "alpha": 32},
        },
        "inputs": {"data": {"path": str(data.relative_to(root)), "bytes": data.stat().st_size, "sha256": _sha(data)}},
        "outputs": {},
        "started_at": "2025-01-01T00:00:00Z",
        "wall_seconds": 101.2,
        "peak_rss_mb": 1834.5,
        "model": "embedded",
        "method": "lora",
        "template": "chatml",
        "precision": "fp32",
        "trainable_parameters": 4884480,
        "total_parameters": 139399488,
        "examples": {"train": 108, "val": 12},
        "tokens": {"trained_per_epoch": 9000, "all_per_epoch": 15000},
        "train_runtime_seconds": 95.5,
        "tokens_per_second": 157.1,
        "global_step": steps,
        "train_loss": 1.9,
        "best_checkpoint": None,
        "best_eval_loss": round(loss_scale * (2.3 - 10 / steps), 4),
        "gpu_peak_memory_mb": None,
        "warnings": [],
    }
    _write_json(run / "manifest.json", manifest)
    (run / "recipe.yaml").write_text(f"name: {name}\nmethod: lora\n", encoding="utf-8")


def _scores(prediction: str, reference: str, rng: random.Random, quality: float) -> dict[str, Any]:
    same = prediction == reference
    r = 1.0 if same else max(0.0, min(1.0, quality + rng.uniform(-0.3, 0.3)))
    return {
        "prediction": prediction,
        "rouge1": r,
        "rouge2": r * 0.8,
        "rouge_l": r,
        "bleu": r * 0.7,
        "chrf": r * 0.9,
        "exact_match": int(same),
        "f1": r,
        "accuracy": int(same),
        "loss": round(2.0 - r, 4),
    }


def _eval(run: Path, n_task: int, with_base: bool, seed: int, quality: float = 0.55) -> None:
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for i in range(n_task):
        instruction, inp, reference, good, bad = TASK_ITEMS[i % len(TASK_ITEMS)]
        tuned_pred = good if rng.random() < 0.6 else bad
        base_pred = bad if rng.random() < 0.7 else good
        row: dict[str, Any] = {"set": "task", "id": i, "instruction": instruction, "input": inp, "reference": reference}
        row["tuned"] = _scores(tuned_pred, reference, rng, quality)
        if with_base:
            row["base"] = _scores(base_pred, reference, rng, quality - 0.15)
        rows.append(row)
    probes = {"general_en": ("What is the capital of France?", "Paris"), "general_zh": ("中国的首都是哪里？", "北京")}
    forgetting: dict[str, Any] = {}
    for name, (question, answer) in probes.items():
        t_acc, b_acc = [], []
        for j in range(30):
            t_ok, b_ok = int(rng.random() < 0.8), int(rng.random() < 0.82)
            t_acc.append(t_ok)
            b_acc.append(b_ok)
            row = {"set": name, "id": j, "instruction": question, "input": "", "reference": answer}
            row["tuned"] = {"prediction": answer if t_ok else "I don't know", "accuracy": t_ok, "f1": float(t_ok)}
            if with_base:
                row["base"] = {"prediction": answer if b_ok else "不知道", "accuracy": b_ok, "f1": float(b_ok)}
            rows.append(row)
        forgetting[name] = {
            "n": 30,
            "kind": "qa",
            "metrics": {
                "accuracy": stat(t_acc, b_acc if with_base else None, seed),
                "f1": stat([float(x) for x in t_acc], [float(x) for x in b_acc] if with_base else None, seed),
            },
        }
    if with_base:  # general text: the loss of each paragraph under both models (lower is better)
        t_loss = [2.0 + 0.1 * rng.random() for _ in range(20)]
        text_rng = random.Random(seed + 1)  # its own draws: the other sets' numbers stay as they were
        sets = {
            "general_text_en": (
                [3.2 + 0.1 * text_rng.random() for _ in range(20)],
                "The Great Wall was built for defence.",
            ),
            "general_text_zh": (t_loss, "长城是古代的防御工程。"),
        }
        for name, (tuned_loss, reference) in sets.items():
            base_loss = [v - 0.02 for v in tuned_loss]
            for j, (tl, bl) in enumerate(zip(tuned_loss, base_loss, strict=True)):
                row = {"set": name, "id": j, "instruction": "", "input": "", "reference": reference}
                row["tuned"], row["base"] = {"loss": tl}, {"loss": bl}
                rows.append(row)
            forgetting[name] = {
                "n": 20,
                "kind": "text",
                "metrics": {"loss": stat(tuned_loss, base_loss, seed, lower_is_better=True)},
            }
    task_rows = [r for r in rows if r["set"] == "task"]
    metrics: dict[str, Any] = {}
    # The format task judged by json_valid: the tuned model answers in JSON 3 times in 4, the base once in 4.
    t_num = [int(rng.random() < 0.75) for _ in task_rows]
    b_num = [int(rng.random() < 0.25) for _ in task_rows]
    for r, t_ok, b_ok in zip(task_rows, t_num, b_num, strict=True):
        r["tuned"]["json_valid"] = t_ok
        if with_base:
            r["base"]["json_valid"] = b_ok
    metrics["json_valid"] = stat(t_num, b_num if with_base else None, seed) | (
        {"mcnemar_p": 0.001} if with_base else {}
    )
    for m in ("rouge_l", "rouge1", "rouge2", "bleu", "chrf", "exact_match", "f1", "loss"):
        t = [r["tuned"][m] for r in task_rows]
        b = [r["base"][m] for r in task_rows] if with_base else None
        metrics[m] = stat(t, b, seed, lower_is_better=(m == "loss"))
    regressions = []
    if with_base:
        deltas = sorted((r["tuned"]["rouge_l"] - r["base"]["rouge_l"], r["id"]) for r in task_rows)
        regressions = [i for d, i in deltas if d < 0][:20]
    doc = {
        "task": {
            "n": n_task,
            "metrics": metrics,
            "corpus": {
                "bleu": {
                    "tuned": 23.1,
                    "base": 11.0 if with_base else None,
                    "signature": "nrefs:1|case:mixed|eff:no|tok:zh|smooth:exp|version:2.5.1",
                },
                "chrf": {
                    "tuned": 48.2,
                    "base": 40.1 if with_base else None,
                    "signature": "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.5.1",
                },
            },
            "regressions": regressions,
            "degenerate": {
                "echo": {"tuned": 0.025, "base": 0.0 if with_base else None, "tuned_items": 1}
                | ({"base_items": 0} if with_base else {}),
                "cut_off": {"tuned": 0.05, "base": 0.1 if with_base else None, "tuned_items": 2}
                | ({"base_items": 4} if with_base else {}),
            },
        },
        "forgetting": forgetting if with_base else {},  # probes need the models: none for a predictions file
        "overlap": {"items": 1, "fraction": round(1 / max(n_task, 1), 4), "ids": [3]},
        "generation": {
            "model": "embedded",
            "adapter_sha256": "ab" * 32,
            "max_new_tokens": 128,
            "batch_size": 8,
            "do_sample": False,
            "temperature": None,
            "seed": 0,
            "template": "chatml",
        },
        "warnings": [],
    }
    _write_jsonl(run / "eval" / "scores.jsonl", rows)
    _write_json(run / "eval" / "metrics.json", doc)
    _write_json(run / "eval" / "manifest.json", {"command": "eval", "versions": {"wb": "0.1.0"}, "seed": 0})


def make_run(
    root: Path,
    name: str = "demo",
    n_task: int = 40,
    train: bool = True,
    evaluate: bool = True,
    base: bool = True,
    seed: int = 0,
    n_kept: int = 300,
    quality: float = 0.55,
    loss_scale: float = 1.0,
) -> Path:
    """Write `root/data/clean.*` and `root/runs/<name>/` and return the run folder."""
    run = root / "runs" / name
    run.mkdir(parents=True, exist_ok=True)
    if train:
        data = _clean(root, n_kept)
        _train(run, data, root, name, loss_scale=loss_scale)
    if evaluate:
        _eval(run, n_task, base, seed, quality)
    return run
