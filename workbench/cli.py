"""The `wb` command line: parses arguments, calls the library, prints. No logic lives here.

Exit codes: 0 success, 1 a check failed (gate), 2 bad input or usage (one line on stderr, no traceback).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from workbench import __version__
from workbench.errors import WbError
from workbench.evaluate.config import EvalConfig, GenerationSettings
from workbench.output import no_room
from workbench.precision import Precision

app = typer.Typer(
    name="wb",
    help="wb: clean, train, evaluate and gate fine-tuning data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])

MapOpt = Annotated[
    list[str] | None,
    typer.Option("--map", "-m", help="Map a field to a source column: --map output=response (repeatable)."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or tables; errors only.")]
SplitOpt = Annotated[
    str | None,
    typer.Option("--split", help="Split of a dataset folder (save_to_disk or hub snapshot): train, test, ..."),
]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Exit 2 if any record is rejected.")]
DuplicateKeysOpt = Annotated[
    str,
    typer.Option(
        "--duplicate-keys", help="An object naming a key twice: reject it (duplicate_key) or keep the last value."
    ),
]
PrecisionOpt = Annotated[
    Literal["auto", "bf16", "fp32"],
    typer.Option(
        "--precision",
        help="auto: bf16 autocast where the CPU has native bf16 units (AMX, AVX512-BF16), else fp32; or force one.",
    ),
]
KindOpt = Annotated[
    Literal["auto", "sft", "preference"],
    typer.Option(
        "--kind",
        help="auto: preference data (chosen/rejected, label/kto_tag, completions) is recognised by its first record; "
        "or say sft / preference (needed for stdin).",
    ),
]
EngineOpt = Annotated[
    Literal["local", "ray"],
    typer.Option("--engine", help="local (this process) or ray (Ray Data; needs the [ray] extra). docs/scale-out.md"),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option("--ray-address", help="Ray cluster to run on (ray://HOST:10001, auto); default: start a local one."),
]
DropExtraOpt = Annotated[
    bool,
    typer.Option(
        "--drop-extra-fields",
        help="Leave out each record's fields wb does not use (id, source, meta, ...); kept by default.",
    ),
]
AgainstOpt = Annotated[
    list[Path] | None,
    typer.Option("--against", "-a", help="Eval file whose passages must not occur in the training data (repeatable)."),
]


def user_errors(fn: F) -> F:
    """Turn a WbError, or a write that found no room, into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except WbError as e:
            err.print(f"error: {e}", markup=False)
            raise typer.Exit(2) from None
        except OSError as e:  # a write outside an output set that found no room (disk full, quota, ulimit -f)
            reason = no_room(e)
            if reason is None:
                raise
            where = f"{e.filename}: " if e.filename else ""
            err.print(f"error: {where}cannot write ({reason}); free some space and run again", markup=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as e:
            err.print("interrupted; no partial output was left behind", markup=False)
            raise typer.Exit(128 + getattr(e, "signum", 2)) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def progress_bar(
    description: str, total: int, quiet: bool
) -> Iterator[tuple[Callable[[int, int], None], Callable[[str], None]]]:
    """A rich progress bar over bytes with a record counter; silent when quiet or not on a terminal."""
    enabled = not quiet and err.is_terminal
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[records]:,} records"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not enabled,
    ) as progress:
        task = progress.add_task(description, total=total, records=0)

        def advance(nbytes: int, nrecords: int) -> None:
            records = progress.tasks[0].fields["records"] + nrecords
            progress.update(task, advance=nbytes, records=records)

        def phase(text: str) -> None:
            progress.update(task, description=f"{description}: {text}")

        yield advance, phase


