"""What the report shows of a run's evaluation: the task metrics (each STAT with its intervals, verdict and a
forest-plot bar; corpus scores, degenerate answers, classification, the judge), preference accuracies, the
forgetting probes, and base vs tuned item by item (wins/ties/losses, the worst regressions marked word by word).

Every interval and verdict is the one `wb eval` computed and wrote (`workbench.evaluate.compare` made them); the one
statistic counted here, wins/ties/losses of a run folder written without them, is `compare.win_tie_loss` too.
"""

from __future__ import annotations

from typing import Any

from workbench import charts, degenerate_kinds, metric_specs
from workbench.charts import fmt
from workbench.evaluate import compare
from workbench.report.formatting import MAX_TEXT, cap, interval_text, is_num, plain, signed, word_diff
from workbench.report.gate import GateResult
from workbench.report.summary import Run, higher_is_better, stats_of, task_items, worst

MAX_REGRESSIONS = 15
MAX_IMPROVEMENTS = 5


def preference_view(run: Run) -> dict[str, Any] | None:
    """The Preference section: accuracies on held-out pairs (with intervals) and the reward-model win rate."""
    pref = run.summary.get("pref")
    if not pref:
        return None
    rows = []
    for metric in metric_specs.pref_metrics():
        key, what = metric.name, metric.description
        stat = pref.get(key)
        if not stat:
            continue
        rows.append(
            {
                "metric": f"pref.{key}",
                "description": what,
                "tuned": fmt(stat.get("tuned")),
                "interval": interval_text(stat.get("lower"), stat.get("upper")),
                "base": fmt(stat.get("base")) if stat.get("base") is not None else "",
                "delta_interval": interval_text(stat.get("delta_lower"), stat.get("delta_upper"), signed_=True)
                if stat.get("delta_lower") is not None
                else "",
                "wtl": f"{fmt(stat.get('wins'))} / {fmt(stat.get('ties'))} / {fmt(stat.get('losses'))}"
                if stat.get("wins") is not None
                else "",
                "chance": key.endswith("accuracy") and is_num(stat.get("lower")) and stat["lower"] <= 0.5,
            }
        )
    settings = pref.get("settings") or {}
    return {
        "n": pref.get("n"),
        "source": pref.get("source") or "",
        "rows": rows,
        "win_rate": fmt(pref.get("win_rate")) if pref.get("win_rate") is not None else None,
        "settings": [(k, plain(v)) for k, v in settings.items() if v is not None],
    }


def _stat_row(metric: str, stat: dict[str, Any], scale: float | None) -> dict[str, Any]:
    better = higher_is_better(metric)
    dl, du = stat.get("delta_lower"), stat.get("delta_upper")
    verdict = compare.change(stat, better)
    cls = {"better": "good", "worse": "bad"}.get(verdict, "neutral")
    row_scale = scale if scale and better else _row_scale(stat)
    return {
        "metric": metric,
        "description": (m.description if (m := metric_specs.get(metric)) else ""),
        "direction": "higher is better" if better else "lower is better",
        "tuned": fmt(stat.get("tuned")),
        "interval": interval_text(stat.get("lower"), stat.get("upper")),
        "base": fmt(stat.get("base")),
        "delta": signed(stat.get("delta")),
        "delta_interval": interval_text(dl, du, signed_=True),
        "wtl": (
            f"{fmt(stat.get('wins'))} / {fmt(stat.get('ties'))} / {fmt(stat.get('losses'))}"
            if stat.get("wins") is not None
            else "-"
        ),
        "mcnemar_p": fmt(stat.get("mcnemar_p"), 3) if stat.get("mcnemar_p") is not None else "",
        "n": stat.get("n"),
        "verdict": verdict,
        "cls": cls,
        "bar": _delta_bar(stat, row_scale),
    }


def _delta_bar(stat: dict[str, Any], scale: float) -> charts.Svg | None:
    """The forest-plot row of a STAT: its paired interval of tuned − base and the difference, around zero."""
    lo, hi, mid = stat.get("delta_lower"), stat.get("delta_upper"), stat.get("delta")
    if not (is_num(lo) and is_num(hi) and is_num(mid)):
        return None
    return charts.interval_bar(lo, hi, mid, scale)


