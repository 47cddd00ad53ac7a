"""Tool-calling conversations: kept whole, validated, trained with a tool-capable template, refused otherwise."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import read_jsonl, write_jsonl

from workbench.errors import WbError
from workbench.io import RecordReader
from workbench.records import RecordError, to_tool_conversation

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
OPENAI = {
    "messages": [
        {"role": "system", "content": "You can look up the weather."},
        {"role": "user", "content": "北京今天天气怎么样？"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "北京"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21, "sky": "晴"}'},
        {"role": "assistant", "content": "北京今天晴，21℃。"},
    ],
    "tools": [WEATHER_TOOL],
}
# LLaMA-Factory's ShareGPT tool form: function_call / observation turns, tools as a JSON string of bare schemas.
SHAREGPT = {
    "conversations": [
        {"from": "human", "value": "What's the weather in Paris?"},
        {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
        {"from": "observation", "value": '{"temp": 18}'},
        {"from": "gpt", "value": "It is 18 degrees in Paris."},
    ],
    "tools": json.dumps([WEATHER_TOOL["function"]]),
}


def test_both_tool_forms_become_one_validated_messages_form() -> None:
    a = to_tool_conversation(OPENAI)
    assert [m["role"] for m in a["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    assert a["messages"][2]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "北京"}}
    b = to_tool_conversation(SHAREGPT)
    assert [m["role"] for m in b["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert b["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert b["tools"] == [WEATHER_TOOL]


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (lambda m: m.pop(2), "messages[2]", "a tool result that follows no tool call"),
        (lambda m: m.pop(3), "messages[3]", r"1 tool call\(s\) of the assistant turn before have no result"),
        (lambda m: m[3].update(tool_call_id="call_9"), "messages[3].tool_call_id", "answers no pending call"),
        (lambda m: m.pop(4), "messages[3]", "must end with an assistant turn"),
        (lambda m: m[2]["tool_calls"][0]["function"].update(arguments="{bad"), "arguments", "not valid JSON"),
    ],
)
def test_invalid_tool_conversations_name_the_turn(edit: Any, field: str, message: str) -> None:
    rec = json.loads(json.dumps(OPENAI))
    edit(rec["messages"])
    with pytest.raises(RecordError, match=message) as exc:
        to_tool_conversation(rec)
    assert field in exc.value.field and exc.value.kind == "invalid_tool_conversation"


def test_clean_keeps_tool_conversations_whole_and_rejects_broken_ones(tmp_path: Path, wb: Any) -> None:
    broken = {"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "x"}]}
    plain = {"instruction": "2+2?", "input": "", "output": "4"}
    src = write_jsonl(tmp_path / "tools.jsonl", [OPENAI, plain, SHAREGPT, broken])
    res = wb("clean", src, "-o", tmp_path / "clean.jsonl")
    assert res.exit_code == 0, res.output
    stats = json.loads((tmp_path / "clean.stats.json").read_text(encoding="utf-8"))
    assert (stats["read"], stats["kept"], stats["rejected"], stats["kept_tool_conversations"]) == (4, 3, 1, 2)
    kept = read_jsonl(tmp_path / "clean.jsonl")
    assert kept[0]["instruction"] == "2+2?"
    assert kept[1] == to_tool_conversation(OPENAI) and kept[2] == to_tool_conversation(SHAREGPT)
    [reject] = read_jsonl(tmp_path / "clean.rejects.jsonl")
    assert (reject["line"], reject["field"], reject["kind"]) == (4, "messages[1]", "invalid_tool_conversation")
    # The kept file reads back: the same conversations, valid.
    batches = list(RecordReader(tmp_path / "clean.jsonl"))
    assert [c for b in batches for _, c in b.conversations] == kept[1:]
    assert wb("validate", tmp_path / "clean.jsonl").exit_code == 0


# Only the tests that encode with a tokenizer need transformers; the ones above run everywhere.
needs_transformers = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="needs the training extra (transformers)"
)


@needs_transformers
def test_tool_turns_are_masked_and_assistant_turns_trained_with_a_tool_template() -> None:
    from test_chat_templates import TEMPLATES, tiny_tokenizer, trained_spans

    from workbench.train import data as tdata

    tokenizer = tiny_tokenizer((TEMPLATES / "qwen2.5-instruct.jinja").read_text(encoding="utf-8"))
    record = to_tool_conversation(OPENAI)
    assert tdata.supports_tools(tokenizer)
    ex = tdata.encode(tokenizer, record, "chat", 4096, "responses")
    assert trained_spans(tokenizer, ex) == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n</tool_call><|im_end|>',
        "北京今天晴，21℃。<|im_end|>",
    ]
    full = tokenizer.decode(ex.input_ids)
    assert "# Tools" in full and '"name": "get_weather"' in full  # the tool schemas are in the system turn
    assert "<tool_response>\n" + '{"temp": 21, "sky": "晴"}' in full  # the tool result is read, not trained


@needs_transformers
@pytest.mark.parametrize("name", ["llama3-instruct.jinja", "mistral-7b-instruct-v0.2.jinja"])
def test_templates_without_tool_support_are_refused_in_one_line(name: str) -> None:
    from test_chat_templates import TEMPLATES, tiny_tokenizer

    from workbench.train import data as tdata

    tokenizer = tiny_tokenizer((TEMPLATES / name).read_text(encoding="utf-8"))
    with pytest.raises(WbError, match="line 7: a tool-calling conversation needs a chat template that renders tool"):
        tdata.encode(tokenizer, to_tool_conversation(OPENAI), "chat", 4096, "responses", line=7)
    with pytest.raises(WbError, match="alpaca template does not"):
        tdata.encode(tokenizer, to_tool_conversation(OPENAI), "alpaca", 4096, "responses", line=7)
