"""The run folder (`runs/<name>/`, docs/run-folder.md): its file names, and the one place that opens its files.

`wb train` fills a run folder (`recipe.yaml`, `trainer_log.jsonl`, `sample_losses.jsonl`, `loss.svg`, then
`manifest.json` last); `wb eval` publishes an evaluation into its `eval/` folder (`metrics.json`, `scores.jsonl`,
`review_sample.csv`, `preference_scores.jsonl`, then `manifest.json` last); human verdicts go into its `reviews/`
folder, one `<reviewer>.json` per reviewer (`wb eval --import-review` writes one, `evaluate/verdicts.py` owns the
content). An evaluation written elsewhere (`wb eval -o DIR`) is the same `EvalFolder` without a run around it.

Every other module asks `RunFolder` / `EvalFolder` for these files instead of naming them (tests/test_run_folder.py
fails on a module that does), so a new run file, or a new way to read one, changes this module and the `runfile`
models only. Readers get the `runfile` models (`TrainManifest`, `LogRow`, `EvalMetrics`, `ScoreRow`),
or plain data where a file has no model here: the recipe is a mapping, which `train.recipe`
validates as its `Recipe` (this module sits on the bottom floor, beside `runfile`, so report and gate can read runs
without importing training code). Unreadable files end in one `WbError` naming the file, the line and the field.

The generic output manifest (`workbench/manifest.py`: what ran, versions, inputs and outputs with their hashes) is
built the same way by every command, and `wb clean`, `wb score` and `wb augment` publish it as
`<stem>.manifest.json` beside their own outputs (`output.OutputSet`); only a run folder's `manifest.json` and
`eval/manifest.json` belong here. Writes stay atomic (`output.atomic_write`, `output.OutputSet`) and are made under the
run folder's lock (`output.locked_run`) by the commands that write.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import yaml
from pydantic import BaseModel, ValidationError

from workbench.errors import WbError
from workbench.io.jsontext import read_json, read_json_object, write_json
from workbench.output import atomic_write, check_complete
from workbench.runfile.evals import EvalMetrics, ScoreRow
from workbench.runfile.training import LogRow, TrainManifest
from workbench.yamlfile import read_yaml

RECIPE = "recipe.yaml"
MANIFEST = "manifest.json"
TRAINER_LOG = "trainer_log.jsonl"
SAMPLE_LOSSES = "sample_losses.jsonl"
LOSS_CURVE = "loss.svg"
EVAL = "eval"
METRICS = "metrics.json"
SCORES = "scores.jsonl"
PREFERENCE_SCORES = "preference_scores.jsonl"
REVIEW = "reviews"
REVIEWER_SUFFIX = ".json"
REVIEW_SAMPLE = "review_sample.csv"

RUN_FILES = (RECIPE, MANIFEST, TRAINER_LOG, SAMPLE_LOSSES, LOSS_CURVE)
EVAL_FILES = (METRICS, SCORES, PREFERENCE_SCORES, REVIEW, REVIEW_SAMPLE, MANIFEST)
"""The file names this module owns (no other module of the package spells them)."""

M = TypeVar("M", bound=BaseModel)
Stamp = tuple[tuple[int, int] | None, ...]
"""Files as (mtime in ns, size) each, None for one that is absent: tells cheaply that a file was replaced."""


# -- reading JSON files with file/line/field errors ----------------------------------------------------------------


def validated(model: type[M], data: Any, path: Path, line: int | None = None) -> M:
    """`data` as `model`, or a WbError naming the file, the line and the field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise WbError(_validation_line(path, err, line)) from None


