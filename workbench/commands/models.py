"""`wb models`: the base models usable without a network, as a table or JSON."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from workbench import console


@console.user_errors
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """Base models usable without a network: the embedded SmolLM2-135M-Instruct, wb's cache, the Hugging Face cache."""
    from workbench.io.jsontext import dumps_json
    from workbench.models.folders import cache_dir
    from workbench.models.listing import list_models

    rows = list_models()
    if as_json:
        sys.stdout.write(dumps_json(rows).decode())
        return
    table = console.table(f"models (wb cache: {cache_dir()})", "name", "where", ("size", "right"), "status")
    for row in rows:
        n = row["size_bytes"]
        size = "-" if n is None else f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n / 2**10:,.0f} KiB"
        where = Text(row["where"])
        if row["path"]:
            where.append("\n" + row["path"].replace(str(Path.home()), "~", 1), style="dim")
        table.add_row(Text(row["name"]), where, size, Text(row["status"]))
    console.show(table)
    console.line("use a name as the recipe's `model:`; wb never downloads a model")
