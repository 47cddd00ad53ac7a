"""`wb validate` and `wb stats`: check every record of a file, or describe a file's records, and print the result."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from workbench import console
from workbench.commands.clean import print_preference
from workbench.commands.options import DuplicateKeysOpt, MapOpt, SplitOpt, VerboseOpt
from workbench.console import line, pct
from workbench.errors import WbError

QUANTILES = ("min", "p50", "p90", "p99", "max", "mean")


@console.user_errors
def validate(
    files: Annotated[list[Path], typer.Argument(help="Data files to check against the record schema.")],
    map_: MapOpt = None,
    max_errors: Annotated[int, typer.Option(help="Print at most this many errors per file.")] = 20,
    duplicate_keys: DuplicateKeysOpt = "reject",
    split: SplitOpt = None,
) -> None:
    """Check every record of each FILE without cleaning it: exit 0 if all are valid, 2 otherwise."""
    from workbench.io.options import parse_duplicate_keys, parse_overrides
    from workbench.stats import validate as run_validate

    overrides = parse_overrides(map_ or [])
    dup_keys = parse_duplicate_keys(duplicate_keys)
    failed = False
    for file in files:
        try:
            result = run_validate(file, overrides, keep=max_errors, duplicate_keys=dup_keys, split=split)
        except WbError as e:  # a missing or unreadable file fails it; the other files are still checked
            console.note(f"error: {e}")
            failed = True
            continue
        bad = sum(result.rejected_by_kind.values())
        for r in result.rejects:
            message = r.error.removeprefix(r.field + ": ")
            console.note(f"{file}:{r.unit} {r.line}: {r.field or 'record'}: {message}")
        if bad > len(result.rejects):
            console.note(f"... and {bad - len(result.rejects)} more")
        if result.ok:
            line(f"{file}: {result.records} records valid ({result.source.format})")
        else:
            console.note(f"{file}: {bad} of {result.records} records invalid")
            failed = True
    if failed:
        raise typer.Exit(2)


@console.user_errors
def stats(
    file: Annotated[Path, typer.Argument(help="Data file to describe.")],
    map_: MapOpt = None,
    top: Annotated[int, typer.Option(help="How many duplicate prompts to list.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the statistics as JSON.")] = False,
    split: SplitOpt = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            "--tokenizer", help="Also lengths in this model's tokens, after its chat template (a model spec)."
        ),
    ] = None,
    template: Annotated[str, typer.Option("--template", help="Template for --tokenizer, as the recipe's.")] = "auto",
    max_length: Annotated[
        list[int] | None, typer.Option("--max-length", help="max_length values to report the share over (repeatable).")
    ] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Also write the statistics as an HTML page.")] = None,
    scores: Annotated[
        Path | None,
        typer.Option("--scores", help="A wb score stats file (<scored>.stats.json) to show with the statistics."),
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Length distributions (characters and tokens per field and script), field usage, duplicate prompts; for
    preference data the lengths of the prompt and each answer, and the length bias of the pairs."""
    from workbench.io.jsontext import dumps_json
    from workbench.io.options import parse_overrides
    from workbench.stats import describe_file

    d = describe_file(
        file, parse_overrides(map_ or []), mapped=bool(map_), top=top, split=split, tokenizer=tokenizer,
        template=template, max_lengths=max_length, scores=scores, html=html,
    )  # fmt: skip
    if as_json:
        sys.stdout.write(dumps_json(d).decode())
    elif "preference_kind" in d:
        _print_preferences(file, d, verbose)
    else:
        _print_records(file, d, html)


def _lengths(d: dict[str, Any], skip_turns: bool = False) -> None:
    table = console.table("lengths", "field", *((c, "right") for c in QUANTILES))
    for name, q in d["lengths"].items():
        if not (skip_turns and name.endswith(".turns")):
            table.add_row(name, *(str(q[c]) if q[c] is not None else "-" for c in QUANTILES))
    console.show(table)


def _print_records(file: Path, d: dict[str, Any], html: Path | None) -> None:
    n = d["records"]
    line(f"{file}: {n:,} records ({d['format']}), {d['rejected']:,} malformed")
    line("mapping " + ", ".join(f"{k}←{v}" for k, v in d["mapping"].items()))
    for note in d["mapping_notes"]:
        line(f"note: {note}")
    usage = d["field_usage"]
    line(
        f"non-empty input {pct(usage['input'], n)}, system {pct(usage['system'], n)}, "
        + f"history {pct(usage['history'], n)}"
    )
    _lengths(d, skip_turns=not usage["history"])
    scripts = ", ".join(f"{k} {pct(v, n)}" for k, v in d["output_script"].items())
    by_script = d["output_tokens_by_script"]
    line(f"output script: {scripts}; output tokens: {by_script['cjk']:,} CJK, {by_script['other']:,} other")
    dups = d["duplicate_prompts"]
    line(f"duplicate prompts: {dups['groups']:,} groups, {dups['records_in_groups']:,} records")
    if "token_lengths" in d:
        _print_token_lengths(d["token_lengths"])
    if html is not None:
        line(f"wrote {html}")
    if dups["top"]:
        t = console.table(None, ("count", "right"), "prompt")
        for row in dups["top"]:
            prompt = row["prompt"].replace("\n", " ")
            t.add_row(str(row["count"]), Text(prompt[:100] + ("…" if len(prompt) > 100 else "")))
        console.show(t)


def _print_token_lengths(t: dict[str, Any]) -> None:
    if not t["records"]:
        line("no valid records to measure in tokens")
        return
    title = f"length in {t['tokenizer']} tokens, after the {t['rendered_with']} template"
    table = console.table(title, *((c, "right") for c in QUANTILES))
    table.add_row(*(str(t[c]) for c in QUANTILES))
    console.show(table)
    over = console.table(None, ("max_length", "right"), ("records longer", "right"))
    for m, share in t["over"].items():
        over.add_row(m, f"{100 * share:.2f}%")
    console.show(over)
    line(f"99% of the records fit in {t['covering_99']} tokens: suggested max_length {t['suggested_max_length']}")


def _print_preferences(file: Path, d: dict[str, Any], verbose: bool) -> None:
    n = d["records"]
    kind = "pairs" if d["preference_kind"] == "pair" else "KTO examples"
    line(
        f"{file}: {n:,} preference {kind} ({d['format']}; "
        + ", ".join(f"{k} {v:,}" for k, v in d["shapes"].items())
        + f"), {d['rejected']:,} malformed, {d['tied_scores']:,} with tied scores"
    )
    line(f"system prompt {pct(d['with_system'], n)}, earlier turns {pct(d['with_history'], n)}")
    _lengths(d)
    print_preference({"kind": d["preference_kind"], "rules_not_applicable": [], **d}, pairs="pairs")
    groups = d["prompts_with_several_records"]
    line(f"prompts with several records: {groups['groups']:,} ({groups['records_in_groups']:,} records)")
    console.warnings(d["warnings"], verbose)
