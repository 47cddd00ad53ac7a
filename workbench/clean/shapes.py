"""Which record shape of the cleaning driver a file is cleaned as: SFT records (`clean.sft`) or preference pairs
and KTO examples (`clean.preference`). Both engines (`clean.driver`, `clean.ray_engine`) start here."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from workbench.clean.driver import Shape
from workbench.clean.preference import PreferenceShape
from workbench.clean.profile import Profile
from workbench.clean.sft import SftShape
from workbench.errors import WbError
from workbench.preference_files import sniff_kind


def shape_for(
    input_path: Path,
    profile: Profile,
    overrides: dict[str, str] | None = None,
    kind: Literal["auto", "sft", "preference"] = "auto",
    scores: Path | None = None,
    extra_fields: bool = True,
) -> Shape:
    """The record shape `input_path` is cleaned as. `kind`: `preference` (pairs / KTO examples), `sft`
    (instruction records); `auto` tells them apart by the first record (`--map` means SFT: it maps SFT fields)."""
    if kind != "sft" and (kind == "preference" or (not overrides and sniff_kind(Path(input_path)) is not None)):
        if overrides:
            raise WbError("--map maps SFT fields; preference records are recognised by their own keys")
        if scores is not None:
            raise WbError("--scores: score rules apply to SFT records; this file holds preference records")
        return PreferenceShape(profile, extra_fields)
    return SftShape(profile, overrides, scores, extra_fields)
