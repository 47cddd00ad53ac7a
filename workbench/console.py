"""The one printing module of the command line: consoles, tables, rules, warnings, status lines and progress.

Every `wb` command prints through here, so one set of rules holds for all of them:

- not on a terminal (CI logs, pipes, files) the consoles are wide: a table never folds or cuts a name
  (`mc_accuracy` and `mc_accuracy_norm` stay apart); on a terminal a long cell folds onto a second line rather
  than ending in `…`;
- warnings are printed once each with their count (`warning: X (12 times)`); `-v` prints every one as it came;
- progress: on a terminal a rich bar; in a pipe a plain line at most every `PLAIN_EVERY` seconds, and a
  `still working` line after as long a silence (`heartbeat`), so a long phase is never silent in a CI log; nothing
  with `--quiet`;
- user errors (`WbError`, a write that found no room, Ctrl-C) are one line on stderr and an exit code.
"""

from __future__ import annotations

import functools
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import typer
from rich.console import Console, ConsoleDimensions, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from workbench.errors import WbError
from workbench.output import no_room, terminated_by

WIDE = 100_000  # columns of a console that is not a terminal: wide enough that no cell is ever cut
RULE_WIDTH = 80  # a rule between answers, not as wide as the console
PLAIN_EVERY = 5.0  # seconds between plain progress lines in a pipe
HEARTBEAT_MAX = 6  # the longest silence a heartbeat allows, in PLAIN_EVERY units

F = TypeVar("F", bound=Callable[..., Any])
Justify = Literal["left", "right"]


class _Console(Console):
    """A rich console as wide as the terminal, or `WIDE` when it writes to a pipe or a file."""

    @property
    def size(self) -> ConsoleDimensions:
        if not self.is_terminal:
            return ConsoleDimensions(WIDE, 25)
        return super().size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


out = _Console(highlight=False, soft_wrap=True)
err = _Console(stderr=True, highlight=False, soft_wrap=True)


_last_printed = [time.monotonic()]  # when a command last printed a line: a heartbeat waits for a silence


def line(text: str) -> None:
    """One plain line on stdout (no markup)."""
    _last_printed[0] = time.monotonic()
    out.print(text, markup=False)


def note(text: str) -> None:
    """One plain line on stderr (no markup)."""
    _last_printed[0] = time.monotonic()
    err.print(text, markup=False)


def say(quiet: bool) -> Callable[[str], None]:
    """The status printer a library function is given: a line on stderr, or nothing with --quiet."""
    return note if not quiet else (lambda text: None)


def table(title: str | None, *columns: str | tuple[str, Justify], show_header: bool = True) -> Table:
    """A table whose cells fold instead of being cut; columns named `(name, justify)` or by name (left)."""
    t = Table(title=title, title_justify="left", show_header=show_header)
    for column in columns:
        name, justify = column if isinstance(column, tuple) else (column, "left")
        t.add_column(name, justify=justify, overflow="fold")
    return t


def show(renderable: RenderableType) -> None:
    """A table (or other rich renderable) on stdout."""
    out.print(renderable)


def rule(title: str, style: str = "rule.line") -> None:
    """A titled rule between examples or answers, terminal-wide or `RULE_WIDTH` in a pipe."""
    out.print(Rule(title, style=style), width=None if out.is_terminal else RULE_WIDTH)


