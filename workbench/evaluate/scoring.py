"""Scoring one set: every side's per-item scores (the registry's scorers, overlap metrics per language group, losses,
option log-likelihoods), degenerate-answer flags, and their aggregates: metrics with intervals, corpus scores,
degenerate shares, classification reports and the items that regressed.
"""

from __future__ import annotations

import math
from typing import Any

from workbench import degenerate_kinds, metric_specs
from workbench.errors import WbError
from workbench.evaluate import compare, degenerate, judge, scorers
from workbench.evaluate.forgetting import Item
from workbench.evaluate.metrics import METRIC_KEYS, score_items
from workbench.evaluate.notes import mc_notes, notes
from workbench.evaluate.sets import SIDES, TASK, EvalSet, side_value
from workbench.evaluate.suite import EvalSuite
from workbench.runfile.evals import (
    ClassReport,
    CorpusScore,
    DegenerateStat,
    ScoreRow,
    SetMetrics,
    SideScores,
    Stat,
)
from workbench.text import count_cjk

REGRESSIONS_KEPT = 50


def _answer_type(s: EvalSet, item: Item, suite: EvalSuite) -> str:
    if s.kind == "text":
        return "lm"
    if s.kind == "qa":
        return "probe"
    if s.kind == "mc":
        return "mc"
    return item.answer_type or suite.answer_type


def _language(text: str) -> str:
    return "zh" if count_cjk(text) else "latin"


