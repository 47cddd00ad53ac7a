"""Record models and conversions: what a training example must look like, and how chats become one."""

from __future__ import annotations

from typing import Any

import pytest

from workbench.io.options import resolve_mapping
from workbench.records import (
    AlpacaRecord,
    ConversionError,
    RecordError,
    ShareGPTRecord,
    alpaca_to_messages,
    alpaca_to_sharegpt,
    messages_to_alpaca,
    sharegpt_to_alpaca,
    to_alpaca,
    to_row,
    validate,
)

LONG_OUTPUT = "长文本🙂 " * 12_500  # ~100 kB of UTF-8


def read(obj: Any) -> AlpacaRecord:
    """Read one decoded JSON value the way the reader does: mapping resolved from the record's own keys."""
    keys = obj.keys() if isinstance(obj, dict) else []
    return to_alpaca(obj, resolve_mapping(keys))


def reject(obj: Any, mapping: dict[str, str] | None = None) -> RecordError:
    m = resolve_mapping(obj.keys() if isinstance(obj, dict) else []) if mapping is None else mapping
    with pytest.raises(RecordError) as exc:
        to_alpaca(obj, m)
    return exc.value


def row(rec: AlpacaRecord) -> tuple[str, str, str, str, list[list[str]]]:
    return (rec.instruction, rec.input, rec.output, rec.system, rec.history)


# --- Alpaca records -------------------------------------------------------------------------------------------


def test_alpaca_record_with_unicode_and_long_output_is_read_verbatim() -> None:
    obj = {"instruction": "把这句话翻译成英文：你好，世界 👋", "input": "", "output": LONG_OUTPUT}
    rec = read(obj)
    assert rec.instruction == "把这句话翻译成英文：你好，世界 👋"
    assert rec.output == LONG_OUTPUT
    assert len(rec.output.encode()) > 100_000
    assert (rec.input, rec.system, rec.history) == ("", "", [])


def test_optional_fields_default_to_empty() -> None:
    rec = read({"instruction": "Say hi", "output": "Hi!"})
    assert row(rec) == ("Say hi", "", "Hi!", "", [])


def test_empty_strings_are_valid_field_values() -> None:
    rec = read({"instruction": "", "input": "", "output": ""})
    assert row(rec) == ("", "", "", "", [])


@pytest.mark.parametrize("missing", ["instruction", "output"])
def test_missing_required_field_is_rejected_naming_the_field(missing: str) -> None:
    obj = {"instruction": "Summarise", "output": "摘要"}  # with an input, the input would be the instruction
    del obj[missing]
    err = reject(obj)
    assert err.kind == "missing_field"
    assert err.field == missing
    assert missing in str(err)


@pytest.mark.parametrize(
    ("obj", "field", "got"),
    [
        ({"instruction": "Add 2+3", "output": 5}, "output", "int"),
        ({"instruction": ["a", "list"], "output": "x"}, "instruction", "list"),
        ({"instruction": "q", "input": 3.5, "output": "x"}, "input", "float"),
        ({"instruction": "q", "output": "x", "system": {"role": "x"}}, "system", "dict"),
        ({"instruction": "q", "output": None}, "output", "NoneType"),
    ],
)
def test_wrong_type_is_rejected_naming_the_field_and_the_type_found(obj: dict[str, Any], field: str, got: str) -> None:
    err = reject(obj)
    assert err.kind == "wrong_type"
    assert err.field == field
    assert f"got {got}" in str(err)


def test_history_turn_that_is_not_a_pair_is_rejected_at_its_index() -> None:
    obj = {"instruction": "q", "output": "a", "history": [["u1", "a1"], ["u2", "a2", "extra"]]}
    err = reject(obj)
    assert err.kind == "wrong_type"
    assert err.field == "history[1]"


def test_history_turn_with_a_non_string_is_rejected_at_its_position() -> None:
    err = reject({"instruction": "q", "output": "a", "history": [["u1", 7]]})
    assert err.kind == "wrong_type"
    assert err.field == "history[0][1]"


def test_extra_keys_are_ignored() -> None:
    obj = {"instruction": "q", "output": "a", "id": 17, "meta": {"source": "网页", "tags": ["x"]}, "score": None}
    assert row(read(obj)) == ("q", "", "a", "", [])


