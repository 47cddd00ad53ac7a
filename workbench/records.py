"""Record models: the shapes instruction data comes in, and conversions between them.

The canonical record is Alpaca-shaped (`instruction`, `input`, `output`, `system`, `history`). Conversations in
ShareGPT (`conversations` with `from`/`value`) or OpenAI (`messages` with `role`/`content`) form convert to it
losslessly when they are a plain dialogue: an optional leading system message, then user/assistant turns that
alternate and end with the assistant. Anything else (tool calls, two user turns in a row, a dialogue ending on
the user) has no Alpaca form and is rejected with a `ConversionError` that says why.

A record's other fields, those no canonical field is read from (`id`, `source`, `meta`, ...), travel beside it
(`EXTRA`, `row_extra`, `with_extra`) so every writer can put them back.

The way back, Alpaca to messages, puts `input` after the instruction in the user turn (the convention of
LLaMA-Factory and the Alpaca template), so a record with a non-empty input does not round-trip field by field.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

Role = Literal["system", "user", "assistant"]

# A history turn is exactly one (user, assistant) pair.
Turn = Annotated[list[StrictStr], Field(min_length=2, max_length=2)]


class AlpacaRecord(BaseModel):
    """One instruction-tuning example; earlier dialogue turns, if any, live in `history`."""

    model_config = ConfigDict(extra="ignore", title="Record")

    instruction: StrictStr = Field(description="The task or the user's (last) message.")
    input: StrictStr = Field("", description="Optional context the instruction refers to.")
    output: StrictStr = Field(description="The answer the model should learn to give.")
    system: StrictStr = Field("", description="Optional system prompt.")
    history: list[Turn] = Field(default_factory=list, description="Earlier (user, assistant) turns, oldest first.")


class ShareGPTTurn(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    from_: StrictStr = Field(alias="from", description="human/user, gpt/assistant, or system")
    value: StrictStr


class ShareGPTRecord(BaseModel):
    """ShareGPT conversation: `{"conversations": [{"from": "human", "value": ...}, ...]}`."""

    model_config = ConfigDict(extra="ignore", title="ShareGPTRecord")

    conversations: list[ShareGPTTurn] = Field(min_length=1)
    system: StrictStr = ""


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: StrictStr
    content: StrictStr


class MessagesRecord(BaseModel):
    """OpenAI chat format: `{"messages": [{"role": "user", "content": ...}, ...]}`."""

    model_config = ConfigDict(extra="ignore", title="MessagesRecord")

    messages: list[Message] = Field(min_length=1)


class RecordError(ValueError):
    """A record that cannot be read as a training example; `field` names where the problem is."""

    def __init__(self, field: str, message: str, kind: str = "invalid") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.kind = kind


class ConversionError(RecordError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message, kind="not_convertible")


# The one role map: the speaker names of ShareGPT's `from` (compared in any case) and of OpenAI's `role`, and the
# canonical role each stands for. Every reader of conversations (SFT records, preference data, prompts) uses it.
SHAREGPT_ROLES: dict[str, Role] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "system": "system",
}
OPENAI_ROLES: dict[str, Role] = {
    "user": "user",
    "assistant": "assistant",
    "system": "system",
    "developer": "system",
}


def message_role(message: dict[str, Any]) -> Role | None:
    """The canonical role of a raw message, OpenAI (`role`) or ShareGPT (`from`) form; None when it has none."""
    if "role" in message:
        return OPENAI_ROLES.get(message["role"]) if isinstance(message["role"], str) else None
    name = message.get("from")
    return SHAREGPT_ROLES.get(name.lower()) if isinstance(name, str) else None


def turns_to_alpaca(turns: list[tuple[str, str]], field: str, system: str = "") -> AlpacaRecord:
    """Convert (role, text) turns into an AlpacaRecord, or raise ConversionError naming the turn."""
    if turns and turns[0][0] == "system":
        if system:
            raise ConversionError(f"{field}[0]", "two system prompts (a `system` field and a system turn)")
        system = turns[0][1]
        turns = turns[1:]
        offset = 1
    else:
        offset = 0
    if not turns:
        raise ConversionError(field, "conversation has no user/assistant turns")
    for i, (role, _) in enumerate(turns):  # the first fault in order: who speaks out of turn, then the ending
        expected = "user" if i % 2 == 0 else "assistant"
        if role == expected:
            continue
        where = f"{field}[{offset + i}]"
        if role == "system":
            raise ConversionError(where, "a system turn after the conversation started; only the first turn may be one")
        if i == 0:
            raise ConversionError(
                where, "conversation starts with an assistant turn; the first turn must be the user's"
            )
        raise ConversionError(
            where, f"two {role} turns in a row ({field}[{offset + i - 1}] and [{offset + i}]); merge them or drop one"
        )
    if len(turns) % 2:
        raise ConversionError(
            f"{field}[{offset + len(turns) - 1}]",
            "conversation ends with a user turn; there is no answer to train on",
        )
    pairs = [[turns[i][1], turns[i + 1][1]] for i in range(0, len(turns), 2)]
    last = pairs.pop()
    return AlpacaRecord(instruction=last[0], input="", output=last[1], system=system, history=pairs)


def sharegpt_to_alpaca(rec: ShareGPTRecord) -> AlpacaRecord:
    turns: list[tuple[str, str]] = []
    for i, t in enumerate(rec.conversations):
        role = SHAREGPT_ROLES.get(t.from_.lower())
        if role is None:
            raise ConversionError(
                f"conversations[{i}].from", f"role {t.from_!r} (tool or function turns) has no Alpaca form"
            )
        turns.append((role, t.value))
    return turns_to_alpaca(turns, "conversations", rec.system)


def messages_to_alpaca(rec: MessagesRecord) -> AlpacaRecord:
    turns: list[tuple[str, str]] = []
    for i, m in enumerate(rec.messages):
        role = OPENAI_ROLES.get(m.role)
        if role is None:
            raise ConversionError(f"messages[{i}].role", f"role {m.role!r} has no Alpaca form")
        turns.append((role, m.content))
    return turns_to_alpaca(turns, "messages")


def user_text(instruction: str, input: str) -> str:
    """The user message an Alpaca instruction + input stands for."""
    return f"{instruction}\n\n{input}" if input else instruction


def alpaca_to_messages(rec: AlpacaRecord) -> MessagesRecord:
    msgs: list[Message] = []
    if rec.system:
        msgs.append(Message(role="system", content=rec.system))
    for user, asst in rec.history:
        msgs.append(Message(role="user", content=user))
        msgs.append(Message(role="assistant", content=asst))
    msgs.append(Message(role="user", content=user_text(rec.instruction, rec.input)))
    msgs.append(Message(role="assistant", content=rec.output))
    return MessagesRecord(messages=msgs)


def alpaca_to_sharegpt(rec: AlpacaRecord) -> ShareGPTRecord:
    names = {"user": "human", "assistant": "gpt"}
    conv = [
        ShareGPTTurn.model_validate({"from": names[m.role], "value": m.content})
        for m in alpaca_to_messages(rec).messages
        if m.role != "system"
    ]
    return ShareGPTRecord(conversations=conv, system=rec.system)


def _first_error(err: ValidationError) -> RecordError:
    e = err.errors(include_url=False)[0]
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".")
    kind = "missing_field" if e["type"] == "missing" else "wrong_type"
    got = "" if e["type"] == "missing" else f" (got {type(e.get('input')).__name__})"
    return RecordError(loc, f"{e['msg']}{got}", kind=kind)


def validate(model: type[BaseModel], obj: dict[str, Any]) -> Any:
    """Validate `obj` against `model`, turning pydantic's error into a RecordError naming the field."""
    try:
        return model.model_validate(obj)
    except ValidationError as err:
        raise _first_error(err) from None


