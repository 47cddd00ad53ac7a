"""An evaluated run for `wb review`'s tests: eval/scores.jsonl and metrics.json as `wb eval` writes them, with
English and Chinese items, hostile answers (script tags, an `onerror` image, markup), degenerate flags, the
judge's verdicts on even items, and a known pattern of regressions, gains and ties on rouge_l (item i: i % 3 == 0 a regression, 1 a gain, 2 a tie)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCRIPT = "<script>alert(1)</script>"
ONERROR = '<img src=x onerror="alert(2)">'
HOSTILE = f"{SCRIPT} and {ONERROR} & <b>bold</b>"

QUESTIONS = [
    (
        "把这句话翻译成英文：今天天气很好。",
        "The weather is nice today.",
        "The weather is very nice today.",
        "今天天气很好。",
    ),
    ("What is 2+2?", "4", "2+2=4", "The answer is 5."),
    ("Echo this HTML exactly.", SCRIPT, HOSTILE, ONERROR),
    ("简单介绍一下长城。", "长城是中国古代的军事防御工程。", "长城是中国古代修建的防御工程。", "长城很长。"),
    ("Translate to French: good morning", "Bonjour", "Bonjour", "Good morning"),
]
DELTAS = [(0.2, 0.8), (0.9, 0.3), (0.5, 0.5)]  # (tuned, base) rouge_l by i % 3: regression, gain, tie


def bucket(i: int) -> str:
    return ("regression", "gain", "tie")[i % 3]


def rows(n_task: int, n_probe: int = 6) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n_task):
        question, reference, good, bad = QUESTIONS[i % len(QUESTIONS)]
        tuned_r, base_r = DELTAS[i % 3]
        tuned_text, base_text = (bad, good) if i % 3 == 0 else (good, bad)
        tuned = {"prediction": tuned_text, "rouge_l": tuned_r, "bleu": round(tuned_r * 0.7, 4)}
        base = {"prediction": base_text, "rouge_l": base_r, "bleu": round(base_r * 0.7, 4)}
        if i % 7 == 0:
            tuned["flags"] = ["echo"]
        if i % 11 == 0:
            base["flags"] = ["cut_off"]
        row = {"set": "task", "id": i, "instruction": question, "input": "", "reference": reference}
        if i % 2 == 0:  # the local judge (wb eval --judge) prefers the better-scored side, a tie on ties
            verdict = ("base", "tuned", "tie")[i % 3]
            row["judge"] = {"verdict": verdict, "language": "en", "flipped": False, "tuned_longer": False, "calls": []}
        out.append(row | {"tuned": tuned, "base": base})
    for j in range(n_probe):
        ok_t, ok_b = int(j % 2 == 0), int(j % 3 != 0)
        out.append(
            {"set": "general_zh", "id": j, "instruction": "中国的首都是哪里？", "input": "", "reference": "北京"}
            | {"tuned": {"prediction": "北京" if ok_t else "不知道", "accuracy": ok_t}}
            | {"base": {"prediction": "北京" if ok_b else ONERROR, "accuracy": ok_b}}
        )
    return out


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def make_eval_run(root: Path, name: str = "lora", n_task: int = 30, n_probe: int = 6) -> Path:
    """Write `root/runs/<name>/eval/` (scores.jsonl, metrics.json, manifest.json) and return the run folder."""
    run = root / "runs" / name
    folder = run / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    scored = rows(n_task, n_probe)
    task = [r for r in scored if r["set"] == "task"]
    probe = [r for r in scored if r["set"] == "general_zh"]

    def stat(rs: list[dict[str, Any]], metric: str) -> dict[str, Any]:
        t = [float(r["tuned"][metric]) for r in rs]
        b = [float(r["base"][metric]) for r in rs]
        return {"tuned": _mean(t), "base": _mean(b), "delta": _mean(t) - _mean(b)}

    metrics = {
        "task": {"n": n_task, "metrics": {"rouge_l": stat(task, "rouge_l"), "bleu": stat(task, "bleu")}},
        "forgetting": {"general_zh": {"n": n_probe, "kind": "qa", "metrics": {"accuracy": stat(probe, "accuracy")}}},
    }
    with (folder / "scores.jsonl").open("w", encoding="utf-8") as f:
        for r in scored:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (folder / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False), encoding="utf-8")
    (folder / "manifest.json").write_text(json.dumps({"command": "eval", "seed": 0}), encoding="utf-8")
    return run


def write_predictions(path: Path, n_task: int, skip: int = 3) -> Path:
    """A predictions file answering the task items except the first `skip`, plus one id the run does not have."""
    lines = [
        {"set": "task", "id": i, "prediction": f"third system {i} {ONERROR}", "reference": ""} for i in range(n_task)
    ]
    lines = [*lines[skip:], {"set": "task", "id": 10_000, "prediction": "no partner", "reference": ""}]
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    return path