def test_aliased_column_with_wrong_type_names_the_source_column() -> None:
    err = reject({"prompt": "2+2?", "response": 4})
    assert err.kind == "wrong_type"
    assert err.field == "response (as output)"


def test_record_with_only_an_aliased_prompt_is_missing_its_output() -> None:
    err = reject({"prompt": "only a prompt"})
    assert err.kind == "missing_field"
    assert err.field == "output"


@pytest.mark.parametrize("value", [[1, 2], 42, "text", None, 3.5])
def test_non_object_is_rejected_as_not_an_object(value: Any) -> None:
    err = reject(value, mapping={})
    assert err.kind == "not_an_object"
    assert type(value).__name__ in str(err)


def test_validate_turns_pydantic_errors_into_record_errors() -> None:
    with pytest.raises(RecordError) as exc:
        validate(AlpacaRecord, {"instruction": "q"})
    assert (exc.value.field, exc.value.kind) == ("output", "missing_field")


# --- ShareGPT and OpenAI messages -> Alpaca ------------------------------------------------------------------


def test_messages_with_system_prompt_and_history_convert_in_order() -> None:
    obj = {
        "messages": [
            {"role": "system", "content": "你是一个乐于助人的助手。"},
            {"role": "user", "content": "第一问"},
            {"role": "assistant", "content": "第一答 ✅"},
            {"role": "user", "content": "second question"},
            {"role": "assistant", "content": "second answer"},
            {"role": "user", "content": "最后一问 🤔"},
            {"role": "assistant", "content": LONG_OUTPUT},
        ]
    }
    rec = read(obj)
    assert rec.system == "你是一个乐于助人的助手。"
    assert rec.history == [["第一问", "第一答 ✅"], ["second question", "second answer"]]
    assert rec.instruction == "最后一问 🤔"
    assert rec.input == ""
    assert rec.output == LONG_OUTPUT


def test_openai_developer_role_is_the_system_prompt() -> None:
    obj = {
        "messages": [
            {"role": "developer", "content": "Be terse."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
        ]
    }
    assert row(read(obj)) == ("hi", "", "hello", "Be terse.", [])


def test_sharegpt_with_system_field_and_history_converts_in_order() -> None:
    obj = {
        "system": "Answer in French.",
        "conversations": [
            {"from": "human", "value": "Hello"},
            {"from": "gpt", "value": "Bonjour"},
            {"from": "human", "value": "Thanks 🙏"},
            {"from": "gpt", "value": "Merci"},
        ],
        "id": "conv-1",
    }
    assert row(read(obj)) == ("Thanks 🙏", "", "Merci", "Answer in French.", [["Hello", "Bonjour"]])


def test_sharegpt_system_turn_becomes_system_prompt() -> None:
    obj = {
        "conversations": [
            {"from": "system", "value": "系统提示"},
            {"from": "Human", "value": "问"},
            {"from": "GPT", "value": "答"},
        ]
    }
    assert row(read(obj)) == ("问", "", "答", "系统提示", [])


def test_sharegpt_with_both_system_field_and_system_turn_is_rejected() -> None:
    obj = {
        "system": "one",
        "conversations": [
            {"from": "system", "value": "two"},
            {"from": "human", "value": "q"},
            {"from": "gpt", "value": "a"},
        ],
    }
    err = reject(obj)
    assert isinstance(err, ConversionError)
    assert err.field == "conversations[0]"


def test_alpaca_without_input_round_trips_through_messages_losslessly() -> None:
    rec = AlpacaRecord(
        instruction="最后的问题 🚀",
        input="",
        output="回答\n第二行",
        system="系统",
        history=[["q1", "a1"], ["q2 😀", "a2"]],
    )
    msgs = alpaca_to_messages(rec)
    assert [m.role for m in msgs.messages] == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert messages_to_alpaca(msgs) == rec
    # and through its JSON form, as it would be written to and read back from a file
    assert read(msgs.model_dump()) == rec


def test_alpaca_input_is_appended_to_the_user_turn_not_lost() -> None:
    rec = AlpacaRecord(instruction="Translate", input="你好", output="Hello")
    back = messages_to_alpaca(alpaca_to_messages(rec))
    assert back.instruction == "Translate\n\n你好"
    assert back.input == ""
    assert back.output == "Hello"


def test_sharegpt_round_trips_through_alpaca() -> None:
    obj = {
        "conversations": [
            {"from": "human", "value": "你好"},
            {"from": "gpt", "value": "你好！有什么可以帮你？"},
            {"from": "human", "value": "讲个笑话 😂"},
            {"from": "gpt", "value": ""},
        ],
        "system": "be funny",
    }
    rec = sharegpt_to_alpaca(ShareGPTRecord.model_validate(obj))
    assert alpaca_to_sharegpt(rec).model_dump(by_alias=True) == obj


def test_alpaca_round_trips_through_sharegpt() -> None:
    rec = AlpacaRecord(instruction="q", output="a", system="s", history=[["u", "v"]])
    back = read(alpaca_to_sharegpt(rec).model_dump(by_alias=True))
    assert back == rec


# --- conversations with no Alpaca form ------------------------------------------------------------------------


def test_messages_ending_with_user_turn_are_rejected_at_that_turn() -> None:
    obj = {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "unanswered"},
        ]
    }
    err = reject(obj)
    assert isinstance(err, ConversionError)
    assert err.kind == "not_convertible"
    assert err.field == "messages[3]"
    assert "ends with a user turn" in str(err)


