"""Multiple-choice scoring by log-likelihood: how likely the model finds each option after the question.

Per item, one or two renderings (lm-evaluation-harness's two conventions):
- options (always): the question alone as the context, each option's text as a continuation; `mc_accuracy` is right
  when the largest summed log-probability is the answer's, `mc_accuracy_norm` after dividing each sum by the option's
  length in characters (lm-eval's `acc_norm`, the delimiter not counted);
- letters (`letters=True`, `wb eval --mc-letters`): the question with `A. ...` lines and `Answer:` as the context,
  each letter as a continuation (`mc_letter_accuracy`, MMLU's format). Opt-in: its context lists every option, so it
  is about twice the tokens of the options' own (31.8 of 48.4 tokens per item of `mc_general_en`).

`mc_prompt: template` (default) renders the context with the run's template (chat or Alpaca), few-shot examples as
earlier turns, and the continuation starts the answer directly (lm-eval uses no delimiter under a chat template);
`plain` writes `Question: ...\\nAnswer:` text, examples separated by a blank line, and a space before each
continuation (lm-eval's default `target_delimiter`). The log-likelihoods are `workbench.models.loglik`'s (trailing
whitespace of the context moves into the continuation, as in lm-eval's `_encode_pair`); the stored strings are the
ones after that move, so `McScores` is enough to recompute a score.

All options (and letters) of all items go to `loglikelihoods` in one call: batched, cached and in the precision the
command asks for.
"""

from __future__ import annotations

from collections.abc import Sequence

from workbench.evaluate.forgetting import Item
from workbench.models.generate import prompt_for
from workbench.models.loglik import LoglikCache, ProgressFn, Request, loglikelihoods, split_pair
from workbench.models.targets import Loaded
from workbench.runfile.evals import Continuation, McScores

SCORING = {
    False: "options (mc_accuracy, mc_accuracy_norm); letters not scored (--mc-letters adds mc_letter_accuracy)",
    True: "options (mc_accuracy, mc_accuracy_norm) and letters (mc_letter_accuracy)",
}
"""What a set's `settings.scoring` says ran, by whether the letters were scored."""
PLAIN_DELIMITER = " "  # lm-evaluation-harness's target_delimiter
FEWSHOT_DELIMITER = "\n\n"  # and its fewshot_delimiter


# --- rendering --------------------------------------------------------------------------------------------------


def _letters_text(item: Item) -> str:
    options = item.options or {}
    return "\n".join([item.instruction, *(f"{k}. {v}" for k, v in options.items()), "Answer:"])


def _options(item: Item) -> dict[str, str]:
    return dict(item.options or {})


def render(
    loaded: Loaded, item: Item, fewshot: Sequence[Item], mode: str, letters: bool = True
) -> tuple[list[Request], list[Request]]:
    """(option requests, letter requests) of one item, in letter order; no letter requests unless `letters`."""
    options = _options(item)
    if mode == "plain":
        shots = [f"Question: {ex.instruction}\nAnswer: {_options(ex)[ex.reference]}" for ex in fewshot]
        ctx = FEWSHOT_DELIMITER.join([*shots, f"Question: {item.instruction}\nAnswer:"])
        letter_shots = [f"{_letters_text(ex)} {ex.reference}" for ex in fewshot]
        letter_ctx = FEWSHOT_DELIMITER.join([*letter_shots, _letters_text(item)]) if letters else ""
        delim = PLAIN_DELIMITER
    else:
        history = [[ex.instruction, _options(ex)[ex.reference]] for ex in fewshot]
        ctx = prompt_for(loaded, {"instruction": item.instruction, "history": history})
        letter_history = [[_letters_text(ex), ex.reference] for ex in fewshot]
        letter_ctx = (
            prompt_for(loaded, {"instruction": _letters_text(item), "history": letter_history}) if letters else ""
        )
        delim = ""
    choices = [split_pair(ctx, delim + text) for text in options.values()]
    return choices, [split_pair(letter_ctx, delim + letter) for letter in options] if letters else []


# --- scoring items ----------------------------------------------------------------------------------------------


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))  # ties: the first, as numpy's argmax


def score_items(
    loaded: Loaded,
    items: Sequence[Item],
    fewshot: Sequence[Item],
    mode: str = "template",
    batch_size: int = 16,
    max_length: int = 1024,
    cache: LoglikCache | None = None,
    progress: ProgressFn | None = None,
    precision: str = "auto",
    letters: bool = False,
) -> list[McScores]:
    """Every option's (and with `letters` every letter's) log-likelihood for each item, and the letters each rule
    picks."""
    rendered = [render(loaded, it, fewshot, mode, letters) for it in items]
    flat = [r for choices, letters in rendered for r in (*choices, *letters)]
    values = loglikelihoods(loaded, flat, batch_size, max_length, cache, progress, precision)
    out = []
    k = 0
    for it, (choices, letter_requests) in zip(items, rendered, strict=True):
        labels = list(_options(it))
        texts = list(_options(it).values())
        n_c, n_l = len(choices), len(letter_requests)
        c_vals, l_vals = values[k : k + n_c], values[k + n_c : k + n_c + n_l]
        k += n_c + n_l
        sums = [v for v, _ in c_vals]
        out.append(
            McScores(
                context=choices[0].context,
                choices=[
                    Continuation(continuation=r.continuation, loglik=round(v, 6), tokens=n)
                    for r, (v, n) in zip(choices, c_vals, strict=True)
                ],
                letter_context=letter_requests[0].context if letter_requests else None,
                letters=[
                    Continuation(continuation=r.continuation, loglik=round(v, 6), tokens=n)
                    for r, (v, n) in zip(letter_requests, l_vals, strict=True)
                ]
                if letter_requests
                else None,
                predicted=labels[_argmax(sums)],
                predicted_norm=labels[_argmax([s / len(t) for s, t in zip(sums, texts, strict=True)])],
                predicted_letter=labels[_argmax([v for v, _ in l_vals])] if l_vals else None,
            )
        )
    return out


def item_metrics(item: Item, scores: McScores) -> dict[str, float | int | None]:
    """The item's 0/1 scores, by registry name (`mc_letter_accuracy` only where the letters were scored)."""
    out: dict[str, float | int | None] = {
        "mc_accuracy": int(scores.predicted == item.reference),
        "mc_accuracy_norm": int(scores.predicted_norm == item.reference),
    }
    if scores.predicted_letter is not None:
        out["mc_letter_accuracy"] = int(scores.predicted_letter == item.reference)
    return out
