"""The one way wb writes results: checked targets, a lock, a staging folder, publication as a set.

Every file a command writes goes through `OutputSet` (`atomic_write` is a set of one file):

- Targets are checked before anything is written: an existing directory or non-regular file (a device node, a
  FIFO, a socket) is refused with one line, as is a parent that is a file or a folder that cannot be written.
  Missing parent folders are created.
- A lock file `.<first target>.wb-lock` beside the first target keeps two runs from writing the same output;
  `locked_folder` holds `<folder>/.wb-lock` for a whole folder (a run folder while `wb train` or `wb eval` writes
  into it). The lock is an flock, which the OS drops when its holder dies, so a killed run never blocks the next.
- All files of the result are written into one staging folder `.<first target>.wb-stage/` beside the targets.
  Holding the lock, a run knows that a staging folder or temporary file of that name is left over from a run
  that was killed, and removes it before it starts; staging folders of the older scheme (`.wb-stage-XXXXXXXX`,
  unlocked) go once untouched for an hour.
- `publish` first removes the set's old manifest, renames the files into place, then writes the manifest
  (names, sizes and SHA-256 of every file) last. A kill between two renames therefore leaves no manifest, or
  one whose hashes do not match: `check_complete` tells a complete set from a torn one.
- SIGTERM is turned into KeyboardInterrupt (`terminate_like_interrupt`), so `kill` cleans up as Ctrl-C does.
- A write that finds no room (disk full, quota, `ulimit -f`: `no_room`) removes the staged set like any error and
  becomes one line naming the output (a WbError); the CLI turns the same errors from other writes into one line too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

import orjson

from workbench.errors import WbError

LOCK_SUFFIX = ".wb-lock"
STAGE_SUFFIX = ".wb-stage"
# wb before the output sets staged `wb clean` in `tempfile.TemporaryDirectory(prefix=".wb-stage-")` folders, which
# a kill left behind. Nothing locks them, so one is removed only when untouched for this long (a run of an old wb
# still writing into its folder touches it).
OLD_STAGE_GLOB = ".wb-stage-*"
OLD_STAGE_STALE_SECONDS = 3600


class IncompleteOutput(WbError):
    """A set of output files whose manifest is missing or does not match the files (a torn or foreign set)."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or another signal) delivered while wb was working; handled like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_received: list[int] = []  # the signals `_raise_interrupted` turned into `Interrupted` in this process


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise Interrupted(signum)


def terminate_like_interrupt() -> None:
    """Make SIGTERM raise `Interrupted` (a KeyboardInterrupt), so staged output is removed as on Ctrl-C."""
    signal.signal(signal.SIGTERM, _raise_interrupted)


