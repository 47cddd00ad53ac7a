"""Files generated from the models: JSON Schemas in `schemas/` (so editors and other tools can validate inputs), and
the blocks of the docs pages (`DOCS`: docs/cleaning.md, docs/evaluation.md, docs/gate.md, docs/run-folder.md,
docs/methods.md, docs/architecture.md) and pipelines/gate.yaml that list the clean rules (from the rule registry), the
metrics (from the metric registry), the training methods (from the method registry), the gate's paths (from the run
schema) and every module of the package with the first sentence of its docstring (read from the source).
`python -m workbench.schemas` rewrites them; a test fails when they drift.

A generated block sits between a line holding `generated: NAME` and a line holding `end generated` (in Markdown as
HTML comments, in YAML as comments); everything outside the markers is left as it is.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from workbench import degenerate_kinds, metric_specs, preference_shapes, score_specs
from workbench.clean import rule_registry
from workbench.clean.profile import Profile
from workbench.evaluate.suite import EvalSuite
from workbench.io.jsontext import dumps_json
from workbench.methods import registry as method_registry
from workbench.records import AlpacaRecord, MessagesRecord, ShareGPTRecord
from workbench.report.gate import GateFile
from workbench.runfile.cleaning import CleanStats
from workbench.runfile.evals import EvalMetrics, ScoreRow
from workbench.runfile.gate_paths import gate_paths_help
from workbench.runfile.summary import RunSummary
from workbench.runfile.training import TrainManifest
from workbench.train.recipe import Recipe

MODELS: dict[str, type[BaseModel]] = {
    "record.schema.json": AlpacaRecord,
    "sharegpt-record.schema.json": ShareGPTRecord,
    "messages-record.schema.json": MessagesRecord,
    # Preference data (workbench/preference_shapes.py): the shapes read, and the canonical form wb clean writes.
    "preference-pair.schema.json": preference_shapes.PreferencePair,
    "kto-example.schema.json": preference_shapes.KtoExample,
    "pairwise-preference-record.schema.json": preference_shapes.PairwiseRecord,
    "implicit-preference-record.schema.json": preference_shapes.ImplicitPairRecord,
    "conversation-preference-record.schema.json": preference_shapes.ConversationPairRecord,
    "kto-record.schema.json": preference_shapes.KtoRecord,
    "scored-completions-record.schema.json": preference_shapes.ScoredRecord,
    "clean-profile.schema.json": Profile,
    "train-recipe.schema.json": Recipe,
    "gate.schema.json": GateFile,
    "eval-suite.schema.json": EvalSuite,
    # The run folder (workbench/runfile/): what the stages write and wb report / wb gate read.
    "eval-metrics.schema.json": EvalMetrics,
    "scores-row.schema.json": ScoreRow,
    "train-manifest.schema.json": TrainManifest,
    "clean-stats.schema.json": CleanStats,
    "run-summary.schema.json": RunSummary,
}

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
ROOT = SCHEMA_DIR.parent


def _gate_paths_markdown() -> str:
    return "\n".join(["```", gate_paths_help(), "```"])


def _gate_paths_yaml() -> str:
    return "\n".join(f"#   {line}" for line in gate_paths_help().splitlines())


_ABBREVIATIONS = re.compile(r"\b(e\.g|i\.e|et al|vs|etc)\.$")


def _first_sentence(doc: str) -> str:
    """The first sentence of a docstring's first paragraph (up to a full stop that ends a sentence)."""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    for m in re.finditer(r"\.(?=\s|$)", paragraph):
        head = paragraph[: m.end()]
        if not _ABBREVIATIONS.search(head) and head.count("(") == head.count(")") and head.count("`") % 2 == 0:
            return head
    return paragraph


def module_map(package: Path = ROOT / "workbench") -> str:
    """Every module of the package, by package, with the first sentence of its docstring (docs/architecture.md)."""
    rows: dict[str, list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent)
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if not doc:
            raise ValueError(f"{rel}: a module of the package needs a docstring saying what it holds and why")
        group = "/".join(rel.parts[:-1]) if len(rel.parts) > 2 else "workbench (top level)"
        cell = _first_sentence(doc).replace("|", "\\|")
        rows.setdefault(group, []).append(f"| `{rel.as_posix()}` | {cell} |")
    blocks = []
    for group in sorted(rows, key=lambda g: (g != "workbench (top level)", g)):
        blocks.append("\n".join([f"#### {group}", "", "| module | what it holds |", "|---|---|", *rows[group]]))
    return "\n\n".join(blocks)


BLOCKS: dict[str, Callable[[], str]] = {
    "rules": rule_registry.markdown_table,
    "metrics": metric_specs.markdown_table,
    "methods": method_registry.markdown_table,
    "pref-metrics": metric_specs.pref_markdown_table,
    "degenerate-kinds": degenerate_kinds.markdown_table,
    "scores": score_specs.markdown_table,
    "gate-paths": _gate_paths_markdown,
    "gate-paths-yaml": _gate_paths_yaml,
    "modules": module_map,
}
DOCS = (
    "docs/cleaning.md",
    "docs/evaluation.md",
    "docs/gate.md",
    "docs/run-folder.md",
    "docs/methods.md",
    "docs/architecture.md",
    "docs/scoring.md",
    "pipelines/gate.yaml",
)
_BLOCK = re.compile(
    r"(?m)^(?P<open>.*generated: (?P<name>[\w-]+).*\n)(?P<body>(?:.*\n)*?)(?P<close>.*end generated.*\n)"
)


def render_doc(text: str) -> str:
    """`text` with every generated block rewritten."""

    def fill(m: re.Match[str]) -> str:
        name = m["name"]
        if name not in BLOCKS:
            raise ValueError(f"unknown generated block {name!r} (blocks: {', '.join(BLOCKS)})")
        return m["open"] + BLOCKS[name]() + "\n" + m["close"]

    return _BLOCK.sub(fill, text)


def write_docs(root: Path = ROOT) -> list[Path]:
    written = []
    for name in DOCS:
        path = root / name
        text = path.read_text(encoding="utf-8")
        new = render_doc(text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            written.append(path)
    return written


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
    for p in write_docs():
        print(p)