def warnings(items: Iterable[str], verbose: bool = False, prefix: str = "warning") -> None:
    """Print warnings on stderr: each distinct one once, with its count when repeated; `verbose` prints all."""
    items = list(items)
    if verbose:
        for w in items:
            note(f"{prefix}: {w}")
        return
    for w, n in Counter(items).items():  # a Counter keeps first-seen order
        note(f"{prefix}: {w}" + (f" ({n} times)" if n > 1 else ""))


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def user_errors(fn: F) -> F:
    """Turn a WbError, or a write that found no room, into one line on stderr and exit code 2; Ctrl-C or SIGTERM
    into one line and exit code 128 + the signal's number, whatever error the interrupted code raised."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except BaseException as e:
            signum = terminated_by()
            if signum is not None or isinstance(e, KeyboardInterrupt):
                note("interrupted; no partial output was left behind")
                raise typer.Exit(128 + (signum or signal.SIGINT)) from None
            if isinstance(e, WbError):
                note(f"error: {e}")
                raise typer.Exit(2) from None
            reason = no_room(e)  # a write outside an output set that found no room (disk full, quota, ulimit -f)
            if reason is None or not isinstance(e, OSError):
                raise
            where = f"{e.filename}: " if e.filename else ""
            note(f"error: {where}cannot write ({reason}); free some space and run again")
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


class _Plain:
    """Plain progress lines for a pipe: `label: text`, at most one per `every` seconds (the first after `every`)."""

    def __init__(self, enabled: bool, every: float = PLAIN_EVERY) -> None:
        self.enabled, self.every, self.clock = enabled, every, time.monotonic
        self.last = self.clock()

    def __call__(self, text: str) -> None:
        if self.enabled and self.clock() - self.last >= self.every:
            self.last = self.clock()
            note(text)


@contextmanager
def heartbeat(label: str, quiet: bool) -> Iterator[None]:
    """Around a long library call: in a pipe, `label: still working (N s)` once nothing was printed for a while
    (saving, loading, a final evaluation), so a CI log never looks hung. The silence allowed doubles after each such
    line, from `PLAIN_EVERY` up to `HEARTBEAT_MAX` times it (5, 10, 20, 30, 30 ... s), and starts over when anything
    else prints: a two-minute phase gives six lines, not twenty-four. Nothing on a terminal (the bars and step lines
    show life there) or when quiet."""
    if quiet or err.is_terminal:
        yield
        return
    stop = threading.Event()
    started = _last_printed[0] = time.monotonic()

    def beat() -> None:
        silence, printed = PLAIN_EVERY, _last_printed[0]
        while not stop.wait(min(1.0, PLAIN_EVERY / 5)):
            now = time.monotonic()
            if _last_printed[0] != printed:  # something else printed: start the back-off over
                silence, printed = PLAIN_EVERY, _last_printed[0]
            if now - _last_printed[0] >= silence:
                note(f"{label}: still working ({now - started:.0f} s)")
                silence, printed = min(2 * silence, HEARTBEAT_MAX * PLAIN_EVERY), _last_printed[0]

    thread = threading.Thread(target=beat, name="wb-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextmanager
def progress_bar(
    description: str, total: int, quiet: bool
) -> Iterator[tuple[Callable[[int, int], None], Callable[[str], None]]]:
    """Progress over bytes with a record counter: a bar on a terminal, plain lines in a pipe, nothing when quiet."""
    bar = not quiet and err.is_terminal
    plain = _Plain(not quiet and not bar)
    counts = {"bytes": 0, "records": 0}
    current = [""]
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[records]:,} records"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not bar,
    ) as progress:
        task = progress.add_task(description, total=total, records=0)

        def tell() -> None:
            share = f", {pct(counts['bytes'], total)} of the input" if total else ""
            phase = f": {current[0]}" if current[0] else ""
            plain(f"{description}{phase}: {counts['records']:,} records{share}")

        def advance(nbytes: int, nrecords: int) -> None:
            counts["bytes"] += nbytes
            counts["records"] += nrecords
            progress.update(task, advance=nbytes, records=counts["records"])
            tell()

        def phase(text: str) -> None:
            current[0] = text
            progress.update(task, description=f"{description}: {text}")
            tell()

        yield advance, phase


@contextmanager
def count_progress(quiet: bool) -> Iterator[Callable[[str, int, int], None]]:
    """Progress over items, one bar per phase with rate and ETA on a terminal; plain `label: done/total` lines in a
    pipe; nothing when quiet."""
    bar = not quiet and err.is_terminal
    plain = _Plain(not quiet and not bar)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not bar,
    ) as progress:
        tasks: dict[str, Any] = {}

        def update(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total, rate="")
            speed = progress.tasks[tasks[label]].speed
            progress.update(tasks[label], completed=done, total=total, rate=f"{speed:.1f}/s" if speed else "")
            plain(f"{label}: {done:,}/{total:,}")

        yield update


SPAN_STYLES = {"masked": "dim", "trained": "bold green", "rejected": "bold red"}
SPAN_MARKS = {"masked": ("", ""), "trained": ("[+", "+]"), "rejected": ("[-", "-]")}
PLAIN_LEGEND = "in plain text: trained [+ +], rejected [- -], masked unmarked"


def spans(parts: Iterable[tuple[str, str]]) -> None:
    """Text whose spans are trained on, trained away from, or masked: in colour on a terminal, marked `[+ +]` and
    `[- -]` in a pipe (where colour is lost)."""
    text = Text()
    for chunk, role in parts:
        if out.is_terminal:
            text.append(chunk, style=SPAN_STYLES[role])
        else:
            start, end = SPAN_MARKS[role]
            text.append(f"{start}{chunk}{end}" if chunk else "")
    out.print(text)
