"""The one output-writing path: targets that are refused, the lock, leftovers of killed runs, sets published whole."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import DEMO_DATA, read_jsonl, write_jsonl

from workbench.clean.dispatch import run
from workbench.clean.profile import load
from workbench.errors import WbError
from workbench.output import IncompleteOutput, OutputSet, check_complete, remove_old_stages, sha256_file

GOOD = [
    {"instruction": "把下面的句子翻译成英文。", "input": "我爱机器学习。", "output": "I love machine learning."},
    {"instruction": "What is 2+2?", "input": "", "output": "4"},
    {"instruction": "Name a prime number.", "input": "", "output": "7 is a prime number."},
]
SIDECARS = ("clean.dropped.jsonl", "clean.rejects.jsonl", "clean.stats.json", "clean.manifest.json")


def raw(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "raw.jsonl", GOOD)


def one_error_line(result: Any) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# -- targets that must not be replaced -----------------------------------------------------------------------------


def test_a_device_node_given_as_output_is_refused_and_left_a_device(tmp_path: Path, wb: Any) -> None:
    dev = tmp_path / "null"
    os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
    line = one_error_line(wb("clean", raw(tmp_path), "-o", dev))
    assert str(dev) in line and "character device" in line
    assert stat.S_ISCHR(os.stat(dev).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null", "raw.jsonl"]  # no sidecars beside it


def test_a_fifo_given_as_a_sidecar_is_refused_before_anything_is_written(tmp_path: Path, wb: Any) -> None:
    os.mkfifo(tmp_path / "clean.stats.json")
    line = one_error_line(wb("clean", raw(tmp_path), "-o", tmp_path / "clean.jsonl"))
    assert "clean.stats.json" in line and "FIFO" in line
    assert not (tmp_path / "clean.jsonl").exists()


def test_an_existing_directory_as_output_is_refused_and_nothing_is_written_into_it(tmp_path: Path, wb: Any) -> None:
    folder = tmp_path / "outdir"
    folder.mkdir()
    line = one_error_line(wb("clean", raw(tmp_path), "-o", folder))
    assert "is a directory" in line
    assert list(folder.iterdir()) == [] and not list(tmp_path.glob("outdir.*"))


def test_output_under_a_regular_file_is_one_line(tmp_path: Path, wb: Any) -> None:
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    line = one_error_line(wb("clean", raw(tmp_path), "-o", tmp_path / "notes.txt" / "clean.jsonl"))
    assert "notes.txt: is a file, not a folder" in line


def test_output_in_a_folder_that_cannot_be_written_is_one_line(tmp_path: Path, wb: Any) -> None:
    # root may write anywhere on a normal file system; /proc refuses new files even to root
    line = one_error_line(wb("clean", raw(tmp_path), "-o", "/proc/wb-test/clean.jsonl"))
    assert "/proc/wb-test" in line


def test_missing_parent_folders_are_created(tmp_path: Path, wb: Any) -> None:
    out = tmp_path / "a" / "b" / "clean.jsonl"
    assert wb("clean", raw(tmp_path), "-o", out, "-q").exit_code == 0
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(["clean.jsonl", *SIDECARS])


def test_junit_into_an_existing_directory_is_refused(tmp_path: Path) -> None:
    from workbench.report.junit import write

    with pytest.raises(WbError, match="is a directory"):
        write(tmp_path, None)  # type: ignore[arg-type]  # refused before the result is read


def test_eval_predictions_with_a_file_as_output_folder_is_one_line(tmp_path: Path, wb: Any) -> None:
    preds = write_jsonl(tmp_path / "preds.jsonl", [{"prediction": "Paris", "reference": "Paris"}])
    (tmp_path / "taken").write_text("x\n")
    line = one_error_line(wb("eval", "--predictions", preds, "-o", tmp_path / "taken"))
    assert "taken: is a file, not a folder" in line


# -- the lock and leftovers ----------------------------------------------------------------------------------------


def test_a_second_writer_of_the_same_output_is_refused_while_the_first_holds_it(tmp_path: Path) -> None:
    out = tmp_path / "clean.jsonl"
    with OutputSet([out]) as first:
        first.write(out, b"first\n")
        with pytest.raises(WbError, match="another wb run is writing"):
            run(raw(tmp_path), out, load("default"))
        first.publish()
    assert out.read_bytes() == b"first\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.jsonl", "raw.jsonl"]  # lock file gone


def test_a_later_run_removes_what_a_killed_run_left(tmp_path: Path) -> None:
    out = tmp_path / "clean.jsonl"
    stage = tmp_path / ".clean.jsonl.wb-stage"
    (stage / "scratch-kept").mkdir(parents=True)
    (stage / "scratch-kept" / "000000.arrow").write_bytes(b"\0" * 4096)
    (stage / "clean.jsonl").write_bytes(b'{"half": ')
    (tmp_path / ".clean.jsonl.wb-lock").write_text("12345\n")  # its holder is dead: the flock is free
    (tmp_path / ".clean.stats.json.k2j3h4.tmp").write_bytes(b"{")  # the older temporary-file scheme
    result = run(raw(tmp_path), out, load("default"))
    assert result.stats.kept == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["raw.jsonl", "clean.jsonl", *SIDECARS])


def test_stage_folders_of_the_older_scheme_are_removed_once_stale(tmp_path: Path) -> None:
    stale, fresh = tmp_path / ".wb-stage-k2j3h4x9", tmp_path / ".wb-stage-a8b7c6d5"
    for folder in (stale, fresh):
        (folder / "kept").mkdir(parents=True)
        (folder / "kept" / "000000.arrow").write_bytes(b"\0" * 4096)
    hour_ago = time.time() - 2 * 3600
    for p in (stale / "kept" / "000000.arrow", stale / "kept", stale):
        os.utime(p, (hour_ago, hour_ago))
    run(raw(tmp_path), tmp_path / "clean.jsonl", load("default"))
    assert not stale.exists()  # left by a killed run of an older wb, untouched for two hours
    assert (fresh / "kept" / "000000.arrow").exists()  # perhaps an older wb still writing: kept


def test_an_old_stage_folder_with_a_recent_file_inside_is_kept(tmp_path: Path) -> None:
    folder = tmp_path / ".wb-stage-q1w2e3r4"
    folder.mkdir()
    hour_ago = time.time() - 2 * 3600
    os.utime(folder, (hour_ago, hour_ago))
    (folder / "part.arrow").write_bytes(b"x")  # written just now
    os.utime(folder, (hour_ago, hour_ago))
    assert remove_old_stages(tmp_path) == []
    assert folder.exists()


# -- sets published whole ------------------------------------------------------------------------------------------


def test_clean_outputs_are_a_complete_set_named_by_their_manifest(tmp_path: Path) -> None:
    out = tmp_path / "clean.jsonl"
    run(raw(tmp_path), out, load("default"))
    manifest = check_complete(tmp_path / "clean.manifest.json")
    assert set(manifest["outputs"]) == {"kept", "dropped", "rejects", "stats"}
    assert manifest["outputs"]["kept"]["sha256"] == sha256_file(out)
    (tmp_path / "clean.stats.json").write_text('{"kept": 999}\n')
    with pytest.raises(IncompleteOutput, match=r"clean\.stats\.json: does not match"):
        check_complete(tmp_path / "clean.manifest.json")


def test_a_kill_between_two_renames_leaves_a_set_recognised_as_torn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "clean.jsonl"
    run(raw(tmp_path), out, load("default"))
    old_stats = (tmp_path / "clean.stats.json").read_bytes()
    real_replace, calls = os.replace, []

    def replace_then_die(src: Any, dst: Any) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the kill arrives after the first file was renamed into place
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(write_jsonl(tmp_path / "raw2.jsonl", GOOD[:1]), out, load("default"))
    monkeypatch.undo()
    assert len(read_jsonl(out)) == 1 and (tmp_path / "clean.stats.json").read_bytes() == old_stats
    with pytest.raises(IncompleteOutput, match=r"clean\.manifest\.json: missing"):
        check_complete(tmp_path / "clean.manifest.json")
    assert not list(tmp_path.glob(".clean.jsonl.wb-*"))


def test_a_failing_write_keeps_the_previous_set_whole(tmp_path: Path) -> None:
    out = tmp_path / "clean.jsonl"
    run(raw(tmp_path), out, load("default"))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(WbError):
        run(tmp_path / "missing.jsonl", out, load("default"))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    check_complete(tmp_path / "clean.manifest.json")


def _no_room(limit: int) -> None:
    """In the child, before wb starts: files may grow to `limit` bytes (`ulimit -f`); a longer write fails with
    EFBIG instead of killing the process by SIGXFSZ, as it does on a full disk with ENOSPC."""
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_a_full_disk_is_one_line_and_keeps_the_previous_set(tmp_path: Path) -> None:
    out = tmp_path / "out" / "clean.jsonl"
    run(raw(tmp_path), out, load("default"))
    before = {p.name: p.read_bytes() for p in out.parent.iterdir()}
    src = tmp_path / "more.jsonl"
    src.write_bytes(DEMO_DATA.read_bytes() * 10)  # 490 KB of records (Chinese, emoji, duplicates): more than fits
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "clean", str(src), "-o", str(out)],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        preexec_fn=lambda: _no_room(100_000),
    )
    assert proc.returncode == 2, proc.stderr.decode()
    assert proc.stderr.decode().splitlines() == [
        f"error: {out}: cannot write the output (File too large); the previous files are unchanged; "
        "free some space and run again"
    ]
    assert {p.name: p.read_bytes() for p in out.parent.iterdir()} == before  # no stage, no lock left either
    check_complete(out.parent / "clean.manifest.json")


@pytest.mark.parametrize(
    "error",
    [
        OSError(28, "No space left on device"),  # Python's own writes set errno
        OSError("No space left on device (os error 28)"),  # polars' (Rust) writes say it in the message only
        OSError(122, "Disk quota exceeded"),
    ],
)
def test_a_write_that_finds_no_room_inside_an_output_set_is_one_line(tmp_path: Path, error: OSError) -> None:
    target = tmp_path / "clean.jsonl"
    old = '{"instruction": "旧", "output": "old"}\n'.encode()
    target.write_bytes(old)
    with pytest.raises(WbError) as err, OutputSet([target]) as outputs:
        outputs.open(target).write(b"half a new file")
        raise error
    assert str(err.value).startswith(f"{target}: cannot write the output (")
    assert str(err.value).endswith("); the previous files are unchanged; free some space and run again")
    assert target.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["clean.jsonl"]
    with pytest.raises(PermissionError), OutputSet([target]):  # any other error stays what it is
        raise PermissionError(13, "Permission denied")


def test_a_write_outside_an_output_set_that_finds_no_room_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from workbench.cli import user_errors

    @user_errors
    def save_checkpoint(error: OSError) -> None:
        raise error

    with pytest.raises(typer.Exit) as exit_:
        save_checkpoint(OSError(28, "No space left on device", "runs/x/checkpoint-2/optimizer.pt"))
    assert exit_.value.exit_code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: runs/x/checkpoint-2/optimizer.pt: cannot write (No space left on device); free some space and run again"
    ]
    with pytest.raises(FileNotFoundError):  # not a question of room: still raised
        save_checkpoint(FileNotFoundError(2, "No such file or directory"))


# -- real kills ----------------------------------------------------------------------------------------------------


def _start_clean(src: Path, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "clean", str(src), "-o", str(out), "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def _wait_for(proc: subprocess.Popen[bytes], path: Path) -> None:
    """Until `path` exists and holds bytes; the run must still be going then."""
    while not (path.exists() and path.stat().st_size > 0):
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before writing {path.name}"
        time.sleep(0.02)


INTERRUPTED_IN_A_LIBRARY = """
import os, signal, sys, time
import typer
from workbench.console import user_errors
from workbench.output import terminate_like_interrupt

