"""Cleaning: rules, PII handling, profiles and the `wb clean` pipeline (SFT records and preference data)."""

from pathlib import Path
from typing import Any, Literal

from workbench.clean.pipeline import CleanResult, clean_frame, run
from workbench.clean.preference import resolve_kind as _resolve_kind
from workbench.clean.profile import Profile, load
from workbench.errors import WbError


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
    from workbench.io import default_output

    if ray_address is not None and engine != "ray":
        raise WbError("--ray-address needs --engine ray")
    target = output if output is not None else default_output(input_path, command)
    if engine == "ray":
        from workbench.clean import ray_engine

        return ray_engine.run(input_path, target, profile, command=command, address=ray_address, **options)
    return run(input_path, target, profile, command=command, **options)


__all__ = ["CleanResult", "Profile", "clean_frame", "default_profile", "load", "resolve_kind", "run", "run_file"]