def read_jsonl(path: Path, what: str, lenient_tail: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line. With `lenient_tail`, a broken last line (a run killed while
    appending) does not fail: it comes out as `(-line number, {})` so the caller can warn about it."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise WbError(f"{path}: {what} not found") from None
    with f:
        pending: tuple[int, bytes, str] | None = None
        for number, line in enumerate(f, 1):
            if pending is not None:
                raise WbError(f"{path}:{pending[0]}: {what} line is not valid JSON ({pending[2]})")
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                if lenient_tail:
                    pending = (number, line, str(e))
                    continue
                raise WbError(f"{path}:{number}: {what} line is not valid JSON ({e})") from None
            if not isinstance(obj, dict):
                raise WbError(f"{path}:{number}: {what} line must be a JSON object, found {type(obj).__name__}")
            yield number, obj
        if pending is not None:
            yield -pending[0], {}


def _validation_line(path: Path, err: ValidationError, line: int | None = None) -> str:
    e = err.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
    where = f"{path}:{line}" if line is not None else str(path)
    got = e.get("input")
    shown = f" (found {got!r})" if isinstance(got, str | int | float | bool) and len(repr(got)) < 60 else ""
    return f"{where}: field {loc}: {e['msg']}{shown}"


# -- the run folder ------------------------------------------------------------------------------------------------


@dataclass
class TrainLog:
    """trainer_log.jsonl: the rows as written (the report draws them) and each checked as a `LogRow`."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    typed: list[LogRow] = field(default_factory=list)


@dataclass(frozen=True)
class RunFolder:
    """`runs/<name>/` of `wb train`: where its files are, and reading and writing them."""

    path: Path

    @property
    def recipe_path(self) -> Path:
        return self.path / RECIPE

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def log_path(self) -> Path:
        return self.path / TRAINER_LOG

    @property
    def sample_losses_path(self) -> Path:
        return self.path / SAMPLE_LOSSES

    @property
    def loss_curve_path(self) -> Path:
        return self.path / LOSS_CURVE

    @property
    def eval_folder(self) -> EvalFolder:
        """The run's evaluation folder (`wb eval RUN` writes it)."""
        return EvalFolder(self.path / EVAL)

    def is_run(self) -> bool:
        """A folder `wb train` started: it holds the run's recipe."""
        return self.path.is_dir() and self.recipe_path.is_file()

    def finished(self) -> bool:
        """The run's manifest exists: `wb train` writes it last."""
        return self.manifest_path.exists()

    # recipe.yaml

    def recipe(self) -> dict[str, Any]:
        """The run's resolved recipe as a mapping (`train.recipe` validates it as a Recipe)."""
        data = read_yaml(self.recipe_path, "recipe")
        if data is not None and not isinstance(data, dict):
            raise WbError(f"{self.recipe_path}: a recipe must be a YAML mapping")
        return data or {}

    def write_recipe(self, recipe: dict[str, Any]) -> None:
        with atomic_write(self.recipe_path) as f:
            f.write(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True).encode())

    # manifest.json

    def manifest(self) -> dict[str, Any] | None:
        """The run's manifest as written (None before the run finished); a WbError when it is not a JSON object."""
        if not self.manifest_path.is_file():
            return None
        loaded = read_json(self.manifest_path, "run manifest")
        if not isinstance(loaded, dict):
            raise WbError(f"{self.manifest_path}: a manifest must be a JSON object")
        return loaded

    def train_manifest(self) -> TrainManifest | None:
        """The manifest of a finished training run, typed (None when absent or written by another command)."""
        raw = self.manifest()
        if raw is None or raw.get("command", "train") != "train":
            return None
        return validated(TrainManifest, raw, self.manifest_path)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """The run's manifest, checked against the run schema (typed, finite numbers; else a bug), written last."""
        TrainManifest.model_validate(manifest)
        write_json(self.manifest_path, manifest)

    # trainer_log.jsonl

    def log(self, warnings: list[str] | None = None) -> TrainLog:
        """trainer_log.jsonl, every row checked as a `LogRow` (file:line: field otherwise); empty when absent. A
        broken last line (a run killed while appending) is left out and said in `warnings`."""
        out = TrainLog()
        if not self.log_path.is_file():
            return out
        for number, row in read_jsonl(self.log_path, "trainer log", lenient_tail=True):
            if number < 0:
                if warnings is not None:
                    warnings.append(f"{self.log_path}:{-number}: last line is incomplete (run interrupted?); ignored")
                continue
            out.typed.append(validated(LogRow, row, self.log_path, number))
            out.rows.append(row)
        return out

    def log_rows(self) -> list[dict[str, Any]]:
        """The rows the run in progress has logged so far, as written (the trainer appends them)."""
        if not self.log_path.exists():
            return []
        return [row for _, row in read_jsonl(self.log_path, "trainer log")]