def test_sharegpt_ending_with_user_turn_is_rejected_at_that_turn() -> None:
    obj = {"conversations": [{"from": "human", "value": "q"}]}
    err = reject(obj)
    assert err.kind == "not_convertible"
    assert err.field == "conversations[0]"


@pytest.mark.parametrize("tail", [[], [{"role": "assistant", "content": "b"}]])
def test_two_user_turns_in_a_row_are_rejected_at_the_second_whatever_the_length(tail: list[Any]) -> None:
    first = [{"role": "user", "content": "q1"}, {"role": "user", "content": "q2"}]
    obj = {"messages": [*first, {"role": "assistant", "content": "a"}, *tail]}
    err = reject(obj)
    assert err.kind == "not_convertible"
    assert err.field == "messages[1]"
    assert str(err) == "messages[1]: two user turns in a row (messages[0] and [1]); merge them or drop one"


def test_two_assistant_turns_in_a_row_name_both() -> None:
    turns = [("human", "q"), ("gpt", "a1"), ("gpt", "a2"), ("human", "q2"), ("gpt", "a3")]
    err = reject({"conversations": [{"from": f, "value": v} for f, v in turns]})
    assert str(err).startswith("conversations[2]: two assistant turns in a row (conversations[1] and [2])")


@pytest.mark.parametrize("n_turns", [2, 3])
def test_conversation_starting_with_assistant_is_rejected_at_the_first_turn(n_turns: int) -> None:
    turns = [{"from": "gpt", "value": "hi"}, {"from": "human", "value": "hello"}, {"from": "gpt", "value": "hey"}]
    err = reject({"system": "s", "conversations": turns[:n_turns]})
    assert err.kind == "not_convertible"
    assert err.field == "conversations[0]"
    assert "starts with an assistant turn; the first turn must be the user's" in str(err)


def test_a_system_turn_in_the_middle_is_named_as_such() -> None:
    msgs = [("user", "q"), ("system", "be brief"), ("assistant", "a")]
    err = reject({"messages": [{"role": r, "content": c} for r, c in msgs]})
    assert err.field == "messages[1]" and "a system turn after the conversation started" in str(err)


def test_openai_tool_role_is_rejected_naming_the_role_field() -> None:
    obj = {
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "calling"},
            {"role": "tool", "content": '{"temp": 21}'},
            {"role": "assistant", "content": "21°C"},
        ]
    }
    err = reject(obj)
    assert err.kind == "not_convertible"
    assert err.field == "messages[2].role"
    assert "'tool'" in str(err)


@pytest.mark.parametrize("role", ["function_call", "observation", "tool"])
def test_sharegpt_function_turns_are_rejected_naming_the_from_field(role: str) -> None:
    obj = {
        "conversations": [
            {"from": "human", "value": "q"},
            {"from": role, "value": "{}"},
            {"from": "gpt", "value": "a"},
        ]
    }
    err = reject(obj)
    assert err.kind == "not_convertible"
    assert err.field == "conversations[1].from"


