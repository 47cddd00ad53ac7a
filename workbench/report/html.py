"""`wb report`: one self-contained HTML page per run (or pair of runs), plus Markdown and JSON summaries.

The page opens offline: inline CSS, inline SVG charts, no script at all, and a Content-Security-Policy that
forbids loading anything (so even a mistake could not fetch or run something). Every piece of data goes through
jinja2's autoescaping; charts are numbers computed here and drawn by the template. Long lists are capped and
say how much was left out, so a run with 10,000 eval items gives a page of the same size as one with 100.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import orjson
import yaml

from workbench import __version__, runfile
from workbench.evaluate import compare as stats
from workbench.evaluate import registry
from workbench.io import OutputSet, dumps_json
from workbench.report import markdown
from workbench.report.gate import VERDICTS, GateResult, run_gate
from workbench.report.summary import (
    Run,
    dropped_examples,
    higher_is_better,
    load_run,
    scored_items,
    stats_of,
    task_items,
    worst,
)
from workbench.text import diff_tokens

TEMPLATES = Path(__file__).resolve().parent / "templates"

# Caps: what the page shows at most (the JSON summary and the run folder keep everything).
MAX_REGRESSIONS = 15
MAX_IMPROVEMENTS = 5
MAX_DROP_EXAMPLES_PER_RULE = 3
MAX_DROP_EXAMPLES = 30
MAX_TEXT = 1200  # characters of one field in a table cell
MAX_CURVE_POINTS = 600
MAX_MANIFEST_CHARS = 20_000
MAX_COMPARISON_ROWS = 200


# -- small helpers ---------------------------------------------------------------------------------------------------


def cap(text: Any, limit: int = MAX_TEXT) -> str:
    s = "" if text is None else str(text)
    if len(s) <= limit:
        return s
    return f"{s[:limit]}… ({len(s) - limit:,} more characters)"


def fmt(x: Any, digits: int = 3) -> str:
    """A number for a table: integers with thousands separators, floats with `digits` decimals, '-' for None."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x != 0 and abs(x) < 10 ** (-digits):
            return f"{x:.{digits - 1}e}"
        return f"{x:,.{digits}f}"
    return str(x)


def signed(x: Any, digits: int = 3) -> str:
    if not isinstance(x, int | float) or isinstance(x, bool):
        return "-"
    return ("+" if x > 0 else "") + fmt(x, digits)


def pct(part: Any, whole: Any) -> str:
    if not isinstance(part, int | float) or not isinstance(whole, int | float) or not whole:
        return "-"
    return f"{100 * part / whole:.1f}%"


def word_diff(reference: str, prediction: str) -> list[tuple[str, str]]:
    """The prediction as (class, text) segments: `same` where it matches the reference, `diff` where it does not."""
    ref, pred = diff_tokens(reference), diff_tokens(prediction)
    segments: list[tuple[str, str]] = []
    matcher = difflib.SequenceMatcher(None, ref, pred, autojunk=False)
    for op, _i1, _i2, j1, j2 in matcher.get_opcodes():
        if j1 == j2:
            continue
        cls = "same" if op == "equal" else "diff"
        text = "".join(pred[j1:j2])
        if segments and segments[-1][0] == cls:
            segments[-1] = (cls, segments[-1][1] + text)
        else:
            segments.append((cls, text))
    return segments


# -- charts: numbers only; the template draws them ---------------------------------------------------------------------


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _thin(points: list[tuple[float, float]], limit: int = MAX_CURVE_POINTS) -> list[tuple[float, float]]:
    if len(points) <= limit:
        return points
    stride = math.ceil(len(points) / limit)
    out = points[::stride]
    return out if out[-1] == points[-1] else [*out, points[-1]]