def _row_scale(stat: dict[str, Any]) -> float:
    vals = [abs(v) for k in ("delta_lower", "delta_upper", "delta") if is_num(v := stat.get(k))]
    return max(vals) * 1.1 if vals and max(vals) > 0 else 1.0


def _table_scale(stats: dict[str, dict[str, Any]]) -> float:
    vals = [
        abs(v)
        for m, s in stats.items()
        if higher_is_better(m)
        for k in ("delta_lower", "delta_upper")
        if is_num(v := s.get(k))
    ]
    return max(max(vals) * 1.1, 0.05) if vals else 1.0


def primary_metric(section: dict[str, Any]) -> str | None:
    """The metric a set is judged by: the suite's `primary`, else the first item metric in registry order."""
    found = stats_of(section)
    chosen = (section.get("settings") or {}).get("primary")
    if chosen in found:
        return str(chosen)
    item_metrics = [m for m in found if (spec := metric_specs.get(m)) is None or spec.scope == "item"]
    return next(iter(item_metrics), None)


def _unit(score: Any) -> Any:
    """A corpus score on sacrebleu's 0-100 scale, shown on 0-1 beside the sentence metrics (BLEU and chrF divided by
    100, as the registry scores them); metrics.json and the gate's `corpus` paths keep sacrebleu's scale."""
    return score / 100 if isinstance(score, int | float) and not isinstance(score, bool) else score


def task_view(run: Run) -> dict[str, Any] | None:
    task = run.summary.get("task")
    if not task:
        return None
    found = stats_of(task)
    scale = _table_scale(found)
    corpus = []
    for name, c in (task.get("corpus") or {}).items():
        if isinstance(c, dict):
            corpus.append(
                {
                    "metric": name,
                    "n": fmt(c.get("n")),
                    "tuned": fmt(_unit(c.get("tuned"))),
                    "base": fmt(_unit(c.get("base"))),
                    "bp": f"{fmt(c.get('brevity_penalty'), 2)} / {fmt(c.get('base_brevity_penalty'), 2)}",
                    "ratio": f"{fmt(c.get('length_ratio'), 2)} / {fmt(c.get('base_length_ratio'), 2)}",
                    "signature": c.get("signature", ""),
                }
            )
    overlap = run.summary.get("overlap") or {}
    generation = run.summary.get("generation") or {}
    return {
        "n": task.get("n"),
        "has_base": bool(run.summary.get("has_base")),
        "rows": [_stat_row(m, s, scale) for m, s in found.items()],
        "notes": [
            w.removeprefix("eval: task: ") for w in run.summary.get("warnings") or [] if w.startswith("eval: task: ")
        ],
        "degenerate": _degenerate_view(run, task),
        "classification": _classification_view(task),
        "corpus": corpus,
        "overlap": overlap if overlap.get("items") is not None else None,
        "generation": [(k, plain(v)) for k, v in sorted(generation.items())],
        "judge": _judge_view(run, task.get("judge")),
    }


JUDGE_EXAMPLES = 8


def _judge_view(run: Run, j: dict[str, Any] | None) -> dict[str, Any] | None:
    """The pairwise judge's rates, its order and length checks, and a few verdicts with the judge's own words."""
    if not j:
        return None
    flip = j.get("position_flip_rate")
    examples = []
    for row in task_items(run):
        verdict = row.get("judge")
        if not isinstance(verdict, dict):
            continue
        examples.append(
            {
                "id": str(row.get("id")),
                "verdict": verdict.get("verdict"),
                "flipped": bool(verdict.get("flipped")),
                "calls": [
                    (
                        f"tuned as {c.get('tuned_position')}",
                        cap(c.get("raw", ""), 300),
                        c.get("preferred") or "unparsed",
                    )
                    for c in verdict.get("calls") or []
                ],
            }
        )
        if len(examples) >= JUDGE_EXAMPLES:
            break
    settings = j.get("settings") or {}
    return {
        "n": fmt(j.get("n")),
        "win": fmt(j.get("win_rate")),
        "tie": fmt(j.get("tie_rate")),
        "loss": fmt(j.get("loss_rate")),
        "wtl": f"{fmt(j.get('wins'))} / {fmt(j.get('ties'))} / {fmt(j.get('losses'))}",
        "diff": signed(j.get("win_minus_loss")),
        "diff_interval": interval_text(j.get("win_minus_loss_lower"), j.get("win_minus_loss_upper"), signed_=True),
        "flip": fmt(flip),
        "flip_pct": fmt(flip * 100, 0) if is_num(flip) else "-",
        "informative": bool(j.get("informative")),
        "unparsed": fmt(j.get("unparsed")),
        "replies": fmt(j.get("replies")),
        "tuned_longer": fmt(j.get("tuned_longer")),
        "win_longer": fmt(j.get("win_rate_tuned_longer")),
        "win_not_longer": fmt(j.get("win_rate_tuned_not_longer")),
        "kappa": fmt(j.get("kappa")) if j.get("kappa_n") else None,
        "kappa_n": fmt(j.get("kappa_n")),
        "agreement": fmt(j.get("review_agreement")),
        "model": plain(settings.get("model", "")),
        "examples": examples,
    }


