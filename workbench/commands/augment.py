"""`wb augment`: new records written by a local model, screened by the cleaning rules, and their accounting."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workbench import console
from workbench.commands.options import DropExtraOpt, PrecisionOpt, QuietOpt, fields
from workbench.console import line
from workbench.models.generate import GenerationSettings

_G, _GH = fields(GenerationSettings)


@console.user_errors
def augment(
    input: Annotated[Path, typer.Argument(help="Records to augment (output of wb clean).")],
    model: Annotated[str, typer.Option("--model", help="Local model that writes the new records (a capable one).")],
    method: Annotated[
        str, typer.Option("--method", help="paraphrase (instructions) or back_translate (answers, EN<->ZH).")
    ] = "paraphrase",
    lang: Annotated[str, typer.Option("--lang", help="Languages of the texts to rewrite: en, zh or en,zh.")] = "en,zh",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="New records (default: ./<name>.augmented.jsonl).")
    ] = None,
    profile: Annotated[
        str, typer.Option("--profile", "-p", help="Cleaning profile whose rules the new records pass.")
    ] = "default",
    prompts: Annotated[
        Path | None, typer.Option("--prompts", help="Prompt file (a copy of pipelines/augment-prompts.yaml).")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="Tokens per generated text.")] = 256,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help=_GH["batch_size"])] = 8,
    sample: Annotated[bool, typer.Option("--sample", help=_GH["do_sample"])] = False,
    temperature: Annotated[float, typer.Option("--temperature", help=_GH["temperature"])] = 0.7,
    seed: Annotated[int, typer.Option("--seed", help="Seed of sampling.")] = 0,
    precision: PrecisionOpt = "auto",
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Generate everything again.")] = False,
    quiet: QuietOpt = False,
    drop_extra_fields: DropExtraOpt = False,
) -> None:
    """New records written by a local model (paraphrased instructions, back-translated answers), each with its
    provenance, passed through the cleaning rules and near-dedup against the originals: never a copy."""
    from workbench import augment as aug
    from workbench.clean.profile import load

    chosen, langs, prof = aug.parse_method(method), aug.parse_langs(lang), load(profile)
    settings = GenerationSettings(
        max_new_tokens=max_new_tokens, batch_size=batch_size, do_sample=sample, temperature=temperature, seed=seed,
        precision=precision,
    )  # fmt: skip
    with console.count_progress(quiet) as progress:
        result = aug.augment_file(
            input, output, model, chosen, langs, prof, settings, prompts, not no_cache, progress, console.say(quiet),
            extra_fields=not drop_extra_fields,
        )  # fmt: skip
    s = result.stats
    if not quiet:
        for rule, n in s["dropped_by_rule"].items():
            line(f"dropped: {rule} {n:,}")
        if s["not_in_chosen_languages"]:
            line(f"{s['not_in_chosen_languages']:,} original(s) not in {lang}: not augmented")
    line(
        f"generated {s['generated']:,} = kept {s['kept']:,} + dropped {s['dropped']:,}; wrote {result.paths.out} "
        "(+ .dropped.jsonl, .stats.json, .manifest.json)"
    )