def _version(value: bool) -> None:
    if value:
        out.print(f"wb {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """wb: clean, train, evaluate and gate fine-tuning data."""


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


@app.command()
@user_errors
def clean(
    input: Annotated[
        Path, typer.Argument(help="Raw data: JSONL, JSON, Parquet or CSV (optionally .gz/.zst); - for stdin.")
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Cleaned JSONL (default: ./<name>.clean.jsonl).")
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            "-p",
            help="Built-in profile (default, strict, zh, preference) or a YAML file (default: default, or "
            "preference for preference data).",
        ),
    ] = None,
    map_: MapOpt = None,
    against: AgainstOpt = None,
    strict: StrictOpt = False,
    duplicate_keys: DuplicateKeysOpt = "reject",
    precision: Annotated[
        Literal["auto", "bf16", "fp32"] | None,
        typer.Option("--precision", help="Semantic dedup embeddings: auto, bf16 or fp32 (default: the profile's)."),
    ] = None,
    quiet: QuietOpt = False,
    split: SplitOpt = None,
    kind: KindOpt = "auto",
    scores: Annotated[
        Path | None,
        typer.Option(
            "--scores",
            help="Scores for the profile's score rules: wb score output or a run's sample_losses.jsonl "
            "(default: the input's own `scores`).",
        ),
    ] = None,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    drop_extra_fields: DropExtraOpt = False,
) -> None:
    """Validate, normalise, filter, deduplicate and decontaminate instruction data; every drop is explained."""
    from workbench import clean as cleaning

    data_kind = cleaning.resolve_kind(input, kind, bool(map_))
    prof = cleaning.load(profile or cleaning.default_profile(data_kind)).with_semantic_precision(precision)
    _run_clean(
        "clean", input, output, prof, map_, against, strict, duplicate_keys, quiet, split, data_kind, scores,
        engine, ray_address, not drop_extra_fields,
    )  # fmt: skip


@app.command()
@user_errors
def dedup(
    input: Annotated[Path, typer.Argument(help="Cleaned data: JSONL, JSON, Parquet or CSV.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Deduplicated JSONL (default: ./<name>.dedup.jsonl).")
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            "-p",
            help="Profile whose dedup/decontaminate settings to use (default: default, or preference for "
            "preference data).",
        ),
    ] = None,
    map_: MapOpt = None,
    against: AgainstOpt = None,
    strict: StrictOpt = False,
    duplicate_keys: DuplicateKeysOpt = "reject",
    precision: Annotated[
        Literal["auto", "bf16", "fp32"] | None,
        typer.Option("--precision", help="Semantic dedup embeddings: auto, bf16 or fp32 (default: the profile's)."),
    ] = None,
    quiet: QuietOpt = False,
    split: SplitOpt = None,
    kind: KindOpt = "auto",
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    drop_extra_fields: DropExtraOpt = False,
) -> None:
    """Only the dedup stages (exact, near-duplicate, decontamination) on data that is already clean."""
    from workbench import clean as cleaning

    data_kind = cleaning.resolve_kind(input, kind, bool(map_))
    prof = cleaning.load(profile or cleaning.default_profile(data_kind)).dedup_only().with_semantic_precision(precision)
    _run_clean(
        "dedup", input, output, prof, map_, against, strict, duplicate_keys, quiet, split, data_kind, None,
        engine, ray_address, not drop_extra_fields,
    )  # fmt: skip


def _run_clean(
    command: str,
    input: Path,
    output: Path | None,
    prof: Any,
    map_: list[str] | None,
    against: list[Path] | None,
    strict: bool,
    duplicate_keys: str,
    quiet: bool,
    split: str | None = None,
    kind: Literal["sft", "preference"] = "sft",
    scores: Path | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    extra_fields: bool = True,
) -> None:
    from workbench import clean as cleaning
    from workbench.io import STDIN, parse_duplicate_keys, parse_overrides

    if ray_address is not None and engine != "ray":
        raise WbError("--ray-address needs --engine ray")
    run_clean: Callable[..., Any] = cleaning.run
    engine_args: dict[str, Any] = {}
    if engine == "ray":
        from workbench.clean import ray_engine

        run_clean, engine_args = ray_engine.run, {"address": ray_address}

    overrides = parse_overrides(map_ or [])
    stem = "stdin" if str(input) == STDIN else input.name.split(".")[0] or "data"
    target = output if output is not None else Path(f"{stem}.{command}.jsonl")
    total = input.stat().st_size if input.is_file() else 0
    with progress_bar(f"{command} {input.name}", total, quiet) as (advance, phase):
        result = run_clean(
            input,
            target,
            prof,
            overrides,
            on_batch=advance,
            on_phase=phase,
            against=against,
            command=command,
            duplicate_keys=parse_duplicate_keys(duplicate_keys),
            split=split,
            kind=kind,
            scores=scores,
            extra_fields=extra_fields,
            **engine_args,
        )
    s = result.summary
    if not quiet:
        out.print(
            f"{input}: "
            + (f"{s['input']['layout']} folder, split {s['input']['split']}, " if "split" in s["input"] else "")
            + f"{result.source.format}"
            + (f" ({result.source.compression})" if result.source.compression != "none" else "")
            + f", profile {prof.name}"
            + (
                f", preference data ({s['preference']['kind']}s)"
                if "preference" in s
                else ", mapping "
                + ", ".join(f"{k}←{v}" for k, v in result.mapping.items())
                + "".join(f" ({note})" for note in s["mapping_notes"])
            ),
            markup=False,
        )
        table = Table(title=f"wb {command}", title_justify="left")
        table.add_column("stage / rule")
        table.add_column("records", justify="right")
        table.add_column("share", justify="right")
        table.add_row("read", f"{s['read']:,}", "100%")
        table.add_row("rejected (malformed)", f"{s['rejected']:,}", _pct(s["rejected"], s["read"]))
        for rule, n in s["dropped_by_rule"].items():
            if n:
                table.add_row(f"dropped: {rule}", f"{n:,}", _pct(n, s["read"]))
        table.add_row("kept", f"{s['kept']:,}", _pct(s["kept"], s["read"]), style="bold")
        out.print(table)
        mod = s["modified"]
        out.print(
            f"modified: {mod['normalized']:,} normalised, {mod['placeholder_input']:,} placeholder inputs emptied, "
            f"{mod['pii_redacted']:,} with personal data redacted"
            + (
                f", {mod['bidi_controls_removed']:,} with bidi control characters removed"
                if mod.get("bidi_controls_removed")
                else ""
            )
            + (f", {mod['chinese_converted']:,} converted by OpenCC" if mod["chinese_converted"] else ""),
            markup=False,
        )
        _print_preference(s.get("preference"))
        if s["kept_tool_conversations"]:
            out.print(f"kept {s['kept_tool_conversations']:,} tool-calling conversation(s) whole", markup=False)
        for rule, n in s["reported_by_rule"].items():
            out.print(f"reported, not dropped: {n:,} record(s) by {rule} (listed in .stats.json)", markup=False)
        for path, leak in s.get("contamination", {}).items():
            out.print(
                f"{path}: {leak['leaked_items']} of {leak['items']} eval items found in the training data", markup=False
            )
        out.print(
            f"wrote {result.paths.kept} (+ .dropped.jsonl, .rejects.jsonl, .stats.json, .manifest.json)",
            markup=False,
        )
    out.print(
        f"read {s['read']:,} = kept {s['kept']:,} + dropped {s['dropped']:,} + rejected {s['rejected']:,}",
        markup=False,
    )
    for warning in s["warnings"]:
        err.print(f"warning: {warning}", markup=False)
    if strict and s["rejected"]:
        err.print(f"error: {s['rejected']} record(s) rejected (--strict); see {result.paths.rejects}", markup=False)
        raise typer.Exit(2)


def _print_preference(p: dict[str, Any] | None, pairs: str = "kept pairs") -> None:
    if p is None:
        return
    bias = p.get("length_bias")
    if bias and bias["pairs"]:
        out.print(
            f"length bias: chosen longer in {100 * bias['chosen_longer_share']:.0f}% of {bias['pairs']:,} {pairs}"
            + (f", {bias['equal']:,} of equal length" if bias["equal"] else "")
            + f", mean chosen/rejected length ratio {bias['mean_length_ratio']:.2f} (UTF-8 bytes)",
            markup=False,
        )
    if "labels" in p:
        out.print(f"labels: {p['labels']['desirable']:,} desirable, {p['labels']['undesirable']:,} undesirable")
    if p["rules_not_applicable"]:
        out.print(f"rules that do not apply to {p['kind']} data, skipped: {', '.join(p['rules_not_applicable'])}")


@app.command()
@user_errors
def validate(
    files: Annotated[list[Path], typer.Argument(help="Data files to check against the record schema.")],
    map_: MapOpt = None,
    max_errors: Annotated[int, typer.Option(help="Print at most this many errors per file.")] = 20,
    duplicate_keys: DuplicateKeysOpt = "reject",
    split: SplitOpt = None,
) -> None:
    """Check every record of each FILE without cleaning it: exit 0 if all are valid, 2 otherwise."""
    from workbench.io import parse_duplicate_keys, parse_overrides
    from workbench.stats import validate as run_validate

    overrides = parse_overrides(map_ or [])
    dup_keys = parse_duplicate_keys(duplicate_keys)
    failed = False
    for file in files:
        try:
            result = run_validate(file, overrides, keep=max_errors, duplicate_keys=dup_keys, split=split)
        except WbError as e:  # a missing or unreadable file fails it; the other files are still checked
            err.print(f"error: {e}", markup=False)
            failed = True
            continue
        bad = sum(result.rejected_by_kind.values())
        for r in result.rejects:
            message = r.error.removeprefix(r.field + ": ")
            err.print(f"{file}:{r.unit} {r.line}: {r.field or 'record'}: {message}", markup=False)
        if bad > len(result.rejects):
            err.print(f"... and {bad - len(result.rejects)} more", markup=False)
        if result.ok:
            out.print(f"{file}: {result.records} records valid ({result.source.format})", markup=False)
        else:
            err.print(f"{file}: {bad} of {result.records} records invalid", markup=False)
            failed = True
    if failed:
        raise typer.Exit(2)


def _print_token_lengths(t: dict[str, Any]) -> None:
    if not t["records"]:
        out.print("no valid records to measure in tokens", markup=False)
        return
    table = Table(
        title=f"length in {t['tokenizer']} tokens, after the {t['rendered_with']} template", title_justify="left"
    )
    for col in ("min", "p50", "p90", "p99", "max", "mean"):
        table.add_column(col, justify="right")
    table.add_row(*(str(t[c]) for c in ("min", "p50", "p90", "p99", "max", "mean")))
    out.print(table)
    over = Table(show_header=True)
    over.add_column("max_length", justify="right")
    over.add_column("records longer", justify="right")
    for m, share in t["over"].items():
        over.add_row(m, f"{100 * share:.2f}%")
    out.print(over)
    out.print(
        f"99% of the records fit in {t['covering_99']} tokens: suggested max_length {t['suggested_max_length']}",
        markup=False,
    )


def _print_preference_stats(file: Path, d: dict[str, Any]) -> None:
    n = d["records"]
    kind = "pairs" if d["preference_kind"] == "pair" else "KTO examples"
    out.print(
        f"{file}: {n:,} preference {kind} ({d['format']}; "
        + ", ".join(f"{k} {v:,}" for k, v in d["shapes"].items())
        + f"), {d['rejected']:,} malformed, {d['tied_scores']:,} with tied scores",
        markup=False,
    )
    out.print(f"system prompt {_pct(d['with_system'], n)}, earlier turns {_pct(d['with_history'], n)}", markup=False)
    table = Table(title="lengths", title_justify="left")
    table.add_column("field")
    for col in ("min", "p50", "p90", "p99", "max", "mean"):
        table.add_column(col, justify="right")
    for name, q in d["lengths"].items():
        table.add_row(
            name, *(str(q[c]) if q[c] is not None else "-" for c in ("min", "p50", "p90", "p99", "max", "mean"))
        )
    out.print(table)
    _print_preference({"kind": d["preference_kind"], "rules_not_applicable": [], **d}, pairs="pairs")
    groups = d["prompts_with_several_records"]
    out.print(f"prompts with several records: {groups['groups']:,} ({groups['records_in_groups']:,} records)")
    for warning in d["warnings"]:
        err.print(f"warning: {warning}", markup=False)


@app.command()
@user_errors
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
) -> None:
    """Length distributions (characters and tokens per field and script), field usage, duplicate prompts; for
    preference data the lengths of the prompt and each answer, and the length bias of the pairs."""
    from workbench import clean as cleaning
    from workbench.io import dumps_json, parse_overrides
    from workbench.stats import describe, describe_preferences

    overrides = parse_overrides(map_ or [])
    if cleaning.resolve_kind(file, "auto", bool(map_)) == "preference":
        if tokenizer is not None:
            raise WbError("--tokenizer measures SFT records; for preference data wb train reports the lengths it sees")
        d = describe_preferences(file, top=top, split=split)
        if html is not None:
            from workbench import stats_page

            stats_page.write(html, d)
        if as_json:
            sys.stdout.write(dumps_json(d).decode())
        else:
            _print_preference_stats(file, d)
        return
    d = describe(file, overrides, top=top, split=split)
    if tokenizer is not None:
        from workbench import token_lengths
        from workbench.train.data import check_template_spec

        try:
            check_template_spec(template)
        except ValueError as e:
            raise WbError(f"--template: {e}") from None
        limits = tuple(sorted(set(max_length))) if max_length else token_lengths.MAX_LENGTHS
        d["token_lengths"] = token_lengths.token_lengths(file, tokenizer, overrides, split, template, limits)
    if scores is not None:
        from workbench.score.summary import read_stats

        d["model_scores"] = read_stats(scores)
    if html is not None:
        from workbench import stats_page

        stats_page.write(html, d)
    if as_json:
        sys.stdout.write(dumps_json(d).decode())
        return
    n = d["records"]
    out.print(f"{file}: {n:,} records ({d['format']}), {d['rejected']:,} malformed", markup=False)
    out.print("mapping " + ", ".join(f"{k}←{v}" for k, v in d["mapping"].items()), markup=False)
    for note in d["mapping_notes"]:
        out.print(f"note: {note}", markup=False)
    usage = d["field_usage"]
    out.print(
        f"non-empty input {_pct(usage['input'], n)}, system {_pct(usage['system'], n)}, "
        f"history {_pct(usage['history'], n)}",
        markup=False,
    )
    table = Table(title="lengths", title_justify="left")
    table.add_column("field")
    for col in ("min", "p50", "p90", "p99", "max", "mean"):
        table.add_column(col, justify="right")
    for name, q in d["lengths"].items():
        if name.endswith(".turns") and not usage["history"]:
            continue
        table.add_row(
            name,
            *(str(q[c]) if q[c] is not None else "-" for c in ("min", "p50", "p90", "p99", "max", "mean")),
        )
    out.print(table)
    scripts = ", ".join(f"{k} {_pct(v, n)}" for k, v in d["output_script"].items())
    by_script = d["output_tokens_by_script"]
    out.print(
        f"output script: {scripts}; output tokens: {by_script['cjk']:,} CJK, {by_script['other']:,} other",
        markup=False,
    )
    dups = d["duplicate_prompts"]
    out.print(f"duplicate prompts: {dups['groups']:,} groups, {dups['records_in_groups']:,} records", markup=False)
    if "token_lengths" in d:
        _print_token_lengths(d["token_lengths"])
    if html is not None:
        out.print(f"wrote {html}", markup=False)
    if dups["top"]:
        t = Table(show_header=True)
        t.add_column("count", justify="right")
        t.add_column("prompt")
        for row in dups["top"]:
            prompt = row["prompt"].replace("\n", " ")
            t.add_row(str(row["count"]), Text(prompt[:100] + ("…" if len(prompt) > 100 else "")))
        out.print(t)


@app.command()
@user_errors
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """Base models usable without a network: the embedded SmolLM2-135M-Instruct, wb's cache, the Hugging Face cache."""
    from workbench.io import dumps_json
    from workbench.train.model import cache_dir, list_models

    rows = list_models()
    if as_json:
        sys.stdout.write(dumps_json(rows).decode())
        return
    table = Table(title=f"models (wb cache: {cache_dir()})", title_justify="left")
    table.add_column("name")
    table.add_column("where", overflow="fold")
    table.add_column("size", justify="right")
    table.add_column("status")
    for row in rows:
        n = row["size_bytes"]
        size = "-" if n is None else f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n / 2**10:,.0f} KiB"
        where = Text(row["where"])
        if row["path"]:
            where.append("\n" + row["path"].replace(str(Path.home()), "~", 1), style="dim")
        table.add_row(Text(row["name"]), where, size, Text(row["status"]))
    out.print(table)
    out.print("use a name as the recipe's `model:`; wb never downloads a model", markup=False)


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:,.1f}" if n >= 2**30 / 10 else f"{n / 2**30:,.2f}"