@dataclass(frozen=True)
class EvalFolder:
    """An evaluation folder (`runs/<name>/eval/`, or `wb eval -o DIR`)."""

    path: Path

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def scores_path(self) -> Path:
        return self.path / SCORES

    @property
    def preference_scores_path(self) -> Path:
        return self.path / PREFERENCE_SCORES

    @property
    def review_path(self) -> Path:
        """The folder of the human verdicts, one `<reviewer>.json` per reviewer."""
        return self.path / REVIEW

    def reviewer_path(self, reviewer: str) -> Path:
        """One reviewer's verdict file (the name is checked by `evaluate.verdicts.check_reviewer` first)."""
        return self.review_path / f"{reviewer}{REVIEWER_SUFFIX}"

    @property
    def review_sample_path(self) -> Path:
        return self.path / REVIEW_SAMPLE

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def has_metrics(self) -> bool:
        return self.metrics_path.is_file()

    def metrics(self) -> EvalMetrics:
        """metrics.json, typed."""
        raw = read_json_object(self.metrics_path, "eval metrics")
        return validated(EvalMetrics, raw, self.metrics_path)

    def write_metrics(self, metrics: EvalMetrics) -> None:
        write_json(self.metrics_path, metrics.model_dump(mode="json", exclude_none=True))

    def scores(self) -> Iterator[dict[str, Any]]:
        """scores.jsonl's rows as written, each checked as a `ScoreRow` (numbers are numbers: readers compute)."""
        for number, row in read_jsonl(self.scores_path, "scores"):
            validated(ScoreRow, row, self.scores_path, number)
            yield row

    def stamp(self) -> Stamp:
        """(mtime, size) of scores.jsonl and the manifest, without reading them: when `wb eval` rewrites the
        evaluation both change, the manifest last (a reader that sees only the first has a torn set)."""
        out: list[tuple[int, int] | None] = []
        for path in (self.scores_path, self.manifest_path):
            try:
                st = path.stat()
            except FileNotFoundError:
                out.append(None)
                continue
            out.append((st.st_mtime_ns, st.st_size))
        return tuple(out)

    def reviewer_files(self) -> dict[str, dict[str, Any]]:
        """Every reviewer's verdict file as written, by reviewer name (sorted); {} before any review."""
        if not self.review_path.is_dir():
            return {}
        out: dict[str, dict[str, Any]] = {}
        for path in sorted(self.review_path.glob(f"*{REVIEWER_SUFFIX}")):
            out[path.name[: -len(REVIEWER_SUFFIX)]] = read_json_object(path, "review verdicts")
        return out

    def reviewed_items(self) -> list[dict[str, Any]]:
        """Every reviewer's per-item verdicts, merged ({"set", "id", "verdict", "reviewer", ...}); [] without any."""
        items: list[dict[str, Any]] = []
        for name, data in self.reviewer_files().items():
            listed = data.get("verdicts")
            if not isinstance(listed, list):
                continue
            items.extend(
                {**i, "reviewer": name}
                for i in listed
                if isinstance(i, dict) and "id" in i and isinstance(i.get("verdict"), str)
            )
        return items

    def write_reviewer(self, reviewer: str, data: dict[str, Any]) -> None:
        """One reviewer's verdict file, replaced atomically (a failure leaves the previous file whole)."""
        self.review_path.mkdir(parents=True, exist_ok=True)
        write_json(self.reviewer_path(reviewer), data)

    def manifest(self) -> dict[str, Any] | None:
        """The evaluation's manifest as written; None when absent or not a JSON object (a metrics.json made by
        hand)."""
        if not self.manifest_path.is_file():
            return None
        loaded = read_json(self.manifest_path, "eval manifest")
        return loaded if isinstance(loaded, dict) else None

    def check_complete(self) -> None:
        """`wb eval` publishes its files as one set, the manifest (their hashes) last: refuse a torn or edited set."""
        check_complete(self.manifest_path)


def locate(path: Path) -> tuple[RunFolder, EvalFolder | None]:
    """(run folder, its evaluation or None) of what a user named: a run folder, or an evaluation folder itself."""
    if not path.exists():
        raise WbError(f"{path}: no such run folder")
    if not path.is_dir():
        raise WbError(f"{path}: not a folder; pass a run folder (runs/<name>) holding {MANIFEST} and/or {EVAL}/")
    run = RunFolder(path)
    if run.eval_folder.has_metrics():
        return run, run.eval_folder
    if EvalFolder(path).has_metrics():
        return RunFolder(path.parent if path.name == EVAL else path), EvalFolder(path)
    return run, None