@pytest.mark.parametrize("key", ["messages", "conversations"])
def test_empty_conversation_is_rejected_naming_the_list(key: str) -> None:
    err = reject({key: []})
    assert err.field == key
    assert err.kind != "missing_field"


def test_conversation_of_only_a_system_prompt_is_rejected() -> None:
    err = reject({"messages": [{"role": "system", "content": "s"}]})
    assert err.kind == "not_convertible"
    assert err.field == "messages"


def test_message_with_non_string_content_is_rejected_at_that_message() -> None:
    obj = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None}]}
    err = reject(obj)
    assert err.kind == "wrong_type"
    assert err.field == "messages[1].content"


def test_message_without_role_is_a_missing_field() -> None:
    err = reject({"messages": [{"content": "q"}, {"role": "assistant", "content": "a"}]})
    assert err.kind == "missing_field"
    assert err.field == "messages[0].role"


# --- to_row ---------------------------------------------------------------------------------------------------


def test_to_row_reads_mapped_source_columns() -> None:
    obj = {"instruction": "写一首诗", "response": "床前明月光🌙"}
    assert to_row(obj, {"output": "response"}) == ("写一首诗", "", "床前明月光🌙", "", [])
    assert to_row(obj, {"instruction": "instruction", "output": "response"}) == ("写一首诗", "", "床前明月光🌙", "", [])


def test_to_row_with_mapping_ignores_unmapped_canonical_column() -> None:
    obj = {"instruction": "q", "output": "the wrong column", "response": "the right one"}
    got = to_row(obj, {"instruction": "instruction", "output": "response"})
    assert got == ("q", "", "the right one", "", [])


FAST_PATH_CASES: list[dict[str, Any]] = [
    {"instruction": "q", "output": "a"},
    {"instruction": "q", "input": "ctx", "output": "a"},
    {"instruction": "q", "input": None, "output": "a"},
    {"instruction": "你好🙂", "input": "", "output": LONG_OUTPUT},
    {"instruction": "", "input": "", "output": ""},
]


@pytest.mark.parametrize("obj", FAST_PATH_CASES)
def test_to_row_fast_path_agrees_with_pydantic_path(obj: dict[str, Any]) -> None:
    mapping = resolve_mapping(["instruction", "input", "output", "system"])
    fast = to_row(obj, mapping)
    # An empty `system` key means the same record but forces full model validation.
    slow = to_row({**obj, "system": ""}, mapping)
    assert fast == slow == row(to_alpaca(obj, mapping))


def test_to_row_treats_null_input_as_empty() -> None:
    mapping = resolve_mapping(["instruction", "input", "output"])
    assert to_row({"instruction": "q", "input": None, "output": "a"}, mapping) == ("q", "", "a", "", [])
    slow = to_row({"instruction": "q", "input": None, "output": "a", "system": None}, mapping)
    assert slow == ("q", "", "a", "", [])


def test_to_row_null_history_means_no_history() -> None:
    mapping = resolve_mapping(["instruction", "output", "history"])
    assert to_row({"instruction": "q", "output": "a", "history": None}, mapping) == ("q", "", "a", "", [])


def test_to_row_keeps_system_and_history() -> None:
    obj = {"instruction": "q", "output": "a", "system": "s", "history": [["u", "v"]]}
    assert to_row(obj, resolve_mapping(obj)) == ("q", "", "a", "s", [["u", "v"]])


def test_to_row_converts_conversations() -> None:
    obj = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    assert to_row(obj, resolve_mapping(obj)) == ("q", "", "a", "", [])


def test_to_row_rejects_wrong_type_on_fast_path_candidates() -> None:
    with pytest.raises(RecordError) as exc:
        to_row({"instruction": "q", "output": 5}, resolve_mapping(["instruction", "output"]))
    assert (exc.value.field, exc.value.kind) == ("output", "wrong_type")


def test_to_row_result_does_not_depend_on_an_unrelated_system_key() -> None:
    mapping = {"output": "response"}
    plain = to_row({"instruction": "Hi", "response": "Hello"}, mapping)
    assert plain == ("Hi", "", "Hello", "", [])
    # Same record plus a system prompt: the instruction must still be found.
    assert to_row({"instruction": "Hi", "response": "Hello", "system": "S"}, mapping) == ("Hi", "", "Hello", "S", [])
