"""The pairwise judge on the task set (`wb eval --judge`: both answer orders of every item, by a judge model), and the
human review folded into it (`--import-review`: the CSV's verdicts saved through `verdicts.VerdictStore`, and the
judge's agreement with the reviewers).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import WbError
from workbench.evaluate import judge, review, verdicts
from workbench.evaluate.config import EvalConfig, ProgressFn, StatusFn
from workbench.evaluate.sets import TASK, EvalSet
from workbench.precision import for_model
from workbench.runfile.evals import (
    JudgeSummary,
)
from workbench.runfile.folder import EvalFolder, RunFolder


def judge_task(
    sets: list[EvalSet],
    config: EvalConfig,
    cache: Any,
    on_status: StatusFn | None,
    on_progress: ProgressFn | None,
) -> None:
    """The pairwise judge on the task set: both answer orders of every item with a base and a tuned answer."""
    task = next((s for s in sets if s.kind == TASK), None)
    if task is None or "base" not in task.predictions or "tuned" not in task.predictions:
        raise WbError("--judge compares base and tuned task answers: give --data (and keep the base model)")
    prompts = judge.load_judge_prompts(config.judge_prompts)
    pairs = [
        judge.Pair(it.prompt, it.reference, tuned, base)
        for it, tuned, base in zip(task.items, task.predictions["tuned"], task.predictions["base"], strict=True)
    ]
    generate, about = judge_generator(str(config.judge), config, cache, on_status, on_progress)
    task.judged = judge.judge_pairs(pairs, prompts, generate)
    task.judge_settings = {
        "model": str(config.judge),
        **about,
        "prompts": {lang: p.name for lang, p in prompts.items()},
        "prompts_folder": str(config.judge_prompts) if config.judge_prompts else "shipped",
        "max_new_tokens": {lang: p.max_new_tokens for lang, p in prompts.items()},
        "languages": {lang: sum(v.language == lang for v in task.judged) for lang in prompts},
    }


def judge_generator(
    spec: str, config: EvalConfig, cache: Any, on_status: StatusFn | None, on_progress: ProgressFn | None
) -> tuple[judge.GenerateFn, dict[str, Any]]:
    """The judge model (a local model folder, a run or `embedded`) as a GenerateFn, and what it ran as."""
    from workbench.models.targets import load, resolve_target

    loaded = load([resolve_target(spec)], on_status=on_status)
    report = (lambda done, total: on_progress("judge", done, total)) if on_progress is not None else None
    about = {"template": loaded.template, **for_model(config.generation.precision, loaded.model).record()}
    return judge.model_generate(loaded, config.generation, cache, report), about


def with_review(summary: JudgeSummary, rows: list[dict[str, Any]], reviewed: list[dict[str, Any]]) -> JudgeSummary:
    """The judge summary with its agreement with the human reviewers (Cohen's kappa over the items both judged)."""
    agreed = verdicts.judge_agreement(rows, reviewed)
    return summary.model_copy(
        update={"kappa": agreed["kappa"], "kappa_n": agreed["n"], "review_agreement": agreed["agreement"]}
    )


def fold_review_into_judge(eval_dir: Path) -> dict[str, Any] | None:
    """After `--import-review`: the judge's agreement with the reviewers, written into metrics.json's task.judge
    (None when the eval folder has no judge verdicts)."""
    folder = EvalFolder(eval_dir)
    if not folder.metrics_path.is_file() or not folder.scores_path.is_file():
        return None
    metrics = folder.metrics()
    if metrics.task is None or metrics.task.judge is None:
        return None
    rows = list(folder.scores())
    metrics.task.judge = with_review(metrics.task.judge, rows, folder.reviewed_items())
    folder.write_metrics(metrics)
    return {"kappa": metrics.task.judge.kappa, "n": metrics.task.judge.kappa_n}


@dataclass
class ReviewImport:
    folder: Path  # the eval folder the review was written into
    summary: dict[str, Any]  # the CSV's verdict counts, reviewed and unreviewed rows
    agreement: dict[str, Any] | None  # the judge's Cohen's kappa with the reviewers (None without a judge)


def import_review_into(filled: Path, target: str | Path | None, out_dir: Path | None = None) -> ReviewImport:
    """`wb eval --import-review`: read a filled review_sample.csv, save its verdicts into the eval folder's store
    (`out_dir`, else `target`/eval), and fold the reviewers' verdicts into the judge's agreement in metrics.json."""
    from workbench.output import locked_run

    folder = out_dir or (RunFolder(Path(target)).eval_folder.path if target else None)
    if folder is None or not folder.is_dir():
        raise WbError("--import-review: give the run folder (or -o its eval folder) the review belongs to")
    summary = review.import_review(filled)
    by_reviewer: dict[str, list[verdicts.Verdict]] = {}
    for item in summary["items"]:
        name = verdicts.check_reviewer(item.get("reviewer") or verdicts.CSV_REVIEWER)
        by_reviewer.setdefault(name, []).append(
            verdicts.Verdict(item["set"], item["id"], item["verdict"], name, item["time"], note=item.get("note", ""))
        )
    with locked_run(Path(target)) if out_dir is None and target else contextlib.nullcontext():  # writes into the run
        store = verdicts.VerdictStore(EvalFolder(folder))
        for i, name in enumerate(list(by_reviewer) or [verdicts.CSV_REVIEWER]):  # the CSV's empty rows: first name
            store.save(name, by_reviewer.get(name, []), unreviewed=summary["unreviewed"] if i == 0 else None)
        return ReviewImport(folder, summary, fold_review_into_judge(folder))