def _size(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 2**10:,.0f} KiB"


def _fits(text: str, fits: bool | None) -> Text:
    return Text(text) if fits is None else Text(text, style="green") if fits else Text(text + " ✗", style="bold red")


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


@app.command()
@user_errors
def plan(
    model: Annotated[
        str | None,
        typer.Option("--model", help="embedded, a model folder, a cached hub id, or a run folder (runs/NAME)."),
    ] = None,
    params: Annotated[
        float | None,
        typer.Option("--params", help="A model you do not have: its parameter count (7e9): a Llama shape."),
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", "-d", help="Training records: advice from their stats.")
    ] = None,
    seq_len: Annotated[
        int | None, typer.Option("--seq-len", help="Tokens per sequence (the recipe's max_length).")
    ] = None,
    batch: Annotated[int | None, typer.Option("--batch", help="Sequences per step (the recipe's batch_size).")] = None,
    memory: Annotated[
        str | None, typer.Option("--memory", help="Memory to fit in (24GB, 80GiB); default: this GPU, else free RAM.")
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="auto (a GPU if found or --memory given, else CPU), cuda or cpu.")
    ] = "auto",
    precision: Annotated[
        str, typer.Option("--precision", help="auto (bf16 where native), fp32, bf16 or fp16 (GPU).")
    ] = "auto",
    method: Annotated[
        list[str] | None, typer.Option("--method", help="Plan only this method (repeatable); default every method.")
    ] = None,
    lora_r: Annotated[int | None, typer.Option("--lora-r", help="LoRA rank (lora, dora, qlora).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Which training method fits this model, this data and this machine: peak memory, trainable parameters, advice."""
    from workbench.io import dumps_json
    from workbench.plan import build_plan

    p = build_plan(model, params, data, memory, device, precision, method, seq_len=seq_len, batch=batch, lora_r=lora_r)
    if as_json:
        sys.stdout.write(dumps_json(p.to_dict()).decode())
        return
    m, st, mach = p.model, p.settings, p.machine
    out.print(
        f"{m['name']}: {m['parameters'] / 1e9:,.3f}B parameters, {m['layers']} layers, hidden {m['hidden_size']}, "
        f"heads {m['attention_heads']}/{m['kv_heads']}, vocab {m['vocab_size']:,}, context {m['context'] or '-'}",
        markup=False,
    )
    if m.get("shape_distance"):
        err.print(f"warn: {m['shape_distance']}", markup=False)
    fit_to = f"{_gib(mach['memory'])} GiB" if mach["memory"] is not None else "unknown"
    out.print(
        f"step: {st['batch']} x {st['seq_len']} tokens on {st['device']} in {st['precision']} "
        f"({st['precision_reason']}); memory {fit_to} ({mach['source']})",
        markup=False,
    )
    table = Table(title="estimated peak memory per method (GiB; green fits, red does not)", title_justify="left")
    for col in ("method", "trainable", "weights", "grads", "optim", "activations", "peak", "ckpt peak", "on disk"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for e in p.estimates:
        share = 100 * e.trainable / e.total if e.total else 0
        table.add_row(
            e.method,
            f"{_count(e.trainable)} ({share:.0f}%)" if share >= 10 else f"{_count(e.trainable)} ({share:.2g}%)",
            _gib(e.weights),
            _gib(e.gradients),
            _gib(e.optimizer),
            f"{_gib(e.activations)} / {_gib(e.activations_checkpointed)}",
            _fits(_gib(e.peak), e.fits),
            _fits(_gib(e.peak_checkpointed), e.fits_checkpointed),
            _size(e.adapter_bytes),
        )
    out.print(table)
    runtime = p.estimates[0].runtime if p.estimates else 0
    out.print(
        f"activations: without / with gradient checkpointing; fits: peak + {_gib(runtime)} GiB runtime "
        f"({'CUDA context' if st['device'] == 'cuda' else 'Python with torch'}) within the memory; "
        "formulas: docs/plan.md",
        markup=False,
    )
    for a in p.advice:
        (err if a["level"] == "warn" else out).print(f"{a['level']}: {a['message']}", markup=False)
    r = p.recommendation or {}
    if r:
        pick = r["method"] or "none"
        out.print(f"recommended: {pick}: {r['reason']}", markup=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
def train(
    args: Annotated[
        list[str] | None, typer.Argument(help="RECIPE.yaml and/or KEY=VALUE overrides (lora.r=64 epochs=1).")
    ] = None,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Training records (overrides data:).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Base model (overrides model:).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Run name (overrides name:).")] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue runs/NAME from its last complete checkpoint.")
    ] = None,
    inspect: Annotated[
        int | None, typer.Option("--inspect", help="Show N formatted examples (trained vs masked tokens) and exit.")
    ] = None,
    quiet: QuietOpt = False,
    split: SplitOpt = None,
) -> None:
    """Fine-tune a model (LoRA, QLoRA, DoRA, IA3, adapters, prompt/prefix/P-tuning, freeze, full, GaLore)."""
    from workbench.train import recipe as recipes

    items = list(args or [])
    files = [a for a in items if "=" not in a]
    overrides = [a for a in items if "=" in a]
    if len(files) > 1:
        raise WbError(f"one recipe file at most, got {', '.join(files)}")
    if resume is not None:
        if files:
            raise WbError("--resume reads the run's own recipe.yaml; give overrides only")
        rec = recipes.load(resume / "recipe.yaml", overrides, name=resume.name, output_dir=resume.parent)
    else:
        rec = recipes.load(
            Path(files[0]) if files else None, overrides, data=data, model=model, name=name, data_split=split
        )
    from workbench.train import distributed

    quiet = quiet or not distributed.is_main()  # under torchrun / accelerate launch, rank 0 speaks for all
    say = (lambda text: err.print(text, markup=False)) if not quiet else (lambda text: None)
    if inspect is not None:
        _inspect(rec, inspect, say)
        return
    from workbench.train.trainer import train as run_training

    def show(row: dict[str, Any]) -> None:
        if quiet or ("loss" not in row and "eval_loss" not in row):
            return
        parts = [f"step {row['step']}"]
        shown: tuple[tuple[str, str], ...] = (("loss", "loss"), ("eval_loss", "eval_loss"), ("learning_rate", "lr"))
        shown += tuple((k, k) for k in ("rewards/accuracies", "rewards/margins", "accuracy", "reward", "kl"))
        shown += (("eval_rewards/accuracies", "eval_rewards/accuracies"), ("eval_accuracy", "eval_accuracy"))
        for key, label in shown:
            if isinstance(row.get(key), int | float):
                parts.append(f"{label} {row[key]:.4g}")
        if "tokens_per_second" in row:
            parts.append(f"{row['tokens_per_second']:,.0f} tok/s")
        out.print("  ".join(parts), markup=False)

    sources = ", ".join(s.label for s in rec.data) if isinstance(rec.data, list) else str(rec.data)
    say(f"training {rec.run_dir} ({rec.method} on {rec.model}, data {sources}{', replay' if rec.replay else ''})")
    result = run_training(rec, resume=resume is not None, on_log=show, on_status=say)
    if not distributed.is_main():
        return
    for warning in result.warnings:
        err.print(f"warning: {warning}", markup=False)
    m = result.manifest
    out.print(
        f"done: {m['global_step']} steps, train loss {m['train_loss']:.4f}"
        + (f", best eval loss {m['best_eval_loss']:.4f}" if m.get("best_eval_loss") is not None else "")
        + f", {m.get('tokens_per_second') or 0:,.0f} tokens/s, {m['trainable_parameters']:,} trainable parameters, "
        f"peak RSS {m['peak_rss_mb']:,.0f} MB; wrote {result.run_dir}",
        markup=False,
    )
    losses = m.get("eval_losses") or {}
    for name, s in (m.get("sources") or {}).items():
        out.print(
            f"  source {name}: {s['per_epoch']:,} examples/epoch ({100 * s['share']:.1f}%, {s['distinct_per_epoch']:,} "
            f"distinct of {s['train_records']:,}), {s['seen']:,} seen"
            + (f", eval loss {losses[name]:.4f}" if name in losses else ""),
            markup=False,
        )


def _inspect(rec: Any, n: int, say: Callable[[str], None]) -> None:
    from workbench.train.model import load_tokenizer
    from workbench.train.prepare import inspect as spans_of
    from workbench.train.prepare import prepare
    from workbench.train.recipe import PREFERENCE_METHODS

    tokenizer = load_tokenizer(rec.model, say)
    if rec.method in PREFERENCE_METHODS and rec.method != "grpo":
        _inspect_preference(rec, tokenizer, n)
        return
    prepared = prepare(rec, tokenizer, None)
    out.print(f"template: {prepared.template}; trained tokens in green, masked tokens dim", markup=False)
    for i, spans in enumerate(spans_of(tokenizer, prepared.train, n)):
        ex = prepared.train[i]
        out.rule(f"line {ex.line}: {ex.trained_tokens} of {len(ex.input_ids)} tokens trained")
        text = Text()
        for chunk, trained in spans:
            text.append(chunk, style="bold green" if trained else "dim")
        out.print(text)
    for warning in prepared.warnings:
        err.print(f"warning: {warning}", markup=False)


def _inspect_preference(rec: Any, tokenizer: Any, n: int) -> None:
    """The first n preference examples as the trainer sees them: the prompt dim, the answers in colour."""
    from workbench.train.preference import prepare as prepare_pairs

    prepared = prepare_pairs(rec, tokenizer)
    checked = prepared.train
    out.print(f"template: {prepared.template}; prompt dim, chosen green, rejected red", markup=False)
    for ex in checked.pairs[:n]:
        out.rule(f"line {ex.line}: prompt {len(ex.prompt_ids)}, chosen {len(ex.chosen_ids)}, rejected "
                 f"{len(ex.rejected_ids)} tokens")  # fmt: skip
        out.print(Text.assemble((ex.prompt, "dim"), (ex.chosen, "bold green")))
        out.print(Text.assemble((ex.prompt, "dim"), (ex.rejected, "bold red")))
    for kto in checked.unpaired[:n]:
        out.rule(f"line {kto.line}: {'desirable' if kto.label else 'undesirable'}")
        out.print(Text.assemble((kto.prompt, "dim"), (kto.completion, "bold green" if kto.label else "bold red")))
    for reason, lines in sorted(checked.dropped.items()):
        err.print(f"warning: {len(lines)} dropped ({reason}): lines {', '.join(map(str, lines[:10]))}", markup=False)


@app.command()
@user_errors
def export(
    run: Annotated[Path, typer.Argument(help="Run folder (runs/NAME) or adapter folder.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write (must not exist).")],
    merge: Annotated[bool, typer.Option("--merge", help="Merge the adapter into the base: a plain model.")] = False,
    adapter_only: Annotated[bool, typer.Option("--adapter-only", help="Copy the adapter alone (PEFT).")] = False,
    dtype: Annotated[str, typer.Option("--dtype", help="Merged weights dtype: auto, float32, bfloat16.")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Replace OUTPUT if it exists.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a run's adapter merged into its base model (--merge), or the adapter alone (--adapter-only)."""
    from workbench.train.export import export as run_export

    if merge == adapter_only:
        raise WbError("choose one of --merge or --adapter-only")
    say = (lambda text: err.print(text, markup=False)) if not quiet else (lambda text: None)
    result = run_export(run, output, merge=merge, dtype=dtype, force=force, on_status=say)
    what = {"merged": "merged model", "adapter": "adapter", "model": "model"}[result.kind]
    out.print(f"wrote {what} to {result.path} ({', '.join(result.files)})", markup=False)


GenOpts = Annotated[int, typer.Option("--max-new-tokens", help="Stop after this many new tokens.")]
AdapterOpt = Annotated[
    list[Path] | None, typer.Option("--adapter", help="Another adapter over the same base (repeatable); switchable.")
]


def _load_targets(target: str | None, adapters: list[Path] | None, say: Callable[[str], None]) -> Any:
    from workbench.train.runs import load, resolve_target

    specs: list[str | Path] = ([target] if target else []) + list(adapters or [])
    if not specs:
        raise WbError("give a run folder, an adapter folder or a model")
    return load([resolve_target(s) for s in specs], on_status=say)


def _settings(max_new_tokens: int, sample: bool, temperature: float, seed: int, precision: str) -> Any:
    return GenerationSettings(
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        temperature=temperature,
        seed=seed,
        batch_size=1,
        precision=precision,
    )


@app.command()
@user_errors
def generate(
    args: Annotated[list[str], typer.Argument(help="[RUN|ADAPTER|MODEL] PROMPT...")],
    adapter: AdapterOpt = None,
    base: Annotated[bool, typer.Option("--base", help="Also answer with the bare base model.")] = False,
    system: Annotated[str, typer.Option("--system", help="System message.")] = "",
    max_new_tokens: GenOpts = 256,
    sample: Annotated[bool, typer.Option("--sample", help="Sample instead of greedy decoding.")] = False,
    temperature: Annotated[float, typer.Option("--temperature")] = 0.7,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    precision: PrecisionOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Answer prompts with a tuned model; with several --adapter, answer with each (and --base) for comparison."""
    from workbench.evaluate.generate import generate as run_generate
    from workbench.evaluate.generate import prompt_for

    target, prompts = (None, args) if adapter and len(args) == 1 else (args[0], args[1:])
    if not prompts:
        raise WbError('give a prompt after the run folder: wb generate runs/NAME "your prompt"')
    say = (lambda text: err.print(text, markup=False)) if not quiet else (lambda text: None)
    loaded = _load_targets(target, adapter, say)
    settings = _settings(max_new_tokens, sample, temperature, seed, precision)
    choices: list[str | None] = list(loaded.adapters) or [None]
    if base and loaded.adapters:
        choices.append(None)
    texts = [prompt_for(loaded, {"instruction": p, "system": system}) for p in prompts]
    for choice in choices:
        loaded.use(choice)
        answers = run_generate(loaded, texts, settings)
        for prompt, answer in zip(prompts, answers, strict=True):
            if len(choices) > 1 or len(prompts) > 1:
                out.rule(f"{choice or 'base'}: {prompt[:60]}", style="dim")
            out.print(answer, markup=False)


@app.command()
@user_errors
def chat(
    target: Annotated[str | None, typer.Argument(help="Run folder, adapter folder or model.")] = None,
    adapter: AdapterOpt = None,
    system: Annotated[str, typer.Option("--system", help="System message.")] = "",
    max_new_tokens: GenOpts = 256,
    sample: Annotated[bool, typer.Option("--sample", help="Sample instead of greedy decoding.")] = False,
    temperature: Annotated[float, typer.Option("--temperature")] = 0.7,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    precision: PrecisionOpt = "auto",
) -> None:
    """Talk to a tuned model. Commands: /adapter NAME, /base, /reset, /quit."""
    from workbench.evaluate.generate import generate as run_generate
    from workbench.evaluate.generate import prompt_for

    loaded = _load_targets(target, adapter, lambda text: err.print(text, markup=False))
    settings = _settings(max_new_tokens, sample, temperature, seed, precision)
    history: list[list[str]] = []
    names = ", ".join(loaded.adapters) or "none"
    err.print(
        f"adapters: {names}; active: {loaded.active or 'base'}. /adapter NAME, /base, /reset, /quit", markup=False
    )
    for line in _input_lines():
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            break
        if text == "/reset":
            history = []
            continue
        command, _, name = text.partition(" ")
        if command in ("/base", "/adapter"):
            try:  # a typo is said, and the session goes on
                loaded.use(None if command == "/base" else name.strip())
            except WbError as e:
                err.print(f"error: {e}", markup=False)
            err.print(f"active: {loaded.active or 'base'}", markup=False)
            continue
        prompt = prompt_for(loaded, {"instruction": text, "system": system, "history": history})
        answer = run_generate(loaded, [prompt], settings)[0]
        out.print(f"{loaded.active or 'base'}> {answer}", markup=False)
        history.append([text, answer])


@contextmanager
def count_progress(quiet: bool) -> Iterator[Callable[[str, int, int], None]]:
    """Progress bars over items (one per phase), with rate and ETA; silent when quiet or not on a terminal."""
    from rich.progress import MofNCompleteColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=quiet or not err.is_terminal,
    ) as progress:
        tasks: dict[str, Any] = {}

        def update(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total, rate="")
            task = progress.tasks[tasks[label]]
            speed = task.speed
            progress.update(tasks[label], completed=done, total=total, rate=f"{speed:.1f}/s" if speed else "")

        yield update


def _fields(model: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """(defaults, help texts) of a config model's fields: a command-line option and its config field are one setting."""
    fields = model.model_fields
    return (
        {n: f.get_default(call_default_factory=True) for n, f in fields.items()},
        {n: f.description or "" for n, f in fields.items()},
    )


_E, _EH = _fields(EvalConfig)
_G, _GH = _fields(GenerationSettings)


@app.command("eval")
@user_errors
def eval_(
    target: Annotated[
        str | None, typer.Argument(help="Run folder (runs/NAME), adapter folder or model; omit with --predictions.")
    ] = None,
    data: Annotated[Path | None, typer.Option("--data", "-d", help=_EH["data"])] = _E["data"],
    suite: Annotated[str, typer.Option("--suite", "-s", help=_EH["suite"])] = _E["suite"],
    probes: Annotated[list[str] | None, typer.Option("--probes", help=_EH["probes"] + " (repeatable)")] = None,
    no_probes: Annotated[bool, typer.Option("--no-probes", help="Skip the forgetting probes.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", help=_EH["limit"])] = _E["limit"],
    probe_limit: Annotated[int | None, typer.Option("--probe-limit", help=_EH["probe_limit"])] = _E["probe_limit"],
    mc: Annotated[list[str] | None, typer.Option("--mc", help=_EH["mc"] + " (repeatable)")] = None,
    mc_limit: Annotated[int | None, typer.Option("--mc-limit", help=_EH["mc_limit"])] = _E["mc_limit"],
    fewshot: Annotated[int, typer.Option("--fewshot", help=_EH["fewshot"])] = _E["fewshot"],
    mc_prompt: Annotated[str, typer.Option("--mc-prompt", help=_EH["mc_prompt"])] = _E["mc_prompt"],
    model: Annotated[
        str | None, typer.Option("--model", help="Evaluate a model alone (a model spec, no run); give -o DIR.")
    ] = None,
    no_base: Annotated[bool, typer.Option("--no-base", help="Do not evaluate the base model.")] = False,
    base_model: Annotated[str | None, typer.Option("--base-model", help=_EH["base_model"])] = _E["base_model"],
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help=_GH["max_new_tokens"])] = _G["max_new_tokens"],
    probe_max_new_tokens: Annotated[int, typer.Option("--probe-max-new-tokens", help=_EH["probe_max_new_tokens"])] = _E[
        "probe_max_new_tokens"
    ],
    batch_size: Annotated[int, typer.Option("--batch-size", help=_GH["batch_size"])] = _G["batch_size"],
    sample: Annotated[bool, typer.Option("--sample", help=_GH["do_sample"])] = _G["do_sample"],
    temperature: Annotated[float, typer.Option("--temperature", help=_GH["temperature"])] = _G["temperature"],
    seed: Annotated[int, typer.Option("--seed", help=_EH["seed"])] = _E["seed"],
    review_size: Annotated[int, typer.Option("--review-size", help=_EH["review_size"])] = _E["review_size"],
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Generate everything again.")] = False,
    precision: Annotated[Precision, typer.Option("--precision", help=_GH["precision"])] = _G["precision"],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Folder to write (default RUN/eval).")] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            "--predictions", help="Score a file of prediction/reference rows (optional base_prediction); no model."
        ),
    ] = None,
    import_review: Annotated[
        Path | None, typer.Option("--import-review", help="Fold a filled review_sample.csv back into RUN/eval.")
    ] = None,
    prefs: Annotated[Path | None, typer.Option("--prefs", help=_EH["prefs"])] = None,
    reward_model: Annotated[Path | None, typer.Option("--reward-model", help=_EH["reward_model"])] = None,
    judge: Annotated[str | None, typer.Option("--judge", help=_EH["judge"])] = _E["judge"],
    judge_prompts: Annotated[Path | None, typer.Option("--judge-prompts", help=_EH["judge_prompts"])] = _E[
        "judge_prompts"
    ],
    quiet: QuietOpt = False,
    split: SplitOpt = None,
) -> None:
    """Score a tuned model against its base: task metrics, forgetting probes, A/B with confidence intervals."""
    from workbench.evaluate import pipeline

    if import_review is not None:
        _import_review(target, output, import_review)
        return
    if model is not None:
        if target is not None:
            raise WbError("give a run folder or --model MODEL, not both")
        if output is None:
            raise WbError("--model evaluates a model without a run: say where to write with -o DIR")
        target = model
    if mc_prompt not in ("template", "plain"):
        raise WbError(f"--mc-prompt: {mc_prompt!r} is not one of template, plain")
    config = EvalConfig(
        data=data,
        suite=suite,
        split=split,
        limit=limit,
        probes=[] if no_probes or predictions is not None else (probes or list(_E["probes"])),
        probe_limit=probe_limit,
        mc=mc or [],
        mc_limit=mc_limit,
        fewshot=fewshot,
        mc_prompt=mc_prompt,
        base=not no_base,
        base_model=base_model,
        generation=GenerationSettings(
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            do_sample=sample,
            temperature=temperature,
            seed=seed,
            precision=precision,
        ),
        probe_max_new_tokens=probe_max_new_tokens,
        seed=seed,
        review_size=review_size,
        cache=not no_cache,
        prefs=prefs,
        reward_model=reward_model,
        judge=judge,
        judge_prompts=judge_prompts,
    )
    say = (lambda text: err.print(text, markup=False)) if not quiet else (lambda text: None)
    if predictions is not None:
        if target is not None or output is None:
            raise WbError("--predictions scores a file without a model: give -o DIR and no run")
        if config.mc:
            raise WbError("--mc scores options with a model; it cannot be combined with --predictions")
        result = pipeline.evaluate_predictions(predictions, config, output)
    else:
        if target is None:
            raise WbError("give a run folder to evaluate (or --predictions FILE -o DIR)")
        with count_progress(quiet) as progress:
            result = pipeline.evaluate(target, config, output, on_status=say, on_progress=progress)
    if not quiet:
        _print_metrics(result.metrics)
    for warning in result.warnings:
        err.print(f"warning: {warning}", markup=False)
    out.print(f"wrote {result.out_dir}/ (metrics.json, scores.jsonl)", markup=False)


@app.command()
@user_errors
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

    target = output if output is not None else Path(f"{input.name.split('.')[0] or 'data'}.scored.jsonl")
    say = (lambda text: err.print(text, markup=False)) if not quiet else (lambda text: None)
    with count_progress(quiet) as progress:
        result = score_file(
            input,
            target,
            model,
            reward_model,
            batch_size,
            max_length,
            precision,
            not no_cache,
            progress,
            say,
            extra_fields=not drop_extra_fields,
        )
    s = result.stats
    if html is not None:
        from workbench import stats_page

        stats_page.write_scores(html, s)
    if not quiet:
        table = Table(title=f"wb score ({s['scored']:,} of {s['records']:,} records)", title_justify="left")
        for col in ("score", "p10", "p50", "p90", "mean", "missing"):
            table.add_column(col, justify="left" if col == "score" else "right")
        for name, d in s["scores"].items():
            q = d.get("quantiles", {})
            table.add_row(
                name, *(_fmt(q.get(c)) for c in ("p10", "p50", "p90")), _fmt(d.get("mean")), str(d["missing"])
            )
        out.print(table)
        if s["scores"].get("ifd", {}).get("at_or_above_1"):
            out.print(f"{s['scores']['ifd']['at_or_above_1']:,} record(s) with IFD >= 1 (prompt does not help)")
    out.print(
        f"wrote {result.paths.scored} (+ .stats.json, .manifest.json); cache {result.cache_hits:,} hits, "
        f"{result.cache_misses:,} computed",
        markup=False,
    )


@app.command()
@user_errors
def augment(
    input: Annotated[Path, typer.Argument(help="Records to augment (output of wb clean).")],
    model: Annotated[str, typer.Option("--model", help="Local model that writes the new records (a capable one).")],
    method: Annotated[
        str, typer.Option("--method", help="paraphrase (instructions) or back_translate (answers, EN<->ZH).")
    ] = "paraphrase",
    lang: Annotated[str, typer.Option("--lang", help="Languages of the texts to rewrite: en, zh or en,zh.")] = "en,zh",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="New records (default: ./<name>.augmented.jsonl).")
    ] = None,
    profile: Annotated[
        str, typer.Option("--profile", "-p", help="Cleaning profile whose rules the new records pass.")
    ] = "default",
    prompts: Annotated[
        Path | None, typer.Option("--prompts", help="Prompt file (a copy of pipelines/augment-prompts.yaml).")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="Tokens per generated text.")] = 256,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help=_GH["batch_size"])] = 8,
    sample: Annotated[bool, typer.Option("--sample", help=_GH["do_sample"])] = False,
    temperature: Annotated[float, typer.Option("--temperature", help=_GH["temperature"])] = 0.7,
    seed: Annotated[int, typer.Option("--seed", help="Seed of sampling.")] = 0,
    precision: PrecisionOpt = "auto",
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Generate everything again.")] = False,
    quiet: QuietOpt = False,
    drop_extra_fields: DropExtraOpt = False,
) -> None:
    """New records written by a local model (paraphrased instructions, back-translated answers), each with its
    provenance, passed through the cleaning rules and near-dedup against the originals: never a copy."""
    from workbench import augment as aug
    from workbench import clean as cleaning

    chosen = aug.parse_method(method)
    langs = aug.parse_langs(lang)
    prof = cleaning.load(profile)
    settings = GenerationSettings(
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        do_sample=sample,
        temperature=temperature,
        seed=seed,
        precision=precision,
    )
    target = output if output is not None else Path(f"{input.name.split('.')[0] or 'data'}.augmented.jsonl")
    say = (lambda text: err.print(text, markup=False)) if not quiet else (lambda text: None)
    with count_progress(quiet) as progress:
        result = aug.augment_file(
            input,
            target,
            model,
            chosen,
            langs,
            prof,
            settings,
            prompts,
            not no_cache,
            progress,
            say,
            extra_fields=not drop_extra_fields,
        )
    s = result.stats
    if not quiet:
        for rule, n in s["dropped_by_rule"].items():
            out.print(f"dropped: {rule} {n:,}", markup=False)
        if s["not_in_chosen_languages"]:
            out.print(f"{s['not_in_chosen_languages']:,} original(s) not in {lang}: not augmented", markup=False)
    out.print(
        f"generated {s['generated']:,} = kept {s['kept']:,} + dropped {s['dropped']:,}; wrote {result.paths.out} "
        "(+ .dropped.jsonl, .stats.json, .manifest.json)",
        markup=False,
    )


