"""`wb plan`: which training method fits this model, this data and this machine, as a table or JSON."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from workbench import console
from workbench.console import line

COLUMNS = ("method", "trainable", "weights", "grads", "optim", "activations", "peak", "ckpt peak", "on disk")


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


@console.user_errors
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
    from workbench.io.jsontext import dumps_json
    from workbench.plan.build import build_plan

    p = build_plan(model, params, data, memory, device, precision, method, seq_len=seq_len, batch=batch, lora_r=lora_r)
    if as_json:
        sys.stdout.write(dumps_json(p.to_dict()).decode())
        return
    m, st, mach = p.model, p.settings, p.machine
    line(
        f"{m['name']}: {m['parameters'] / 1e9:,.3f}B parameters, {m['layers']} layers, hidden {m['hidden_size']}, "
        f"heads {m['attention_heads']}/{m['kv_heads']}, vocab {m['vocab_size']:,}, context {m['context'] or '-'}"
    )
    if m.get("shape_distance"):
        console.note(f"warn: {m['shape_distance']}")
    fit_to = f"{_gib(mach['memory'])} GiB" if mach["memory"] is not None else "unknown"
    line(
        f"step: {st['batch']} x {st['seq_len']} tokens on {st['device']} in {st['precision']} "
        f"({st['precision_reason']}); memory {fit_to} ({mach['source']})"
    )
    title = "estimated peak memory per method (GiB; green fits, red does not)"
    table = console.table(title, *((c, "left" if c == "method" else "right") for c in COLUMNS))
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
    console.show(table)
    runtime = p.estimates[0].runtime if p.estimates else 0
    line(
        f"activations: without / with gradient checkpointing; fits: peak + {_gib(runtime)} GiB runtime "
        f"({'CUDA context' if st['device'] == 'cuda' else 'Python with torch'}) within the memory; "
        "formulas: docs/plan.md"
    )
    for a in p.advice:
        (console.note if a["level"] == "warn" else line)(f"{a['level']}: {a['message']}")
    r = p.recommendation or {}
    if r:
        line(f"recommended: {r['method'] or 'none'}: {r['reason']}")
