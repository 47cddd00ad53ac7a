"""What a training run refuses: resuming a run that is finished, from a checkpoint a kill left incomplete or whose
checkpoint holds pickled weights, and going on after a non-finite loss. (A second process writing into the run
folder is refused by `workbench.output.locked_run`.)

No torch import here: the checks run on the recipe and the run folder, and on plain floats.
"""

from __future__ import annotations

import math
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from workbench.errors import WbError
from workbench.models.weights import check_adapter_weights
from workbench.runfile.folder import RunFolder
from workbench.train.recipe import Recipe

CHECKPOINT = re.compile(r"^checkpoint-[0-9]+$")  # Trainer's checkpoint folders, by step


class NonFiniteLoss(Exception):
    """The loss of a training step is NaN or infinite; raised before the optimiser applies it."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"step {step}: loss {loss}")
        self.step, self.loss = step, loss


def _whole_safetensors(path: Path) -> bool:
    """Whether a safetensors file holds every byte its header promises (a kill mid-write leaves it short)."""
    try:
        with path.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = orjson.loads(f.read(size))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        return bool(path.stat().st_size == 8 + size + end)
    except (OSError, orjson.JSONDecodeError, AttributeError, KeyError, IndexError, TypeError, ValueError):
        return False


def checkpoint_problem(folder: Path) -> str | None:
    """Why a checkpoint cannot be resumed from, or None when it is complete. wb publishes a checkpoint only once it
    is whole (hf.StagedCheckpoints); an older wb killed while saving left one without trainer_state.json (written
    last) or with a truncated file (torch's files are zip archives: a cut one has no central directory)."""
    try:
        orjson.loads((folder / "trainer_state.json").read_bytes())
    except FileNotFoundError:
        return "no trainer_state.json"
    except (OSError, orjson.JSONDecodeError):
        return "trainer_state.json is truncated"
    for path in sorted(folder.iterdir()):
        cut = (path.suffix in (".pt", ".pth") and not zipfile.is_zipfile(path)) or (
            path.suffix == ".safetensors" and not _whole_safetensors(path)
        )
        if cut:
            return f"{path.name} is truncated"
    return None


def last_checkpoint(run_dir: Path, on_skip: Callable[[str], None] | None = None) -> Path | None:
    """The newest complete checkpoint of the run; each newer incomplete one is passed over (`on_skip` says why)."""
    found = [p for p in (run_dir / "checkpoints").glob("checkpoint-*") if CHECKPOINT.match(p.name) and p.is_dir()]
    for ckpt in sorted(found, key=lambda p: int(p.name.split("-")[1]), reverse=True):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            return ckpt
        if on_skip is not None:
            on_skip(f"skipping {ckpt}: incomplete ({problem}; the run was stopped while saving it)")
    return None


def _finished_step(run_dir: Path) -> int | None:
    """The step a finished run ended at (its manifest exists), or None for a run that did not finish."""
    folder = RunFolder(run_dir)
    manifest = folder.manifest()
    if manifest is None:
        return None
    step = manifest.get("global_step")
    if not isinstance(step, int) or isinstance(step, bool):
        raise WbError(f"{folder.manifest_path}: global_step: missing or not an integer")
    return step


def check_resume(recipe: Recipe, on_status: Callable[[str], None] | None = None) -> Path:
    """The last complete checkpoint to resume `recipe.run_dir` from (`on_status` hears which, and each incomplete
    one passed over); refuses (WbError) a run without one, one whose weights are pickles, and a finished run unless
    `max_steps` (past the step it ended at) or `epochs` were raised."""
    run_dir = recipe.run_dir
    skipped: list[str] = []
    checkpoint = last_checkpoint(run_dir, skipped.append)
    say = on_status or (lambda line: None)
    for line in skipped:
        say(line)
    if checkpoint is None:
        raise WbError(f"{run_dir}: no {'complete ' if skipped else ''}checkpoint to resume from")
    check_adapter_weights(checkpoint, "checkpoint")
    step = _finished_step(run_dir)
    if step is not None:
        saved = RunFolder(run_dir).recipe()
        more_steps = recipe.max_steps is not None and recipe.max_steps > step
        more_epochs = recipe.max_steps is None and recipe.epochs > float(saved.get("epochs") or 0)
        if not (more_steps or more_epochs):
            raise WbError(
                f"{run_dir}: the run is finished (step {step}); to train further raise max_steps or epochs, "
                f"e.g. wb train --resume {run_dir} max_steps={step * 2}"
            )
    say(f"resuming from {checkpoint}")
    return checkpoint


def non_finite_message(run_dir: Path, err: NonFiniteLoss) -> str:
    """One line for a run stopped by a non-finite loss, naming the step and the checkpoint that is still good."""
    good = last_checkpoint(run_dir)
    kept = (
        f"the last good checkpoint is {good} (resume: wb train --resume {run_dir} lr=...)"
        if good is not None
        else "no checkpoint was saved before it"
    )
    return f"{run_dir}: training loss is {err.loss} at step {err.step}; stopped, {kept}; lower lr or check the data"


def finite_row(row: dict[str, Any]) -> dict[str, Any]:
    """A log row with NaN/inf values replaced by null and named under `non_finite`, so the log stays JSON."""
    bad = sorted(k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v))
    if not bad:
        return row
    return {**{k: None if k in bad else v for k, v in row.items()}, "non_finite": bad}
