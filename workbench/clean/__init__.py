"""Cleaning: rules, PII handling, profiles and the `wb clean` pipeline (SFT records and preference data)."""

from pathlib import Path
from typing import Literal

from workbench.clean.pipeline import CleanResult, clean_frame, run
from workbench.clean.preference import resolve_kind as _resolve_kind
from workbench.clean.profile import Profile, load


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


__all__ = ["CleanResult", "Profile", "clean_frame", "default_profile", "load", "resolve_kind", "run"]
