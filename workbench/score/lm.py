"""Scores from the causal LM itself, computed with the same templating and the same per-example loss as training.

For each record (Alpaca shape, system and history included) three token sequences are scored in one batched pass
(`workbench.models.losses.sample_losses`, examples sorted by length):

- the conversation as training renders it (`workbench.models.templates.encode`, responses only): the mean loss of the
  answer tokens given the prompt, `loss_answer`, and `ppl_answer = exp(loss_answer)`;
- the same answer after an empty prompt (instruction, input, system and history removed; the template's own
  scaffolding, e.g. a default system prompt, stays so that both losses see the same framing): `loss_answer_alone`
  and `ppl_answer_alone`;
- the user text (instruction and input as the user turn shows them) as plain text, no template: `ppl_prompt`.

`ifd = loss_answer / loss_answer_alone` is the instruction-following difficulty of Cherry-LLM (Li et al., 2023,
"From Quantity to Quality"): below 1 the prompt helps predict the answer; at 1 or above it does not, the mark of a
mismatched pair. A score that cannot be computed (no answer token fits in max_length, a one-token prompt) is null.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from workbench.models import templates as tdata
from workbench.models.targets import Loaded
from workbench.precision import Choice
from workbench.records import user_text

ProgressFn = Callable[[int, int], None]
CHUNK = 64  # examples per call of sample_losses (progress is reported between chunks)


def full_record(record: dict[str, Any]) -> dict[str, Any]:
    """A record with every Alpaca field present (what the templates expect)."""
    return {"system": "", "history": [], "input": "", **record}


def alone(record: dict[str, Any]) -> dict[str, Any]:
    """The record's answer after an empty prompt: no instruction, input, system or history."""
    return {"instruction": "", "input": "", "system": "", "history": [], "output": record["output"]}


def examples_for(loaded: Loaded, record: dict[str, Any], max_length: int) -> tuple[Any, Any, Any]:
    """(answer given prompt, answer alone, prompt text) as training examples (labels IGNORE where not scored)."""
    template: tdata.Template = loaded.template  # type: ignore[assignment]
    rec = full_record(record)
    cond = tdata.encode(loaded.tokenizer, rec, template, max_length, "responses")
    bare = tdata.encode(loaded.tokenizer, alone(rec), template, max_length, "responses")
    ids = loaded.tokenizer(user_text(rec["instruction"], rec["input"]), add_special_tokens=False)["input_ids"]
    ids = ids[:max_length]
    prompt = tdata.Example(0, ids, list(ids), False)
    return cond, bare, prompt


def _scorable(ex: Any) -> bool:
    """Whether `sample_losses` has a target for the example: a trained token after the first position."""
    return any(t != tdata.IGNORE for t in ex.labels[1:])


def _ppl(loss: float | None) -> float | None:
    if loss is None:
        return None
    return round(math.exp(min(loss, 700.0)), 6)


def lm_scores(
    loaded: Loaded,
    records: Sequence[dict[str, Any]],
    choice: Choice,
    max_length: int = 1024,
    batch_size: int = 8,
    progress: ProgressFn | None = None,
) -> list[dict[str, Any]]:
    """The `lm` scores of `workbench.score_specs` (plus `answer_tokens` and `truncated`) for each record, in order."""
    from workbench.models.losses import sample_losses

    triples = [examples_for(loaded, r, max_length) for r in records]
    flat = [ex for triple in triples for ex in triple]
    usable = [i for i, ex in enumerate(flat) if _scorable(ex)]
    usable.sort(key=lambda i: (len(flat[i].input_ids), i))  # chunks of similar length: little padding
    losses: list[float | None] = [None] * len(flat)
    pad_id = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    if progress is not None:
        progress(0, len(records))
    with loaded.active_model() as model:
        for lo in range(0, len(usable), CHUNK * batch_size):
            part = usable[lo : lo + CHUNK * batch_size]
            values = sample_losses(model, [flat[i] for i in part], pad_id, batch_size, choice)
            for i, v in zip(part, values, strict=True):
                losses[i] = float(v)
            if progress is not None:
                progress(min(len(records), (lo + len(part)) * len(records) // max(1, len(usable))), len(records))
    out = []
    for k, (cond, _, _) in enumerate(triples):
        lc, la, lp = losses[3 * k], losses[3 * k + 1], losses[3 * k + 2]
        ifd = round(lc / la, 6) if lc is not None and la is not None and la > 0 else None
        out.append(
            {
                "loss_answer": round(lc, 6) if lc is not None else None,
                "ppl_answer": _ppl(lc),
                "loss_answer_alone": round(la, 6) if la is not None else None,
                "ppl_answer_alone": _ppl(la),
                "ifd": ifd,
                "ppl_prompt": _ppl(lp),
                "answer_tokens": cond.trained_tokens,
                "truncated": cond.truncated,
            }
        )
    if progress is not None:
        progress(len(records), len(records))
    return out
