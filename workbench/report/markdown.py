"""The Markdown summary of a report: short enough for a CI job summary or a pull-request comment.

Values from files (set names, messages, paths) are escaped: Markdown renderers pass inline HTML through, and a `|`
would break a table.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from workbench import metric_specs
from workbench.evaluate.compare import change
from workbench.report.summary import higher_is_better, stats_of

if TYPE_CHECKING:
    from workbench.report.gate import GateResult
    from workbench.report.summary import Run

_SPECIAL = re.compile(r"([\\`*_\[\]<>|#!~])")


def esc(value: Any) -> str:
    text = " ".join(str(value).split()) if value is not None else ""
    return _SPECIAL.sub(lambda m: {"<": "&lt;", ">": "&gt;"}.get(m[1], "\\" + m[1]), text.replace("&", "&amp;"))


def _f(x: Any, digits: int = 3) -> str:
    if isinstance(x, bool) or x is None:
        return "-"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return esc(x)


def _s(x: Any) -> str:
    return ("+" if isinstance(x, int | float) and x > 0 else "") + _f(x)


def _ci(lo: Any, hi: Any, signed: bool = False) -> str:
    if not isinstance(lo, int | float) or not isinstance(hi, int | float):
        return ""
    f = _s if signed else _f
    return f" [{f(lo)}, {f(hi)}]"


def _verdict(metric: str, st: dict[str, Any]) -> str:
    word = change(st, higher_is_better(metric))
    return {"": "-", "worse": "**worse**"}.get(word, word)


def _pct(x: Any) -> str:
    return f"{100 * x:.0f}%" if isinstance(x, int | float) else "-"


def _value(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{int(x):,}" if float(x).is_integer() else f"{x:.4g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def gate_lines(gate: GateResult) -> list[str]:
    mark = "✅ passed" if gate.passed else "❌ failed"
    head = f"**Gate: {mark}**: {esc(gate.tally)} ({esc(gate.source)})"
    icon = {"pass": "✅ pass", "fail": "❌ fail", "missing": "❌ missing", "inconclusive": "❔ inconclusive"}
    rows = [
        [
            esc(r.check.metric),
            _value(r.value),
            esc(r.check.threshold_text),
            icon[r.verdict] + (" (allowed)" if r.verdict == "inconclusive" and r.passed else ""),
            esc(r.message),
        ]
        for r in gate.results
    ]
    lines = [head, "", *_table(["check", "value", "threshold", "verdict", "detail"], rows)]
    if gate.warnings:
        lines += ["", *(f"> ⚠️ {esc(w)}" for w in gate.warnings)]
    return lines


def run_lines(run: Run, gate: GateResult | None, level: str = "##") -> list[str]:
    s = run.summary
    lines = [f"{level} wb report: {esc(run.name)}", "", f"`{esc(s['run']['kind']) or '-'}` run in {esc(run.path)}", ""]
    if gate is not None:
        lines += [*gate_lines(gate), ""]
    task = s.get("task")
    if task:
        rows = []
        for m, st in stats_of(task).items():
            rows.append(
                [
                    esc(m),
                    _f(st.get("tuned")) + _ci(st.get("lower"), st.get("upper")),
                    _f(st.get("base")),
                    _s(st.get("delta")) + _ci(st.get("delta_lower"), st.get("delta_upper"), signed=True),
                    f"{_f(st.get('wins'))} / {_f(st.get('ties'))} / {_f(st.get('losses'))}"
                    if st.get("wins") is not None
                    else "-",
                ]
            )
        lines += [f"**Task** (n = {_f(task.get('n'))}, 95% bootstrap intervals)", ""]
        lines += [*_table(["metric", "tuned", "base", "Δ tuned − base", "wins / ties / losses"], rows), ""]
        shown = [
            f"{esc(kind)} {_pct(d.get('tuned'))}" + (f" / {_pct(d.get('base'))}" if d.get("base") is not None else "")
            for kind, d in (task.get("degenerate") or {}).items()
            if d.get("tuned_items") or d.get("base_items")
        ]
        if shown:
            lines += [f"Degenerate answers (tuned / base): {', '.join(shown)}", ""]
        j = task.get("judge")
        if j:
            lines += [
                f"Pairwise judge ({_f(j.get('n'))} items, both orders): win {_f(j.get('win_rate'))}, tie "
                f"{_f(j.get('tie_rate'))}, loss {_f(j.get('loss_rate'))}; win − loss {_s(j.get('win_minus_loss'))}"
                + _ci(j.get("win_minus_loss_lower"), j.get("win_minus_loss_upper"), signed=True)
                + f"; position flips {_f(j.get('position_flip_rate'))}"
                + ("" if j.get("informative") else " (the judge's verdicts depend on answer order: not informative)"),
                "",
            ]
        notes = [w.removeprefix("eval: task: ") for w in s.get("warnings") or [] if w.startswith("eval: task: ")]
        lines += [*(f"> Note: {esc(n)}" for n in notes), *([""] if notes else [])]
    forgetting = s.get("forgetting")
    if forgetting:
        rows = []
        for name, sec in forgetting.items():
            for m, st in list(stats_of(sec).items())[:1]:  # the headline metric; the page has the rest
                rows.append(
                    [
                        esc(name),
                        esc(m),
                        _f(sec.get("n")),
                        _f(st.get("base")),
                        _f(st.get("tuned")),
                        _s(st.get("delta")) + _ci(st.get("delta_lower"), st.get("delta_upper"), signed=True),
                        _verdict(m, st),
                    ]
                )
        lines += ["**Forgetting** (base vs tuned on general probes; the report page has every metric)", ""]
        lines += [*_table(["set", "metric", "n", "base", "tuned", "Δ", "verdict"], rows), ""]
    pref = s.get("pref")
    if pref:
        rows = [
            [f"pref.{esc(k)}", _f(st.get("tuned")) + _ci(st.get("lower"), st.get("upper"))]
            for k in (m.name for m in metric_specs.pref_metrics() if m.headline)
            if (st := pref.get(k))
        ]
        if pref.get("win_rate") is not None:
            rows.append(["pref.win_rate", _f(pref["win_rate"])])
        lines += [f"**Preference** ({_f(pref.get('n'))} held-out pairs)", ""]
        lines += [*_table(["metric", "value (95% interval)"], rows), ""]
    review = s.get("review")
    if review:
        verdicts = ", ".join(f"{esc(v)} {_f(n)}" for v, n in (review.get("verdicts") or {}).items())
        rate = review.get("tuned_preferred") or {}
        preferred = (
            f"; tuned preferred {_f(rate['value'])} [{_f(rate.get('lower'))}, {_f(rate.get('upper'))}]"
            if isinstance(rate, dict) and rate.get("value") is not None
            else ""
        )
        lines += [f"**Human review**: {_f(review.get('reviewed'))} items reviewed ({verdicts}){preferred}", ""]
    clean = s.get("clean")
    if clean:
        rules = sorted(((n, r) for r, n in (clean.get("dropped_by_rule") or {}).items() if n), reverse=True)[:5]
        top = ", ".join(f"{esc(r)} {n:,}" for n, r in rules)
        lines += [
            f"**Data**: read {_f(clean['read'])} → rejected {_f(clean['rejected'])} → dropped {_f(clean['dropped'])}"
            f" → kept {_f(clean['kept'])} (dropped {100 * (clean.get('dropped_fraction') or 0):.1f}%)"
            + (f"; top rules: {top}" if top else ""),
            "",
        ]
        bias = (clean.get("preference") or {}).get("length_bias") or {}
        if bias.get("pairs"):
            lines += [
                f"**Preference data**: chosen is the longer answer in {_f(bias['chosen_longer'])} of"
                f" {_f(bias['pairs'])} kept pairs"
                + (" (**length bias**: DPO can learn length instead of the preference)" if bias.get("biased") else ""),
                "",
            ]
    train = s.get("train")
    if train:
        bits = [
            f"{esc(train.get('method', '?'))} on {esc(train.get('model', '?'))}",
            f"{_f(train.get('global_step'))} steps",
            f"loss {_f(train.get('first_loss'))} → {_f(train.get('final_loss'))}",
        ]
        if train.get("best_eval_loss") is not None:
            bits.append(f"best eval loss {_f(train.get('best_eval_loss'))}")
        if train.get("train_runtime_seconds") is not None:
            bits.append(f"{_f(train['train_runtime_seconds'], 1)} s")
        if train.get("peak_rss_mb") is not None:
            bits.append(f"peak RSS {_f(train['peak_rss_mb'], 0)} MiB")
        final = train.get("final_preference") or {}
        bits += [f"last {esc(k)} {_f(v)}" for k, v in final.items() if k in ("rewards_accuracies", "accuracy", "kl")]
        lines += ["**Training**: " + ", ".join(bits), ""]
    if s.get("missing"):
        lines += ["**Not in this run:**", *(f"- {esc(k)}: {esc(v)}" for k, v in s["missing"].items()), ""]
    if s.get("warnings"):
        lines += ["**Warnings:**", *(f"- {esc(w)}" for w in s["warnings"][:20]), ""]
        if len(s["warnings"]) > 20:
            lines += [f"- … {len(s['warnings']) - 20} more in the JSON summary", ""]
    return lines


def render(runs: list[Run], gates: list[GateResult | None], comparison: list[dict[str, Any]] | None) -> str:
    if len(runs) == 1:
        return "\n".join(run_lines(runs[0], gates[0])).rstrip() + "\n"
    a, b = runs
    lines = [f"## wb report: {esc(a.name)} (A) vs {esc(b.name)} (B)", ""]
    for run, gate, tag in zip(runs, gates, "AB", strict=True):
        if gate is not None:
            lines += [f"{tag} ({esc(run.name)}): " + gate_lines(gate)[0], ""]
    rows = [
        [
            esc(r["metric"]),
            _f(r["a"]),
            _f(r["b"]),
            _s(r["diff"]) + (_ci(r["lower"], r["upper"], signed=True) if r.get("lower") is not None else ""),
        ]
        for r in comparison or []
    ]
    lines += [*_table(["metric", "A", "B", "B − A (paired 95% interval)"], rows), ""]
    for run, gate in zip(runs, gates, strict=True):
        lines += [
            "<details>",
            f"<summary>{esc(run.name)}</summary>",
            "",
            *run_lines(run, gate, "###"),
            "</details>",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"
