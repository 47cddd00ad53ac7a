"""`wb clean` and `wb dedup`: one input through the cleaning pipeline (or its dedup stages), the accounting printed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from workbench import console
from workbench.commands.options import (
    AgainstOpt,
    DedupPrecisionOpt,
    DropExtraOpt,
    DuplicateKeysOpt,
    EngineOpt,
    KindOpt,
    MapOpt,
    QuietOpt,
    RayAddressOpt,
    SplitOpt,
    StrictOpt,
    VerboseOpt,
)
from workbench.console import line, pct

ProfileHelp = "Built-in profile (default, strict, zh, preference) or a YAML file (default: default, or preference for "


@console.user_errors
def clean(
    input: Annotated[
        Path, typer.Argument(help="Raw data: JSONL, JSON, Parquet or CSV (optionally .gz/.zst); - for stdin.")
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Cleaned JSONL (default: ./<name>.clean.jsonl).")
    ] = None,
    profile: Annotated[str | None, typer.Option("--profile", "-p", help=ProfileHelp + "preference data).")] = None,
    map_: MapOpt = None,
    against: AgainstOpt = None,
    strict: StrictOpt = False,
    duplicate_keys: DuplicateKeysOpt = "reject",
    precision: DedupPrecisionOpt = None,
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
    verbose: VerboseOpt = False,
) -> None:
    """Validate, normalise, filter, deduplicate and decontaminate instruction data; every drop is explained."""
    run("clean", input, output, profile, map_, against, strict, duplicate_keys, precision, quiet, split, kind,
        scores, engine, ray_address, drop_extra_fields, verbose)  # fmt: skip


@console.user_errors
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
    precision: DedupPrecisionOpt = None,
    quiet: QuietOpt = False,
    split: SplitOpt = None,
    kind: KindOpt = "auto",
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    drop_extra_fields: DropExtraOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Only the dedup stages (exact, near-duplicate, decontamination) on data that is already clean."""
    run("dedup", input, output, profile, map_, against, strict, duplicate_keys, precision, quiet, split, kind,
        None, engine, ray_address, drop_extra_fields, verbose)  # fmt: skip


def run(
    command: Literal["clean", "dedup"],
    input: Path,
    output: Path | None,
    profile: str | None,
    map_: list[str] | None,
    against: list[Path] | None,
    strict: bool,
    duplicate_keys: str,
    precision: str | None,
    quiet: bool,
    split: str | None,
    kind: str,
    scores: Path | None,
    engine: str,
    ray_address: str | None,
    drop_extra_fields: bool,
    verbose: bool,
) -> None:
    from workbench.clean import dispatch as cleaning
    from workbench.io.options import parse_duplicate_keys, parse_overrides

    data_kind = cleaning.resolve_kind(input, kind, bool(map_))
    prof = cleaning.profile_for(profile, data_kind, command, precision)
    total = input.stat().st_size if input.is_file() else 0
    with console.progress_bar(f"{command} {input.name}", total, quiet) as (advance, phase):
        result = cleaning.run_file(
            input, output, prof, command=command, engine=engine, ray_address=ray_address,
            overrides=parse_overrides(map_ or []), on_batch=advance, on_phase=phase, against=against,
            duplicate_keys=parse_duplicate_keys(duplicate_keys), split=split, kind=data_kind, scores=scores,
            extra_fields=not drop_extra_fields,
        )  # fmt: skip
    s = result.summary
    if not quiet:
        print_summary(command, input, prof.name, result)
    line(f"read {s['read']:,} = kept {s['kept']:,} + dropped {s['dropped']:,} + rejected {s['rejected']:,}")
    console.warnings(s["warnings"], verbose)
    if strict and s["rejected"]:
        console.note(f"error: {s['rejected']} record(s) rejected (--strict); see {result.paths.rejects}")
        raise typer.Exit(2)


def print_summary(command: str, input: Path, profile: str, result: Any) -> None:
    s = result.summary
    line(
        f"{input}: "
        + (f"{s['input']['layout']} folder, split {s['input']['split']}, " if "split" in s["input"] else "")
        + f"{result.source.format}"
        + (f" ({result.source.compression})" if result.source.compression != "none" else "")
        + f", profile {profile}"
        + (
            f", preference data ({s['preference']['kind']}s)"
            if "preference" in s
            else ", mapping "
            + ", ".join(f"{k}←{v}" for k, v in result.mapping.items())
            + "".join(f" ({note})" for note in s["mapping_notes"])
        )
    )
    table = console.table(f"wb {command}", "stage / rule", ("records", "right"), ("share", "right"))
    table.add_row("read", f"{s['read']:,}", "100%")
    table.add_row("rejected (malformed)", f"{s['rejected']:,}", pct(s["rejected"], s["read"]))
    for rule, n in s["dropped_by_rule"].items():
        if n:
            table.add_row(f"dropped: {rule}", f"{n:,}", pct(n, s["read"]))
    table.add_row("kept", f"{s['kept']:,}", pct(s["kept"], s["read"]), style="bold")
    console.show(table)
    mod = s["modified"]
    line(
        f"modified: {mod['normalized']:,} normalised, {mod['placeholder_input']:,} placeholder inputs emptied, "
        f"{mod['pii_redacted']:,} with personal data redacted"
        + (
            f", {mod['bidi_controls_removed']:,} with bidi control characters removed"
            if mod.get("bidi_controls_removed")
            else ""
        )
        + (f", {mod['chinese_converted']:,} converted by OpenCC" if mod["chinese_converted"] else "")
    )
    print_preference(s.get("preference"))
    if s["kept_tool_conversations"]:
        line(f"kept {s['kept_tool_conversations']:,} tool-calling conversation(s) whole")
    for rule, n in s["reported_by_rule"].items():
        line(f"reported, not dropped: {n:,} record(s) by {rule} (listed in .stats.json)")
    for path, leak in s.get("contamination", {}).items():
        line(f"{path}: {leak['leaked_items']} of {leak['items']} eval items found in the training data")
    line(f"wrote {result.paths.kept} (+ .dropped.jsonl, .rejects.jsonl, .stats.json, .manifest.json)")


def print_preference(p: dict[str, Any] | None, pairs: str = "kept pairs") -> None:
    """The length bias, labels and skipped rules of preference data (wb clean and wb stats)."""
    if p is None:
        return
    bias = p.get("length_bias")
    if bias and bias["pairs"]:
        line(
            f"length bias: chosen longer in {100 * bias['chosen_longer_share']:.0f}% of {bias['pairs']:,} {pairs}"
            + (f", {bias['equal']:,} of equal length" if bias["equal"] else "")
            + f", mean chosen/rejected length ratio {bias['mean_length_ratio']:.2f} (UTF-8 bytes)"
        )
    if "labels" in p:
        line(f"labels: {p['labels']['desirable']:,} desirable, {p['labels']['undesirable']:,} undesirable")
    if p["rules_not_applicable"]:
        line(f"rules that do not apply to {p['kind']} data, skipped: {', '.join(p['rules_not_applicable'])}")
