"""What the report shows of one run, section by section: the gate's verdicts, the data (the cleaning's funnel, output
lengths, dropped examples, model-based scores), training (facts, loss and metric curves, preference numbers by step)
and the manifests; `run_view` puts them together with the evaluation's sections (`workbench.report.eval_views`).

A view is plain values for the template (`templates/report.html.j2`), read from the run's summary (`Run`); charts
come drawn (`workbench.charts`), cells formatted (`workbench.report.formatting`). Nothing here computes a statistic.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import yaml

from workbench import charts, metric_specs
from workbench.charts import fmt
from workbench.report.eval_views import ab_view, forgetting_view, preference_view, task_view
from workbench.report.formatting import cap, duration, is_num, pct
from workbench.report.gate import VERDICTS, GateResult
from workbench.report.summary import Run, dropped_examples
from workbench.runfile.training import PREFERENCE_LOG_FIELDS

MAX_DROP_EXAMPLES_PER_RULE = 3
MAX_DROP_EXAMPLES = 30
MAX_MANIFEST_CHARS = 20_000


SCORE_QUANTILES = ("p10", "p50", "p90", "p99")


def _model_scores(run: Run) -> list[dict[str, Any]]:
    """The model-based scores the cleaning's score rules read (`wb score`'s stats beside the scored file): per score
    its quantiles and a histogram. Nothing when the cleaning used no scores or the stats file is gone."""
    from workbench.score.summary import ScorePaths

    stats_path = run.files.get("clean_stats")
    if stats_path is None:
        return []
    try:
        stats = orjson.loads(Path(stats_path).read_bytes())
        source = Path(str(stats["scores"]["path"]))
        doc = orjson.loads(ScorePaths.for_output(source).stats.read_bytes())
    except (OSError, ValueError, KeyError, TypeError):
        return []
    out = []
    for name, d in (doc.get("scores") or {}).items():
        if not isinstance(d, dict):
            continue
        hist = d.get("histogram") or {}
        edges, counts = hist.get("edges") or [], hist.get("counts") or []
        q = d.get("quantiles") or {}
        out.append(
            {
                "name": name,
                "scored": d.get("scored"),
                "missing": d.get("missing"),
                "quantiles": [q.get(k) for k in SCORE_QUANTILES],
                "hist": charts.histogram(edges, counts, name, log_scale=bool(hist.get("log_scale"))),
                "log_scale": bool(hist.get("log_scale")),
                "source": str(source),
            }
        )
    return out


def _data_view(run: Run) -> dict[str, Any] | None:
    clean = run.summary.get("clean")
    if not clean:
        return None
    read = clean["read"]
    funnel = [{"label": "read", "n": read, "cls": "read"}, {"label": "rejected (malformed)", "n": -clean["rejected"]}]
    funnel[-1]["cls"] = "rejected"
    for kind, n in (clean.get("rejected_by_kind") or {}).items():
        if n:
            funnel.append({"label": f"rejected: {kind}", "n": -n, "cls": "rejected sub"})
    funnel.append({"label": "dropped by rules", "n": -clean["dropped"], "cls": "dropped"})
    for rule, n in (clean.get("dropped_by_rule") or {}).items():
        if n:
            funnel.append({"label": f"dropped: {rule}", "n": -n, "cls": "dropped sub"})
    funnel.append({"label": "kept", "n": clean["kept"], "cls": "kept"})
    for row in funnel:
        row["pct"] = pct(abs(row["n"]), read)
        row["width"] = round(100 * abs(row["n"]) / read, 2) if read else 0
        row["count"] = fmt(abs(row["n"])) if row["n"] >= 0 else f"−{fmt(-row['n'])}"
    idle = [rule for rule, n in (clean.get("dropped_by_rule") or {}).items() if not n]
    hist = clean.get("kept_output_tokens_histogram") or {}
    edges, counts = hist.get("edges") or [], hist.get("counts") or []
    bars = []
    if edges and len(edges) == len(counts):
        last = max((i for i, c in enumerate(counts) if c), default=-1)
        first = min((i for i, c in enumerate(counts) if c), default=0)
        for i in range(first, last + 1):
            lo = edges[i]
            hi = edges[i + 1] - 1 if i + 1 < len(edges) else None
            label = f"{lo}+" if hi is None else (str(lo) if hi == lo else f"{lo}–{hi}")
            bars.append((label, counts[i]))
    examples, left = dropped_examples(run, MAX_DROP_EXAMPLES_PER_RULE, MAX_DROP_EXAMPLES)
    shown = []
    for ex in examples:
        prompt, answer = _record_text(ex.get("record") or {})
        shown.append(
            {
                "line": ex.get("line"),
                "rule": ex.get("rule"),
                "reason": cap(ex.get("reason"), 300),
                "instruction": cap(prompt, 400),
                "output": cap(answer, 600),
            }
        )
    mods = clean.get("modified") or {}
    pii = clean.get("pii_found") or {}
    return {
        "clean": clean,
        "funnel": funnel,
        "idle_rules": idle,
        "hist": charts.bar_chart(
            bars, "output length histogram", title=lambda lo, n: f"{lo} tokens: {fmt(n)} records", values=True
        ),
        "examples": shown,
        "examples_left": left,
        "dropped_file": str(run.files.get("dropped") or ""),
        "modified": [(k, v) for k, v in mods.items() if v],
        "pii": [(k, v) for k, v in pii.items() if v],
        "contamination": clean.get("contamination"),
        "source": clean.get("source"),
        "scores": _model_scores(run),
        "score_quantiles": SCORE_QUANTILES,
        "pref": _preference_data(clean.get("preference")),
    }


def _messages_text(value: Any) -> str:
    """A message list (TRL's conversational format) as text: a single turn's content, or each turn as
    `role: content` on its own line."""
    if not isinstance(value, list):
        return str(value or "")
    turns = [m for m in value if isinstance(m, dict)]
    if len(turns) == 1:
        return str(turns[0].get("content") or "")
    return "\n".join(f"{m.get('role', '?')}: {m.get('content') or ''}" for m in turns)


def _record_text(rec: dict[str, Any]) -> tuple[str, str]:
    """(prompt, answer) of a dropped record as the report shows it: an SFT record's instruction + input and output;
    a preference pair's prompt and both answers; a KTO example's prompt and labelled completion."""
    if "chosen" in rec or "rejected" in rec:
        answer = f"chosen: {_messages_text(rec.get('chosen'))}\nrejected: {_messages_text(rec.get('rejected'))}"
        return _messages_text(rec.get("prompt")), answer
    if "completion" in rec:
        label = "desirable" if rec.get("label") is True else "undesirable" if rec.get("label") is False else "?"
        return _messages_text(rec.get("prompt")), f"{label}: {_messages_text(rec.get('completion'))}"
    prompt = " ".join(str(rec.get(k) or "") for k in ("instruction", "input")).strip()
    return prompt, str(rec.get("output") or "")


def _preference_data(pref: Any) -> dict[str, Any] | None:
    """What the cleaning found in preference data: its kind, the input shapes read, the rules that do not apply,
    and which answer of the kept pairs is longer (or, for KTO, the label balance)."""
    if not isinstance(pref, dict):
        return None
    bias = pref.get("length_bias") or None
    labels = pref.get("labels") or None
    return {
        "kind": "pairs (chosen / rejected)" if pref.get("kind") == "pair" else "KTO examples (labelled completions)",
        "shapes": [(k, v) for k, v in (pref.get("shapes") or {}).items() if v],
        "not_applicable": list(pref.get("rules_not_applicable") or []),
        "bias": bias,
        "bias_share": pct(bias["chosen_longer"], bias["pairs"]) if bias and bias.get("pairs") else None,
        "labels": labels,
    }


def _train_view(run: Run) -> dict[str, Any] | None:
    train = run.summary.get("train")
    if not train:
        return None
    loss = [(float(r["step"]), float(r["loss"])) for r in run.log if is_num(r.get("loss")) and is_num(r.get("step"))]
    ev = [(float(r["step"]), float(r["eval_loss"])) for r in run.log if is_num(r.get("eval_loss"))]
    chart = charts.line_chart(
        [charts.Series("train loss", loss), charts.Series("eval loss", ev)], "training and eval loss by step"
    )
    metric_curves: dict[str, list[tuple[float, float]]] = {}
    for r in run.log:
        for key, value in r.items():
            name = key.removeprefix("eval_")
            wanted = key.startswith("eval_") and key != "eval_loss" and metric_specs.get(name) is not None
            if wanted and is_num(value) and is_num(r.get("step")):
                metric_curves.setdefault(name, []).append((float(r["step"]), float(value)))
    metric_chart = charts.line_chart(
        [charts.Series(f"eval {m}", pts) for m, pts in metric_curves.items()], "task metrics at each eval by step"
    )
    trainable, total = train.get("trainable_parameters"), train.get("total_parameters")
    examples = train.get("examples") or {}
    facts = [
        ("method", train.get("method")),
        ("base model", train.get("model")),
        ("template", train.get("template")),
        ("precision", train.get("precision")),
        (
            "trainable parameters",
            f"{fmt(trainable)} of {fmt(total)} ({pct(trainable, total)})" if trainable is not None else None,
        ),
        ("examples (train / validation)", f"{fmt(examples.get('train'))} / {fmt(examples.get('val'))}"),
        ("steps", fmt(train.get("global_step"))),
        ("training time", duration(train.get("train_runtime_seconds"))),
        ("throughput", f"{fmt(train.get('tokens_per_second'), 1)} tokens/s"),
        ("peak memory (RSS)", f"{fmt(train.get('peak_rss_mb'), 0)} MiB" if train.get("peak_rss_mb") else None),
        (
            "peak GPU memory",
            f"{fmt(train.get('gpu_peak_memory_mb'), 0)} MiB" if train.get("gpu_peak_memory_mb") else "no GPU",
        ),
        ("loss: first → last logged", f"{fmt(train.get('first_loss'))} → {fmt(train.get('final_loss'))}"),
        ("train loss (mean)", fmt(train.get("train_loss"))),
        ("best eval loss", fmt(train.get("best_eval_loss"))),
        (
            "best checkpoint chosen by",
            f"{train.get('metric_for_best')} = {fmt(train.get('best_metric'))}"
            if train.get("metric_for_best") not in (None, "eval_loss")
            else None,
        ),
    ]
    final_pref = train.get("final_preference") or {}
    facts += [(f"last logged {_PREF_LABELS.get(k, k)}", fmt(v)) for k, v in final_pref.items()]
    recipe = train.get("recipe")
    recipe_text = yaml.safe_dump(recipe, sort_keys=True, allow_unicode=True) if recipe else ""
    return {
        "facts": [(k, v) for k, v in facts if v is not None and v != "- / -"],
        "chart": chart,
        **_preference_steps(run.log),
        "metric_chart": metric_chart,
        "metric_names": list(metric_curves),
        "recipe": cap(recipe_text, MAX_MANIFEST_CHARS),
        "log_file": str(run.files.get("trainer_log") or ""),
        "steps_logged": len(loss),
    }


_PREF_LABELS = {field: name for name, field in PREFERENCE_LOG_FIELDS.items()}
MAX_PREF_ROWS = 20


def _preference_steps(log: list[dict[str, Any]]) -> dict[str, Any]:
    """Preference methods' per-step numbers: a chart (implicit rewards of chosen and rejected for the DPO family and
    KTO, the sampled answers' reward and KL for GRPO, the margin for a reward model) and a table of every number."""
    names = [n for n in PREFERENCE_LOG_FIELDS if any(is_num(r.get(n)) for r in log)]
    if not names:
        return {"pref_chart": None, "pref_columns": [], "pref_rows": []}

    def series(name: str) -> list[tuple[float, float]]:
        return [(float(r["step"]), float(r[name])) for r in log if is_num(r.get(name)) and is_num(r.get("step"))]

    pairs = [("rewards/chosen", "rewards/rejected"), ("reward", "kl"), ("margin", "accuracy")]
    first, second = next(((a, b) for a, b in pairs if a in names), (names[0], ""))
    chart = charts.line_chart(
        [charts.Series(first, series(first))] + ([charts.Series(second, series(second))] if second in names else []),
        "preference numbers by step",
    )
    rows = [r for r in log if any(is_num(r.get(n)) for n in names)]
    step = max(1, math.ceil(len(rows) / MAX_PREF_ROWS))
    shown = rows[::step] + ([rows[-1]] if rows and (len(rows) - 1) % step else [])
    return {
        "pref_chart": chart,
        "pref_columns": names,
        "pref_rows": [
            [fmt(r.get("step"))] + [fmt(r.get(n)) if is_num(r.get(n)) else "-" for n in names] for r in shown
        ],
    }


def _manifests_view(run: Run) -> list[dict[str, str]]:
    out = []
    for title, m, path in (
        ("training", run.train_manifest, run.files.get("train_manifest")),
        ("evaluation", run.eval_manifest, run.files.get("eval_manifest")),
        ("cleaning", run.clean_manifest, None),
    ):
        if m:
            text = orjson.dumps(m, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
            out.append({"title": title, "path": str(path or ""), "text": cap(text, MAX_MANIFEST_CHARS)})
    return out


def _gate_value(x: float | None) -> str:
    if x is None:
        return "-"
    return fmt(int(x)) if float(x).is_integer() else f"{x:.4g}"


def _gate_view(gate: GateResult | None) -> dict[str, Any] | None:
    if gate is None:
        return None
    return {
        "passed": gate.passed,
        "source": gate.source,
        "counts": {v: gate.count(v) for v in VERDICTS},
        "tally": gate.tally,
        "rows": [
            {
                "metric": r.check.metric,
                "threshold": r.check.threshold_text,
                "value": _gate_value(r.value),
                "verdict": r.verdict,
                "allowed": r.verdict != "pass" and r.passed,
                "message": r.message,
                "warnings": r.warnings,
            }
            for r in gate.results
        ],
    }


def run_view(run: Run, gate: GateResult | None, prefix: str = "") -> dict[str, Any]:
    s = run.summary
    return {
        "prefix": prefix,
        "name": run.name,
        "path": str(run.path),
        "kind": s["run"]["kind"],
        "missing": s.get("missing") or {},
        "warnings": s.get("warnings") or [],
        "gate": _gate_view(gate),
        "data": _data_view(run),
        "train": _train_view(run),
        "task": task_view(run),
        "pref": preference_view(run),
        "forgetting": forgetting_view(run, gate),
        "ab": ab_view(run),
        "manifests": _manifests_view(run),
        "files": s.get("files") or {},
    }
