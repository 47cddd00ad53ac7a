"""JSON Schema files in `schemas/`, generated from the pydantic models so editors and other tools can validate
inputs. `python -m workbench.schemas` rewrites them; a test fails when they drift from the models."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from workbench.clean.profile import Profile
from workbench.evaluate.suite import EvalSuite
from workbench.io import dumps_json
from workbench.records import AlpacaRecord, MessagesRecord, ShareGPTRecord
from workbench.report.gate import GateFile
from workbench.runfile import CleanStats, EvalMetrics, RunSummary, ScoreRow, TrainManifest
from workbench.train.recipe import Recipe

MODELS: dict[str, type[BaseModel]] = {
    "record.schema.json": AlpacaRecord,
    "sharegpt-record.schema.json": ShareGPTRecord,
    "messages-record.schema.json": MessagesRecord,
    "clean-profile.schema.json": Profile,
    "train-recipe.schema.json": Recipe,
    "gate.schema.json": GateFile,
    "eval-suite.schema.json": EvalSuite,
    # The run folder (workbench/runfile.py): what the stages write and wb report / wb gate read.
    "eval-metrics.schema.json": EvalMetrics,
    "scores-row.schema.json": ScoreRow,
    "train-manifest.schema.json": TrainManifest,
    "clean-stats.schema.json": CleanStats,
    "run-summary.schema.json": RunSummary,
}

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


def render() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, model in MODELS.items():
        schema: dict[str, Any] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": name,
            **model.model_json_schema(),
        }
        schema.get("properties", {}).pop("rule_order", None)  # internal: the order of the `rules` mapping
        out[name] = dumps_json(schema)
    return out


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, content in render().items():
        path = directory / name
        path.write_bytes(content)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(p)
