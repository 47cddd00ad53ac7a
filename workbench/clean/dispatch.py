"""Which record shape a file holds (SFT records or preference pairs and KTO examples: `shapes.shape_for`),
which engine drives it (this process: `driver`; Ray: `ray_engine`), and the output name when none is given.
`wb clean`, `wb dedup`, `wb stats` and the Python API start here; the package's `__init__` imports nothing, so
importing a cleaning module never runs the others first."""

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from workbench.clean import driver
from workbench.clean.output import CleanResult
from workbench.clean.preference import resolve_kind as _resolve_kind
from workbench.clean.profile import Profile, load
from workbench.clean.shapes import shape_for
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
    """Clean `input_path` into `output` under `profile` on this process (`driver.run`).

    `overrides`: `--map` field names; `against`: evaluation files whose passages must not appear in the training
    data (decontamination); `input_path` may be `-` (standard input) or a pipe/FIFO, read once as a stream;
    `duplicate_keys`: reject an object naming a key twice (`duplicate_key`), or keep the `last` value; `kind`: as
    `shape_for`; `scores`: a score file for the score rules (`wb score` output or a run's sample_losses.jsonl),
    without which they read the input's own `scores` objects; `extra_fields`: keep each record's fields wb does not
    use (`id`, `source`, `meta`, ...) in the kept and dropped files, after wb's own (`records.EXTRA`)."""
    shape = shape_for(input_path, profile, overrides, kind, scores, extra_fields)
    return driver.run(
        shape, input_path, output, profile, batch_size, on_batch, on_phase, against, command, duplicate_keys, split
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
