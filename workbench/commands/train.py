"""`wb train`: a recipe (file, overrides, options) to a run folder, with a line per logged step; `--inspect` shows
the first examples as the trainer sees them instead."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from workbench import console
from workbench.commands.options import QuietOpt, SplitOpt, VerboseOpt
from workbench.console import line
from workbench.runfile.training import shown_log_keys


@console.user_errors
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
    verbose: VerboseOpt = False,
) -> None:
    """Fine-tune a model (LoRA, QLoRA, DoRA, IA3, adapters, prompt/prefix/P-tuning, freeze, full, GaLore)."""
    from workbench.train import distributed
    from workbench.train.recipe import from_arguments

    rec = from_arguments(list(args or []), data=data, model=model, name=name, split=split, resume=resume)
    quiet = quiet or not distributed.is_main()  # under torchrun / accelerate launch, rank 0 speaks for all
    say = console.say(quiet)
    if inspect is not None:
        _inspect(rec, inspect, say, verbose)
        return
    from workbench.train.trainer import train as run_training

    def show(row: dict[str, Any]) -> None:
        if quiet or ("loss" not in row and "eval_loss" not in row):
            return
        parts = [f"step {row['step']}"]
        parts += [f"{label} {row[key]:.4g}" for key, label in shown_log_keys() if isinstance(row.get(key), int | float)]
        if "tokens_per_second" in row:
            parts.append(f"{row['tokens_per_second']:,.0f} tok/s")
        line("  ".join(parts))

    sources = ", ".join(s.label for s in rec.data) if isinstance(rec.data, list) else str(rec.data)
    say(f"training {rec.run_dir} ({rec.method} on {rec.model}, data {sources}{', replay' if rec.replay else ''})")
    with console.heartbeat("train", quiet):
        result = run_training(rec, resume=resume is not None, on_log=show, on_status=say)
    if not distributed.is_main():
        return
    console.warnings(result.warnings, verbose)
    m = result.manifest
    line(
        f"done: {m['global_step']} steps, train loss {m['train_loss']:.4f}"
        + (f", best eval loss {m['best_eval_loss']:.4f}" if m.get("best_eval_loss") is not None else "")
        + f", {m.get('tokens_per_second') or 0:,.0f} tokens/s, {m['trainable_parameters']:,} trainable parameters, "
        f"peak RSS {m['peak_rss_mb']:,.0f} MB; wrote {result.run_dir}"
    )
    losses = m.get("eval_losses") or {}
    for source, s in (m.get("sources") or {}).items():
        line(
            f"  source {source}: {s['per_epoch']:,} examples/epoch ({100 * s['share']:.1f}%, "
            f"{s['distinct_per_epoch']:,} distinct of {s['train_records']:,}), {s['seen']:,} seen"
            + (f", eval loss {losses[source]:.4f}" if source in losses else "")
        )


def _inspect(rec: Any, n: int, say: Any, verbose: bool) -> None:
    from workbench.train.inspection import inspect

    found = inspect(rec, n, say)
    legend = found.legend if console.out.is_terminal else console.PLAIN_LEGEND
    line(f"template: {found.template}; {legend}")
    for ex in found.examples:
        console.rule(ex.title)
        for block in ex.blocks:
            console.spans(block)
    console.warnings(found.warnings, verbose)