MAX_FLAGGED_IDS = 12


def _degenerate_view(run: Run, task: dict[str, Any]) -> list[dict[str, Any]]:
    flagged: dict[str, list[str]] = {}
    for row in task_items(run):
        for kind in (row.get("tuned") or {}).get("flags") or []:
            flagged.setdefault(kind, []).append(str(row.get("id")))
    out = []
    for kind, d in (task.get("degenerate") or {}).items():
        ids = flagged.get(kind, [])
        more = f" (+{len(ids) - MAX_FLAGGED_IDS} more)" if len(ids) > MAX_FLAGGED_IDS else ""
        out.append(
            {
                "kind": kind,
                "tuned": f"{100 * d.get('tuned', 0):.1f}%",
                "tuned_items": d.get("tuned_items", 0),
                "base": f"{100 * d['base']:.1f}%" if d.get("base") is not None else "-",
                "base_items": d.get("base_items"),
                "description": (k.description if (k := degenerate_kinds.get(kind)) else ""),
                "ids": ", ".join(ids[:MAX_FLAGGED_IDS]) + more,
            }
        )
    return out


def _classification_view(task: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for side, report in (task.get("classification") or {}).items():
        confusion = report.get("confusion") or {}
        per_class = report.get("per_class") or {}
        rows = []
        for label, counts in zip(confusion.get("rows") or [], confusion.get("matrix") or [], strict=False):
            c = per_class.get(label) or {}
            rows.append(
                {
                    "label": label,
                    "counts": counts,
                    "precision": fmt(c.get("precision")),
                    "recall": fmt(c.get("recall")),
                    "f1": fmt(c.get("f1")),
                    "support": fmt(c.get("support")),
                }
            )
        out.append(
            {
                "side": side,
                "macro_f1": fmt(report.get("macro_f1")),
                "accuracy": fmt(report.get("accuracy")),
                "unparsed": report.get("unparsed", 0),
                "columns": confusion.get("columns") or [],
                "rows": rows,
            }
        )
    return out


def forgetting_view(run: Run, gate: GateResult | None) -> dict[str, Any] | None:
    forgetting = run.summary.get("forgetting")
    if not forgetting:
        return None
    by_metric = {r.check.metric: r for r in gate.results} if gate else {}
    rows = []
    all_stats = {f"{s}.{m}": st for s, sec in forgetting.items() for m, st in stats_of(sec).items()}
    scale = _table_scale(all_stats)
    for name, section in forgetting.items():
        for metric, stat in stats_of(section).items():
            row = _stat_row(metric, stat, scale)
            row["set"] = name
            row["n"] = fmt(section.get("n"))
            row["kind"] = section.get("kind", "")
            row["gate"], row["gate_text"] = "", ""
            checks = [r for p, r in by_metric.items() if p.startswith(f"forgetting.{name}.{metric}.")]
            if checks:
                row["gate"] = next(
                    (v for v in ("fail", "missing", "inconclusive") if any(r.verdict == v for r in checks)), "pass"
                )
                row["gate_text"] = "; ".join(f"{r.check.label}: {r.message}" for r in checks)
            rows.append(row)
    return {"rows": rows}


def _item_view(row: dict[str, Any], metric: str) -> dict[str, Any]:
    ref = cap(row.get("reference"), MAX_TEXT)
    base = cap((row.get("base") or {}).get("prediction"), MAX_TEXT)
    tuned = cap((row.get("tuned") or {}).get("prediction"), MAX_TEXT)
    b, t = (row.get("base") or {}).get(metric), (row.get("tuned") or {}).get(metric)
    earlier = len(row.get("history") or [])  # a conversation's earlier turns are named, not shown, in this one line
    return {
        "id": row.get("id"),
        "instruction": cap(
            f"(after {earlier} earlier turns) " * bool(earlier)
            + " ".join(str(row.get(k) or "") for k in ("instruction", "input")).strip(),
            600,
        ),
        "reference": ref,
        "base": word_diff(ref, base),
        "tuned": word_diff(ref, tuned),
        "base_score": fmt(b),
        "tuned_score": fmt(t),
        "delta": signed(t - b) if is_num(t) and is_num(b) else "-",
    }


def ab_view(run: Run) -> dict[str, Any] | None:
    task = run.summary.get("task")
    if not task or not run.summary.get("has_base"):
        return None
    metric = primary_metric(task)
    if metric is None:
        return None
    stat = stats_of(task)[metric]
    items = task_items(run)
    w, t, losses = stat.get("wins"), stat.get("ties"), stat.get("losses")
    if w is None and items:  # a STAT without counts (a run folder from elsewhere): count them as wb eval does
        tuned = [(row.get("tuned") or {}).get(metric) for row in items]
        base = [(row.get("base") or {}).get(metric) for row in items]
        w, t, losses = compare.win_tie_loss(tuned, base, higher_is_better(metric))
    total = (w or 0) + (t or 0) + (losses or 0)
    by_id = {str(r.get("id")): r for r in items}
    listed = [by_id[str(i)] for i in task.get("regressions") or [] if str(i) in by_id]
    regressions = listed[:MAX_REGRESSIONS] or worst(items, metric, MAX_REGRESSIONS, regressions=True)
    improvements = worst(items, metric, MAX_IMPROVEMENTS, regressions=False)
    return {
        "metric": metric,
        "wins": w,
        "ties": t,
        "losses": losses,
        "total": total,
        "split": [
            (cls, n, round(100 * (n or 0) / total, 2) if total else 0, label)
            for cls, n, label in (("good", w, "wins"), ("neutral", t, "ties"), ("bad", losses, "losses"))
        ],
        "regressions": [_item_view(r, metric) for r in regressions],
        "regressions_left": max(0, (losses or 0) - len(regressions)),
        "improvements": [_item_view(r, metric) for r in improvements],
        "has_items": bool(items),
        "review": review_view(run.summary.get("review")),
        "scores_file": str(run.files.get("scores") or ""),
    }


def review_view(review: dict[str, Any] | None) -> dict[str, Any] | None:
    """The human review (`review` of the run summary): preference rate with its interval, per reviewer, agreement
    (kappa or why there is none) and every note. Texts are passed as text: the template escapes them."""
    if not review:
        return None

    def rate(r: dict[str, Any] | None) -> str:
        r = r or {}
        if r.get("value") is None:
            return "-"
        return f"{fmt(r['value'])} {interval_text(r.get('lower'), r.get('upper'))} on {fmt(r.get('n'))} items"

    def agreed(a: dict[str, Any]) -> dict[str, Any]:
        kappa = fmt(a["kappa"]) if a.get("kappa") is not None else "none"
        return {"raters": " vs ".join(a["raters"]), "n": a["n"], "kappa": kappa, "note": a.get("note") or ""}

    verdicts = review.get("verdicts") or {}
    total = sum(verdicts.values())
    split = [
        (cls, verdicts.get(v, 0), round(100 * verdicts.get(v, 0) / total, 2) if total else 0, v)
        for cls, v in (("good", "tuned"), ("neutral", "tie"), ("bad", "base"), ("bad", "both_bad"))
    ]
    return {
        "reviewed": review.get("reviewed"),
        "unreviewed": review.get("unreviewed"),
        "stale": review.get("stale"),
        "verdicts": verdicts,
        "split": split,
        "tuned_preferred": rate(review.get("tuned_preferred")),
        "both_bad": review.get("both_bad"),
        "reviewers": [
            {"name": name, "reviewed": r.get("reviewed"), "tuned_preferred": rate(r.get("tuned_preferred"))}
            for name, r in (review.get("reviewers") or {}).items()
        ],
        "kappa": [agreed(a) for a in review.get("kappa") or []],
        "judge": [agreed(a) for a in review.get("judge") or []],
        "notes": [{**n, "note": cap(n["note"])} for n in review.get("notes") or []],
    }