# Canonical field -> source names recognised without --map, in order of preference.
ALIASES: dict[str, tuple[str, ...]] = {
    "instruction": ("instruction", "prompt", "query", "question", "instruct", "task"),
    "input": ("input", "context", "inputs"),
    "output": ("output", "response", "answer", "completion", "target", "reply"),
    "system": ("system", "system_prompt"),
    "history": ("history",),
}


def _source_names(obj: dict[str, Any], mapping: dict[str, str]) -> dict[str, str]:
    """The column of `obj` each canonical field is read from: through `mapping` where it names a column, else by
    alias.

    The file-level mapping is fixed from the first records; a field first seen later (a `system` column
    that only some records carry) is still found by its own name or alias.
    """
    names: dict[str, str] = {}
    claimed = set(mapping.values())
    for canon, aliases in ALIASES.items():
        src = mapping.get(canon)
        if src is not None:
            if src in obj:
                names[canon] = src
            continue
        for name in aliases:
            if name in obj and name not in claimed:  # a column mapped to another field is not read twice
                names[canon] = name
                break
    return names


def _source_fields(obj: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    """The canonical fields of `obj` (`_source_names`) with their values."""
    return {canon: obj[src] for canon, src in _source_names(obj, mapping).items()}


def input_as_instruction(mapping: dict[str, str], overrides: dict[str, str]) -> dict[str, str]:
    """Records with an input and an output but no instruction (`{"input": ..., "output": ...}`, a shape common
    in seed data): the input is the prompt, so it is read as the instruction. `mapping` is returned with
    `instruction` taken from the input column, unless `--map` placed either field."""
    if "instruction" in mapping or "input" not in mapping or "input" in overrides:
        return mapping
    out = dict(mapping)
    out["instruction"] = out.pop("input")
    return {k: out[k] for k in ALIASES if k in out}


def own_shape(obj: dict[str, Any], mapping: dict[str, str], placed: Collection[str] = ()) -> dict[str, str]:
    """The file's `mapping`, as it reads this record: each record by its own shape, in a file that mixes
    `{"input", "output"}` prompts with Alpaca records (`instruction` [+ `input`] + `output`).

    A record without the instruction column but with an input reads the input as the instruction (as a file of
    such records does, `input_as_instruction`); in a file read that way, a record that carries its own instruction
    column reads it as the instruction and the input as its input. `placed`: the fields a `--map` named; where it
    placed the instruction or the input, every record is read as it says."""
    if "instruction" in placed or "input" in placed:
        return mapping
    ins = mapping.get("instruction", "instruction")
    if "input" in mapping or ins not in ALIASES["input"]:  # the file has an instruction column, or none yet
        inp = mapping.get("input", "input")
        if ins in obj or inp not in obj:
            return mapping
        moved = {**mapping, "instruction": inp}
        moved.pop("input", None)
        return {k: moved[k] for k in ALIASES if k in moved}
    claimed = set(mapping.values())  # the file reads its input column as the prompt: has this record its own?
    own = next((name for name in ALIASES["instruction"] if name in obj and name not in claimed), None)
    if own is None:
        return mapping
    moved = {**mapping, "instruction": own, "input": ins}
    return {k: moved[k] for k in ALIASES if k in moved}


def mapping_notes(mapping: dict[str, str]) -> list[str]:
    """What a reader of the mapping line should know beyond `field←column`."""
    src = mapping.get("instruction")
    if src is not None and src in ALIASES["input"]:
        return [f"no instruction column: the {src!r} column is the prompt, stored as the instruction"]
    return []


FieldName = Literal["instruction", "input", "output", "system", "history"]
PROMPT_FIELDS: tuple[FieldName, ...] = ("instruction", "input")
TEXT_FIELDS: tuple[FieldName, ...] = ("instruction", "input", "output")

Row = tuple[str, str, str, str, list[list[str]]]
"""A record as plain values in canonical field order: instruction, input, output, system, history."""

FIELDS = ("instruction", "input", "output", "system", "history")


_ALIAS_NAMES = frozenset(name for names in ALIASES.values() for name in names)


def to_row(obj: Any, mapping: dict[str, str], placed: Collection[str] = ()) -> Row:
    """Like `to_alpaca`, as a plain tuple; the common all-strings case skips model construction."""
    if type(obj) is dict and "messages" not in obj and "conversations" not in obj:
        mapping = own_shape(obj, mapping, placed)
        ins_key, out_key = mapping.get("instruction", "instruction"), mapping.get("output", "output")
        ins, out = obj.get(ins_key), obj.get(out_key)
        inp_key = mapping.get("input", "input")
        inp = obj.get(inp_key, "") if inp_key != mapping.get("instruction") else ""
        sys_key, hist_key = mapping.get("system", "system"), mapping.get("history", "history")
        if (
            type(ins) is str
            and type(out) is str
            and (type(inp) is str or inp is None)
            and sys_key not in obj
            and hist_key not in obj
            and _ALIAS_NAMES.isdisjoint(obj.keys() - {ins_key, out_key, inp_key})  # no other column to read
        ):
            return (ins, inp or "", out, "", [])
    rec = to_alpaca(obj, mapping, placed)
    return (rec.instruction, rec.input, rec.output, rec.system, rec.history)


def _dialogue_key(obj: dict[str, Any], mapping: dict[str, str]) -> str | None:
    """`messages` or `conversations` when `obj` is read as a conversation, None when as Alpaca columns. Each record
    by its own shape (a file may mix them): a conversation unless it carries the instruction column."""
    if mapping.get("instruction", "instruction") in obj:
        return None
    return "messages" if "messages" in obj else "conversations" if "conversations" in obj else None


def to_alpaca(obj: Any, mapping: dict[str, str], placed: Collection[str] = ()) -> AlpacaRecord:
    """Read one decoded JSON value as a training example.

    `mapping` maps canonical field names to the source's column names (`{"output": "response"}`); `placed` names
    the fields a `--map` placed (`own_shape`).
    """
    if not isinstance(obj, dict):
        raise RecordError("", f"expected a JSON object, found {type(obj).__name__}", kind="not_an_object")
    dialogue = _dialogue_key(obj, mapping)
    if dialogue == "messages":
        return messages_to_alpaca(validate(MessagesRecord, obj))
    if dialogue == "conversations":
        return sharegpt_to_alpaca(validate(ShareGPTRecord, obj))
    mapping = own_shape(obj, mapping, placed)
    fields = _source_fields(obj, mapping)
    for canon in ("input", "system"):  # null means absent for optional text fields (common in CSV/Parquet)
        if canon in fields and fields[canon] is None:
            del fields[canon]
    if "history" in fields and fields["history"] is None:
        del fields["history"]
    try:
        return AlpacaRecord.model_validate(fields)
    except ValidationError as err:
        rec_err = _first_error(err)
        src = mapping.get(rec_err.field.split("[")[0].split(".")[0], rec_err.field)
        if src != rec_err.field.split("[")[0]:
            rec_err = RecordError(f"{src} (as {rec_err.field})", rec_err.message, kind=rec_err.kind)
        raise rec_err from None


# --- the record's own fields ------------------------------------------------------------------------------
#
# Fields that no canonical field is read from (`id`, `source`, `license`, `meta`, ...) travel with their record:
# the reader carries them beside the canonical fields (`EXTRA`: JSON object text in rows and frames) and every
# writer puts them after wb's own fields, their values as read. One whose name wb writes itself (an `instruction`
# column left unused by `--map instruction=q`, a `system` key beside OpenAI `messages`) is kept as
# `original_<name>`, so it never overwrites wb's field nor is overwritten by it.

EXTRA = "_extra"
"""The frame column (and record key) holding a record's own extra fields as JSON object text; null when none."""
RENAMED = "original_"


def place_extra(extra: dict[str, Any], taken: Collection[str]) -> dict[str, Any]:
    """`extra` with each key that is in `taken` (wb's own fields of the output) renamed `original_<key>` (again while
    the name is taken), in order."""
    out: dict[str, Any] = {}
    for key, value in extra.items():
        name = key
        while name in taken or name in out or (name != key and name in extra):
            name = RENAMED + name
        out[name] = value
    return out


def extra_fields(obj: dict[str, Any], used: Collection[str], taken: Collection[str]) -> dict[str, Any]:
    """The fields of `obj` not in `used`, placed beside the output fields `taken` (`place_extra`)."""
    return place_extra({k: v for k, v in obj.items() if k not in used}, taken)


def extra_json(extra: dict[str, Any]) -> str | None:
    """Extra fields as the JSON object text rows and frames carry (`EXTRA`); None when there are none."""
    if not extra:
        return None
    try:
        return orjson.dumps(extra, default=str).decode()
    except orjson.JSONEncodeError:  # an integer beyond 64 bits (Python's json reads them): written as read
        return json.dumps(extra, ensure_ascii=False, separators=(",", ":"), default=str)


def with_extra(record: dict[str, Any], extra: str | dict[str, Any] | None) -> dict[str, Any]:
    """`record` (wb's fields) followed by its extra fields (`EXTRA` text or a dict), none of them overwritten."""
    if not extra:
        return record
    fields = orjson.loads(extra) if isinstance(extra, str) else extra
    return {**record, **place_extra(fields, record.keys())}


def row_extra(obj: Any, mapping: dict[str, str], placed: Collection[str] = ()) -> str | None:
    """The fields of `obj` that `to_row` does not read, as `EXTRA` text (None when there are none)."""
    if not isinstance(obj, dict):
        return None
    dialogue = _dialogue_key(obj, mapping)
    used: Collection[str]
    if dialogue == "messages":
        used = ("messages",)
    elif dialogue == "conversations":
        used = ("conversations", "system")
    else:
        used = set(_source_names(obj, own_shape(obj, mapping, placed)).values())
    return extra_json(extra_fields(obj, used, FIELDS))


# --- tool-calling conversations -----------------------------------------------------------------------------
#
# Conversations with tool turns have no Alpaca form; they are kept whole, in OpenAI messages form:
# `{"messages": [...], "tools": [...]}` with roles system/user/assistant/tool, assistant `tool_calls`
# (`{"type": "function", "function": {"name", "arguments"}}`, arguments as an object) and tool results. ShareGPT's tool
# form (LLaMA-Factory: `function_call` and `observation` turns, `tools` as a JSON string) converts to it.

_SHAREGPT_TOOL_ROLES = {"function_call": "tool_call", "observation": "tool", "tool": "tool", "function": "tool"}


def _has_tools(obj: dict[str, Any]) -> bool:
    """A `tools` list that is not empty (or one that is not valid JSON: the validation says why)."""
    tools = obj.get("tools")
    if isinstance(tools, str):
        try:
            tools = orjson.loads(tools) if tools.strip() else []
        except orjson.JSONDecodeError:
            return True
    return tools is not None and tools != []


def is_tool_conversation(obj: Any) -> bool:
    """A record whose conversation holds tool calls or tool results, or that offers tools (`tools`): a conversation
    where the assistant declines or answers without a call is still tool data (LLaMA-Factory's glaive_toolcall
    data teaches "I can only ..." answers this way)."""
    if not isinstance(obj, dict):
        return False
    msgs = obj.get("messages")
    if isinstance(msgs, list):
        calls = any(isinstance(m, dict) and (m.get("role") == "tool" or m.get("tool_calls")) for m in msgs)
        return calls or _has_tools(obj)
    conv = obj.get("conversations")
    if isinstance(conv, list):
        calls = any(isinstance(t, dict) and str(t.get("from", "")).lower() in _SHAREGPT_TOOL_ROLES for t in conv)
        return calls or _has_tools(obj)
    return False


def _json_value(value: Any, field: str, want: type) -> Any:
    """`value`, or the JSON a string holds, when it is a `want` (dict, list, or object for either)."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as err:
            raise RecordError(field, f"not valid JSON ({err})", kind="invalid_tool_conversation") from None
    if isinstance(value, want) and not isinstance(value, str):
        return value
    raise RecordError(field, f"expected a JSON {want.__name__}", kind="invalid_tool_conversation")


def _tool_call(raw: Any, field: str) -> dict[str, Any]:
    fn = raw.get("function", raw) if isinstance(raw, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"].strip():
        raise RecordError(
            f"{field}.function.name", "a tool call needs a function name", kind="invalid_tool_conversation"
        )
    args = _json_value(fn.get("arguments", fn.get("parameters", {})), f"{field}.function.arguments", dict)
    call: dict[str, Any] = {"type": "function", "function": {"name": fn["name"], "arguments": args}}
    if isinstance(raw, dict) and isinstance(raw.get("id"), str):
        call["id"] = raw["id"]
    return call


def _sharegpt_tool_messages(obj: dict[str, Any]) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = []
    if isinstance(obj.get("system"), str) and obj["system"]:
        msgs.append({"role": "system", "content": obj["system"]})
    for i, turn in enumerate(obj["conversations"]):
        field = f"conversations[{i}]"
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise RecordError(f"{field}.value", "expected a string", kind="invalid_tool_conversation")
        name = str(turn.get("from", "")).lower()
        role = _SHAREGPT_TOOL_ROLES.get(name) or SHAREGPT_ROLES.get(name)
        if role is None:
            raise RecordError(f"{field}.from", f"unknown role {turn.get('from')!r}", kind="invalid_tool_conversation")
        if role == "tool_call":
            calls = _json_value(turn["value"], f"{field}.value", object)
            calls = calls if isinstance(calls, list) else [calls]
            msgs.append(
                {"role": "assistant", "content": "", "tool_calls": [_tool_call(c, f"{field}.value") for c in calls]}
            )
        else:
            msgs.append({"role": role, "content": turn["value"]})
    return msgs


def _openai_tool_messages(obj: dict[str, Any]) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = []
    for i, m in enumerate(obj["messages"]):
        field = f"messages[{i}]"
        if not isinstance(m, dict):
            raise RecordError(field, "expected an object", kind="invalid_tool_conversation")
        role = OPENAI_ROLES.get(str(m.get("role"))) or ("tool" if m.get("role") == "tool" else None)
        if role is None:
            raise RecordError(f"{field}.role", f"unknown role {m.get('role')!r}", kind="invalid_tool_conversation")
        content = m.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise RecordError(f"{field}.content", "expected a string", kind="invalid_tool_conversation")
        out: dict[str, Any] = {"role": role, "content": content}
        if m.get("tool_calls"):
            if role != "assistant" or not isinstance(m["tool_calls"], list):
                raise RecordError(
                    f"{field}.tool_calls", "only assistant turns call tools", kind="invalid_tool_conversation"
                )
            out["tool_calls"] = [_tool_call(c, f"{field}.tool_calls[{j}]") for j, c in enumerate(m["tool_calls"])]
        for key in ("tool_call_id", "name"):
            if role == "tool" and isinstance(m.get(key), str):
                out[key] = m[key]
        msgs.append(out)
    return msgs


def check_tool_conversation(msgs: list[dict[str, Any]], field: str = "messages", offset: int = 0) -> None:
    """Each tool result answers a call of the assistant turn before it (by id when ids are given), every call is
    answered before the conversation goes on, a system turn comes first only, and the last turn is the assistant's."""

    def fail(i: int, message: str, key: str = "") -> RecordError:
        return RecordError(f"{field}[{i + offset}]{key}", message, kind="invalid_tool_conversation")

    pending: list[dict[str, Any]] = []
    for i, m in enumerate(msgs):
        role = m["role"]
        if role == "system" and i != 0:
            raise fail(i, "a system turn can only come first")
        if role == "tool":
            if not pending:
                raise fail(i, "a tool result that follows no tool call")
            call_id = m.get("tool_call_id")
            ids = [c.get("id") for c in pending]
            if call_id is not None and any(ids) and call_id not in ids:
                raise fail(i, f"tool_call_id {call_id!r} answers no pending call", ".tool_call_id")
            pending.pop(ids.index(call_id) if call_id in ids else 0)
            continue
        if pending:
            raise fail(i, f"{len(pending)} tool call(s) of the assistant turn before have no result")
        if role == "assistant":
            if not m["content"] and not m.get("tool_calls"):
                raise fail(i, "an assistant turn with neither content nor tool calls", ".content")
            pending = list(m.get("tool_calls") or [])
    if not msgs or msgs[-1]["role"] != "assistant":
        raise fail(len(msgs) - 1, "the conversation must end with an assistant turn (there is nothing to train on)")
    if not any(m["role"] == "user" for m in msgs):
        raise fail(0, "the conversation has no user turn")


def to_tool_conversation(obj: dict[str, Any], extra: bool = True) -> dict[str, Any]:
    """A tool-calling record in the canonical `{"messages", "tools"}` form, validated; RecordError naming the turn.
    `extra`: the record's other fields follow (`extra_fields`)."""
    sharegpt = "messages" not in obj
    msgs = _sharegpt_tool_messages(obj) if sharegpt else _openai_tool_messages(obj)
    offset = -1 if sharegpt and isinstance(obj.get("system"), str) and obj["system"] else 0  # the system field
    check_tool_conversation(msgs, "conversations" if sharegpt else "messages", offset)
    tools = obj.get("tools", [])
    tools = _json_value(tools, "tools", list) if tools not in (None, "") else []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise RecordError(f"tools[{i}]", "expected an object (a function schema)", kind="invalid_tool_conversation")
    # OpenAI's form {"type": "function", "function": {...}}; LLaMA-Factory lists the function schemas bare.
    tools = [t if "function" in t else {"type": "function", "function": t} for t in tools]
    out = {"messages": msgs, "tools": tools}
    if not extra:
        return out
    used = ("messages", "tools") if not sharegpt else ("conversations", "system", "tools")
    return {**out, **extra_fields(obj, used, out.keys())}
