"""The sets `wb eval` scores, assembled from its inputs: the task records (with a record's own `answer_type` and
`options`), forgetting probe sets, multiple-choice files, or a predictions file; `EvalSet` carries a set's items and,
as the model runs fill them in, its answers, losses, option log-likelihoods and judge verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from workbench import metric_specs
from workbench.errors import WbError
from workbench.evaluate.config import SHIPPED_MC, SHIPPED_PROBES, EvalConfig
from workbench.evaluate.forgetting import Item, ProbeSet, load_probe_set, probes_dir
from workbench.io.reader import read_objects
from workbench.models.generate import Answer
from workbench.records import EXTRA
from workbench.runfile.evals import (
    JudgeVerdict,
    McScores,
    SideScores,
)

TASK = "task"
SIDES = ("tuned", "base")
MC_REJECTS_KEPT = 50  # rejected multiple-choice rows named in metrics.json (all are counted)


@dataclass
class EvalSet:
    name: str
    kind: str  # task | qa | text | mc
    items: list[Item]
    predictions: dict[str, list[str]] = field(default_factory=dict)  # side -> answers
    losses: dict[str, list[float | None]] = field(default_factory=dict)  # side -> reference losses
    generated: dict[str, list[Answer]] = field(default_factory=dict)  # side -> token counts, finished
    max_new_tokens: int | None = None
    mc: dict[str, list[McScores]] = field(default_factory=dict)  # side -> option log-likelihoods
    fewshot: list[Item] = field(default_factory=list)  # multiple choice: examples, not scored
    settings: dict[str, Any] = field(default_factory=dict)  # how the set was read (its metrics.json settings)
    judged: list[JudgeVerdict] = field(default_factory=list)  # the pairwise judge's verdicts (task set)
    judge_settings: dict[str, Any] = field(default_factory=dict)


def task_items(path: Path, limit: int | None, split: str | None = None) -> list[Item]:
    """The task records as eval items. A record may also carry `answer_type` (overriding the suite's) and `options`
    ({"A": "...", ...} for multiple choice), in any file format."""
    from workbench.io.reader import read_records

    records = read_records(path, split, prefer=("test", "validation"), extra_fields=True)[:limit]
    items = []
    for line, r in records:
        extra = _extras(orjson.loads(r[EXTRA]), path, line) if r.get(EXTRA) else {}
        items.append(
            Item(
                id=line,
                instruction=r["instruction"],
                input=r.get("input") or "",
                reference=r["output"],
                system=r.get("system") or "",
                history=[list(turn) for turn in r.get("history") or []],
                answer_type=extra.get("answer_type"),
                options=extra.get("options"),
            )
        )
    return items


def _extras(row: dict[str, Any], path: Path, n: int) -> dict[str, Any]:
    """A record's own `answer_type` and multiple-choice `options`, checked."""
    extra: dict[str, Any] = {}
    answer_type = row.get("answer_type")
    if answer_type is not None:
        if answer_type not in metric_specs.ANSWER_TYPES:
            known = ", ".join(metric_specs.ANSWER_TYPES)
            raise WbError(f"{path}:line {n}: field answer_type: {answer_type!r} is not one of {known}")
        extra["answer_type"] = answer_type
    options = row.get("options")
    if options is not None:
        if not isinstance(options, dict) or not all(isinstance(v, str) for v in options.values()):
            raise WbError(f"{path}:line {n}: field options: expected an object of letter -> option text")
        extra["options"] = {str(k).strip().upper(): v for k, v in options.items()}
    return extra


def assemble(config: EvalConfig) -> list[EvalSet]:
    sets: list[EvalSet] = []
    if config.data is not None:
        sets.append(EvalSet(TASK, TASK, task_items(config.data, config.limit, config.split)))
    names: set[str] = set()

    def add(new: EvalSet) -> None:
        if new.name in names or new.name == TASK:
            raise WbError(f"probes: two sets are named {new.name!r}; rename one file")
        names.add(new.name)
        sets.append(new)

    for spec in config.probes:
        if is_mc_probe(spec):
            add(mc_set(spec, config.fewshot, config.probe_limit))
        else:
            probe: ProbeSet = load_probe_set(spec, config.probe_limit)
            add(EvalSet(probe.name, probe.kind, probe.items))
    for spec in config.mc:
        add(mc_set(spec, config.fewshot, config.mc_limit))
    if not sets and config.prefs is None:
        raise WbError("nothing to evaluate: give --data FILE, probe sets and/or --prefs FILE")
    return sets


def is_mc_probe(spec: str | Path) -> bool:
    """A shipped multiple-choice probe set, or a probe file whose records are multiple-choice items."""
    from workbench.evaluate import mc

    text = str(spec)
    if text in SHIPPED_PROBES:
        return text in SHIPPED_MC
    return Path(text).is_file() and mc.looks_like_mc(Path(text))


def mc_set(spec: str | Path, fewshot: int, limit: int | None) -> EvalSet:
    """A multiple-choice file as a forgetting set: its first `fewshot` items are examples, the rest (up to `limit`)
    are scored; rejected rows are counted and named in the set's settings."""
    from workbench.evaluate import mc

    text = str(spec)
    path = probes_dir() / f"{text}.jsonl" if text in SHIPPED_PROBES else Path(text)
    loaded = mc.load_mc(path)
    if fewshot >= len(loaded.items):
        raise WbError(f"{path}: --fewshot {fewshot} leaves no item to score (the file has {len(loaded.items)})")
    shots, items = loaded.items[:fewshot], loaded.items[fewshot:]
    items = items[:limit] if limit is not None else items
    settings: dict[str, Any] = {
        "source": str(path),
        "shape": loaded.shape,
        "fewshot": fewshot,
        "fewshot_ids": [it.id for it in shots],
        "rejected": len(loaded.rejects),
    }
    if loaded.rejects:
        settings["rejects"] = [r.describe(path) for r in loaded.rejects[:MC_REJECTS_KEPT]]
    return EvalSet(loaded.name, "mc", items, fewshot=shots, settings=settings)


def read_predictions(path: Path) -> list[EvalSet]:
    """The sets of a predictions file (`prediction` + `reference`, optional `base_prediction`, `answers`,
    `instruction`, `input`, `id`, `set`), each item with its answers."""
    sets: dict[str, EvalSet] = {}
    for n, row in read_objects(path):
        for key in ("prediction", "reference"):
            if not isinstance(row.get(key), str):
                raise WbError(f"{path}:line {n}: field {key}: missing or not a string")
        if "base_prediction" in row and not isinstance(row["base_prediction"], str):
            raise WbError(f"{path}:line {n}: field base_prediction: not a string")
        name = str(row.get("set") or TASK)
        s = sets.setdefault(name, EvalSet(name, TASK if name == TASK else "qa", []))
        answers: list[Any] = row["answers"] if isinstance(row.get("answers"), list) else []
        extra = _extras(row, path, n)
        s.items.append(
            Item(
                id=row.get("id", n),
                instruction=str(row.get("instruction") or ""),
                input=str(row.get("input") or ""),
                reference=row["reference"],
                answers=[str(a) for a in answers],
                answer_type=extra.get("answer_type"),
                options=extra.get("options"),
            )
        )
        s.predictions.setdefault("tuned", []).append(row["prediction"])
        if "base_prediction" in row:
            s.predictions.setdefault("base", []).append(row["base_prediction"])
    if not sets:
        raise WbError(f"{path}: no predictions in the file")
    for s in sets.values():
        if "base" in s.predictions and len(s.predictions["base"]) != len(s.items):
            raise WbError(f"{path}: set {s.name}: base_prediction is given for some rows only; give it for all or none")
    return list(sets.values())


def side_value(scores: SideScores | None, metric: str) -> float | None:
    if scores is None:
        return None
    value = (scores.model_extra or {}).get(metric)
    return float(value) if isinstance(value, int | float) else None
