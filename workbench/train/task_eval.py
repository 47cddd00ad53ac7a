"""Task metrics during training: at every eval, greedy answers to the first N validation records, scored with the
recipe's `eval_metrics` and logged as `eval_<metric>` beside `eval_loss`, so `metric_for_best` can pick the
checkpoint (and early stopping can watch) the metric the task is judged by, not the loss.

Answers come from `workbench.models.generate` (the code `wb eval` uses: the run's template, left-padded batches,
the end-of-turn stop tokens) under the run's precision, through the generation cache. The weights of a model in
training are not files, so the cache key's model identity is the SHA-256 of the base model's weight files and of
every trainable parameter's current values: an eval at the same weights (a resumed run re-evaluating a checkpoint)
is answered from the cache, any weight update is not.

Scores are the registry's (`workbench.metric_specs`): overlap metrics (`rouge_l`, `bleu`, `chrf`, `exact_match`,
`f1`, ...) from `workbench.evaluate.metrics.score_items`, the others from their per-item scorers
(`workbench.evaluate.scorers`) with the default suite's settings; a metric that needs a suite's settings (labels, a
pattern, a schema, options) or is not computed from an answer (losses) is refused when the recipe is read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from workbench import metric_specs
from workbench.evaluate import scorers

NEEDS_SUITE = {
    "choice_accuracy": "the options of each item",
    "label_accuracy": "a suite's label set",
    "macro_f1": "a suite's label set",
    "json_schema_valid": "a suite's JSON Schema",
    "regex_match": "a suite's pattern",
}


def generation_metrics() -> list[str]:
    """The registered metrics `eval_metrics` may name."""
    from workbench.evaluate.metrics import METRIC_KEYS

    return [
        m.name
        for m in metric_specs.metrics()
        if m.name not in NEEDS_SUITE
        and (m.name in METRIC_KEYS or (scorers.scorer(m.name) is not None and m.scope == "item"))
    ]


def metric_problem(name: str) -> str | None:
    """Why `name` cannot be an eval metric during training, or None."""
    allowed = generation_metrics()
    if name in allowed:
        return None
    if metric_specs.get(name) is None:
        return f"unknown metric {name!r} (metrics computed from answers: {', '.join(allowed)})"
    if name in NEEDS_SUITE:
        return (
            f"{name} needs {NEEDS_SUITE[name]}; score it with wb eval --suite (during training: {', '.join(allowed)})"
        )
    return f"{name} is not computed from generated answers (during training: {', '.join(allowed)})"


def mean_scores(predictions: Sequence[str], references: Sequence[str], names: Sequence[str]) -> dict[str, float]:
    """The mean of each metric over the items; items a metric gives no value (a reference without a number for
    numeric_match) are left out, and a metric with no item at all has no entry."""
    from workbench.evaluate.metrics import METRIC_KEYS, score_items
    from workbench.evaluate.suite import DEFAULT

    values: dict[str, list[float]] = {n: [] for n in names}
    overlap = [n for n in names if n in METRIC_KEYS]
    if overlap and predictions:
        result = score_items(list(predictions), [[r] for r in references])
        for item in result.items:
            for n in overlap:
                if item.get(n) is not None:
                    values[n].append(float(item[n]))
    for n in names:
        score = scorers.scorer(n)
        if n in METRIC_KEYS or score is None:
            continue
        for pred, ref in zip(predictions, references, strict=True):
            try:
                v = score(pred, scorers.ItemContext(ref, [ref], None, DEFAULT))
            except ValueError:  # the reference does not fit the metric (no number in it): no value for this item
                continue
            if v is not None:
                values[n].append(float(v))
    return {n: round(sum(v) / len(v), 6) for n, v in values.items() if v}


def trainable_sha256(model: Any) -> str:
    """SHA-256 of every trainable parameter's name and current values (the identity of weights in training)."""
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        if p.requires_grad:
            digest.update(name.encode())
            digest.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class TaskEval:
    """Generate answers for validation records with the model in training and score them."""

    records: list[dict[str, Any]]  # instruction, input, output, system, history
    metrics: list[str]
    tokenizer: Any
    template: str
    base: str  # the base model spec (its weight files are part of the cache key)
    precision: str  # the run's: bf16 or fp32
    max_new_tokens: int
    batch_size: int
    cache: Any = None
    calls: int = field(default=0)

    def __call__(self, model: Any) -> dict[str, float]:
        from workbench.models.generate import GenerationSettings, generate_answers, prompt_for
        from workbench.models.targets import Loaded

        loaded = Loaded(model, self.tokenizer, self.template, self.base, weights_sha256=trainable_sha256(model))
        settings = GenerationSettings(
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
            precision=self.precision if self.precision in ("bf16", "fp32") else "auto",
        )
        prompts = [prompt_for(loaded, r) for r in self.records]
        was_training = model.training
        model.eval()
        try:
            answers = generate_answers(loaded, prompts, settings, self.cache)
        finally:
            model.train(was_training)
        self.calls += 1
        return mean_scores([a.text for a in answers], [str(r["output"]) for r in self.records], self.metrics)


def records_for_eval(val: Sequence[tuple[int, dict[str, Any]]], limit: int) -> list[dict[str, Any]]:
    """The first `limit` validation records that have an instruction and a text answer (tool conversations and
    preference pairs are left out)."""
    out = []
    for _, r in val:
        if isinstance(r.get("instruction"), str) and isinstance(r.get("output"), str):
            out.append(
                {
                    "instruction": r["instruction"],
                    "input": r.get("input") or "",
                    "output": r["output"],
                    "system": r.get("system") or "",
                    "history": [list(t) for t in r.get("history") or []],
                }
            )
        if len(out) >= limit:
            break
    return out
