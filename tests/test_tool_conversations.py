"""Tool-calling conversations: kept whole, validated, trained with a tool-capable template, refused otherwise."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import read_jsonl, write_jsonl

from workbench.errors import WbError
from workbench.io.reader import RecordReader
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


# Shaped like LLaMA-Factory's glaive_toolcall_zh_demo: ShareGPT turns, `tools` a JSON string of bare schemas. Most of
# its conversations make no call: the assistant declines what its tools cannot do and says what it can do instead.
AGE_TOOL = {
    "name": "calculate_age",
    "description": "根据出生日期计算年龄",
    "parameters": {
        "type": "object",
        "properties": {"birthdate": {"type": "string", "description": "出生日期，格式为YYYY-MM-DD"}},
        "required": ["birthdate"],
    },
}
LOAN_TOOL = {
    "name": "calculate_loan_payment",
    "description": "计算贷款的每月还款额",
    "parameters": {"type": "object", "properties": {"principal": {"type": "number"}, "months": {"type": "integer"}}},
}
DECLINE_FLIGHT = "对不起，我无法协助您预订机票，因为这是一项外部任务。我目前的功能只能根据出生日期计算年龄。"
DECLINE_PIZZA = "抱歉，我不能帮您订披萨。我只能帮您计算贷款的每月还款额，需要的话请告诉我本金和期限。"
GLAIVE_ZH = [
    {
        "conversations": [
            {"from": "human", "value": "我出生于1990年5月15日，你能告诉我我今年几岁吗？"},
            {"from": "function_call", "value": '{"name": "calculate_age", "arguments": {"birthdate": "1990-05-15"}}'},
            {"from": "observation", "value": '{"age": 34}'},
            {"from": "gpt", "value": "根据您提供的出生日期，您今年34岁。"},
        ],
        "tools": json.dumps([AGE_TOOL], ensure_ascii=False),
    },
    {
        "conversations": [
            {"from": "human", "value": "你能帮我订一张从纽约到伦敦的机票吗？"},
            {"from": "gpt", "value": DECLINE_FLIGHT},
        ],
        "tools": json.dumps([AGE_TOOL], ensure_ascii=False),
    },
    {
        "conversations": [{"from": "human", "value": "帮我订一个披萨好吗？"}, {"from": "gpt", "value": DECLINE_PIZZA}],
        "tools": json.dumps([LOAN_TOOL], ensure_ascii=False),
    },
    {  # no tools offered: a plain conversation, and its refusal is boilerplate
        "conversations": [{"from": "human", "value": "讲个笑话"}, {"from": "gpt", "value": "抱歉，我无法讲笑话。"}],
        "tools": "[]",
    },
]


def test_a_conversation_offering_tools_stays_a_tool_conversation_without_a_call(tmp_path: Path, wb: Any) -> None:
    src = write_jsonl(tmp_path / "glaive_toolcall_zh_demo.jsonl", GLAIVE_ZH)
    res = wb("clean", src, "-o", tmp_path / "clean.jsonl")
    assert res.exit_code == 0, res.output
    stats = json.loads((tmp_path / "clean.stats.json").read_text(encoding="utf-8"))
    assert (stats["read"], stats["kept"], stats["kept_tool_conversations"]) == (4, 3, 3)
    assert stats["dropped_by_rule"]["refusal"] == 1  # the one without tools
    kept = read_jsonl(tmp_path / "clean.jsonl")
    assert kept[0] == to_tool_conversation(GLAIVE_ZH[0])
    assert kept[1] == {
        "messages": [
            {"role": "user", "content": "你能帮我订一张从纽约到伦敦的机票吗？"},
            {"role": "assistant", "content": DECLINE_FLIGHT},
        ],
        "tools": [{"type": "function", "function": AGE_TOOL}],
    }
    assert kept[2]["messages"][-1]["content"] == DECLINE_PIZZA
    assert kept[2]["tools"] == [{"type": "function", "function": LOAN_TOOL}]
    [dropped] = read_jsonl(tmp_path / "clean.dropped.jsonl")
    assert (dropped["line"], dropped["rule"]) == (4, "refusal")
    assert dropped["record"]["tools"] == "[]"  # an empty tool list is the record's own field, kept as written


def test_tools_that_are_not_valid_json_are_rejected_naming_the_field(tmp_path: Path) -> None:
    broken = {**GLAIVE_ZH[1], "tools": '[{"name": "calculate_age",'}
    [batch] = list(RecordReader(write_jsonl(tmp_path / "broken.jsonl", [broken])))
    assert not batch.rows and not batch.conversations
    [reject] = batch.rejects
    assert (reject.field, reject.kind) == ("tools", "invalid_tool_conversation") and "not valid JSON" in reject.error


# Only the tests that encode with a tokenizer need transformers; the ones above run everywhere.
needs_transformers = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="needs the training extra (transformers)"
)


@needs_transformers
def test_tool_turns_are_masked_and_assistant_turns_trained_with_a_tool_template() -> None:
    from test_chat_templates import TEMPLATES, tiny_tokenizer, trained_spans

    from workbench.models import templates as tdata

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
def test_a_declined_tool_request_trains_the_answer_with_the_tools_in_the_prompt() -> None:
    from test_chat_templates import TEMPLATES, tiny_tokenizer, trained_spans

    from workbench.models import templates as tdata

    tokenizer = tiny_tokenizer((TEMPLATES / "qwen2.5-instruct.jinja").read_text(encoding="utf-8"))
    ex = tdata.encode(tokenizer, to_tool_conversation(GLAIVE_ZH[1]), "chat", 4096, "responses")
    assert trained_spans(tokenizer, ex) == [DECLINE_FLIGHT + "<|im_end|>"]
    full = tokenizer.decode(ex.input_ids)
    assert "# Tools" in full and '"name": "calculate_age"' in full  # the model sees what it can do


@needs_transformers
@pytest.mark.parametrize("name", ["llama3-instruct.jinja", "mistral-7b-instruct-v0.2.jinja"])
def test_templates_without_tool_support_are_refused_in_one_line(name: str) -> None:
    from test_chat_templates import TEMPLATES, tiny_tokenizer

    from workbench.models import templates as tdata

    tokenizer = tiny_tokenizer((TEMPLATES / name).read_text(encoding="utf-8"))
    with pytest.raises(WbError, match="line 7: a tool-calling conversation needs a chat template that renders tool"):
        tdata.encode(tokenizer, to_tool_conversation(OPENAI), "chat", 4096, "responses", line=7)
    with pytest.raises(WbError, match="alpaca template does not"):
        tdata.encode(tokenizer, to_tool_conversation(OPENAI), "alpaca", 4096, "responses", line=7)
