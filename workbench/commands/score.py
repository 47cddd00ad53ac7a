"""`wb score`: model-based quality scores per record, and a table of their distributions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workbench import console
from workbench.commands.options import DropExtraOpt, PrecisionOpt, QuietOpt
from workbench.console import fmt, line


@console.user_errors
def score(
    input: Annotated[Path, typer.Argument(help="Records to score (output of wb clean): JSONL, JSON, Parquet, CSV.")],
    model: Annotated[str, typer.Option("--model", help="Causal LM: embedded, a model folder or a run folder.")] = (
        "embedded"
    ),
    reward_model: Annotated[
        str | None,
        typer.Option("--reward-model", help="Also a reward model's score: a reward run, adapter or model folder."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Scored JSONL (default: ./<name>.scored.jsonl).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Sequences per forward pass.")] = 8,
    max_length: Annotated[int, typer.Option("--max-length", min=16, help="Tokens per sequence (longer: cut).")] = 1024,
    precision: PrecisionOpt = "auto",
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Score everything again.")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Also write the score distributions as a page.")] = None,
    quiet: QuietOpt = False,
    drop_extra_fields: DropExtraOpt = False,
) -> None:
    """Model-based quality scores per record: answer perplexity with and without the prompt, IFD, prompt perplexity,
    a reward model's score; clean rules (ifd_max, ppl_answer_max, reward_min, keep_top_fraction) read them."""
    from workbench.score.pipeline import score_file

    with console.count_progress(quiet) as progress:
        result = score_file(
            input, output, model, reward_model, batch_size, max_length, precision, not no_cache, progress,
            console.say(quiet), extra_fields=not drop_extra_fields,
        )  # fmt: skip
    s = result.stats
    if html is not None:
        from workbench import stats_page

        stats_page.write_scores(html, s)
    if not quiet:
        columns = ("score", "p10", "p50", "p90", "mean", "missing")
        title = f"wb score ({s['scored']:,} of {s['records']:,} records)"
        table = console.table(title, *((c, "left" if c == "score" else "right") for c in columns))
        for name, d in s["scores"].items():
            q = d.get("quantiles", {})
            table.add_row(name, *(fmt(q.get(c)) for c in ("p10", "p50", "p90")), fmt(d.get("mean")), str(d["missing"]))
        console.show(table)
        if s["scores"].get("ifd", {}).get("at_or_above_1"):
            line(f"{s['scores']['ifd']['at_or_above_1']:,} record(s) with IFD >= 1 (prompt does not help)")
    line(
        f"wrote {result.paths.scored} (+ .stats.json, .manifest.json); cache {result.cache_hits:,} hits, "
        f"{result.cache_misses:,} computed"
    )
