"""Model folders on disk: where wb's cache, its converted models and the Hugging Face cache live (`cache_dir`,
`models_dir`, `hf_cache_dir`), finding a hub model's snapshot already in that cache (`hf_snapshot`, offline), and
putting a finished model folder in place atomically (`temp_dir_beside`, `publish_folder`, `remove_stale_temps`), as the
embedded model's conversion, `tiny_model_dir` and `wb export` do. Light: no torch, no transformers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from workbench.errors import WbError
from workbench.output import follow_umask
from workbench.quiet import offline

StatusFn = Callable[[str], None]
# A temp folder of a conversion killed this long ago (no Ctrl-C cleanup, e.g. SIGKILL) is removed.
STALE_TEMP_SECONDS = 3600


def cache_dir() -> Path:
    """wb's cache folder: `$WB_CACHE`, else `~/.cache/wb`. Converted models live in `<cache>/models/`."""
    env = os.environ.get("WB_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "wb"


def models_dir() -> Path:
    """`<cache>/models/`: the converted embedded model and any model a user puts there."""
    return cache_dir() / "models"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (as huggingface_hub does at import time)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    home = os.environ.get("HF_HOME") or os.path.join(xdg, "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def hf_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of a hub model (the `main` ref, else the newest snapshot), or None. Offline."""
    offline()
    from huggingface_hub import errors, snapshot_download

    try:
        return Path(snapshot_download(repo_id, cache_dir=hf_cache_dir(), local_files_only=True))
    except (errors.LocalEntryNotFoundError, errors.HFValidationError) as e:
        if type(e).__name__ == "IncompleteSnapshotError":  # newer huggingface_hub releases check the cached file list
            raise WbError(
                f"model '{repo_id}': its snapshot in the Hugging Face cache is incomplete (an interrupted download?); "
                f"finish the download where there is a network (hf download {repo_id})"
            ) from None
    snapshots = hf_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    found = sorted((p for p in snapshots.glob("*") if (p / "config.json").is_file()), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


@contextlib.contextmanager
def temp_dir_beside(target: Path) -> Iterator[Path]:
    """A fresh hidden temp folder next to `target`, removed afterwards whatever happens (unless renamed away)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def publish_folder(tmp: Path, target: Path) -> None:
    """Rename a finished folder into place; if another process got there first, keep theirs (ours is discarded).
    The folder and its files get the umask's modes (mkdtemp and safetensors make them private)."""
    mask = os.umask(0)
    os.umask(mask)
    tmp.chmod(0o777 & ~mask)
    follow_umask(tmp)
    try:
        os.rename(tmp, target)
    except OSError:
        if not target.is_dir():
            raise


def remove_stale_temps(target: Path) -> None:
    """Remove temp folders that killed conversions left behind (older than STALE_TEMP_SECONDS)."""
    now = time.time()
    for tmp in target.parent.glob(f".{target.name}.*.tmp"):
        with contextlib.suppress(OSError):
            if tmp.is_dir() and now - tmp.stat().st_mtime > STALE_TEMP_SECONDS:
                shutil.rmtree(tmp, ignore_errors=True)
