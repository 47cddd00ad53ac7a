"""Scores in SQLite (`<wb cache>/scores.sqlite`), keyed by the model's identity (the generation cache's: SHA-256 of
the base and adapter weights, or of a reward model's weight files) + the record's SHA-256 (its canonical JSON) +
the settings that change a score (template, max_length, precision, what is scored). Safe across processes, the
same scaffold as the generation and log-likelihood caches (`workbench.models.cache.SqliteCache`: a corrupt file is
moved aside and rebuilt)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workbench.models.cache import SqliteCache
from workbench.models.folders import cache_dir

CACHE_FORMAT = 1


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 of a record's canonical JSON (sorted keys): the same record scores once."""
    blob = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class ScoreCache(SqliteCache):
    def __init__(self, path: Path | None = None) -> None:
        super().__init__(path or cache_dir() / "scores.sqlite", {"scores": "key TEXT PRIMARY KEY, value TEXT NOT NULL"})

    @staticmethod
    def key(model: dict[str, Any], record: dict[str, Any], settings: dict[str, Any]) -> str:
        blob = json.dumps(
            {"model": model, "record": record_hash(record), "settings": settings, "format": CACHE_FORMAT},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self._read("scores", keys)

    def put_many(self, items: dict[str, dict[str, Any]]) -> None:
        self._write("scores", items)