def _import_review(target: str | None, output: Path | None, filled: Path) -> None:
    from workbench.evaluate.review import import_review
    from workbench.io import write_json

    folder = output or (Path(target) / "eval" if target else None)
    if folder is None or not folder.is_dir():
        raise WbError("--import-review: give the run folder (or -o its eval folder) the review belongs to")
    from workbench.evaluate.pipeline import fold_review_into_judge

    summary = import_review(filled)
    write_json(folder / "review.json", summary)
    agreed = fold_review_into_judge(folder)
    if agreed is not None:
        kappa = "undefined" if agreed["kappa"] is None else f"{agreed['kappa']:.3f}"
        out.print(f"judge vs reviewers: Cohen's kappa {kappa} on {agreed['n']} items", markup=False)
    v = summary["verdicts"]
    out.print(
        f"review: {summary['reviewed']} verdicts ({summary['unreviewed']} rows left empty): tuned better {v['tuned']}, "
        f"base better {v['base']}, tie {v['tie']}, both bad {v['both_bad']}; wrote {folder / 'review.json'}",
        markup=False,
    )


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _interval(st: dict[str, Any], lo: str, hi: str) -> str:
    """A stat's interval as `[lo, hi]`, or `-` where it has none (fewer than two items)."""
    if st.get(lo) is None or st.get(hi) is None:
        return "-"
    return f"[{_fmt(st[lo])}, {_fmt(st[hi])}]"


