"""`wb generate` and `wb chat`: answers from a tuned model (and its other adapters, and its base) to prompts given
on the command line, or typed one after another."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from workbench import console
from workbench.commands.options import AdapterOpt, MaxNewTokensOpt, PrecisionOpt, QuietOpt
from workbench.errors import WbError


def _load_targets(target: str | None, adapters: list[Path] | None, say: Callable[[str], None]) -> Any:
    from workbench.models.targets import load, resolve_target

    specs: list[str | Path] = ([target] if target else []) + list(adapters or [])
    if not specs:
        raise WbError("give a run folder, an adapter folder or a model")
    loaded = load([resolve_target(s) for s in specs], on_status=say)
    console.warnings(loaded.warnings)  # a template unlike the one the run or export recorded
    return loaded


def _settings(max_new_tokens: int, sample: bool, temperature: float, seed: int, precision: str) -> Any:
    from workbench.models.generate import GenerationSettings

    return GenerationSettings(
        max_new_tokens=max_new_tokens, do_sample=sample, temperature=temperature, seed=seed, batch_size=1,
        precision=precision,
    )  # fmt: skip


@console.user_errors
def generate(
    args: Annotated[list[str], typer.Argument(help="[RUN|ADAPTER|MODEL] PROMPT...")],
    adapter: AdapterOpt = None,
    base: Annotated[bool, typer.Option("--base", help="Also answer with the bare base model.")] = False,
    system: Annotated[str, typer.Option("--system", help="System message.")] = "",
    max_new_tokens: MaxNewTokensOpt = 256,
    sample: Annotated[bool, typer.Option("--sample", help="Sample instead of greedy decoding.")] = False,
    temperature: Annotated[float, typer.Option("--temperature")] = 0.7,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    precision: PrecisionOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Answer prompts with a tuned model; with several --adapter, answer with each (and --base) for comparison."""
    from workbench.models.generate import generate as run_generate
    from workbench.models.generate import prompt_for

    target, prompts = (None, args) if adapter and len(args) == 1 else (args[0], args[1:])
    if not prompts:
        raise WbError('give a prompt after the run folder: wb generate runs/NAME "your prompt"')
    loaded = _load_targets(target, adapter, console.say(quiet))
    settings = _settings(max_new_tokens, sample, temperature, seed, precision)
    choices: list[str | None] = list(loaded.adapters) or [None]
    if base and loaded.adapters:
        choices.append(None)
    texts = [prompt_for(loaded, {"instruction": p, "system": system}) for p in prompts]
    for choice in choices:
        loaded.use(choice)
        answers = run_generate(loaded, texts, settings)
        for prompt, answer in zip(prompts, answers, strict=True):
            if len(choices) > 1 or len(prompts) > 1:
                console.rule(f"{choice or 'base'}: {prompt[:60]}", style="dim")
            console.line(answer)


@console.user_errors
def chat(
    target: Annotated[str | None, typer.Argument(help="Run folder, adapter folder or model.")] = None,
    adapter: AdapterOpt = None,
    system: Annotated[str, typer.Option("--system", help="System message.")] = "",
    max_new_tokens: MaxNewTokensOpt = 256,
    sample: Annotated[bool, typer.Option("--sample", help="Sample instead of greedy decoding.")] = False,
    temperature: Annotated[float, typer.Option("--temperature")] = 0.7,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    precision: PrecisionOpt = "auto",
) -> None:
    """Talk to a tuned model. Commands: /adapter NAME, /base, /reset, /quit."""
    from workbench.models.generate import generate as run_generate
    from workbench.models.generate import prompt_for

    loaded = _load_targets(target, adapter, console.note)
    settings = _settings(max_new_tokens, sample, temperature, seed, precision)
    history: list[list[str]] = []
    names = ", ".join(loaded.adapters) or "none"
    console.note(f"adapters: {names}; active: {loaded.active or 'base'}. /adapter NAME, /base, /reset, /quit")
    for line in _input_lines():
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            break
        if text == "/reset":
            history = []
            continue
        command, _, name = text.partition(" ")
        if command in ("/base", "/adapter"):
            try:  # a typo is said, and the session goes on
                loaded.use(None if command == "/base" else name.strip())
            except WbError as e:
                console.note(f"error: {e}")
            console.note(f"active: {loaded.active or 'base'}")
            continue
        prompt = prompt_for(loaded, {"instruction": text, "system": system, "history": history})
        answer = run_generate(loaded, [prompt], settings)[0]
        console.line(f"{loaded.active or 'base'}> {answer}")
        history.append([text, answer])


def _input_lines() -> Iterator[str]:
    """Lines typed at a prompt, or piped in; ends at end of input."""
    if not sys.stdin.isatty():
        yield from sys.stdin
        return
    while True:
        try:
            yield input("you> ")
        except EOFError:  # Ctrl-D
            sys.stdout.write("\n")  # the shell's prompt starts on a line of its own
            return
