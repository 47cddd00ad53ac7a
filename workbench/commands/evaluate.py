"""`wb eval`: a tuned model against its base (or a predictions file, or a filled review) and the metric tables.

Its options are the fields of `EvalConfig` and `GenerationSettings`, with their defaults and help texts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from workbench import console, metric_specs
from workbench.commands.options import QuietOpt, SplitOpt, VerboseOpt, fields
from workbench.console import fmt, line
from workbench.errors import WbError
from workbench.evaluate.config import EvalConfig
from workbench.models.generate import GenerationSettings
from workbench.precision import Precision
from workbench.runfile.evals import EvalMetrics, Stat
from workbench.runfile.folder import EvalFolder

_E, _EH = fields(EvalConfig)
_G, _GH = fields(GenerationSettings)
PREF_COLUMNS = ("metric", "value", "95% CI", "base", "win/tie/loss")


@console.user_errors
def eval_(
    target: Annotated[
        str | None, typer.Argument(help="Run folder (runs/NAME), adapter folder or model; omit with --predictions.")
    ] = None,
    data: Annotated[Path | None, typer.Option("--data", "-d", help=_EH["data"])] = _E["data"],
    suite: Annotated[str, typer.Option("--suite", "-s", help=_EH["suite"])] = _E["suite"],
    probes: Annotated[list[str] | None, typer.Option("--probes", help=_EH["probes"] + " (repeatable)")] = None,
    no_probes: Annotated[bool, typer.Option("--no-probes", help="Skip the forgetting probes.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", help=_EH["limit"])] = _E["limit"],
    probe_limit: Annotated[int | None, typer.Option("--probe-limit", help=_EH["probe_limit"])] = _E["probe_limit"],
    mc: Annotated[list[str] | None, typer.Option("--mc", help=_EH["mc"] + " (repeatable)")] = None,
    mc_limit: Annotated[int | None, typer.Option("--mc-limit", help=_EH["mc_limit"])] = _E["mc_limit"],
    fewshot: Annotated[int, typer.Option("--fewshot", help=_EH["fewshot"])] = _E["fewshot"],
    mc_prompt: Annotated[str, typer.Option("--mc-prompt", help=_EH["mc_prompt"])] = _E["mc_prompt"],
    mc_letters: Annotated[bool, typer.Option("--mc-letters", help=_EH["mc_letters"])] = _E["mc_letters"],
    model: Annotated[
        str | None, typer.Option("--model", help="Evaluate a model alone (a model spec, no run); give -o DIR.")
    ] = None,
    no_base: Annotated[bool, typer.Option("--no-base", help="Do not evaluate the base model.")] = False,
    base_model: Annotated[str | None, typer.Option("--base-model", help=_EH["base_model"])] = _E["base_model"],
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help=_GH["max_new_tokens"])] = _G["max_new_tokens"],
    probe_max_new_tokens: Annotated[int, typer.Option("--probe-max-new-tokens", help=_EH["probe_max_new_tokens"])] = _E[
        "probe_max_new_tokens"
    ],
    batch_size: Annotated[int, typer.Option("--batch-size", help=_GH["batch_size"])] = _G["batch_size"],
    sample: Annotated[bool, typer.Option("--sample", help=_GH["do_sample"])] = _G["do_sample"],
    temperature: Annotated[float, typer.Option("--temperature", help=_GH["temperature"])] = _G["temperature"],
    seed: Annotated[int, typer.Option("--seed", help=_EH["seed"])] = _E["seed"],
    review_size: Annotated[int, typer.Option("--review-size", help=_EH["review_size"])] = _E["review_size"],
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Generate everything again.")] = False,
    precision: Annotated[Precision, typer.Option("--precision", help=_GH["precision"])] = _G["precision"],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Folder to write (default RUN/eval).")] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            "--predictions", help="Score a file of prediction/reference rows (optional base_prediction); no model."
        ),
    ] = None,
    import_review: Annotated[
        Path | None, typer.Option("--import-review", help="Fold a filled review_sample.csv back into RUN/eval.")
    ] = None,
    prefs: Annotated[Path | None, typer.Option("--prefs", help=_EH["prefs"])] = None,
    reward_model: Annotated[Path | None, typer.Option("--reward-model", help=_EH["reward_model"])] = None,
    judge: Annotated[str | None, typer.Option("--judge", help=_EH["judge"])] = _E["judge"],
    judge_prompts: Annotated[Path | None, typer.Option("--judge-prompts", help=_EH["judge_prompts"])] = _E[
        "judge_prompts"
    ],
    quiet: QuietOpt = False,
    split: SplitOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Score a tuned model against its base: task metrics, forgetting probes, A/B with confidence intervals."""
    from workbench.evaluate import judging, pipeline

    if import_review is not None:
        _print_review(judging.import_review_into(import_review, target, output))
        return
    if mc_prompt not in ("template", "plain"):
        raise WbError(f"--mc-prompt: {mc_prompt!r} is not one of template, plain")
    generation = GenerationSettings(
        max_new_tokens=max_new_tokens, batch_size=batch_size, do_sample=sample, temperature=temperature, seed=seed,
        precision=precision,
    )  # fmt: skip
    config = EvalConfig(
        data=data, suite=suite, split=split, limit=limit, probes=[] if no_probes else (probes or list(_E["probes"])),
        probe_limit=probe_limit, mc=mc or [], mc_limit=mc_limit, fewshot=fewshot, mc_prompt=mc_prompt,
        mc_letters=mc_letters,
        base=not no_base, base_model=base_model, generation=generation, probe_max_new_tokens=probe_max_new_tokens,
        seed=seed, review_size=review_size, cache=not no_cache, prefs=prefs, reward_model=reward_model, judge=judge,
        judge_prompts=judge_prompts,
    )  # fmt: skip
    with console.count_progress(quiet) as progress, console.heartbeat("eval", quiet):
        result = pipeline.run(
            target, config, output, model=model, predictions=predictions, on_status=console.say(quiet),
            on_progress=progress,
        )  # fmt: skip
    if not quiet:
        print_metrics(result.metrics)
    console.warnings(result.warnings, verbose)
    line(f"wrote {result.out_dir}/ (metrics.json, scores.jsonl)")


