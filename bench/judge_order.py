"""How far a local judge can be trusted: `wb eval --predictions --judge` on pairs where one answer is known right.

The items are the arithmetic-in-JSON records of `data/demo/eval.jsonl` (`--items`, default 30): one answer is the
reference JSON, the other the same JSON with the result off by 7. The right answer is the tuned one on even items
and the base one on odd items, so a judge that reads the answers wins half and loses half (win rate 0.5, loss rate
0.5, no flips), while a judge that follows positions or sides does not. Three judges side by side, through the same
`wb` code path (prompts `pipelines/judge-*.yaml`, both orders, the parser, the summary):

- `oracle`: a scripted judge that names the position of the right answer (what a perfect judge scores here);
- `position A`: a scripted judge that always answers `[[A]]` (pure position bias: all ties, flip rate 1.0);
- `embedded`: SmolLM2-135M-Instruct, the model wb ships (`--judge embedded`), greedy, fp32 or bf16 per `auto`.

Prints win / tie / loss, the paired interval of win - loss, the position flip rate, unparsed replies, and the share
of items each judge got right (verdict = the side holding the right answer). Writes `bench/out/judge_order.json`.
Run: `/work/main/.venv/bin/python bench/judge_order.py` (about a minute for the model on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import ROOT, git_state, table, versions, write_report

sys.path.insert(0, str(ROOT))

EVAL = ROOT / "data" / "demo" / "eval.jsonl"
DEFAULT_OUT = ROOT / "bench" / "out"


def pairs(n: int) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in EVAL.read_text(encoding="utf-8").splitlines() if x.strip()]
    rows = [r for r in rows if r["output"].startswith("{")][:n]
    out = []
    for i, r in enumerate(rows):
        right = json.loads(r["output"])
        wrong = {**right, "result": right["result"] + 7}
        good, bad = json.dumps(right, ensure_ascii=False), json.dumps(wrong, ensure_ascii=False)
        tuned, base = (good, bad) if i % 2 == 0 else (bad, good)
        out.append(
            {
                "id": i + 1,
                "instruction": r["instruction"],
                "reference": r["output"],
                "prediction": tuned,
                "base_prediction": base,
                "right": "tuned" if i % 2 == 0 else "base",
                "good": good,
            }
        )
    return out


def run(items: list[dict[str, Any]], judge: str, scripted: Any, work: Path) -> dict[str, Any]:
    from workbench.evaluate import judging, pipeline
    from workbench.evaluate.config import EvalConfig

    preds = work / "preds.jsonl"
    preds.write_text("".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items), encoding="utf-8")
    real = judging.judge_generator
    if scripted is not None:
        judging.judge_generator = lambda *a, **k: (scripted, {"scripted": True})  # type: ignore[assignment]
    try:
        started = time.time()
        result = pipeline.evaluate_predictions(preds, EvalConfig(probes=[], judge=judge, cache=False), work / judge)
        seconds = time.time() - started
    finally:
        judging.judge_generator = real  # type: ignore[assignment]
    rows = [json.loads(x) for x in (work / judge / "scores.jsonl").read_text(encoding="utf-8").splitlines()]
    right = sum(r["judge"]["verdict"] == it["right"] for r, it in zip(rows, items, strict=True))
    assert result.metrics.task is not None and result.metrics.task.judge is not None
    summary = result.metrics.task.judge.model_dump(mode="json", exclude_none=True)
    return {
        "summary": summary,
        "right": right,
        "seconds": seconds,
        "replies": [[c["raw"] for c in r["judge"]["calls"]] for r in rows[:6]],
    }


def oracle(items: list[dict[str, Any]]) -> Any:
    goods = [it["good"] for it in items]

    def answer(texts: list[str], prompt: Any) -> list[str]:
        out = []
        for t in texts:
            zh = "[回答A]" in t
            a, b = t.index("[回答A]" if zh else "[Answer A]"), t.index("[回答B]" if zh else "[Answer B]")
            good = next(g for g in goods if g in t[a:])
            out.append("[[A]]" if t.find(good, a) < b else "[[B]]")
        return out

    return answer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=30)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    items = pairs(args.items)
    judges = {
        "oracle": oracle(items),
        "position A": lambda texts, prompt: ["[[A]]" for _ in texts],
        "embedded": None,
    }
    results = {}
    with tempfile.TemporaryDirectory(prefix="wb-judge-") as tmp:
        for name, scripted in judges.items():
            work = Path(tmp) / name.replace(" ", "_")
            work.mkdir()
            results[name] = run(items, "embedded" if scripted is None else name.replace(" ", "_"), scripted, work)
    rows = []
    for name, r in results.items():
        s = r["summary"]
        rows.append(
            [
                name,
                f"{s['win_rate']:.3f}",
                f"{s['tie_rate']:.3f}",
                f"{s['loss_rate']:.3f}",
                f"{s['win_minus_loss']:+.3f} [{s['win_minus_loss_lower']:+.3f}, {s['win_minus_loss_upper']:+.3f}]",
                "-" if s.get("position_flip_rate") is None else f"{s['position_flip_rate']:.3f}",
                f"{s['unparsed']}/{s['replies']}",
                f"{r['right']}/{len(items)}",
            ]
        )
    print(f"{len(items)} pairs (right answer tuned on even items, base on odd)")
    print(table(["judge", "win", "tie", "loss", "win - loss [95%]", "flips", "unparsed", "right"], rows))
    print("embedded judge, first replies:", results["embedded"]["replies"][:3])
    report = {
        "items": len(items),
        "judges": results,
        "git": git_state(),
        "versions": versions(["torch", "transformers"]),
    }
    print(f"wrote {write_report(args.out / 'judge_order.json', report)}")


if __name__ == "__main__":
    main()
