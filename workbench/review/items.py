"""What `wb review` shows: every scored item of a run (task set and probe sets), with further answer columns.

The run is read as `wb report` reads it (`report.summary.load_run`, `scored_items`: scores.jsonl through
`EvalFolder`, each row checked), so a torn or edited evaluation is refused the same way. Each item carries its
question, reference, base and tuned answers, their per-item metric values and degenerate flags, its language (the
dominant script of the question) and its delta on the set's headline metric (`report.eval_views.primary_metric`),
signed so that a positive delta is a gain of the tuned model whichever way the metric runs.

Further columns come from other runs (their tuned answers) or a predictions file (its `prediction`), matched by set
and id; `ReviewData.matches` says per column how many items found no partner, on either side.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench import metric_specs
from workbench.errors import WbError
from workbench.evaluate import review as review_sample
from workbench.io.reader import read_objects
from workbench.report.eval_views import primary_metric
from workbench.report.formatting import is_num
from workbench.report.summary import higher_is_better, load_run, scored_items
from workbench.runfile.evals import SideScores
from workbench.runfile.folder import EvalFolder, Stamp, locate
from workbench.text import script_of

BUCKETS = ("regression", "gain", "tie", "none")
"""An item's delta class: tuned worse, better, equal on the headline metric, or no delta (no base or no metric)."""
LANGUAGES = {"cjk": "zh", "latin": "en"}
"""A question's dominant script (`text.script_of`) as the language filter names it; any other script is `other`."""
SAMPLE_SIZE = 50  # items in the default review queue when the run has no review_sample.csv (wb eval's default)
TASK = "task"

Key = tuple[str, str]


@dataclass
class Item:
    set: str
    id: str
    index: int  # position in scores.jsonl
    instruction: str
    input: str
    reference: str
    options: dict[str, str] | None
    tuned: str | None
    base: str | None
    tuned_scores: dict[str, float | None]
    base_scores: dict[str, float | None]
    tuned_flags: list[str]
    base_flags: list[str]
    metric: str | None
    delta: float | None
    bucket: str
    language: str
    judge: str | None = None  # the local judge's verdict (`wb eval --judge`): tuned, base or tie
    system: str = ""  # the conversation's system prompt (scores.jsonl `system`; absent in older files)
    history: list[tuple[str, str]] = field(default_factory=list)  # earlier (user, assistant) turns, oldest first
    extra: list[str | None] = field(default_factory=list)  # one answer per further column (None: no match)
    haystack: str = ""  # every text of the item, lower case, for the search

    @property
    def key(self) -> Key:
        return (self.set, self.id)

    @property
    def flags(self) -> frozenset[str]:
        return frozenset(self.tuned_flags + self.base_flags)

    @property
    def blind_ready(self) -> bool:
        """Both answers present: the item can be judged blind."""
        return self.tuned is not None and self.base is not None


@dataclass
class ReviewData:
    """A run's items as read when the app started, or when `wb eval` last rewrote the evaluation (`changed`); the
    verdicts are read from the store on every request."""

    run: str
    folder: EvalFolder
    items: list[Item]
    columns: list[str]  # names of the further answer columns
    matches: list[str]  # one line per further column: how many items matched by set and id
    sample: list[Key]  # the default review queue (the stratified sample of review_sample.csv)
    stamp: Stamp = ()  # the evaluation's files as they were when read (`EvalFolder.stamp`)
    sources: tuple[list[Path], Path | None] = ([], None)  # what `load` was given, to load again
    by_key: dict[Key, Item] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_key = {it.key: it for it in self.items}

    @property
    def judged(self) -> list[dict[str, Any]]:
        """The judge's verdicts as scores.jsonl rows hold them (what `verdicts.summarize` compares reviewers with),
        kept in memory so the statistics need not read scores.jsonl again."""
        return [{"set": it.set, "id": it.id, "judge": {"verdict": it.judge}} for it in self.items if it.judge]

    def changed(self) -> bool:
        """The evaluation's files differ from those these items were read from (a cheap stat of two files)."""
        return self.folder.stamp() != self.stamp

    def reload(self) -> ReviewData:
        """The items read again from the same runs and predictions file."""
        return load(*self.sources)

    def sets(self) -> list[tuple[str, int]]:
        return list(Counter(it.set for it in self.items).items())

    def languages(self) -> list[str]:
        return sorted({it.language for it in self.items})

    def flag_kinds(self) -> list[str]:
        return sorted({f for it in self.items for f in it.flags})


def _scores(side: dict[str, Any] | None) -> dict[str, float | None]:
    """The side's metric values: the keys `SideScores` does not declare, in registry order."""
    if not side:
        return {}
    values = {k: v for k, v in side.items() if k not in SideScores.model_fields and (v is None or is_num(v))}
    return {k: values[k] for k in metric_specs.order(values)}


def _delta(row: dict[str, Any], metric: str | None) -> float | None:
    if metric is None:
        return None
    t, b = (row.get("tuned") or {}).get(metric), (row.get("base") or {}).get(metric)
    if not is_num(t) or not is_num(b):
        return None
    d = float(t) - float(b)
    return round(d if higher_is_better(metric) else -d, 9)


def bucket_of(delta: float | None) -> str:
    if delta is None:
        return "none"
    return "regression" if delta < -1e-9 else "gain" if delta > 1e-9 else "tie"


def language_of(text: str) -> str:
    return LANGUAGES.get(script_of(text), "other")


