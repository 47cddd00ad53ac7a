"""The warnings of an evaluation, in words: what a reader must know before trusting its numbers (constant metrics,
degenerate answers, answers cut at the token limit, multiple-choice sets not told apart from guessing, task items
seen in training, a task set too small for intervals).
"""

from __future__ import annotations

from workbench import degenerate_kinds, metric_specs
from workbench.evaluate import compare
from workbench.evaluate.sets import EvalSet, side_value
from workbench.evaluate.suite import EvalSuite
from workbench.runfile.evals import (
    CorpusScore,
    DegenerateStat,
    Overlap,
    ScoreRow,
    SetMetrics,
    Stat,
)


def mc_notes(s: EvalSet, metrics: dict[str, Stat], rows: list[ScoreRow]) -> list[str]:
    """Rejected rows, and sides whose accuracy cannot be told from guessing (then the set cannot show forgetting)."""
    out = []
    rejected = int(s.settings.get("rejected") or 0)
    if rejected:
        first = (s.settings.get("rejects") or [""])[0]
        out.append(f"{rejected} rows of {s.settings.get('source')} were rejected, not scored (first: {first})")
    chance = sum(1 / len(it.options or {"": ""}) for it in s.items) / max(1, len(s.items))
    for name in ("mc_accuracy", "mc_accuracy_norm", "mc_letter_accuracy"):
        if name not in metrics:
            continue
        for side in ("tuned", "base"):
            values = [v for r in rows if (v := side_value(getattr(r, side), name)) is not None]
            if len(values) < 2:
                continue
            mean, lo, hi = compare.bootstrap_mean_ci(values, 0)
            if lo <= chance <= hi:
                out.append(
                    f"{side} {name} {mean:.3f} (95% interval [{lo:.3f}, {hi:.3f}]) includes chance ({chance:.2f}): "
                    "on this set the model is not told apart from guessing"
                )
    return out


def notes(
    s: EvalSet,
    metrics: dict[str, Stat],
    flags: dict[str, DegenerateStat],
    corpus: dict[str, CorpusScore],
    suite: EvalSuite,
    sides: list[str],
) -> list[str]:
    """What a reader must know before trusting these numbers."""
    out = []
    for name, stat in metrics.items():
        if stat.constant:
            out.append(
                f"{name}: both models score {stat.tuned:g} on every item: this comparison carries no information"
            )
    for kind, st in flags.items():
        for side in ("tuned", "base"):
            share, count = (st.tuned, st.tuned_items) if side == "tuned" else (st.base, st.base_items)
            if count and (what := (k.warning if (k := degenerate_kinds.get(kind)) else None)):
                out.append(f"{count} of {len(s.items)} {side} answers {what} ({share:.0%})")
    cut = flags.get("cut_off")
    length_sensitive = [m for m in metrics if (spec := metric_specs.get(m)) is not None and spec.length_sensitive]
    if cut is not None and length_sensitive:
        for side in ("tuned", "base"):
            share = cut.tuned if side == "tuned" else cut.base
            if share is not None and share > suite.cut_off_warning:
                bp = [
                    f"{k} brevity penalty {v:.2f}"
                    for k, c in corpus.items()
                    if (v := (c.brevity_penalty if side == "tuned" else c.base_brevity_penalty)) is not None
                ]
                out.append(
                    f"{share:.0%} of {side} answers stopped at the {s.max_new_tokens}-token limit: "
                    f"{', '.join(length_sensitive)} measure the limit as much as the model"
                    + (f" ({'; '.join(bp)})" if bp else "")
                    + "; raise --max-new-tokens"
                )
    return out


def eval_notes(task: SetMetrics | None, overlap_model: Overlap | None) -> list[str]:
    """What a reader must know of the evaluation as a whole: task items seen in training, a task set too small."""
    warnings: list[str] = []
    if overlap_model is not None and overlap_model.items:
        warnings.append(
            f"{overlap_model.items} of the task items share a long n-gram with the run's training data "
            f"({overlap_model.fraction:.1%}): their scores measure memory, not generalisation"
        )
    if task is not None and task.n < 2:
        warnings.append(f"the task set has only {task.n} item: no interval can be computed, and no verdict made")
    elif task is not None and task.n < 30:
        warnings.append(f"the task set has only {task.n} items: intervals are wide")
    return warnings