def _print_review(imported: Any) -> None:
    summary, agreed = imported.summary, imported.agreement
    if agreed is not None:
        kappa = "undefined" if agreed["kappa"] is None else f"{agreed['kappa']:.3f}"
        line(f"judge vs reviewers: Cohen's kappa {kappa} on {agreed['n']} items")
    v, written = summary["verdicts"], EvalFolder(imported.folder).review_path
    line(
        f"review: {summary['reviewed']} verdicts ({summary['unreviewed']} rows left empty): tuned better {v['tuned']}, "
        f"base better {v['base']}, tie {v['tie']}, both bad {v['both_bad']}; wrote {written}"
    )


def _interval(lo: float | None, hi: float | None) -> str:
    """A stat's interval as `[lo, hi]`, or `-` where it has none (fewer than two items)."""
    if lo is None or hi is None:
        return "-"
    return f"[{fmt(lo)}, {fmt(hi)}]"


def print_metrics(metrics: EvalMetrics) -> None:
    """The metric tables of an eval: task and each probe set, the judge, preference pairs."""
    groups = ([("task", metrics.task)] if metrics.task is not None else []) + list(metrics.forgetting.items())
    for name, summary in groups:
        columns = ("metric", "tuned", "95% CI", "base", "delta", "delta 95% CI", "win/tie/loss")
        table = console.table(
            f"{name} ({summary.n} items)", *((c, "left" if c == "metric" else "right") for c in columns)
        )
        for key, st in summary.metrics.items():
            has_base = st.base is not None
            table.add_row(
                key,
                fmt(st.tuned),
                _interval(st.lower, st.upper),
                fmt(st.base) if has_base else "",
                f"{st.delta:+.3f}" if has_base and st.delta is not None else "",
                _interval(st.delta_lower, st.delta_upper) if has_base else "",
                f"{st.wins}/{st.ties}/{st.losses}" if has_base and st.wins is not None else "",
            )
        console.show(table)
        if summary.kind == "mc" and "scoring" in summary.settings:
            line(f"{name}: scored {summary.settings['scoring']}")
        j = summary.judge
        if j:
            line(
                f"judge ({j.n} items, both orders): win {fmt(j.win_rate)}, tie {fmt(j.tie_rate)}, "
                f"loss {fmt(j.loss_rate)}; win - loss {fmt(j.win_minus_loss)} "
                f"[{fmt(j.win_minus_loss_lower)}, {fmt(j.win_minus_loss_upper)}]; "
                f"position flips {fmt(j.position_flip_rate)}; unparsed {j.unparsed} of {j.replies}"
            )
    pref = metrics.preference
    if pref:
        title = f"preference ({pref.n} pairs)"
        table = console.table(title, *((c, "left" if c == "metric" else "right") for c in PREF_COLUMNS))
        for key in (m.name for m in metric_specs.pref_metrics()):
            stat: Stat | None = getattr(pref, key)
            if stat:
                table.add_row(
                    f"pref.{key}",
                    fmt(stat.tuned),
                    _interval(stat.lower, stat.upper),
                    fmt(stat.base) if stat.base is not None else "",
                    f"{stat.wins}/{stat.ties}/{stat.losses}" if stat.wins is not None else "",
                )
        if pref.win_rate is not None:
            table.add_row("pref.win_rate", fmt(pref.win_rate), "", "", "")
        console.show(table)