def _item(index: int, row: dict[str, Any], metric: str | None) -> Item:
    tuned, base = row.get("tuned") or {}, row.get("base")
    delta = _delta(row, metric)
    question = " ".join(str(row.get(k) or "") for k in ("instruction", "input")).strip()
    options = row.get("options")
    return Item(
        set=str(row.get("set") or TASK),
        id=str(row["id"]),
        index=index,
        instruction=str(row.get("instruction") or ""),
        input=str(row.get("input") or ""),
        reference=str(row.get("reference") or ""),
        options={str(k): str(v) for k, v in options.items()} if isinstance(options, dict) else None,
        tuned=tuned.get("prediction"),
        base=base.get("prediction") if base else None,
        tuned_scores=_scores(tuned),
        base_scores=_scores(base),
        tuned_flags=[str(f) for f in tuned.get("flags") or []],
        base_flags=[str(f) for f in (base or {}).get("flags") or []],
        metric=metric,
        delta=delta,
        bucket=bucket_of(delta),
        language=language_of(question or str(row.get("reference") or "")),
        judge=str(row["judge"]["verdict"]) if isinstance(row.get("judge"), dict) else None,
        system=str(row.get("system") or ""),
        history=[(str(user), str(assistant)) for user, assistant in row.get("history") or []],
    )


def _metric_of(summary: dict[str, Any], set_name: str) -> str | None:
    section = summary.get("task") if set_name == TASK else (summary.get("forgetting") or {}).get(set_name)
    return primary_metric(section) if section else None


def _other_run(path: Path) -> tuple[str, dict[Key, str | None]]:
    """A further run's tuned answers by (set, id)."""
    run, evaluation = locate(Path(path))
    if evaluation is None or not evaluation.scores_path.is_file():
        raise WbError(f"{path}: no evaluation with per-item scores: run `wb eval {path}` first")
    answers = {
        (str(r.get("set") or TASK), str(r["id"])): (r.get("tuned") or {}).get("prediction") for r in evaluation.scores()
    }
    return run.path.name, answers


def _predictions(path: Path) -> tuple[str, dict[Key, str | None]]:
    """A predictions file's answers by (set, id): the rows `wb eval --predictions` reads (id defaults to the row's
    position, set to `task`, as there)."""
    answers: dict[Key, str | None] = {}
    for n, row in read_objects(Path(path)):
        if not isinstance(row.get("prediction"), str):
            raise WbError(f"{path}:line {n}: field prediction: missing or not a string")
        answers[(str(row.get("set") or TASK), str(row.get("id", n)))] = row["prediction"]
    if not answers:
        raise WbError(f"{path}: no predictions in the file")
    return Path(path).name, answers


def _sample(folder: EvalFolder, rows: list[dict[str, Any]], summary: dict[str, Any]) -> list[Key]:
    """The stratified sample `wb eval` wrote to review_sample.csv (read back when present, else drawn the same way:
    seeded, a third each of regressions, gains and ties of the task set)."""
    if folder.review_sample_path.is_file():
        return [(r.get("set") or TASK, str(r["id"])) for r in review_sample.read_sample(folder.review_sample_path)]
    task = summary.get("task") or {}
    metric = (task.get("settings") or {}).get("primary") or primary_metric(task) or "rouge_l"
    seed = (folder.manifest() or {}).get("seed")
    chosen = review_sample.sample(rows, SAMPLE_SIZE, seed if isinstance(seed, int) else 0, metric)
    return [(str(r["set"]), str(r["id"])) for r in chosen]


def load(runs: list[Path], predictions: Path | None = None) -> ReviewData:
    """The first run's items (the one whose verdicts are kept), with a column per further run and predictions file."""
    if not runs:
        raise WbError("wb review takes a run folder (runs/NAME) evaluated by `wb eval`")
    run = load_run(Path(runs[0]))
    _, folder = locate(Path(runs[0]))
    stamp = folder.stamp() if folder is not None else ()
    by_set = scored_items(run)
    if folder is None or not by_set:
        raise WbError(f"{runs[0]}: no per-item scores to review: run `wb eval {runs[0]}` first")
    rows: list[dict[str, Any]] = []
    items: list[Item] = []
    for set_name, set_rows in by_set.items():
        metric = _metric_of(run.summary, set_name)
        for row in set_rows:
            items.append(_item(len(items), row, metric))
            rows.append(row)
    seen: set[Key] = set()
    for it in items:
        if it.key in seen:
            raise WbError(f"{folder.scores_path}: set {it.set}: id {it.id} appears twice; ids must be unique per set")
        seen.add(it.key)
    others = [_other_run(p) for p in runs[1:]]
    if predictions is not None:
        others.append(_predictions(predictions))
    matches = []
    for name, answers in others:
        found = sum(it.key in answers for it in items)
        matches.append(
            f"{name}: {found} of {len(items)} items matched by set and id; {len(items) - found} of {run.name}'s "
            f"items and {len(answers) - found} of {name}'s have no partner"
        )
        for it in items:
            it.extra.append(answers.get(it.key))
    for it in items:
        turns = [text for turn in it.history for text in turn]
        texts = [it.set, it.id, it.system, *turns, it.instruction, it.input, it.reference, it.tuned, it.base, *it.extra]
        it.haystack = "\n".join(t for t in texts if t).lower()
    sample = [k for k in _sample(folder, rows, run.summary) if k in seen]
    names = [name for name, _ in others]
    return ReviewData(run.name, folder, items, names, matches, sample, stamp, (list(runs), predictions))
