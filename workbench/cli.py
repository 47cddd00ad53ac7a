"""The `wb` app: wires the commands of `workbench.commands` (one module each) into one command line. Nothing else
lives here: a command parses, calls one library function and prints through `workbench.console`.

Exit codes: 0 success, 1 a check failed (gate), 2 bad input or usage (one line on stderr, no traceback).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from workbench import __version__
from workbench.commands import (
    augment,
    clean,
    evaluate,
    export,
    generate,
    models,
    plan,
    report,
    review,
    score,
    stats,
    train,
)
from workbench.console import out, user_errors

app = typer.Typer(
    name="wb",
    help="wb: clean, train, evaluate and gate fine-tuning data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command()(clean.clean)
app.command()(clean.dedup)
app.command()(stats.validate)
app.command()(stats.stats)
app.command()(models.models)
app.command()(plan.plan)
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(train.train)
app.command()(export.export)
app.command()(generate.generate)
app.command()(generate.chat)
app.command("eval")(evaluate.eval_)
app.command()(score.score)
app.command()(augment.augment)
app.command()(report.report)
app.command()(report.gate)
app.command()(review.review)

chat = generate.chat  # tests and callers that drive one command as a function
__all__ = ["app", "chat", "main", "user_errors"]


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


def main() -> None:
    from workbench.output import terminate_like_interrupt
    from workbench.quiet import quiet_libraries
    from workbench.train.memory import bound_kernel_caches, restart_with_malloc_settings

    if sys.argv[1:2] == ["train"]:
        bound_kernel_caches()  # oneDNN keeps kernels for every batch length otherwise (RSS creeps over a run)
        restart_with_malloc_settings()  # glibc's heap keeps a step's freed activations otherwise (1.4x peak RSS)
    terminate_like_interrupt()
    quiet_libraries()  # before any command imports a deep-learning library
    app()


if __name__ == "__main__":
    main()