def line_chart(series: list[dict[str, Any]], width: int = 680, height: int = 260) -> dict[str, Any] | None:
    """`series`: [{label, cls, points: [(x, y)]}] → coordinates for polylines, axes and ticks."""
    series = [s for s in series if s["points"]]
    if not series:
        return None
    left, right, top, bottom = 56, 16, 16, 36
    xs = [x for s in series for x, _ in s["points"]]
    ys = [y for s in series for _, y in s["points"]]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.05 or abs(y1) * 0.05 or 1.0
    y0, y1 = y0 - pad, y1 + pad
    x1 = x1 if x1 > x0 else x0 + 1
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return round(left + pw * (x - x0) / (x1 - x0), 1)

    def py(y: float) -> float:
        return round(top + ph * (1 - (y - y0) / (y1 - y0)), 1)

    out_series = []
    for s in series:
        pts = _thin(s["points"])
        out_series.append(
            {
                "label": s["label"],
                "cls": s["cls"],
                "points": " ".join(f"{px(x)},{py(y)}" for x, y in pts),
                "dots": [(px(x), py(y), x, y) for x, y in pts] if len(pts) <= 60 else [],
                "last": pts[-1][1],
            }
        )
    return {
        "width": width,
        "height": height,
        "left": left,
        "top": top,
        "right": width - right,
        "bottom": height - bottom,
        "series": out_series,
        "yticks": [(py(t), fmt(t, 3)) for t in _nice_ticks(y0, y1) if y0 <= t <= y1],
        "xticks": [(px(t), fmt(int(t)) if float(t).is_integer() else fmt(t, 1)) for t in _nice_ticks(x0, x1)],
    }


def bar_chart(bars: list[tuple[str, int]], width: int = 680, height: int = 200) -> dict[str, Any] | None:
    if not bars:
        return None
    left, bottom, top = 40, 40, 14
    top_value = max(v for _, v in bars) or 1
    slot = (width - left - 8) / len(bars)
    ph = height - top - bottom
    out = []
    for i, (label, value) in enumerate(bars):
        h = round(ph * value / top_value, 1)
        out.append(
            {
                "x": round(left + i * slot + slot * 0.1, 1),
                "w": round(slot * 0.8, 1),
                "y": round(top + ph - h, 1),
                "h": h,
                "cx": round(left + i * slot + slot / 2, 1),
                "label": label,
                "value": value,
            }
        )
    return {"width": width, "height": height, "bars": out, "base": height - bottom, "left": left, "max": top_value}


def interval_bar(stat: dict[str, Any], lo_key: str, hi_key: str, mid_key: str, scale: float) -> dict[str, Any] | None:
    """A little forest-plot row: the interval [lo, hi] and the point, around a zero line, on ±scale."""
    lo, hi, mid = stat.get(lo_key), stat.get(hi_key), stat.get(mid_key)
    if not (_is_num(lo) and _is_num(hi) and _is_num(mid)) or not scale:
        return None
    width, pad = 160, 6

    def px(v: float) -> float:
        v = max(-scale, min(scale, v))
        return round(pad + (width - 2 * pad) * (v + scale) / (2 * scale), 1)

    return {"width": width, "zero": px(0), "lo": px(lo), "hi": px(hi), "mid": px(mid), "scale": fmt(scale, 3)}