@user_errors
def work(signalled: bool) -> None:
    try:  # a library that wraps whatever its callback raised, as a query engine may
        if signalled:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
        raise ValueError("bad row")
    except BaseException as e:
        raise RuntimeError("query failed") from e

terminate_like_interrupt()
try:
    work(sys.argv[1] == "signalled")
except typer.Exit as e:
    sys.exit(e.exit_code)
"""


@pytest.mark.parametrize("signalled", [True, False])
def test_a_sigterm_that_a_library_turns_into_its_own_error_still_ends_the_run_as_interrupted(
    tmp_path: Path, signalled: bool
) -> None:
    script = tmp_path / "work.py"
    script.write_text(INTERRUPTED_IN_A_LIBRARY)
    proc = subprocess.run(
        [sys.executable, str(script), "signalled" if signalled else "not"],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=60,
    )
    stderr = proc.stderr.decode()
    if signalled:
        assert (proc.returncode, stderr.splitlines()) == (143, ["interrupted; no partial output was left behind"])
    else:  # the same error without a signal is not an interruption: it stays the error it is
        assert proc.returncode == 1 and "RuntimeError: query failed" in stderr and "interrupted" not in stderr


@pytest.fixture(scope="module")
def big_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("big") / "big.jsonl"
    src.write_bytes(DEMO_DATA.read_bytes() * 440)  # 80,520 records: two batches, then the dedup phase
    return src


STAGE = ".clean.jsonl.wb-stage"
# Points a run passes: the first batch's drops staged; the dedup phase writing the kept records.
KILL_POINTS = {"batches": f"{STAGE}/clean.dropped.jsonl", "dedup": f"{STAGE}/clean.jsonl"}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_clean_keeps_the_old_set_and_the_next_run_leaves_nothing_behind(
    tmp_path: Path, big_input: Path, point: str, sig: signal.Signals
) -> None:
    out = tmp_path / "clean.jsonl"
    run(raw(tmp_path), out, load("default"))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    proc = _start_clean(big_input, out)
    _wait_for(proc, tmp_path / KILL_POINTS[point])
    proc.send_signal(sig)
    _, stderr = proc.communicate()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if not p.name.startswith(".")} == before
    check_complete(tmp_path / "clean.manifest.json")
    if sig == signal.SIGTERM:  # handled like Ctrl-C: the run cleans up after itself
        assert proc.returncode == 128 + signal.SIGTERM, stderr.decode()
        assert b"interrupted" in stderr and b"Traceback" not in stderr
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    else:
        assert proc.returncode == -signal.SIGKILL, stderr.decode()
        assert (tmp_path / STAGE).is_dir()
    result = run(raw(tmp_path), out, load("default"))
    assert result.stats.read == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["raw.jsonl", "clean.jsonl", *SIDECARS])
    assert json.loads((tmp_path / "clean.stats.json").read_text())["kept"] == 3