def terminated_by() -> int | None:
    """The signal that interrupted this process (`terminate_like_interrupt`), if one did. `Interrupted` is raised
    wherever the main thread is when the signal lands; inside a library's call it may come out as that library's
    own error (a wrapped or chained exception), so what ends the run is still the signal."""
    return _received[0] if _received else None


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def check_target(path: Path) -> None:
    """Refuse a target that wb must not replace: a directory or anything that is not a regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        return  # a parent is a file: reported when the folder is made
    except OSError as err:
        raise WbError(f"{path}: cannot write ({err.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise WbError(f"{path}: is a directory; give a file name (e.g. {Path(path) / 'out.jsonl'})")
    if not stat.S_ISREG(st.st_mode):
        raise WbError(f"{path}: exists and is {_kind(st.st_mode)}; wb writes only regular files, choose another name")


def ensure_dir(folder: Path) -> Path:
    """Create `folder` (and its parents) for output; one line when that is impossible."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise WbError(f"{folder}: is a file, not a folder; choose another output location") from None
    except NotADirectoryError:
        blocker = next((p for p in folder.parents if p.exists() and not p.is_dir()), folder)
        raise WbError(f"{folder}: cannot create the folder: {blocker} is a file") from None
    except OSError as err:
        raise WbError(f"{folder}: cannot create the folder ({err.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise WbError(f"{folder}: cannot write in this folder (permission denied)")
    return folder


def sha256_file(path: Path) -> str:
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_entry(path: Path, name: Path | None = None) -> dict[str, Any]:
    """{"path", "bytes", "sha256"} of the file at `path`, recorded under the name `name` (default: `path`)."""
    return {"path": str(name or path), "bytes": os.stat(path).st_size, "sha256": sha256_file(path)}


# A write that found no room: the disk is full, a quota is spent, or a file passed the size limit (`ulimit -f`).
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_OS_ERROR_CODE = re.compile(r"\(os error (\d+)\)")


def no_room(err: BaseException | None) -> str | None:
    """Why a write failed, when it failed for want of room (`_NO_ROOM`); None for any other error. Rust-backed
    libraries (polars) raise a bare OSError whose message ends in "(os error 28)" instead of setting errno."""
    if not isinstance(err, OSError):
        return None
    code = err.errno
    if code is None and (found := _OS_ERROR_CODE.search(str(err))):
        code = int(found.group(1))
    return os.strerror(code) if code in _NO_ROOM else None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def follow_umask(folder: Path) -> None:
    """Give every file under `folder` the mode a file created there gets from the umask (0666 & ~umask), as the
    files of an `OutputSet` get. For folders a library writes: safetensors saves each file through a private
    temporary file (mode 0600) renamed into place, so model and adapter weights would be the one output that the
    group and others cannot read."""
    mode = 0o666 & ~_umask()
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _Lock:
    """An exclusive flock on `.<name>.wb-lock`; the file is removed on release (re-checked on acquire)."""

    def __init__(
        self,
        path: Path,
        target: Path,
        busy: str = "another wb run is writing this output now",
        hint: str = "wait for it or choose another -o",
    ) -> None:
        self.path, self.target, self.busy, self.hint = path, target, busy, hint
        self.fd: int | None = None

    def acquire(self) -> None:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise WbError(f"{self.target}: cannot write in {self.path.parent} ({err.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.EAGAIN, errno.EACCES):
                    raise WbError(f"{self.target}: {self.busy}{self._holder()}; {self.hint}") from None
                raise
            try:  # the holder before us may have removed the file after we opened it: lock the current one
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return
            os.close(fd)

    def _holder(self) -> str:
        """` (pid N)` of the process holding the lock, as it wrote into the file; '' when unreadable."""
        try:
            pid = self.path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return ""
        return f" (pid {pid})" if pid.isdigit() else ""

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = None


class OutputSet:
    """Files of one result, staged together and published together.

    ```
    with OutputSet([out, stats], manifest=manifest_path) as outputs:
        with outputs.open(out) as f: ...
        outputs.publish({"outputs": {"kept": outputs.entry(out), ...}, ...})
    ```
    Leaving the block without `publish` (an error, Ctrl-C, SIGTERM) removes everything staged; the old files
    stay as they were.
    """

    def __init__(self, targets: list[Path], manifest: Path | None = None) -> None:
        if not targets:
            raise ValueError("an output set needs at least one file")
        self.targets = [Path(t) for t in targets]
        self.manifest = Path(manifest) if manifest is not None else None
        members = [*self.targets, *([self.manifest] if self.manifest else [])]
        folders = {p.parent.resolve() if p.parent.exists() else p.parent for p in members}
        if len(folders) != 1:
            raise ValueError(f"the files of an output set must share one folder: {members}")
        if len({p.name for p in members}) != len(members):
            raise ValueError(f"duplicate names in an output set: {members}")
        self.members = members
        self.folder = members[0].parent
        first = members[0].name
        self.stage = self.folder / f".{first}{STAGE_SUFFIX}"
        self._lock = _Lock(self.folder / f".{first}{LOCK_SUFFIX}", members[0])
        self._open: list[IO[bytes]] = []
        self.published = False

    # -- life cycle --------------------------------------------------------------------------------------------

    def __enter__(self) -> OutputSet:
        for p in self.members:
            check_target(p)
        ensure_dir(self.folder)
        self._lock.acquire()
        try:
            self._remove_leftovers()
            self.stage.mkdir()
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            for f in self._open:
                with contextlib.suppress(OSError):
                    f.close()
            shutil.rmtree(self.stage, ignore_errors=True)
        finally:
            self._lock.release()
        reason = no_room(exc)
        if reason is not None and not self.published:  # a full disk is the user's to fix: one line, not a traceback
            before = any(p.exists() for p in self.members)
            kept = "the previous files are unchanged" if before else "nothing was written"
            raise WbError(
                f"{self.members[0]}: cannot write the output ({reason}); {kept}; free some space and run again"
            ) from None

    def _remove_leftovers(self) -> None:
        """Under the lock: what a killed run on these targets left (this scheme's and the older `.NAME.*.tmp`)."""
        shutil.rmtree(self.stage, ignore_errors=True)
        for p in self.members:
            for old in self.folder.glob(f".{glob_escape(p.name)}.*.tmp"):
                with contextlib.suppress(OSError):
                    old.unlink()
        remove_old_stages(self.folder)

    # -- writing -----------------------------------------------------------------------------------------------

    def staged(self, target: Path) -> Path:
        """Where `target` is written before publication."""
        target = Path(target)
        if target not in self.members:
            raise ValueError(f"{target} is not a file of this output set")
        return self.stage / target.name

    def scratch(self, name: str) -> Path:
        """A scratch folder inside the staging folder (removed with it, never published)."""
        path = self.stage / f"scratch-{name}"
        path.mkdir(exist_ok=True)
        return path

    def open(self, target: Path) -> IO[bytes]:
        """A binary file for `target`, written in the staging folder; closed at publish or exit."""
        f = self.staged(target).open("xb")
        self._open.append(f)
        return f

    def write(self, target: Path, data: bytes) -> None:
        with self.staged(target).open("xb") as f:
            f.write(data)

    def entry(self, target: Path) -> dict[str, Any]:
        """Size and SHA-256 of the staged file, recorded under its final path (for a manifest)."""
        for f in self._open:
            if not f.closed and Path(f.name) == self.staged(target):
                f.flush()
        return file_entry(self.staged(target), Path(target))

    # -- publishing --------------------------------------------------------------------------------------------

    def publish(self, manifest: dict[str, Any] | None = None) -> None:
        """Rename every staged file into place; the manifest (required when the set has one) goes last."""
        if (manifest is None) != (self.manifest is None):
            raise ValueError("publish(manifest) must match OutputSet(manifest=...)")
        for f in self._open:
            if not f.closed:
                f.flush()
                os.fsync(f.fileno())
                f.close()
        files = [t for t in self.targets if self.staged(t).exists()]
        missing = [str(t) for t in self.targets if t not in files]
        if missing:
            raise ValueError(f"output set published without {', '.join(missing)}")
        if manifest is not None and self.manifest is not None:
            data = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
            self.write(self.manifest, data)
        mask = _umask()
        for t in self.members:
            src = self.staged(t)
            try:
                mode = os.stat(t).st_mode & 0o7777
            except FileNotFoundError:
                mode = 0o666 & ~mask
            os.chmod(src, mode)
            if t is not self.manifest:
                with src.open("rb") as f:
                    os.fsync(f.fileno())
        if self.manifest is not None:  # from here until the last rename, the set has no valid manifest
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.manifest)
        for t in self.targets:
            os.replace(self.staged(t), t)
        if self.manifest is not None:
            os.replace(self.staged(self.manifest), self.manifest)
        _fsync_dir(self.folder)
        self.published = True


@contextlib.contextmanager
def locked_folder(folder: Path, busy: str, hint: str) -> Iterator[None]:
    """Hold the lock `<folder>/.wb-lock` while writing into `folder`; a second writer is refused with one line
    (`<folder>: <busy> (pid N); <hint>`). Released on exit (the folder and parents made here go with it while empty);
    dropped by the OS if the holder dies."""
    folder = Path(folder)
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # the folder and the parents made for it
    ensure_dir(folder)
    lock = _Lock(folder / LOCK_SUFFIX, folder, busy, hint)
    try:
        lock.acquire()
        yield
    finally:
        lock.release()
        for path in made:  # innermost first, each only if nothing was written into it
            try:
                path.rmdir()
            except OSError:
                break


@contextlib.contextmanager
def locked_run(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock (`<run>/.wb-lock`) while `wb train`, `--resume` or `wb eval` writes into it; a
    second writer is refused with one line. The OS drops the lock of a process that dies."""
    with locked_folder(run_dir, "another wb process is writing this run folder now", "wait for it to finish"):
        yield


def remove_old_stages(folder: Path, now: float | None = None) -> list[Path]:
    """Staging folders of the older scheme (`.wb-stage-XXXXXXXX`) in `folder` untouched for an hour: removed."""
    now = time.time() if now is None else now
    removed = []
    for old in folder.glob(OLD_STAGE_GLOB):
        try:
            info = old.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or now - _newest_mtime(old, info.st_mtime) < OLD_STAGE_STALE_SECONDS:
            continue
        shutil.rmtree(old, ignore_errors=True)
        removed.append(old)
    return removed


def _newest_mtime(folder: Path, own: float) -> float:
    newest = own
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            with contextlib.suppress(OSError):
                newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
    return newest


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[IO[bytes]]:
    """Write one file through an output set of its own: old file or new file at `path`, never half a file."""
    with OutputSet([Path(path)]) as outputs:
        f = outputs.open(Path(path))
        yield f
        outputs.publish()


def check_complete(manifest: Path, key: str = "outputs") -> dict[str, Any]:
    """Check that the files a manifest lists under `key` are the ones it describes; returns the manifest.

    Each entry is {"path", "bytes", "sha256"}; the file is looked up by name beside the manifest (the files of a
    set share its folder), so a set that was moved stays checkable. Raises `IncompleteOutput` (a WbError, one
    line naming the file) when the manifest is missing or unreadable, or a file is missing or differs: a set
    torn by a kill while it was published, or edited since.
    """
    manifest = Path(manifest)
    try:
        doc = orjson.loads(manifest.read_bytes())
    except FileNotFoundError:
        raise IncompleteOutput(
            f"{manifest}: missing; the files beside it are an incomplete set (a run stopped while publishing?); "
            "run the command again"
        ) from None
    except (OSError, orjson.JSONDecodeError) as err:
        raise IncompleteOutput(f"{manifest}: cannot read the manifest ({err})") from None
    entries = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(entries, dict):
        raise IncompleteOutput(f"{manifest}: no {key!r} section naming the files of the set")
    for name, entry in entries.items():
        if not isinstance(entry, dict) or "sha256" not in entry or "path" not in entry:
            continue  # an entry recorded as absent ({"exists": false}) claims nothing
        path = manifest.parent / Path(str(entry["path"])).name
        try:
            size = os.stat(path).st_size
        except OSError:
            raise IncompleteOutput(
                f"{path}: listed in {manifest} ({name}) but missing; run the command again"
            ) from None
        if size != entry.get("bytes", size) or sha256_file(path) != entry["sha256"]:
            raise IncompleteOutput(
                f"{path}: does not match {manifest} ({name}); the set is torn or was edited; run the command again"
            )
    return doc
