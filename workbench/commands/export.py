"""`wb export`: a run as a merged model, an adapter, GGUF for llama.cpp and Ollama, or several adapters for vLLM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workbench import console
from workbench.commands.options import QuietOpt
from workbench.errors import WbError


@console.user_errors
def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write (must not exist).")],
    run: Annotated[Path | None, typer.Argument(help="Run folder (runs/NAME) or adapter folder.")] = None,
    merge: Annotated[bool, typer.Option("--merge", help="Merge the adapter into the base: a plain model.")] = False,
    adapter_only: Annotated[bool, typer.Option("--adapter-only", help="Copy the adapter alone (PEFT).")] = False,
    dtype: Annotated[str, typer.Option("--dtype", help="Merged weights dtype: auto, float32, bfloat16.")] = "auto",
    adapters: Annotated[
        list[str] | None,
        typer.Option("--adapter", help="A run's LoRA adapter for vLLM/PEFT serving, repeatable: RUN or NAME=RUN."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUTPUT if it exists.")] = False,
    gate: Annotated[Path | None, typer.Option("--gate", help="Threshold file: its verdict goes into the card.")] = None,
    gguf: Annotated[bool, typer.Option("--gguf", help="Also model.gguf (llama.cpp) and an Ollama Modelfile.")] = False,
    quant: Annotated[str | None, typer.Option("--quant", help="GGUF weights: f16 (default) or q8_0.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Write a run's adapter merged into its base model (--merge), also as GGUF for llama.cpp and Ollama (--gguf), or
    the adapter alone (--adapter-only); or several runs' adapters over their one base for vLLM's LoRA serving
    (--adapter RUN --adapter RUN)."""
    from workbench.export.modelfile import ollama_command
    from workbench.export.pipeline import export as run_export

    if adapters:
        if run is not None or merge or adapter_only or gate is not None:
            raise WbError("--adapter exports the named runs' adapters: give no RUN, --merge, --adapter-only or --gate")
        from workbench.export.serving import export_adapters

        served = export_adapters(adapters, output, force=force, on_status=console.say(quiet))
        console.warnings(served.warnings)
        names = ", ".join(a.name for a in served.adapters)
        console.line(f"wrote {len(served.adapters)} adapters ({names}) over {served.base} to {served.folder}")
        console.line(f"serve: {served.vllm_command()}")
        return
    if run is None:
        raise WbError("give a run folder, or --adapter RUN (repeatable) to export adapters for serving")
    if quant is not None and not gguf:
        raise WbError("--quant goes with --gguf")
    if gguf and adapter_only:
        raise WbError("--gguf writes a whole model (the adapter merged): it does not go with --adapter-only")
    if merge == adapter_only and not gguf:
        raise WbError("choose one of --merge or --adapter-only (or --gguf)")
    quant = (quant or "f16") if gguf else None
    say = console.say(quiet)
    result = run_export(run, output, merge=merge, dtype=dtype, force=force, on_status=say, gate=gate, gguf_quant=quant)
    what = {"merged": "merged model", "adapter": "adapter", "model": "model"}[result.kind]
    console.warnings(result.warnings)
    if result.gate is not None:
        console.line(f"{result.gate.headline} (in the model card)")
    console.line(f"wrote {what} to {result.path} ({', '.join(result.files)})")
    if gguf:
        console.line(f"create it in Ollama: {ollama_command(run.name, result.path)}")