# -- views: what the template shows for one run ------------------------------------------------------------------------


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
        bars = [(f"{edges[i]:.3g}", int(c)) for i, c in enumerate(counts)] if len(edges) == len(counts) + 1 else []
        q = d.get("quantiles") or {}
        out.append(
            {
                "name": name,
                "scored": d.get("scored"),
                "missing": d.get("missing"),
                "quantiles": [q.get(k) for k in SCORE_QUANTILES],
                "hist": bar_chart(bars, height=140),
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
        "hist": bar_chart(bars),
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


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    s = float(seconds)
    if s < 90:
        return f"{s:.1f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _train_view(run: Run) -> dict[str, Any] | None:
    train = run.summary.get("train")
    if not train:
        return None
    loss = [(float(r["step"]), float(r["loss"])) for r in run.log if _is_num(r.get("loss")) and _is_num(r.get("step"))]
    ev = [(float(r["step"]), float(r["eval_loss"])) for r in run.log if _is_num(r.get("eval_loss"))]
    chart = line_chart(
        [{"label": "train loss", "cls": "s1", "points": loss}, {"label": "eval loss", "cls": "s2", "points": ev}]
    )
    metric_curves: dict[str, list[tuple[float, float]]] = {}
    for r in run.log:
        for key, value in r.items():
            name = key.removeprefix("eval_")
            wanted = key.startswith("eval_") and key != "eval_loss" and registry.get(name) is not None
            if wanted and _is_num(value) and _is_num(r.get("step")):
                metric_curves.setdefault(name, []).append((float(r["step"]), float(value)))
    metric_chart = line_chart(
        [
            {"label": f"eval {m}", "cls": f"s{k % 2 + 1}", "points": pts}
            for k, (m, pts) in enumerate(metric_curves.items())
        ]
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
        ("training time", _duration(train.get("train_runtime_seconds"))),
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


_PREF_LABELS = {field: name for name, field in runfile.PREFERENCE_LOG_FIELDS.items()}
MAX_PREF_ROWS = 20


def _preference_steps(log: list[dict[str, Any]]) -> dict[str, Any]:
    """Preference methods' per-step numbers: a chart (implicit rewards of chosen and rejected for the DPO family and
    KTO, the sampled answers' reward and KL for GRPO, the margin for a reward model) and a table of every number."""
    names = [n for n in runfile.PREFERENCE_LOG_FIELDS if any(_is_num(r.get(n)) for r in log)]
    if not names:
        return {"pref_chart": None, "pref_columns": [], "pref_rows": []}

    def series(name: str) -> list[tuple[float, float]]:
        return [(float(r["step"]), float(r[name])) for r in log if _is_num(r.get(name)) and _is_num(r.get("step"))]

    pairs = [("rewards/chosen", "rewards/rejected"), ("reward", "kl"), ("margin", "accuracy")]
    first, second = next(((a, b) for a, b in pairs if a in names), (names[0], ""))
    chart = line_chart(
        [{"label": first, "cls": "s1", "points": series(first)}]
        + ([{"label": second, "cls": "s2", "points": series(second)}] if second in names else [])
    )
    rows = [r for r in log if any(_is_num(r.get(n)) for n in names)]
    step = max(1, math.ceil(len(rows) / MAX_PREF_ROWS))
    shown = rows[::step] + ([rows[-1]] if rows and (len(rows) - 1) % step else [])
    return {
        "pref_chart": chart,
        "pref_columns": names,
        "pref_rows": [
            [fmt(r.get("step"))] + [fmt(r.get(n)) if _is_num(r.get(n)) else "-" for n in names] for r in shown
        ],
    }


def _preference_view(run: Run) -> dict[str, Any] | None:
    """The Preference section: accuracies on held-out pairs (with intervals) and the reward-model win rate."""
    pref = run.summary.get("pref")
    if not pref:
        return None
    rows = []
    labels = {
        "implicit_accuracy": "share of pairs whose chosen gains more log-probability over the reference than rejected",
        "implicit_margin": "mean of that log-ratio difference (nats)",
        "reward_accuracy": "share of pairs the reward model scores chosen above rejected",
        "reward_margin": "mean reward(chosen) - reward(rejected)",
        "reward_score": "reward of the tuned model's task answers (base: the base model's answers to the same prompts)",
    }
    for key, what in labels.items():
        stat = pref.get(key)
        if not stat:
            continue
        rows.append(
            {
                "metric": f"pref.{key}",
                "description": what,
                "tuned": fmt(stat.get("tuned")),
                "interval": _interval(stat.get("lower"), stat.get("upper")),
                "base": fmt(stat.get("base")) if stat.get("base") is not None else "",
                "delta_interval": _interval(stat.get("delta_lower"), stat.get("delta_upper"), signed_=True)
                if stat.get("delta_lower") is not None
                else "",
                "wtl": f"{fmt(stat.get('wins'))} / {fmt(stat.get('ties'))} / {fmt(stat.get('losses'))}"
                if stat.get("wins") is not None
                else "",
                "chance": key.endswith("accuracy") and _is_num(stat.get("lower")) and stat["lower"] <= 0.5,
            }
        )
    settings = pref.get("settings") or {}
    return {
        "n": pref.get("n"),
        "source": pref.get("source") or "",
        "rows": rows,
        "win_rate": fmt(pref.get("win_rate")) if pref.get("win_rate") is not None else None,
        "settings": [(k, _plain(v)) for k, v in settings.items() if v is not None],
    }


def _is_num(x: Any) -> TypeGuard[float]:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _stat_row(metric: str, stat: dict[str, Any], scale: float | None) -> dict[str, Any]:
    better = higher_is_better(metric)
    dl, du = stat.get("delta_lower"), stat.get("delta_upper")
    verdict = stats.change(stat, better)
    cls = {"better": "good", "worse": "bad"}.get(verdict, "neutral")
    row_scale = scale if scale and better else _row_scale(stat)
    return {
        "metric": metric,
        "description": (m.description if (m := registry.get(metric)) else ""),
        "direction": "higher is better" if better else "lower is better",
        "tuned": fmt(stat.get("tuned")),
        "interval": _interval(stat.get("lower"), stat.get("upper")),
        "base": fmt(stat.get("base")),
        "delta": signed(stat.get("delta")),
        "delta_interval": _interval(dl, du, signed_=True),
        "wtl": (
            f"{fmt(stat.get('wins'))} / {fmt(stat.get('ties'))} / {fmt(stat.get('losses'))}"
            if stat.get("wins") is not None
            else "-"
        ),
        "mcnemar_p": fmt(stat.get("mcnemar_p"), 3) if stat.get("mcnemar_p") is not None else "",
        "n": stat.get("n"),
        "verdict": verdict,
        "cls": cls,
        "bar": interval_bar(stat, "delta_lower", "delta_upper", "delta", row_scale) if _is_num(dl) else None,
    }


def _interval(lo: Any, hi: Any, signed_: bool = False) -> str:
    if not _is_num(lo) or not _is_num(hi):
        return "-"
    f = signed if signed_ else fmt
    return f"[{f(lo)}, {f(hi)}]"


def _row_scale(stat: dict[str, Any]) -> float:
    vals = [abs(v) for k in ("delta_lower", "delta_upper", "delta") if _is_num(v := stat.get(k))]
    return max(vals) * 1.1 if vals and max(vals) > 0 else 1.0


def _table_scale(stats: dict[str, dict[str, Any]]) -> float:
    vals = [
        abs(v)
        for m, s in stats.items()
        if higher_is_better(m)
        for k in ("delta_lower", "delta_upper")
        if _is_num(v := s.get(k))
    ]
    return max(max(vals) * 1.1, 0.05) if vals else 1.0


def primary_metric(section: dict[str, Any]) -> str | None:
    """The metric a set is judged by: the suite's `primary`, else the first item metric in registry order."""
    found = stats_of(section)
    chosen = (section.get("settings") or {}).get("primary")
    if chosen in found:
        return str(chosen)
    item_metrics = [m for m in found if (spec := registry.get(m)) is None or spec.scope == "item"]
    return next(iter(item_metrics), None)


def _unit(score: Any) -> Any:
    """A corpus score on sacrebleu's 0-100 scale, shown on 0-1 beside the sentence metrics (BLEU and chrF divided by
    100, as the registry scores them); metrics.json and the gate's `corpus` paths keep sacrebleu's scale."""
    return score / 100 if isinstance(score, int | float) and not isinstance(score, bool) else score


def _task_view(run: Run) -> dict[str, Any] | None:
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
        "generation": [(k, _plain(v)) for k, v in sorted(generation.items())],
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
        "diff_interval": _interval(j.get("win_minus_loss_lower"), j.get("win_minus_loss_upper"), signed_=True),
        "flip": fmt(flip),
        "flip_pct": fmt(flip * 100, 0) if _is_num(flip) else "-",
        "informative": bool(j.get("informative")),
        "unparsed": fmt(j.get("unparsed")),
        "replies": fmt(j.get("replies")),
        "tuned_longer": fmt(j.get("tuned_longer")),
        "win_longer": fmt(j.get("win_rate_tuned_longer")),
        "win_not_longer": fmt(j.get("win_rate_tuned_not_longer")),
        "kappa": fmt(j.get("kappa")) if j.get("kappa_n") else None,
        "kappa_n": fmt(j.get("kappa_n")),
        "agreement": fmt(j.get("review_agreement")),
        "model": _plain(settings.get("model", "")),
        "examples": examples,
    }


MAX_FLAGGED_IDS = 12


def _degenerate_view(run: Run, task: dict[str, Any]) -> list[dict[str, Any]]:
    from workbench.evaluate.degenerate import DEGENERATE_KINDS

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
                "description": DEGENERATE_KINDS.get(kind, ""),
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


def _plain(v: Any) -> str:
    if isinstance(v, dict | list):
        return cap(orjson.dumps(v).decode(), 300)
    return cap(fmt(v) if isinstance(v, int | float) else v, 300)


def _forgetting_view(run: Run, gate: GateResult | None) -> dict[str, Any] | None:
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
    return {
        "id": row.get("id"),
        "instruction": cap(" ".join(str(row.get(k) or "") for k in ("instruction", "input")).strip(), 600),
        "reference": ref,
        "base": word_diff(ref, base),
        "tuned": word_diff(ref, tuned),
        "base_score": fmt(b),
        "tuned_score": fmt(t),
        "delta": signed(t - b) if _is_num(t) and _is_num(b) else "-",
    }


def _ab_view(run: Run) -> dict[str, Any] | None:
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
        w, t, losses = stats.win_tie_loss(tuned, base, higher_is_better(metric))
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
        "review": run.summary.get("review"),
        "scores_file": str(run.files.get("scores") or ""),
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
        "task": _task_view(run),
        "pref": _preference_view(run),
        "forgetting": _forgetting_view(run, gate),
        "ab": _ab_view(run),
        "manifests": _manifests_view(run),
        "files": s.get("files") or {},
    }


# -- comparing two runs ------------------------------------------------------------------------------------------------


COMPARED_FIELDS = ("tuned", "delta")


def _comparable(summary: dict[str, Any]) -> dict[str, float]:
    """The numbers two runs are compared on, by gate path: each metric's tuned value and delta, and every clean,
    train and overlap number (intervals, counts of wins and the like are left to each run's own section)."""
    out = {}
    for path, value in runfile.summary_numbers(summary).items():
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
        if _is_num(v):
            out[str(row.get("id"))] = float(v)
    return out


def compare(a: Run, b: Run) -> list[dict[str, Any]]:
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
                _, lo, hi = stats.paired_bootstrap([ib[i] for i in common], [ia[i] for i in common], seed=0)
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


def _comparison_view(rows: list[dict[str, Any]], a: Run, b: Run) -> dict[str, Any]:
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
                "interval": _interval(lo, hi, signed_=True) if lo is not None else "",
                "cls": cls,
            }
        )
    loss_a = [(float(x["step"]), float(x["loss"])) for x in a.log if _is_num(x.get("loss")) and _is_num(x.get("step"))]
    loss_b = [(float(x["step"]), float(x["loss"])) for x in b.log if _is_num(x.get("loss")) and _is_num(x.get("step"))]
    chart = line_chart(
        [
            {"label": f"A: {a.name}", "cls": "s1", "points": loss_a},
            {"label": f"B: {b.name}", "cls": "s2", "points": loss_b},
        ]
    )
    return {"rows": out, "chart": chart, "a": a.name, "b": b.name}


