"""Scores in SQLite (`<wb cache>/scores.sqlite`), keyed by the model's identity (the generation cache's: SHA-256 of
the base and adapter weights, or of a reward model's weight files) + the record's SHA-256 (its canonical JSON) +
the settings that change a score (template, max_length, precision, what is scored). Safe across processes, the
same pattern as the generation and log-likelihood caches (`workbench.models.generate`), and opened by the same
`open_cache` (a corrupt file is moved aside and rebuilt)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from workbench.models.cache import open_cache, read_json_rows, write_json_rows
from workbench.models.folders import cache_dir

CACHE_FORMAT = 1


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 of a record's canonical JSON (sorted keys): the same record scores once."""
    blob = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class ScoreCache:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_dir() / "scores.sqlite"
        open_cache(self.path, {"scores": "key TEXT PRIMARY KEY, value TEXT NOT NULL"})
        self.hits = 0
        self.misses = 0

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30)) as db, db:
            yield db

    @staticmethod
    def key(model: dict[str, Any], record: dict[str, Any], settings: dict[str, Any]) -> str:
        blob = json.dumps(
            {"model": model, "record": record_hash(record), "settings": settings, "format": CACHE_FORMAT},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        found = dict(read_json_rows(self._connect, "scores", keys))
        self.hits += sum(1 for k in keys if k in found)
        self.misses += sum(1 for k in keys if k not in found)
        return found

    def put_many(self, items: dict[str, dict[str, Any]]) -> None:
        write_json_rows(self._connect, "scores", items)
