"""Option types shared by several commands, so that one option reads and behaves the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

MapOpt = Annotated[
    list[str] | None,
    typer.Option("--map", "-m", help="Map a field to a source column: --map output=response (repeatable)."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or tables; errors only.")]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Print every warning as it came, not each once with its count.")
]
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
DedupPrecisionOpt = Annotated[
    Literal["auto", "bf16", "fp32"] | None,
    typer.Option("--precision", help="Semantic dedup embeddings: auto, bf16 or fp32 (default: the profile's)."),
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
CleanStatsOpt = Annotated[
    Path | None,
    typer.Option("--clean-stats", help="Cleaning stats file, if not beside the data the train manifest names."),
]
MaxNewTokensOpt = Annotated[int, typer.Option("--max-new-tokens", help="Stop after this many new tokens.")]
AdapterOpt = Annotated[
    list[Path] | None, typer.Option("--adapter", help="Another adapter over the same base (repeatable); switchable.")
]


def fields(model: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """(defaults, help texts) of a config model's fields: a command-line option and its config field are one setting."""
    found = model.model_fields
    return (
        {n: f.get_default(call_default_factory=True) for n, f in found.items()},
        {n: f.description or "" for n, f in found.items()},
    )