# -- writing -----------------------------------------------------------------------------------------------------------


def _env() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,  # every value is escaped unless marked safe; nothing here is marked safe
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = fmt
    env.filters["signed"] = signed
    return env


def render_html(views: list[dict[str, Any]], comparison: dict[str, Any] | None, title: str) -> str:
    return str(
        _env()
        .get_template("report.html.j2")
        .render(runs=views, comparison=comparison, title=title, version=__version__)
    )


@dataclass
class ReportFiles:
    html: Path
    markdown: Path
    json: Path
    gates: list[GateResult | None]

    @property
    def gate_failed(self) -> bool:
        return any(g is not None and not g.passed for g in self.gates)


def default_output(runs: list[Run], directory: Path = Path("reports")) -> Path:
    name = runs[0].name if len(runs) == 1 else f"{runs[0].name}-vs-{runs[1].name}"
    safe = re.sub(r"[^\w.-]+", "_", name).strip("._") or "report"
    return directory / f"{safe}.html"


def build_report(
    paths: list[Path],
    output: Path | None = None,
    gate_file: Path | None = None,
    clean_stats: Path | None = None,
) -> ReportFiles:
    """Load one or two runs, check them against `gate_file` if given, and write the HTML, Markdown and JSON."""
    from workbench.errors import WbError

    if not 1 <= len(paths) <= 2:
        raise WbError(f"wb report takes one run folder, or two to compare; got {len(paths)}")
    runs = [load_run(p, clean_stats) for p in paths]
    gates = [run_gate(r.summary, gate_file) if gate_file is not None else None for r in runs]
    output = Path(output) if output is not None else default_output(runs)
    if output.suffix.lower() != ".html":
        output = output.with_name(output.name + ".html")
    prefixes = [""] if len(runs) == 1 else ["a-", "b-"]
    views = [run_view(r, g, p) for r, g, p in zip(runs, gates, prefixes, strict=True)]
    rows = compare(runs[0], runs[1]) if len(runs) == 2 else None
    comparison = _comparison_view(rows, runs[0], runs[1]) if rows is not None else None
    title = runs[0].name if len(runs) == 1 else f"{runs[0].name} vs {runs[1].name}"
    html = render_html(views, comparison, title)
    md = markdown.render(runs, gates, rows)
    doc = {
        "wb_version": __version__,
        "runs": [{"summary": r.summary, "gate": g.to_json() if g else None} for r, g in zip(runs, gates, strict=True)],
        "comparison": rows,
    }
    md_path, json_path = output.with_suffix(".md"), output.with_suffix(".json")
    with OutputSet([output, md_path, json_path]) as outputs:  # the three pages staged and published together
        outputs.write(output, html.encode("utf-8"))
        outputs.write(md_path, md.encode("utf-8"))
        outputs.write(json_path, dumps_json(doc))
        outputs.publish()
    return ReportFiles(output, md_path, json_path, gates)
