"""Cleaning: rules, PII handling, profiles and the `wb clean` pipeline."""

from workbench.clean.pipeline import CleanResult, clean_frame, run
from workbench.clean.profile import Profile, load

__all__ = ["CleanResult", "Profile", "clean_frame", "load", "run"]
