"""Two runs side by side (`wb report A B`): every number either run has, A, B and B − A, and for tuned scores of
the same items (a task or probe set both runs scored) a 95% paired bootstrap interval of B − A, computed by
`workbench.evaluate.compare.paired_bootstrap`, the function `wb eval` computes its base-vs-tuned intervals with.
Rows are capped at `MAX_COMPARISON_ROWS`; the HTML and Markdown pages and the JSON summary show the same rows.
"""

from __future__ import annotations

import math
from typing import Any

from workbench import charts
from workbench.charts import fmt
from workbench.evaluate import compare
from workbench.report.formatting import interval_text, is_num, signed
from workbench.report.summary import Run, higher_is_better, scored_items
from workbench.runfile.gate_paths import summary_numbers

MAX_COMPARISON_ROWS = 200


COMPARED_FIELDS = ("tuned", "delta")


def _comparable(summary: dict[str, Any]) -> dict[str, float]:
    """The numbers two runs are compared on, by gate path: each metric's tuned value and delta, and every clean,
    train and overlap number (intervals, counts of wins and the like are left to each run's own section)."""
    out = {}
    for path, value in summary_numbers(summary).items():
        parts = path.split(".")
        if parts[0] in ("task", "forgetting"):
            is_stat = len(parts) == (3 if parts[0] == "task" else 4)
            if (is_stat and parts[-1] in COMPARED_FIELDS) or (parts[-1] == "n" and len(parts) <= 3):
                out[path] = value
        elif parts[0] in ("clean", "train") and len(parts) == 2:
            out[path] = value
    return out


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _per_item(run: Run, set_name: str, metric: str) -> dict[str, float]:
    out = {}
    for row in scored_items(run).get(set_name, []):
        v = (row.get("tuned") or {}).get(metric)
        if is_num(v):
            out[str(row.get("id"))] = float(v)
    return out


def compare_runs(a: Run, b: Run) -> list[dict[str, Any]]:
    """Every number either run has: A, B, B − A, and for tuned scores of the same items (task or probe set) a 95%
    paired bootstrap interval of B − A."""
    na, nb = _comparable(a.summary), _comparable(b.summary)
    rows = []
    for path in [*na, *(p for p in nb if p not in na)]:
        va, vb = na.get(path), nb.get(path)
        parts = path.split(".")
        row: dict[str, Any] = {
            "metric": path,
            "a": va,
            "b": vb,
            "diff": (vb - va) if va is not None and vb is not None else None,
            "lower": None,
            "upper": None,
        }
        if parts[-1] == "tuned" and parts[0] in ("task", "forgetting"):
            set_name, metric = ("task", parts[1]) if parts[0] == "task" else (parts[1], parts[2])
            ia, ib = _per_item(a, set_name, metric), _per_item(b, set_name, metric)
            common = sorted(set(ia) & set(ib))
            if len(common) >= 2:
                _, lo, hi = compare.paired_bootstrap([ib[i] for i in common], [ia[i] for i in common], seed=0)
                row["lower"], row["upper"] = _finite(lo), _finite(hi)
                row["paired_n"] = len(common)
        better: bool | None = None
        if parts[0] in ("task", "forgetting") and parts[-1] in ("tuned", "delta"):
            better = higher_is_better(parts[-2])
        elif parts[0] == "train" and parts[1] in ("final_loss", "best_eval_loss", "train_loss"):
            better = False
        row["better"] = better
        rows.append(row)
    return rows[:MAX_COMPARISON_ROWS]


def comparison_view(rows: list[dict[str, Any]], a: Run, b: Run) -> dict[str, Any]:
    out = []
    for r in rows:
        cls = "neutral"
        lo, hi, better = r["lower"], r["upper"], r["better"]
        if better is not None and lo is not None and hi is not None:
            if (lo > 0) if better else (hi < 0):
                cls = "good"
            elif (hi < 0) if better else (lo > 0):
                cls = "bad"
        out.append(
            {
                "metric": r["metric"],
                "a": fmt(r["a"]),
                "b": fmt(r["b"]),
                "diff": signed(r["diff"]),
                "interval": interval_text(lo, hi, signed_=True) if lo is not None else "",
                "cls": cls,
            }
        )
    loss_a = [(float(x["step"]), float(x["loss"])) for x in a.log if is_num(x.get("loss")) and is_num(x.get("step"))]
    loss_b = [(float(x["step"]), float(x["loss"])) for x in b.log if is_num(x.get("loss")) and is_num(x.get("step"))]
    chart = charts.line_chart(
        [charts.Series(f"A: {a.name}", loss_a), charts.Series(f"B: {b.name}", loss_b)], "training loss of both runs"
    )
    return {"rows": out, "chart": chart, "a": a.name, "b": b.name}