def score_set(s: EvalSet, suite: EvalSuite, seed: int) -> tuple[list[ScoreRow], SetMetrics, list[str]]:
    """Per-item scores of every side and their aggregate: metrics with intervals, corpus scores per language,
    degenerate-answer shares, classification reports; plus warnings in words."""
    sides = [side for side in SIDES if side in s.predictions or side in s.losses or side in s.mc]
    n = len(s.items)
    types = [_answer_type(s, it, suite) for it in s.items]
    wanted = [suite.metrics_for(t) for t in types]
    warnings: list[str] = []
    settings: dict[str, Any] = {"suite": suite.name} if s.kind == TASK else dict(s.settings)

    # What is scored: with strip_prompt_prefix, the part after a prefix the reference shares with the prompt.
    refs: list[list[str]] = [list(it.references) for it in s.items]
    scored_preds: dict[str, list[str]] = {side: list(s.predictions[side]) for side in sides if side in s.predictions}
    stripped: list[bool] = [False] * n
    if s.kind == TASK and suite.strip_prompt_prefix:
        for i, it in enumerate(s.items):
            prompt = it.prompt
            if not prompt:
                continue
            _, ref_rest, shared = degenerate.strip_shared_prefix("", it.reference, prompt)
            if shared:
                stripped[i] = True
                refs[i] = [ref_rest]
                for preds in scored_preds.values():
                    preds[i], _, _ = degenerate.strip_shared_prefix(preds[i], it.reference, prompt)
        if any(stripped):
            settings["scored_after_prompt_prefix"] = sum(stripped)
            warnings.append(
                f"{sum(stripped)} of {n} references begin with the prompt text: answers and references are scored "
                "after that shared prefix, so repeating the question earns nothing"
            )

    per_side: dict[str, list[SideScores]] = {}
    corpus: dict[str, CorpusScore] = {}
    flagged: dict[str, list[list[str]]] = {}
    for side in sides:
        values: list[dict[str, float | int | None]] = [{} for _ in range(n)]
        if side in scored_preds:
            preds = scored_preds[side]
            _overlap_scores(s, preds, refs, wanted, values, corpus, side, warnings)
            for i, it in enumerate(s.items):
                ctx = scorers.ItemContext(it.reference if not stripped[i] else refs[i][0], refs[i], it.options, suite)
                for name in wanted[i]:
                    score = scorers.scorer(name)
                    if score is None:
                        continue
                    try:
                        values[i][name] = score(preds[i], ctx)
                    except ValueError as e:
                        raise WbError(f"{s.name} item {it.id}: {name}: {e}") from None
            flagged[side] = _flags(s, side)
        if side in s.losses:
            for i, loss in enumerate(s.losses[side]):
                if "loss" in wanted[i]:
                    values[i]["loss"] = loss
                if s.kind == "text":
                    values[i]["perplexity"] = round(math.exp(loss), 4) if loss is not None else None
        if side in s.mc:
            from workbench.evaluate.loglik import item_metrics

            for i, it in enumerate(s.items):
                values[i].update({k: v for k, v in item_metrics(it, s.mc[side][i]).items() if k in wanted[i]})
        scores = []
        for i in range(n):
            answer = s.generated.get(side, [None] * n)[i] if side in s.generated else None
            prediction = s.predictions[side][i] if side in s.predictions else None
            scored = scored_preds[side][i] if side in scored_preds else None
            scores.append(
                SideScores(
                    prediction=prediction,
                    scored=scored if scored != prediction else None,
                    generated_tokens=answer.generated_tokens if answer is not None else None,
                    finished=answer.finished if answer is not None else None,
                    flags=flagged.get(side, [[]] * n)[i],
                    mc=s.mc[side][i] if side in s.mc else None,
                    **values[i],
                )
            )
        per_side[side] = scores

    rows = []
    for i, it in enumerate(s.items):
        rows.append(
            ScoreRow(
                set=s.name,
                id=it.id,
                instruction=it.instruction,
                input=it.input,
                system=it.system or None,
                history=it.history or None,
                reference=it.reference,
                answers=it.answers if it.answers and it.answers != [it.reference] else None,
                answer_type=types[i] if s.kind == TASK else None,
                options=it.options if s.kind == "mc" else None,
                scored_reference=refs[i][0] if stripped[i] else None,
                tuned=per_side["tuned"][i] if "tuned" in per_side else SideScores(),
                base=per_side.get("base", [None] * n)[i] if "base" in per_side else None,
                judge=s.judged[i] if s.judged else None,
            )
        )

    metrics = _aggregate(rows, sides, seed)
    classification: dict[str, ClassReport] = {}
    if any(t == "label" for t in types) and "macro_f1" in (suite.metrics or metric_specs.for_answer_type("label")):
        stat, classification = _macro_f1(s, types, suite, sides, seed)
        if stat is not None:
            metrics["macro_f1"] = stat
    metrics = {k: metrics[k] for k in metric_specs.order(metrics)}
    degenerate_stats = _degenerate(flagged, n)
    warnings.extend(notes(s, metrics, degenerate_stats, corpus, suite, sides))
    if s.kind == "mc":
        warnings.extend(mc_notes(s, metrics, rows))
    primary = suite.primary if suite.primary in metrics else next(iter(metrics), None)
    if primary is not None and s.kind == TASK:
        settings["primary"] = primary
    regressions: list[int | str] = []
    if s.kind == TASK and "base" in sides and primary is not None:
        sign = 1 if metric_specs.higher_is_better(primary) else -1
        deltas = []
        for k, row in enumerate(rows):
            t, b = side_value(row.tuned, primary), side_value(row.base, primary)
            if t is not None and b is not None:
                deltas.append((sign * (t - b), k))
        regressions = [rows[k].id for d, k in sorted(deltas) if d < 0][:REGRESSIONS_KEPT]
    judge_summary = judge.summarise(s.judged, seed, s.judge_settings) if s.judged else None
    if judge_summary is not None:
        warnings.extend(judge.notes(judge_summary))
    summary = SetMetrics(
        judge=judge_summary,
        n=n,
        kind=s.kind,
        metrics=metrics,
        corpus=corpus,
        regressions=regressions,
        degenerate=degenerate_stats,
        classification=classification,
        settings=settings,
    )
    return rows, summary, warnings


