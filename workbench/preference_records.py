"""Preference records: conversions between the shapes preference data comes in and the one canonical form
(`workbench.preference_shapes` defines both): `to_canonical` validates a decoded record and converts it, naming the
field that is wrong (a `RecordError`, or `NoPreference` when every scored completion ties); `from_canonical` /
`convert` write any shape of a record's kind, `to_trl` TRL 1.16's conversational dicts (what `wb clean` writes);
`unpair` splits a pair into two KTO examples, `split_prompt` gives a prompt's Alpaca system/history/user.

Lossless where defined: `to_canonical(from_canonical(x, shape)) == x` for every canonical `x` and every shape of
its kind. The way in is lossless too for records already in a shape's canonical field layout; an Alpaca
`instruction` + `input` pair becomes one user message (instruction, blank line, input), as in `records.py`, so it
comes back as one `instruction`. `to_trl` gives TRL 1.16's conversational dicts (what `wb clean` writes).
"""

from __future__ import annotations

from typing import Any, cast

from pydantic import AliasChoices, BaseModel, ValidationError

from workbench.preference_shapes import (
    INPUT_MODELS,
    AnyMessage,
    Canonical,
    ChatMessage,
    ImplicitPairRecord,
    KtoExample,
    KtoRecord,
    OutShape,
    PreferencePair,
    Response,
    Shape,
    detect_shape,
    has_kto_label,
)
from workbench.records import (  # RecordError is part of this module's API: to_canonical raises it
    OPENAI_ROLES,
    SHAREGPT_ROLES,
    Message,
    RecordError,
    user_text,
)

__all__ = [
    "NoPreference",
    "RecordError",
    "binarize",
    "check_prompt",
    "convert",
    "from_canonical",
    "own_fields",
    "prompt_text",
    "split_prompt",
    "to_canonical",
    "to_trl",
    "unpair",
]


class NoPreference(RecordError):
    """A well-formed record that states no preference (every scored completion tied): dropped, not rejected."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message, kind="tied_scores")


# --- validation helpers ---------------------------------------------------------------------------------------

_RESPONSE_HELP = "expected a string, a message ({role, content} or {from, value}) or a list of messages"
_PROMPT_HELP = "expected a string or a list of messages"
_UNION_HELP = {
    "chosen": _RESPONSE_HELP,
    "rejected": _RESPONSE_HELP,
    "completion": _RESPONSE_HELP,
    "prompt": _PROMPT_HELP,
}
_MEMBER_NAMES = ("str", "Message", "ShareGPTTurn", "list[", "union[", "float", "int", "function-")


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [p for p in loc if isinstance(p, int) or not str(p).startswith(_MEMBER_NAMES)]
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")


def _validation_error(err: ValidationError) -> RecordError:
    """The most specific of pydantic's errors as a RecordError naming the field (union members left out)."""
    errors = err.errors(include_url=False)
    top = errors[0]["loc"][:1]
    same = [e for e in errors if e["loc"][:1] == top]
    e = max(same, key=lambda e: len(e["loc"]))  # the deepest: the member that got furthest
    field = _field_path(e["loc"])
    if e["type"] == "missing":
        return RecordError(field, "missing", kind="missing_field")
    got = type(e.get("input")).__name__
    if field in _UNION_HELP and len(e["loc"]) <= 2:
        return RecordError(field, f"{_UNION_HELP[field]} (got {got})", kind="wrong_type")
    return RecordError(field, f"{e['msg']} (got {got})", kind="wrong_type")


def _validate(model: type[BaseModel], obj: dict[str, Any]) -> Any:
    cleaned = {k: v for k, v in obj.items() if not (v is None and k in ("input", "system", "history"))}
    try:
        return model.model_validate(cleaned)
    except ValidationError as err:
        raise _validation_error(err) from None


def _message(m: AnyMessage, field: str) -> ChatMessage:
    if isinstance(m, Message):
        role = OPENAI_ROLES.get(m.role)
        if role is None:
            raise RecordError(f"{field}.role", f"role {m.role!r} has no place in a preference prompt", "bad_role")
        return ChatMessage(role=role, content=m.content)
    role = SHAREGPT_ROLES.get(m.from_.lower())
    if role is None:
        raise RecordError(f"{field}.from", f"role {m.from_!r} has no place in a preference prompt", "bad_role")
    return ChatMessage(role=role, content=m.value)


