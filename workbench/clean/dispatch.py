"""Which cleaner runs a file: SFT records (`pipeline`) or preference pairs and KTO examples (`preference`), on the
local engine or on Ray (`ray_engine`), and the output name when none is given. `wb clean`, `wb dedup`, `wb stats` and
the Python API start here; the package's `__init__` imports nothing, so importing a cleaning module never runs the
others first."""

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from workbench.clean import pipeline, preference
from workbench.clean.pipeline import CleanResult
from workbench.clean.preference import resolve_kind as _resolve_kind
from workbench.clean.profile import Profile, load
from workbench.errors import WbError
from workbench.io.options import DuplicateKeys


def run(
    input_path: Path,
    output: Path,
    profile: Profile,
    overrides: dict[str, str] | None = None,
    batch_size: int = 25_000,
    on_batch: Callable[[int, int], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
    against: list[Path] | None = None,
    command: str = "clean",
    duplicate_keys: DuplicateKeys = "reject",
    split: str | None = None,
    kind: Literal["auto", "sft", "preference"] = "auto",
    scores: Path | None = None,
    extra_fields: bool = True,
) -> CleanResult:
    """Clean `input_path` into `output` under `profile` (`workbench.clean.pipeline.run` has every argument).

    `kind`: `preference` cleans pairs / KTO examples (`workbench.clean.preference`), `sft` instruction records;
    `auto` tells them apart by the first record (`--map` means SFT: it maps SFT fields)."""
    if kind != "sft" and (
        kind == "preference" or (not overrides and preference.sniff_kind(Path(input_path)) is not None)
    ):
        if overrides:
            raise WbError("--map maps SFT fields; preference records are recognised by their own keys")
        if scores is not None:
            raise WbError("--scores: score rules apply to SFT records; this file holds preference records")
        return preference.run(
            input_path,
            output,
            profile,
            batch_size,
            on_batch,
            on_phase,
            against,
            command,
            duplicate_keys,
            split,
            extra_fields,
        )
    return pipeline.run(
        input_path,
        output,
        profile,
        overrides=overrides,
        batch_size=batch_size,
        on_batch=on_batch,
        on_phase=on_phase,
        against=against,
        command=command,
        duplicate_keys=duplicate_keys,
        split=split,
        scores=scores,
        extra_fields=extra_fields,
    )


def resolve_kind(path: Path, kind: str = "auto", mapped: bool = False) -> Literal["sft", "preference"]:
    """What `wb clean PATH` cleans: `--kind` if given; with `--map` SFT records; else told by the first record."""
    if kind == "sft" or (kind == "auto" and mapped):
        return "sft"
    if kind == "preference":
        return "preference"
    return _resolve_kind(Path(path))


def default_profile(kind: str) -> str:
    """The built-in profile `wb clean` uses when none is given."""
    return "preference" if kind == "preference" else "default"


def profile_for(name: str | None, kind: str, command: str, precision: str | None) -> Profile:
    """The profile a `wb clean` / `wb dedup` run uses: `name` (a built-in or a YAML file; default: the built-in one
    for `kind`), only its dedup stages for dedup, semantic embeddings in `precision`."""
    chosen = load(name or default_profile(kind))
    return (chosen.dedup_only() if command == "dedup" else chosen).with_semantic_precision(precision)


def run_file(
    input_path: Path,
    output: Path | None,
    profile: Profile,
    *,
    command: str = "clean",
    engine: str = "local",
    ray_address: str | None = None,
    **options: Any,
) -> CleanResult:
    """`wb clean` / `wb dedup` on one input: `output` defaults to `./<name>.<command>.jsonl`; `engine` is local (this
    process) or ray (`ray_address`: the cluster, default a local one); `options` as `run` takes them."""
    from workbench.io.options import default_output

    if ray_address is not None and engine != "ray":
        raise WbError("--ray-address needs --engine ray")
    target = output if output is not None else default_output(input_path, command)
    if engine == "ray":
        from workbench.clean import ray_engine

        return ray_engine.run(input_path, target, profile, command=command, address=ray_address, **options)
    return run(input_path, target, profile, command=command, **options)
