"""Preference records for training and evaluation, behind one reader: `load_pairs(path)` (pairwise: a prompt, a
chosen and a rejected answer), `load_unpaired(path)` (KTO: a prompt, a completion and a desirable/undesirable label)
and `load_prompts(path)` (the prompts an RL method samples answers for).

Preference files are read by `workbench.preference_files.read_preferences` (the reader `wb clean` uses: pairwise,
implicit and conversational pairs, KTO examples, scored completions; JSONL, JSON, Parquet, CSV; docs/preference-data.md)
and mapped to the small records below. A pairs file given to KTO is unpaired as TRL does: every chosen answer
desirable, every rejected one undesirable. GRPO's prompts may also come from SFT records (instruction / messages +
output), read here.

Every record keeps its line number (the item number in a JSON array), so a refusal at train time names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import WbError
from workbench.io.reader import read_objects
from workbench.records import message_role, user_text

Message = dict[str, str]


@dataclass(frozen=True)
class Pair:
    """One preference pair: the conversation so far (ending with a user turn), the preferred and the other answer."""

    line: int
    prompt: tuple[Message, ...]
    chosen: str
    rejected: str


@dataclass(frozen=True)
class Unpaired:
    """One KTO example: a prompt, one completion and whether it is desirable."""

    line: int
    prompt: tuple[Message, ...]
    completion: str
    label: bool


def _fail(path: Path, line: int, field: str, why: str) -> WbError:
    return WbError(f"{path}:line {line}: {field}: {why}")


def _message(path: Path, line: int, field: str, m: Any) -> Message:
    if not isinstance(m, dict):
        raise _fail(path, line, field, "a message must be an object with role and content")
    role = message_role(m)
    content = m.get("content", m.get("value"))
    if role is None or not isinstance(content, str):
        raise _fail(path, line, field, "a message needs a role (system, user, assistant) and a string content")
    return {"role": role, "content": content}


def _prompt(path: Path, line: int, rec: dict[str, Any]) -> tuple[Message, ...]:
    msgs: list[Message] = []
    if "prompt" in rec:
        p = rec["prompt"]
        if isinstance(p, str):
            if rec.get("system"):
                msgs.append({"role": "system", "content": str(rec["system"])})
            msgs.append({"role": "user", "content": p})
        elif isinstance(p, list):
            msgs = [_message(path, line, "prompt", m) for m in p]
        else:
            raise _fail(path, line, "prompt", "expected a string or a list of messages")
    elif "messages" in rec or "conversations" in rec:
        key = "messages" if "messages" in rec else "conversations"
        if not isinstance(rec[key], list):
            raise _fail(path, line, key, "expected a list of messages")
        msgs = [_message(path, line, key, m) for m in rec[key]]
    elif "instruction" in rec:
        if not isinstance(rec["instruction"], str):
            raise _fail(path, line, "instruction", "expected a string")
        if rec.get("system"):
            msgs.append({"role": "system", "content": str(rec["system"])})
        for turn in rec.get("history") or []:
            if not (isinstance(turn, list) and len(turn) == 2 and all(isinstance(t, str) for t in turn)):
                raise _fail(path, line, "history", "expected [[user, assistant], ...] string pairs")
            msgs += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
        msgs.append({"role": "user", "content": user_text(rec["instruction"], str(rec.get("input") or ""))})
    else:
        raise _fail(path, line, "prompt", "no prompt: give prompt, instruction or messages")
    if not msgs or msgs[-1]["role"] != "user":
        raise _fail(path, line, "prompt", "the prompt must end with a user turn")
    return tuple(msgs)


def _canonical(path: Path) -> list[tuple[int, Any]]:
    """The preference reader of `wb clean` (workbench.preference_files.read_preferences): every shape it knows
    (pairwise, implicit, conversational, KTO, scored completions; JSONL, JSON, Parquet, CSV), one error naming
    file:line:field."""
    from workbench.preference_files import read_preferences

    return read_preferences(Path(path))


def _messages_of(ex: Any) -> tuple[Message, ...]:
    return tuple({"role": m.role, "content": m.content} for m in ex.prompt_messages)


def _nonempty(path: Path, line: int, field: str, text: str) -> str:
    if not text.strip():
        raise _fail(path, line, field, "empty answer (run `wb clean` on the preference file first)")
    return text


def load_pairs(path: Path) -> list[Pair]:
    """Every pair of a preference file; a record that is not a pair is a WbError naming its line and field."""
    from workbench.preference_shapes import PreferencePair

    pairs: list[Pair] = []
    for line, ex in _canonical(path):
        if not isinstance(ex, PreferencePair):
            raise _fail(path, line, "chosen", "a KTO example (completion + label) where a pair is needed")
        chosen = _nonempty(path, line, "chosen", ex.chosen)
        pairs.append(Pair(line, _messages_of(ex), chosen, _nonempty(path, line, "rejected", ex.rejected)))
    return pairs


def load_unpaired(path: Path) -> list[Unpaired]:
    """KTO examples: `completion` + `label` records as they are, pairs split into two (`preference_records.unpair`)."""
    from workbench.preference_records import unpair
    from workbench.preference_shapes import PreferencePair

    out: list[Unpaired] = []
    for line, ex in _canonical(path):
        for kto in unpair(ex) if isinstance(ex, PreferencePair) else (ex,):
            completion = _nonempty(path, line, "completion", kto.completion)
            out.append(Unpaired(line, _messages_of(kto), completion, kto.label))
    return out


@dataclass(frozen=True)
class PromptItem:
    line: int
    prompt: tuple[Message, ...]
    reference: str


def load_prompts(path: Path) -> list[PromptItem]:
    """The distinct prompts of a file of any shape above (or of SFT records: their output is the reference)."""
    seen: set[tuple[tuple[str, str], ...]] = set()
    out: list[PromptItem] = []
    try:
        canonical = _canonical(path)
    except WbError:
        canonical = []  # not preference data: SFT records (instruction / messages + output) below
    if canonical:
        for line, ex in canonical:
            key = tuple((m.role, m.content) for m in ex.prompt_messages)
            if key not in seen:
                seen.add(key)
                ref = getattr(ex, "chosen", None) or (ex.completion if getattr(ex, "label", False) else "")
                out.append(PromptItem(line, _messages_of(ex), ref))
        return out
    for line, rec in read_objects(path):
        prompt = _prompt(path, line, rec)
        key = tuple((m["role"], m["content"]) for m in prompt)
        if key in seen:
            continue
        seen.add(key)
        ref = rec.get("chosen", rec.get("output", rec.get("reference", "")))
        out.append(PromptItem(line, prompt, ref if isinstance(ref, str) else ""))
    if not out:
        raise WbError(f"{path}: no prompts in it")
    return out