def _messages(msgs: list[AnyMessage], field: str) -> list[ChatMessage]:
    return [_message(m, f"{field}[{i}]") for i, m in enumerate(msgs)]


def check_prompt(msgs: list[ChatMessage], field: str = "prompt_messages", offset: int = 0) -> None:
    """A prompt is an optional system message, then user/assistant turns that alternate and end with the user.
    `offset`: how many messages precede the record's own list (a system message from a `system` field)."""

    def at(i: int) -> str:
        return f"{field}[{i - offset}]"

    if not msgs:
        raise RecordError(field, "the prompt is empty", "bad_prompt")
    start = 1 if msgs[0].role == "system" else 0
    if start == len(msgs):
        raise RecordError(field, "the prompt has only a system message; it needs a user turn", "bad_prompt")
    for i in range(start, len(msgs)):
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        role = msgs[i].role
        if role == expected:
            continue
        if role == "system":
            raise RecordError(at(i), "a system message after the start; only the first may be one", "bad_prompt")
        if i == start:
            raise RecordError(
                at(i), "the prompt starts with an assistant turn; it must start with the user", "bad_prompt"
            )
        raise RecordError(at(i), f"two {role} turns in a row; user and assistant must alternate", "bad_prompt")
    if msgs[-1].role != "user":
        raise RecordError(
            at(len(msgs) - 1), "the prompt ends with an assistant turn; it must end with the user's", "bad_prompt"
        )


def _with_system(system: str, msgs: list[ChatMessage], field: str) -> list[ChatMessage]:
    if not system:
        return msgs
    if msgs and msgs[0].role == "system":
        raise RecordError(field, "two system prompts (a `system` field and a system message)", "bad_prompt")
    return [ChatMessage(role="system", content=system), *msgs]


def _alpaca_prompt(system: str, history: list[list[str]], user: str) -> list[ChatMessage]:
    msgs = [ChatMessage(role="system", content=system)] if system else []
    for u, a in history:
        msgs += [ChatMessage(role="user", content=u), ChatMessage(role="assistant", content=a)]
    msgs.append(ChatMessage(role="user", content=user))
    return msgs