def _print_metrics(metrics: dict[str, Any]) -> None:
    groups = ([("task", metrics["task"])] if "task" in metrics else []) + list(metrics["forgetting"].items())
    for name, summary in groups:
        table = Table(title=f"{name} ({summary['n']} items)", title_justify="left")
        for col in ("metric", "tuned", "95% CI", "base", "delta", "delta 95% CI", "win/tie/loss"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        for key, st in summary["metrics"].items():
            has_base = "base" in st
            table.add_row(
                key,
                _fmt(st.get("tuned")),
                _interval(st, "lower", "upper"),
                _fmt(st.get("base")) if has_base else "",
                f"{st['delta']:+.3f}" if has_base and st.get("delta") is not None else "",
                _interval(st, "delta_lower", "delta_upper") if has_base else "",
                f"{st['wins']}/{st['ties']}/{st['losses']}" if has_base and "wins" in st else "",
            )
        out.print(table)
        j = summary.get("judge")
        if j:
            out.print(
                f"judge ({j['n']} items, both orders): win {_fmt(j.get('win_rate'))}, tie {_fmt(j.get('tie_rate'))}, "
                f"loss {_fmt(j.get('loss_rate'))}; win - loss {_fmt(j.get('win_minus_loss'))} "
                f"[{_fmt(j.get('win_minus_loss_lower'))}, {_fmt(j.get('win_minus_loss_upper'))}]; "
                f"position flips {_fmt(j.get('position_flip_rate'))}; unparsed {j['unparsed']} of {j['replies']}",
                markup=False,
            )
    pref = metrics.get("preference")
    if pref:
        table = Table(title=f"preference ({pref['n']} pairs)", title_justify="left")
        for col in ("metric", "value", "95% CI", "base", "win/tie/loss"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        for key in ("implicit_accuracy", "implicit_margin", "reward_accuracy", "reward_margin", "reward_score"):
            st = pref.get(key)
            if st:
                table.add_row(
                    f"pref.{key}",
                    _fmt(st.get("tuned")),
                    _interval(st, "lower", "upper"),
                    _fmt(st.get("base")) if "base" in st else "",
                    f"{st['wins']}/{st['ties']}/{st['losses']}" if "wins" in st else "",
                )
        if pref.get("win_rate") is not None:
            table.add_row("pref.win_rate", _fmt(pref["win_rate"]), "", "", "")
        out.print(table)


def _input_lines() -> Iterator[str]:
    """Lines typed at a prompt, or piped in; ends at end of input."""
    if not sys.stdin.isatty():
        yield from sys.stdin
        return
    while True:
        try:
            yield input("you> ")
        except EOFError:  # Ctrl-D
            sys.stdout.write("\n")  # the shell's prompt starts on a line of its own
            return


# -- wb report / wb gate --------------------------------------------------------------------------------------------

CleanStatsOpt = Annotated[
    Path | None,
    typer.Option("--clean-stats", help="Cleaning stats file, if not beside the data the train manifest names."),
]


@app.command()
@user_errors
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run folder (runs/NAME); give two to compare them (A B).")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="HTML file (default: reports/<run name>.html); .md and .json beside it."),
    ] = None,
    gate_file: Annotated[
        Path | None, typer.Option("--gate", "-g", help="Threshold file: show the gate verdict at the top.")
    ] = None,
    clean_stats: CleanStatsOpt = None,
) -> None:
    """One self-contained HTML page (plus Markdown and JSON summaries) for a run, or two runs side by side."""
    from workbench.report.html import build_report

    written = build_report(runs, output, gate_file, clean_stats)
    for g in written.gates:
        if g is not None:
            out.print(f"{g.headline} ({g.run})", markup=False)
    out.print(f"wrote {written.html}, {written.markdown}, {written.json}", markup=False)


