"""The gate's paths, derived by walking `RunSummary`: whether a dotted path can name a number (`gate_path_problem`),
the paths in words (`gate_paths_help`), and reading numbers out of a summary dict by path (`resolve`,
`summary_numbers`). A new metric or summary number needs no change here."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import BaseModel

from workbench import degenerate_kinds, metric_specs
from workbench.runfile.evals import CorpusScore, DegenerateStat, JudgeSummary, SetMetrics, Stat
from workbench.runfile.summary import RunSummary

GATE_SECTIONS = ("task", "forgetting", "clean", "train", "overlap", "review", "pref")
"""The summary sections a gate may read (the rest describe the run rather than measure it)."""


def _unwrap(tp: Any) -> Any:
    """X for Optional[X] / Annotated[X, ...]; the type itself otherwise."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _is_number(tp: Any) -> bool:
    tp = _unwrap(tp)
    if tp in (int, float):
        return True
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else ()
    return bool(args) and all(_unwrap(a) in (int, float) for a in args if a is not type(None))


def _children(tp: Any) -> tuple[dict[str, Any], Any]:
    """(named children, type of any other key) of a node type."""
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        named = {n: f.annotation for n, f in tp.model_fields.items()}
        if tp is SetMetrics:
            return named, Stat  # a metric name addresses its Stat directly
        return named, None
    if typing.get_origin(tp) is dict:
        return {}, typing.get_args(tp)[1]
    return {}, None


def _fields_of(tp: Any) -> list[str]:
    named, other = _children(tp)
    out = [n for n, t in named.items() if _is_number(t) or _children(t) != ({}, None)]
    return out + (["<name>"] if other is not None else [])


def gate_path_problem(path: str) -> str | None:
    """Why `path` can never name a number of a run summary, or None when it is well-formed.

    Metric names under `task.` and `forgetting.<set>.` must be registered metrics."""
    parts = path.split(".")
    if any(not p for p in parts):
        return f"{path!r}: empty part in the dotted path"
    if parts[0] not in GATE_SECTIONS:
        return f"{path!r}: unknown section {parts[0]!r} (sections: {', '.join(GATE_SECTIONS)})"
    node: Any = RunSummary
    for depth, key in enumerate(parts):
        named, other = _children(node)
        where = ".".join(parts[:depth]) or "the summary"
        if key in named and not (_unwrap(node) is SetMetrics and key == "metrics"):
            node = named[key]
        elif other is not None and key not in named:
            if _unwrap(node) is SetMetrics and metric_specs.get(key) is None:
                return f"{path!r}: unknown metric {key!r} (metrics: {', '.join(metric_specs.names())})"
            node = other
        else:
            fields = ", ".join(_fields_of(node)) or "none"
            return f"{path!r}: {where} has no {key!r} (it has: {fields})"
    if not _is_number(node):
        fields = ", ".join(_fields_of(node))
        return f"{path!r}: not a number" + (f"; continue the path with one of: {fields}" if fields else "")
    return None


def gate_paths_help() -> str:
    """The gate's paths in words, generated from the schema (docs/gate.md, docs/run-folder.md, pipelines/gate.yaml)."""
    lines: list[str] = []
    for section in GATE_SECTIONS:
        lines.extend(_paths(RunSummary.model_fields[section].annotation, section, 0))
    return "\n".join(lines)


def _paths(tp: Any, prefix: str, depth: int) -> Iterator[str]:
    named, other = _children(tp)
    if _unwrap(tp) is SetMetrics:
        yield f"{prefix}.n"
        yield f"{prefix}.<metric>.<{'|'.join(STAT_FIELDS)}>"
        yield f"{prefix}.corpus.<bleu|chrf[_zh|_latin]>.<{'|'.join(_numbers_of(CorpusScore))}>"
        kinds = "|".join(degenerate_kinds.names())
        yield f"{prefix}.degenerate.<{kinds}>.<{'|'.join(_numbers_of(DegenerateStat))}>"
        yield f"{prefix}.classification.<tuned|base>.macro_f1"
        if prefix == "task":
            yield f"{prefix}.judge.<{'|'.join(_numbers_of(JudgeSummary))}>"
        return
    numbers = [n for n, t in named.items() if _is_number(t)]
    if numbers:
        yield f"{prefix}.<{'|'.join(numbers)}>"
    for n, t in named.items():
        if not _is_number(t) and _children(t) != ({}, None) and depth < 3:
            yield from _paths(t, f"{prefix}.{n}", depth + 1)
    if other is not None:
        if _is_number(other):
            yield f"{prefix}.<name>"
        else:
            yield from _paths(other, f"{prefix}.<name>", depth + 1)


def _numbers_of(model: type[BaseModel]) -> list[str]:
    return [n for n, f in model.model_fields.items() if _is_number(f.annotation)]


STAT_FIELDS = tuple(_numbers_of(Stat))
"""The numbers of a STAT, the last segment of `task.<metric>.<field>`."""


def summary_numbers(summary: dict[str, Any]) -> dict[str, float]:
    """Every number of a summary dict by its gate path (the comparison of two runs lists these)."""
    out: dict[str, float] = {}

    def walk(node: Any, prefix: str, set_level: bool) -> None:
        if isinstance(node, bool) or node is None:
            return
        if isinstance(node, int | float):
            out[prefix] = float(node)
            return
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if set_level and key == "metrics" and isinstance(value, dict):
                for metric, stat in value.items():
                    walk(stat, f"{prefix}.{metric}", False)
            elif not (set_level and key in ("regressions", "settings")):
                walk(value, f"{prefix}.{key}", False)

    for section in GATE_SECTIONS:
        value = summary.get(section)
        if section == "forgetting":
            for name, sec in (value or {}).items():
                walk(sec, f"forgetting.{name}", True)
        elif section == "task":
            walk(value, "task", True)
        elif section == "overlap" and isinstance(value, dict):
            walk({k: v for k, v in value.items() if k != "ids"}, "overlap", False)
        else:
            walk(value, section, False)
    return out


def resolve(summary: dict[str, Any], path: str) -> Any:
    """The value at a gate path of a summary dict (metrics without their `metrics` level); KeyError if absent."""
    parts = path.split(".")
    node: Any = summary
    set_level = False
    for depth, key in enumerate(parts):
        if not isinstance(node, dict):
            raise KeyError(".".join(parts[:depth]))
        if set_level and key not in node and isinstance(node.get("metrics"), dict) and key in node["metrics"]:
            node = node["metrics"][key]
        elif key in node:
            node = node[key]
        else:
            raise KeyError(".".join(parts[: depth + 1]))
        set_level = (depth == 0 and key == "task") or (depth == 1 and parts[0] == "forgetting")
    return node