def _response(value: Response, field: str) -> str:
    """One assistant answer from a string, a message or a list holding one assistant message."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if len(value) != 1:
            raise RecordError(
                field,
                f"a list of {len(value)} messages; a response must be one assistant message",
                "not_convertible",
            )
        return _response(value[0], f"{field}[0]")
    msg = _message(value, field)
    if msg.role != "assistant":
        key = "role" if isinstance(value, Message) else "from"
        raise RecordError(f"{field}.{key}", f"a response must be the assistant's, not the {msg.role}'s", "bad_role")
    return msg.content


def _prompt(
    rec: Any, field_order: tuple[str, ...] = ("messages", "conversations", "prompt", "instruction")
) -> list[ChatMessage]:
    """The canonical prompt of a record carrying one of messages / conversations / prompt / instruction."""
    system, history = getattr(rec, "system", ""), getattr(rec, "history", [])
    for name in field_order:
        value = getattr(rec, name, None)
        if value is None:
            continue
        if isinstance(value, list):
            if history:
                raise RecordError("history", f"`history` together with a message list in `{name}`", "bad_prompt")
            if getattr(rec, "input", ""):
                raise RecordError("input", f"`input` together with a message list in `{name}`", "bad_prompt")
            msgs = _with_system(system, _messages(value, name), name)
            check_prompt(msgs, name, len(msgs) - len(value))
            return msgs
        text = user_text(value, getattr(rec, "input", "")) if name == "instruction" else value
        return _alpaca_prompt(system, history, text)
    raise RecordError(
        "prompt", "missing (give `prompt`, `instruction`, `messages` or `conversations`)", "missing_field"
    )


def own_fields(obj: dict[str, Any], shape: Shape) -> dict[str, Any]:
    """The fields of a record of `shape` that its conversion does not read (`id`, `source`, ...), in order: they
    travel with the record (`records.with_extra`)."""
    used: set[str] = set()
    for name, info in INPUT_MODELS[shape].model_fields.items():
        alias = info.validation_alias
        names = alias.choices if isinstance(alias, AliasChoices) else [info.alias or name]
        present = [n for n in names if isinstance(n, str) and n in obj]
        used.update(present[:1])  # pydantic reads the first alias present
    return {k: v for k, v in obj.items() if k not in used}


# --- to the canonical form --------------------------------------------------------------------------------------


def binarize(completions: list[tuple[str, float]], field: str = "completions") -> tuple[str, str]:
    """(chosen, rejected) of scored completions: the highest- and the lowest-scored, the first listed among equal
    scores; NoPreference when all scores are equal (there is no preference to learn)."""
    if len(completions) < 2:
        raise RecordError(field, f"{len(completions)} completion(s); binarising needs at least 2", "too_few")
    scores = [s for _, s in completions]
    best, worst = max(scores), min(scores)
    if best == worst:
        raise NoPreference(field, f"all {len(scores)} completions score {best:g}: no preference")
    return completions[scores.index(best)][0], completions[scores.index(worst)][0]


def _implicit(rec: ImplicitPairRecord) -> PreferencePair:
    chosen, rejected = _messages(rec.chosen, "chosen"), _messages(rec.rejected, "rejected")
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    for name, msgs in (("chosen", chosen), ("rejected", rejected)):
        if len(msgs) - n != 1:
            raise RecordError(
                name,
                f"after the {n} turn(s) both conversations share, {len(msgs) - n} remain; the answer must be one "
                "assistant message",
                "not_convertible",
            )
        if msgs[n].role != "assistant":
            raise RecordError(f"{name}[{n}]", "the answer after the shared prompt must be the assistant's", "bad_role")
    prompt = chosen[:n]
    check_prompt(prompt, "chosen")
    return PreferencePair(prompt_messages=prompt, chosen=chosen[n].content, rejected=rejected[n].content)


def _kto(rec: KtoRecord) -> KtoExample:
    if rec.label is not None and rec.kto_tag is not None and rec.label != rec.kto_tag:
        raise RecordError("kto_tag", "`label` and `kto_tag` disagree", "wrong_type")
    label = rec.label if rec.label is not None else rec.kto_tag
    if label is None:
        raise RecordError("label", "missing (a boolean `label` or `kto_tag`)", "missing_field")
    if rec.completion is not None:
        return KtoExample(prompt_messages=_prompt(rec), completion=_response(rec.completion, "completion"), label=label)
    name = "messages" if rec.messages is not None else "conversations"
    msgs = rec.messages if rec.messages is not None else rec.conversations
    if msgs is None:
        raise RecordError(
            "completion", "missing (give `completion`, or `messages` ending with the answer)", "missing_field"
        )
    turns = _with_system(rec.system, _messages(msgs, name), name)
    offset = len(turns) - len(msgs)
    if turns[-1].role != "assistant":
        raise RecordError(
            f"{name}[{len(msgs) - 1}]", "the conversation must end with the answer being judged", "bad_prompt"
        )
    check_prompt(turns[:-1], name, offset)
    return KtoExample(prompt_messages=turns[:-1], completion=turns[-1].content, label=label)


def to_canonical(obj: Any) -> Canonical:
    """The canonical PreferencePair or KtoExample of one decoded record; RecordError naming the field otherwise
    (NoPreference, a RecordError, for tied scores)."""
    if not isinstance(obj, dict):
        raise RecordError("", f"expected a JSON object, found {type(obj).__name__}", kind="not_an_object")
    shape = detect_shape(obj)
    if shape is None:
        raise RecordError(
            "chosen",
            "not a preference record (no chosen/rejected, label/kto_tag, completions or prompt_messages)",
            "not_preference",
        )
    pair_fields = [k for k in ("chosen", "rejected") if k in obj]
    kto_fields = [k for k in ("completion", "kto_tag") if k in obj] + (["label"] if has_kto_label(obj) else [])
    if pair_fields and kto_fields:  # two shapes in one record: reading it as either would drop the other's fields
        raise RecordError(
            kto_fields[0],
            f"a pair ({'/'.join(pair_fields)}) and a KTO example ({'/'.join(kto_fields)}) in one record; keep the "
            "fields of one",
            "ambiguous_shape",
        )
    rec = _validate(INPUT_MODELS[shape], obj)
    if shape == "canonical":
        check_prompt(rec.prompt_messages)
        return cast(PreferencePair, rec)
    if shape == "canonical_kto":
        check_prompt(rec.prompt_messages)
        return cast(KtoExample, rec)
    if shape == "kto":
        return _kto(rec)
    if shape == "implicit":
        return _implicit(rec)
    if shape == "scored":
        chosen, rejected = binarize([(c.text, float(c.score)) for c in rec.completions])
        return PreferencePair(prompt_messages=_prompt(rec), chosen=chosen, rejected=rejected)
    if shape == "pairwise" and rec.prompt is not None and rec.instruction is not None:
        raise RecordError("instruction", "both `prompt` and `instruction`; give one", "bad_prompt")
    return PreferencePair(
        prompt_messages=_prompt(rec),
        chosen=_response(rec.chosen, "chosen"),
        rejected=_response(rec.rejected, "rejected"),
    )


# --- from the canonical form ----------------------------------------------------------------------------------


def split_prompt(msgs: list[ChatMessage]) -> tuple[str, list[list[str]], str]:
    """A canonical prompt as (system, history of [user, assistant] turns, last user message)."""
    start = 1 if msgs and msgs[0].role == "system" else 0
    system = msgs[0].content if start else ""
    turns = [m.content for m in msgs[start:]]
    history = [[turns[i], turns[i + 1]] for i in range(0, len(turns) - 1, 2)]
    return system, history, turns[-1]


def _plain(msgs: list[ChatMessage]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in msgs]


def _sharegpt(msgs: list[ChatMessage]) -> list[dict[str, str]]:
    names = {"user": "human", "assistant": "gpt", "system": "system"}
    return [{"from": names[m.role], "value": m.content} for m in msgs]


def from_canonical(ex: Canonical, shape: OutShape) -> dict[str, Any]:
    """`ex` written in `shape`; `to_canonical` of the result gives `ex` back."""
    system, history, user = split_prompt(ex.prompt_messages)
    body = [m for m in ex.prompt_messages if m.role != "system"]
    if shape == "canonical":
        return ex.model_dump(mode="json")
    if shape == "trl":
        return to_trl(ex)
    extra: dict[str, Any] = {"system": system} if system else {}
    if isinstance(ex, PreferencePair):
        if shape == "alpaca":
            return {"instruction": user, "chosen": ex.chosen, "rejected": ex.rejected, **extra, "history": history}
        if shape == "sharegpt":
            answer = {"from": "gpt"}
            return {
                "conversations": _sharegpt(body),
                "chosen": {**answer, "value": ex.chosen},
                "rejected": {**answer, "value": ex.rejected},
                **extra,
            }
        return {
            "messages": _plain(ex.prompt_messages),
            "chosen": {"role": "assistant", "content": ex.chosen},
            "rejected": {"role": "assistant", "content": ex.rejected},
        }
    if shape == "alpaca":
        return {"instruction": user, "output": ex.completion, "kto_tag": ex.label, **extra, "history": history}
    if shape == "sharegpt":
        return {
            "conversations": [*_sharegpt(body), {"from": "gpt", "value": ex.completion}],
            "kto_tag": ex.label,
            **extra,
        }
    return {
        "messages": [*_plain(ex.prompt_messages), {"role": "assistant", "content": ex.completion}],
        "label": ex.label,
    }


def convert(obj: Any, shape: OutShape) -> dict[str, Any]:
    """A record of any preference shape written in `shape` (through the canonical form)."""
    return from_canonical(to_canonical(obj), shape)


def to_trl(ex: Canonical) -> dict[str, Any]:
    """TRL 1.16's conversational format: `{"prompt": [messages], "chosen": [assistant], "rejected": [assistant]}`
    for a pair, `{"prompt": [messages], "completion": [assistant], "label": bool}` (unpaired) for KTO."""
    prompt = _plain(ex.prompt_messages)
    if isinstance(ex, PreferencePair):
        return {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": ex.chosen}],
            "rejected": [{"role": "assistant", "content": ex.rejected}],
        }
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": ex.completion}], "label": ex.label}


def unpair(pair: PreferencePair) -> tuple[KtoExample, KtoExample]:
    """A pair as two KTO examples: chosen desirable, rejected undesirable (TRL's `unpair_preference_dataset`). The
    way back is not defined in general: KTO data need not come in pairs."""
    return (
        KtoExample(prompt_messages=pair.prompt_messages, completion=pair.chosen, label=True),
        KtoExample(prompt_messages=pair.prompt_messages, completion=pair.rejected, label=False),
    )


def prompt_text(ex: Canonical) -> str:
    """The prompt as one string (roles marked), for dedup keys, contradiction checks and decontamination."""
    return "\n".join(f"<{m.role}>\n{m.content}" for m in ex.prompt_messages)