def _overlap_scores(
    s: EvalSet,
    preds: list[str],
    refs: list[list[str]],
    wanted: list[list[str]],
    values: list[dict[str, float | int | None]],
    corpus: dict[str, CorpusScore],
    side: str,
    warnings: list[str],
) -> None:
    """ROUGE, BLEU, chrF, EM, F1, accuracy for the items that want them; BLEU and chrF per language group (sacrebleu's
    zh tokenizer for Chinese references, 13a for the rest), corpus scores per group."""
    need = [i for i in range(len(preds)) if any(m in METRIC_KEYS for m in wanted[i])]
    groups: dict[str, list[int]] = {}
    for i in need:
        groups.setdefault(_language(" ".join(refs[i])), []).append(i)
    for language, idx in sorted(groups.items()):
        result = score_items([preds[i] for i in idx], [refs[i] for i in idx])
        if side == "tuned":
            warnings.extend(result.warnings)
        for i, item_scores in zip(idx, result.items, strict=True):
            for name, value in item_scores.items():
                if name in wanted[i]:
                    values[i][name] = value
        if s.kind != TASK:
            continue
        for name, score in result.corpus.items():
            key = name if len(groups) == 1 else f"{name}_{language}"
            entry = corpus.get(key) or CorpusScore(signature=score.signature, n=len(idx), language=language)
            update: dict[str, Any] = {side: score.score}
            if score.brevity_penalty is not None:
                prefix = "" if side == "tuned" else "base_"
                update[f"{prefix}brevity_penalty"] = score.brevity_penalty
                update[f"{prefix}length_ratio"] = score.length_ratio
            corpus[key] = entry.model_copy(update=update)


def _flags(s: EvalSet, side: str) -> list[list[str]]:
    answers = s.generated.get(side)
    out = []
    for i, it in enumerate(s.items):
        answer = answers[i] if answers is not None else None
        found = degenerate.flags(
            s.predictions[side][i],
            it.prompt,
            answer.generated_tokens if answer is not None else None,
            s.max_new_tokens if answer is not None else None,
            answer.finished if answer is not None else None,
        )
        out.append([kind for kind in degenerate_kinds.names() if found.get(kind)])
    return out


def _aggregate(rows: list[ScoreRow], sides: list[str], seed: int) -> dict[str, Stat]:
    present: set[str] = set()
    for row in rows:
        present.update(k for k, v in (row.tuned.model_extra or {}).items() if v is not None)
    out: dict[str, Stat] = {}
    for name in present:
        tuned = [side_value(r.tuned, name) for r in rows]
        base = [side_value(r.base, name) for r in rows] if "base" in sides else None
        stat = compare.stat(
            tuned, base, seed, binary=metric_specs.is_binary(name), higher_is_better=metric_specs.higher_is_better(name)
        )
        have = sum(v is not None for v in tuned)
        if have < len(rows):
            stat["n"] = have
        out[name] = Stat.model_validate(stat)
    return out


def _macro_f1(
    s: EvalSet, types: list[str], suite: EvalSuite, sides: list[str], seed: int
) -> tuple[Stat | None, dict[str, ClassReport]]:
    from workbench.evaluate import answers

    idx = [i for i, t in enumerate(types) if t == "label"]
    refs = [s.items[i].reference for i in idx]
    reports: dict[str, ClassReport] = {}
    preds: dict[str, list[str]] = {}
    for side in sides:
        if side not in s.predictions:
            continue
        preds[side] = [s.predictions[side][i] for i in idx]
        report = answers.classification_report(preds[side], refs, suite.labels)
        reports[side] = ClassReport.model_validate(report)
    if "tuned" not in preds:
        return None, reports

    base = answers.macro_f1_of(preds["base"], refs, suite.labels) if "base" in preds else None
    stat = compare.set_stat(answers.macro_f1_of(preds["tuned"], refs, suite.labels), base, len(idx), seed)
    return Stat.model_validate(stat), reports


def _degenerate(flagged: dict[str, list[list[str]]], n: int) -> dict[str, DegenerateStat]:
    if "tuned" not in flagged or n == 0:
        return {}
    out = {}
    for kind in degenerate_kinds.names():
        tuned = sum(kind in f for f in flagged["tuned"])
        base = sum(kind in f for f in flagged["base"]) if "base" in flagged else None
        out[kind] = DegenerateStat(
            tuned=round(tuned / n, 6),
            base=round(base / n, 6) if base is not None else None,
            tuned_items=tuned,
            base_items=base,
        )
    return out
