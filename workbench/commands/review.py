"""`wb review`: a local web app to browse, filter and judge blind a run's answers (workbench/review/)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workbench import console
from workbench.console import line


@console.user_errors
def review(
    runs: Annotated[
        list[Path],
        typer.Argument(help="Run folder (runs/NAME) whose answers are judged; more runs add their answers as columns."),
    ],
    predictions: Annotated[
        Path | None,
        typer.Option("--predictions", help="A predictions file (set, id, prediction) shown as a further column."),
    ] = None,
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free port).", min=0, max=65535)] = 0,
    host: Annotated[
        str | None,
        typer.Option("--host", help="Address to listen on (default 127.0.0.1, this machine only)."),
    ] = None,
    reviewer: Annotated[
        str | None, typer.Option("--reviewer", help="Whose verdicts these are (default: your login name).")
    ] = None,
) -> None:
    """Read, filter and judge every answer in a browser, blind; verdicts go into the run's eval folder."""
    from workbench.review.serve import prepare

    server = prepare(runs, predictions, reviewer, host, port)
    data = server.session.data
    for m in data.matches:
        line(m)
    if server.warning:
        console.note(f"warning: {server.warning}")
    elif host is None:
        line(f"listening on {server.host} only (this machine); --host to change")
    line(
        f"wb review: {len(data.items):,} items of {data.run}, reviewer {server.session.reviewer}, "
        f"verdicts into {data.folder.review_path}"
    )
    line(f"open {server.url}")
    line("Ctrl-C stops the server")
    server.run()
    line("stopped")
