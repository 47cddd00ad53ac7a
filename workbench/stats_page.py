"""`wb stats --html`: the statistics as one self-contained page (inline CSS and SVG, no script, nothing fetched);
`wb score --html`: the score distributions the same way. Charts are drawn by `workbench.charts`."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from workbench import charts
from workbench.output import atomic_write

FONTS = (
    'system-ui, -apple-system, "Segoe UI", "Noto Sans", "PingFang SC", "Hiragino Sans GB", "Microsoft YaHei", '
    '"Noto Sans CJK SC", "Source Han Sans SC", sans-serif'
)
CSS = (
    f"body {{ font: 14px/1.5 {FONTS}; margin: 24px; color: #222; }} table {{ border-collapse: collapse; "
    "margin: 8px 0 16px; }} th, td { border: 1px solid #ddd; padding: 3px 8px; } td.num { text-align: right; "
    "font-variant-numeric: tabular-nums; } th { background: #f4f4f4; } p.warn { color: #8a4b00; }"
)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{escape(str(c))}</td>' if isinstance(c, int | float) else f"<td>{escape(str(c))}</td>"
            for c in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def token_section(t: dict[str, Any]) -> str:
    if not t.get("records"):
        return "<h2>Length in model tokens</h2><p>No valid records.</p>"
    stats = _table(
        ["min", "p50", "p90", "p99", "max", "mean"], [[t["min"], t["p50"], t["p90"], t["p99"], t["max"], t["mean"]]]
    )
    over = _table(["max_length", "records longer"], [[m, f"{100 * s:.2f}%"] for m, s in t["over"].items()])
    return (
        f"<h2>Length in model tokens</h2><p>Tokenizer {escape(str(t['tokenizer']))}, template "
        f"{escape(str(t['template']))} ({escape(str(t['rendered_with']))}), after the chat template.</p>{stats}{over}"
        f"<p>99 % of the records fit in {t['covering_99']} tokens: suggested <code>max_length: "
        f"{t['suggested_max_length']}</code>.</p>{cdf_chart(t)}"
    )


def preference_parts(d: dict[str, Any]) -> list[str]:
    """The body of the page for preference data: shapes, lengths per part, length bias or label balance."""
    kind = "pairs" if d["preference_kind"] == "pair" else "KTO examples"
    lengths = [
        [name, *(q.get(c, "-") for c in ("min", "p50", "p90", "p99", "max", "mean"))]
        for name, q in d["lengths"].items()
    ]
    parts = [
        f"<h1>{escape(str(d['path']))}</h1>",
        f"<p>{d['records']:,} preference {kind} ({escape(str(d['format']))}), {d['rejected']:,} malformed, "
        f"{d['tied_scores']:,} scored records with tied scores; {d['with_system']:,} with a system prompt, "
        f"{d['with_history']:,} with earlier turns.</p>",
        "<h2>Input shapes</h2>",
        _table(["shape", "records"], [[k, v] for k, v in d["shapes"].items()]),
        "<h2>Lengths (characters; tokens count a CJK character or a word as one; UTF-8 bytes)</h2>",
        _table(["field", "min", "p50", "p90", "p99", "max", "mean"], lengths),
    ]
    bias = d.get("length_bias")
    if bias is not None:
        share = bias["chosen_longer_share"]
        verdict = (
            f'<p class="warn"><strong>Warning:</strong> {escape(d["warnings"][0])}</p>'
            if bias["biased"] and d["warnings"]
            else f"<p>Within the threshold ({100 * bias['max_share']:.0f}% either way).</p>"
        )
        parts += [
            "<h2>Length bias (UTF-8 bytes)</h2>",
            _table(
                ["pairs", "chosen longer", "rejected longer", "equal", "chosen longer share", "mean length ratio"],
                [
                    [
                        bias["pairs"],
                        bias["chosen_longer"],
                        bias["rejected_longer"],
                        bias["equal"],
                        "-" if share is None else f"{100 * share:.1f}%",
                        "-" if bias["mean_length_ratio"] is None else f"{bias['mean_length_ratio']:.3f}",
                    ]
                ],
            ),
            verdict,
        ]
    if "labels" in d:
        parts += [
            "<h2>Labels</h2>",
            _table(["desirable", "undesirable"], [[d["labels"]["desirable"], d["labels"]["undesirable"]]]),
        ]
    groups = d["prompts_with_several_records"]
    parts += [
        "<h2>Prompts with several records</h2>"
        f"<p>{groups['groups']:,} prompts, {groups['records_in_groups']:,} records</p>",
        _table(["count", "prompt"], [[r["count"], r["prompt"][:200]] for r in groups["top"]]) if groups["top"] else "",
    ]
    return parts


def cdf_chart(t: dict[str, Any]) -> str:
    """The cumulative share of records by length in tokens (`token_lengths.summarize`'s points), the suggested
    max_length marked; empty without points."""
    points = [(float(x), float(y)) for x, y in t.get("cdf") or []]
    if not points:
        return ""
    suggested = t.get("suggested_max_length")
    marks = [(float(suggested), str(suggested))] if suggested is not None and suggested <= points[-1][0] else []
    chart = charts.line_chart(
        [charts.Series("records", points)],
        "cumulative share of records by length in tokens",
        x_label="tokens",
        width=360,
        height=180,
        x_from=0,
        y_range=(0.0, 1.0),
        y_text=lambda v: f"{100 * v:.0f}%",
        marks=marks,
        legend=False,
    )
    return chart or ""


def scores_section(s: dict[str, Any]) -> str:
    """Model-based scores (`wb score`'s stats file): quantiles and a histogram per score."""
    cols = ["p1", "p10", "p25", "p50", "p75", "p90", "p99"]
    rows = []
    shown = []
    for name, d in s["scores"].items():
        q = d.get("quantiles", {})
        rows.append([name, d["scored"], d["missing"], *(q.get(c, "-") for c in cols), d.get("mean", "-")])
        hist = d.get("histogram")
        if hist:
            chart = charts.histogram(hist["edges"], hist["counts"], name, log_scale=bool(hist.get("log_scale")))
            shown.append(f"<h3>{escape(name)}</h3>{chart or ''}")
    above = s["scores"].get("ifd", {}).get("at_or_above_1")
    note = f"<p>{above:,} records have IFD ≥ 1: the prompt does not help predict the answer.</p>" if above else ""
    return (
        f"<h2>Model-based scores</h2><p>Model {escape(str(s['model']))}"
        + (f", reward model {escape(str(s['reward_model']))}" if s.get("reward_model") else "")
        + f"; {s['scored']:,} of {s['records']:,} records scored.</p>"
        + _table(["score", "scored", "missing", *cols, "mean"], rows)
        + note
        + "".join(shown)
    )


def render_scores(s: dict[str, Any]) -> str:
    """`wb score --html`: the score distributions as one page."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>wb score {escape(Path(str(s['input']['path'])).name)}</title><style>{CSS}</style></head><body>"
        f"<h1>{escape(str(s['input']['path']))}</h1>" + scores_section(s) + "</body></html>\n"
    )


def render(d: dict[str, Any]) -> str:
    if d.get("kind") == "preference":
        return _page(d, preference_parts(d))
    lengths = [
        [name, *(q.get(c, "-") for c in ("min", "p50", "p90", "p99", "max", "mean"))]
        for name, q in d["lengths"].items()
    ]
    dups = d["duplicate_prompts"]
    parts = [
        f"<h1>{escape(str(d['path']))}</h1>",
        f"<p>{d['records']:,} records ({escape(str(d['format']))}), {d['rejected']:,} malformed; mapping "
        + escape(", ".join(f"{k}←{v}" for k, v in d["mapping"].items()))
        + "</p>",
        "<h2>Lengths (characters; tokens count a CJK character or a word as one)</h2>",
        _table(["field", "min", "p50", "p90", "p99", "max", "mean"], lengths),
        "<h2>Output script</h2>",
        _table(["script", "records"], [[k, v] for k, v in d["output_script"].items()]),
        f"<h2>Duplicate prompts</h2><p>{dups['groups']:,} groups, {dups['records_in_groups']:,} records</p>",
        _table(["count", "prompt"], [[r["count"], r["prompt"][:200]] for r in dups["top"]]) if dups["top"] else "",
    ]
    if "token_lengths" in d:
        parts.append(token_section(d["token_lengths"]))
    if "model_scores" in d:
        parts.append(scores_section(d["model_scores"]))
    return _page(d, parts)


def _page(d: dict[str, Any], parts: list[str]) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>wb stats {escape(Path(str(d['path'])).name)}</title><style>{CSS}</style></head><body>"
        + "".join(parts)
        + "</body></html>\n"
    )


def write(path: Path, d: dict[str, Any]) -> None:
    with atomic_write(Path(path)) as f:
        f.write(render(d).encode("utf-8"))


def write_scores(path: Path, s: dict[str, Any]) -> None:
    with atomic_write(Path(path)) as f:
        f.write(render_scores(s).encode("utf-8"))