@app.command()
@user_errors
def gate(
    run: Annotated[Path, typer.Argument(help="Run folder (runs/NAME) or its eval/ folder.")],
    thresholds: Annotated[
        Path, typer.Option("--thresholds", "-t", help="Threshold file (YAML), e.g. pipelines/gate.yaml.")
    ],
    junit: Annotated[Path | None, typer.Option("--junit", help="Also write the checks as JUnit XML.")] = None,
    clean_stats: CleanStatsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Check a run against thresholds: exit 0 if all pass, 1 if any is missed or missing, 2 on bad input."""
    from workbench.report.gate import evaluate as check_gate
    from workbench.report.gate import load
    from workbench.report.summary import load_run

    spec = load(thresholds)  # a bad threshold file is reported before the run is read
    result = check_gate(spec, load_run(run, clean_stats).summary, str(thresholds))
    if junit is not None:
        from workbench.report.junit import write as write_junit

        write_junit(junit, result)
    if not quiet:
        table = Table(title=f"wb gate: {result.run} against {thresholds}", title_justify="left")
        for column, justify in (("check", "left"), ("value", "right"), ("threshold", "left"), ("verdict", "left")):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        style = {"pass": "green", "fail": "bold red", "missing": "bold red", "inconclusive": "bold yellow"}
        for r in result.results:
            value = "-" if r.value is None else f"{r.value:.4g}"
            table.add_row(
                Text(r.check.metric), Text(value), Text(r.check.threshold_text), Text(r.verdict, style=style[r.verdict])
            )
        out.print(table)
        for r in result.results:
            if r.verdict != "pass":
                allowed = " (allowed)" if r.passed else ""
                err.print(f"{r.verdict}{allowed}: {r.check.metric}: {r.message}", markup=False)
        for w in result.warnings:
            err.print(f"warning: {w}", markup=False)
    if junit is not None and not quiet:
        out.print(f"wrote {junit}", markup=False)
    out.print(result.headline, markup=False)
    if not result.passed:
        raise typer.Exit(1)


def main() -> None:
    from workbench.output import terminate_like_interrupt
    from workbench.quiet import quiet_libraries

    terminate_like_interrupt()
    quiet_libraries()  # before any command imports a deep-learning library
    app()


if __name__ == "__main__":
    main()
