"""`wb export`: a run's adapter merged into its base model, or the adapter alone, written to a new folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workbench import console
from workbench.commands.options import QuietOpt
from workbench.errors import WbError


@console.user_errors
def export(
    run: Annotated[Path, typer.Argument(help="Run folder (runs/NAME) or adapter folder.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write (must not exist).")],
    merge: Annotated[bool, typer.Option("--merge", help="Merge the adapter into the base: a plain model.")] = False,
    adapter_only: Annotated[bool, typer.Option("--adapter-only", help="Copy the adapter alone (PEFT).")] = False,
    dtype: Annotated[str, typer.Option("--dtype", help="Merged weights dtype: auto, float32, bfloat16.")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Replace OUTPUT if it exists.")] = False,
    gate: Annotated[Path | None, typer.Option("--gate", help="Threshold file: its verdict goes into the card.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Write a run's adapter merged into its base model (--merge), or the adapter alone (--adapter-only)."""
    from workbench.export.pipeline import export as run_export

    if merge == adapter_only:
        raise WbError("choose one of --merge or --adapter-only")
    result = run_export(run, output, merge=merge, dtype=dtype, force=force, on_status=console.say(quiet), gate=gate)
    what = {"merged": "merged model", "adapter": "adapter", "model": "model"}[result.kind]
    console.warnings(result.warnings)
    if result.gate is not None:
        console.line(f"{result.gate.headline} (in the model card)")
    console.line(f"wrote {what} to {result.path} ({', '.join(result.files)})")
