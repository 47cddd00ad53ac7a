"""The one scaffold of wb's SQLite caches (generations, log-likelihoods, scores): `SqliteCache`, the base class each
builds on (creating the file and its tables, a connection, reading and writing JSON rows by key, hit and miss
counts), and the model identity the model-keyed caches share.

A file SQLite cannot read (truncated, overwritten, not a database at all) or whose tables are not wb's is moved aside
with one warning on stderr and rebuilt empty; a cache only saves work, so losing one never stops an evaluation.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelIdentity:
    base_sha256: str
    adapter_sha256: str | None


def open_cache(path: Path, tables: dict[str, str]) -> None:
    """Create a cache's tables (name -> column definitions) in the SQLite file at `path`. A file that is not a
    readable SQLite database, fails SQLite's quick check, or holds one of these tables with other columns is moved
    aside (`<name>.corrupt-<time>`, with its journal) with one warning line on stderr, and an empty cache replaces
    it. A locked or unwritable file is not corrupt: its `sqlite3.OperationalError` goes on as before."""
    path.parent.mkdir(parents=True, exist_ok=True)
    problem = _cache_problem(path, tables)
    if problem is None:
        return
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    n = 1
    while aside.exists():
        n += 1
        aside = aside.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{n}")
    for suffix in ("", "-journal", "-wal", "-shm"):
        with suppress(FileNotFoundError):  # no such sidecar, or another process moved the file first
            path.with_name(path.name + suffix).rename(aside.with_name(aside.name + suffix))
    sys.stderr.write(f"warning: {path}: not a usable cache ({problem}); moved aside to {aside.name}, rebuilding it\n")
    problem = _cache_problem(path, tables)
    if problem is not None:  # the rebuilt file is wb's own: failing again is a bug, not bad input
        raise sqlite3.DatabaseError(f"{path}: {problem}")


def _cache_problem(path: Path, tables: dict[str, str]) -> str | None:
    """Why the cache file at `path` cannot be used (after creating any missing table), or None."""
    try:
        with closing(sqlite3.connect(path, timeout=30)) as db, db:
            for name, columns in tables.items():
                db.execute(f"CREATE TABLE IF NOT EXISTS {name} ({columns})")
                found = [row[1] for row in db.execute(f"PRAGMA table_info({name})")]
                wanted = [part.split()[0] for part in columns.split(",")]
                if found != wanted:
                    return f"table {name} has columns {', '.join(found)}, not {', '.join(wanted)}"
            check = db.execute("PRAGMA quick_check(1)").fetchone()
            if check is None or check[0] != "ok":
                return f"SQLite's quick check: {check[0] if check else 'no answer'}".splitlines()[0]
    except sqlite3.OperationalError:
        raise  # locked, busy, a folder that cannot be written: not the file's content
    except sqlite3.DatabaseError as e:  # SQLITE_NOTADB, SQLITE_CORRUPT
        return str(e)
    return None


def read_json_rows(
    connect: Callable[[], AbstractContextManager[sqlite3.Connection]], table: str, keys: Sequence[str]
) -> Iterator[tuple[str, Any]]:
    """(key, decoded JSON value) of the keys a cache table holds, looked up 500 at a time."""
    with connect() as db:
        for lo in range(0, len(keys), 500):
            chunk = list(keys[lo : lo + 500])
            marks = ",".join("?" * len(chunk))
            for key, value in db.execute(f"SELECT * FROM {table} WHERE key IN ({marks})", chunk).fetchall():
                yield key, json.loads(value)


def write_json_rows(
    connect: Callable[[], AbstractContextManager[sqlite3.Connection]], table: str, rows: dict[str, Any]
) -> None:
    with connect() as db:
        db.executemany(
            f"INSERT OR REPLACE INTO {table} VALUES (?, ?)",
            [(k, json.dumps(v, ensure_ascii=False)) for k, v in rows.items()],
        )


class SqliteCache:
    """A cache file with its tables (`open_cache`), connections safe across processes, JSON rows by key, and the hits
    and misses of this object's lookups. A subclass names its file and tables and says what a key and a row are."""

    def __init__(self, path: Path, tables: dict[str, str]) -> None:
        self.path = path
        open_cache(self.path, tables)
        self.hits = 0
        self.misses = 0

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30)) as db, db:
            yield db

    def _read(self, table: str, keys: Sequence[str]) -> dict[str, Any]:
        """The decoded rows of `table` for the keys it holds, counted as hits and misses."""
        found = dict(read_json_rows(self._connect, table, keys))
        self.hits += sum(1 for k in keys if k in found)
        self.misses += sum(1 for k in keys if k not in found)
        return found

    def _write(self, table: str, rows: dict[str, Any]) -> None:
        write_json_rows(self._connect, table, rows)
