"""Chat templates and tokenised examples: records → the text a model reads (prompts for generation) and → token ids
with labels (prompt tokens masked), shared by training, generation, evaluation and scoring.

Templating goes through the model's chat template when it has one (the same rendering `wb generate` uses with
`add_generation_prompt=True`), else the Alpaca template for base models. Each conversation is rendered in full and
cut into segments: text the model must learn to produce (assistant turns as the full rendering shows them, with
their end-of-turn token) and text it only reads (system, user turns, template scaffolding, the whitespace after an
end-of-turn token). Segments are tokenised separately, so the boundary between prompt and answer is exact.

Packing the examples for training is `workbench.train.packing`'s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from workbench.errors import WbError
from workbench.pairs import Message
from workbench.records import user_text

IGNORE = -100

ALPACA_PROMPT = "### Instruction:\n{instruction}\n\n### Response:\n"
ALPACA_PROMPT_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"

Template = Literal["chat", "alpaca"]

# Chat templates wb ships for base models without one (`template: qwen`), in workbench/models/chat_templates/: chatml
# (ChatML), llama3 (Meta-Llama-3-8B-Instruct's), qwen (Qwen2.5-Instruct's), glm4 (glm-4-9b-chat's).
NAMED_TEMPLATES = ("chatml", "llama3", "qwen", "glm4")
TEMPLATE_DIR = Path(__file__).resolve().parent / "chat_templates"
RUN_TEMPLATE_FILE = "chat_template.jinja"  # a template file's copy in the run folder, which generation reads
TEMPLATE_KEYWORDS = ("auto", "chat", "alpaca")
_TEMPLATE_SOURCES: dict[str, str] = {}  # template text -> the file or named template it came from (error messages)


def check_template_spec(spec: str) -> str:
    """A recipe's `template`: auto, chat, alpaca, a named template or a path to a Jinja file."""
    if spec in TEMPLATE_KEYWORDS or spec in NAMED_TEMPLATES or Path(spec).expanduser().is_file():
        return spec
    raise ValueError(
        f"{spec!r} is neither auto, chat, alpaca, a named template ({', '.join(NAMED_TEMPLATES)}) nor a Jinja file"
    )


def template_text(spec: str) -> str | None:
    """The Jinja text a spec names (a named template or a file); None for auto/chat/alpaca."""
    if spec in TEMPLATE_KEYWORDS:
        return None
    path = TEMPLATE_DIR / f"{spec}.jinja" if spec in NAMED_TEMPLATES else Path(spec).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise WbError(f"template: {spec}: cannot read the template ({err})") from None


def template_for_run(spec: str, used: Template, run_dir: Path) -> str:
    """What the run records as its template, so that generate/chat/eval render as training did: the name of a
    named template, or the file name of the template file's copy in the run folder; else chat or alpaca."""
    if spec in NAMED_TEMPLATES:
        return spec
    text = template_text(spec)
    if text is None:
        return used
    (run_dir / RUN_TEMPLATE_FILE).write_text(text, encoding="utf-8")
    return RUN_TEMPLATE_FILE


@dataclass
class Example:
    """One tokenised record: `labels` is IGNORE where the model only reads."""

    line: int
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def trained_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


def choose_template(tokenizer: Any, wanted: str) -> Template:
    """chat or alpaca for a template spec; a named template or a template file is installed on the tokenizer."""
    text = template_text(wanted)
    if text is not None:
        tokenizer.chat_template = text
        _TEMPLATE_SOURCES[text] = wanted
        return "chat"
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if wanted == "chat" and not has_chat:
        raise WbError("template: chat was asked for, but the model's tokenizer has no chat template; use alpaca")
    if wanted == "auto":
        return "chat" if has_chat else "alpaca"
    return "chat" if wanted == "chat" else "alpaca"


def messages_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    if "messages" in record:  # a tool-calling conversation, kept whole
        return list(record["messages"])
    msgs: list[dict[str, Any]] = []
    if record.get("system"):
        msgs.append({"role": "system", "content": record["system"]})
    for user, assistant in record.get("history") or []:
        msgs.append({"role": "user", "content": user})
        msgs.append({"role": "assistant", "content": assistant})
    msgs.append({"role": "user", "content": user_text(record["instruction"], record.get("input", ""))})
    msgs.append({"role": "assistant", "content": record["output"]})
    return msgs


def _render(
    tokenizer: Any, messages: list[dict[str, Any]], generation_prompt: bool, tools: list[dict[str, Any]] | None = None
) -> str:
    """The one place a chat template is compiled and rendered: what the template itself gets wrong (a syntax error,
    a construct Jinja's sandbox blocks, its own `raise_exception`) is the user's input, so one line naming it."""
    from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError

    try:
        return str(
            tokenizer.apply_chat_template(
                messages, tools=tools or None, tokenize=False, add_generation_prompt=generation_prompt
            )
        )
    except TemplateError as err:
        source = _TEMPLATE_SOURCES.get(str(getattr(tokenizer, "chat_template", None)))
        source = source or f"the chat template of {getattr(tokenizer, 'name_or_path', '') or 'the model'}"
        if isinstance(err, TemplateSyntaxError):
            what = f"syntax error on line {err.lineno}: {err.message}"
        elif isinstance(err, SecurityError):
            what = f"blocked by Jinja's sandbox: {err}"
        else:
            what = f"the template failed: {err}"
        raise WbError(f"template {source}: {what}") from None


PROBE_TOOL = "wb_probe_tool"
_TOOL_SUPPORT: dict[str, bool] = {}  # per chat template text


def supports_tools(tokenizer: Any) -> bool:
    """Whether the chat template renders an assistant's tool call and a tool result (many templates drop them)."""
    key = str(getattr(tokenizer, "chat_template", None))
    if key not in _TOOL_SUPPORT:
        _TOOL_SUPPORT[key] = _renders_tools(tokenizer)
    return _TOOL_SUPPORT[key]


def _renders_tools(tokenizer: Any) -> bool:
    call = {"type": "function", "function": {"name": PROBE_TOOL, "arguments": {"q": 1}}}
    probe: list[dict[str, Any]] = [
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "wb_probe_result"},
        {"role": "assistant", "content": "a"},
    ]
    try:
        rendered = _render(tokenizer, probe, generation_prompt=False)
    except Exception:  # templates that refuse the tool role raise from inside Jinja
        end_of_turn(tokenizer)  # a template that fails on a plain conversation too says why
        return False
    return PROBE_TOOL in rendered and "wb_probe_result" in rendered


def end_of_turn(tokenizer: Any) -> str:
    """The text a template closes an assistant turn with (`<|im_end|>`, `<|eot_id|>`, `</s>`; empty for templates such
    as GLM-4's that end a turn with the next role tag), found by rendering a probe conversation."""
    probe = [{"role": "user", "content": "\x00u"}, {"role": "assistant", "content": "\x00a"}]
    rendered = _render(tokenizer, probe, generation_prompt=False)
    at = rendered.rfind("\x00a")
    return rendered[at + 2 :].rstrip() if at >= 0 else ""


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The token id of the template's end-of-turn text when it is one token (`<|im_end|>`), which generation stops
    at and an export lists among generation_config.json's eos_token_id; None otherwise."""
    eot = end_of_turn(tokenizer)
    ids = tokenizer(eot, add_special_tokens=False)["input_ids"] if eot else []
    return int(ids[0]) if len(ids) == 1 else None


def chat_segments(tokenizer: Any, record: dict[str, Any]) -> list[tuple[str, bool]]:
    """(text, trained) segments whose concatenation is the whole conversation as the template renders it.

    The conversation is rendered once, in full, as the model will see it when it continues a multi-turn chat; each
    assistant turn is then located in that rendering: it starts where the template's generation prompt for that
    turn ends, and ends where the turn itself ends (with its end-of-turn text, whitespace after it excluded). So
    templates that render earlier turns differently once later turns exist (Qwen3 drops the `<think>` block of
    earlier answers) train on what they render, and a default system prompt is masked like any prompt text.
    """
    msgs = messages_of(record)
    tools = record.get("tools")
    full = _render(tokenizer, msgs, generation_prompt=False, tools=tools)
    eot = end_of_turn(tokenizer)
    segments: list[tuple[str, bool]] = []
    pos = 0
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, msgs[:i], generation_prompt=True, tools=tools)
        if not full.startswith(before) or len(before) < pos:
            raise WbError(
                "the model's chat template renders a conversation's beginning differently from the conversation "
                f"(turn {i}), so its prompt tokens cannot be masked exactly; use another template"
            )
        start = len(before)
        through = _render(tokenizer, msgs[: i + 1], generation_prompt=False, tools=tools)
        through = through.rstrip() if full.startswith(through.rstrip()) else ""
        if through and (not eot or through.endswith(eot) or i == len(msgs) - 1):
            end = len(through)
        else:  # the turn renders differently once later turns follow: it ends at its end-of-turn text
            found = full.find(eot, start) if eot else -1
            if found < 0:
                raise WbError(
                    f"the model's chat template has no end-of-turn text after assistant turn {i}, so the turn's end "
                    "cannot be found; use another template"
                )
            end = found + len(eot)
        end = start + len(full[start:end].rstrip())
        segments.append((full[pos:start], False))
        segments.append((full[start:end], True))
        pos = end
    segments.append((full[pos:], False))
    return [seg for seg in segments if seg[0]]


def alpaca_segments(tokenizer: Any, record: dict[str, Any]) -> list[tuple[str, bool]]:
    segments: list[tuple[str, bool]] = []
    if record.get("system"):
        segments.append((record["system"] + "\n\n", False))
    for user, assistant in record.get("history") or []:
        segments.append((ALPACA_PROMPT.format(instruction=user), False))
        segments.append((assistant + "\n\n", True))
    prompt = ALPACA_PROMPT_INPUT if record.get("input") else ALPACA_PROMPT
    segments.append((prompt.format(instruction=record["instruction"], input=record.get("input", "")), False))
    segments.append((record["output"] + (tokenizer.eos_token or ""), True))
    return segments


def prompt_text(tokenizer: Any, template: Template, record: dict[str, Any]) -> str:
    """What generation feeds the model for a record: everything up to where the answer starts."""
    if template == "chat":
        return _render(tokenizer, messages_of(record)[:-1], generation_prompt=True)
    return "".join(text for text, _ in alpaca_segments(tokenizer, record)[:-1])


def render_prompt(tokenizer: Any, template: Template, prompt: Sequence[Message]) -> str:
    """The prompt text up to where the answer starts, as generation renders it."""
    msgs = [dict(m) for m in prompt]
    if template == "chat":
        return _render(tokenizer, msgs, generation_prompt=True)
    record: dict[str, Any] = {"instruction": msgs[-1]["content"], "input": "", "output": "", "history": []}
    body = msgs[:-1]
    if body and body[0]["role"] == "system":
        record["system"] = body[0]["content"]
        body = body[1:]
    for i in range(0, len(body) - 1, 2):
        record["history"].append([body[i]["content"], body[i + 1]["content"]])
    return prompt_text(tokenizer, "alpaca", record)


FINGERPRINT_CONVERSATION: tuple[Message, ...] = (
    {"role": "system", "content": "You answer in one line. 请用一句话回答。"},
    {"role": "user", "content": 'What is "machine learning"? 什么是机器学习？'},
    {"role": "assistant", "content": "Learning from data: 让计算机从数据中学习。"},
    {"role": "user", "content": "And 深度学习?"},
)
"""The fixed conversation a template is fingerprinted on: a system turn, Chinese text, quotes, a finished assistant
turn (its end-of-turn text) and the generation prompt after the last user turn."""


def template_fingerprint(tokenizer: Any, template: Template) -> str:
    """The sha256 of the prompt `template` renders for FINGERPRINT_CONVERSATION (without its system turn where the
    template refuses one), as generation renders it: equal fingerprints render prompts alike. The one definition:
    training records it in the run's manifest, `wb export` in its folder, and `wb generate` / `wb eval` compare the
    template they render with against it."""
    try:
        text = render_prompt(tokenizer, template, FINGERPRINT_CONVERSATION)
    except WbError:  # a template that refuses system turns (Gemma's): the conversation without it
        text = render_prompt(tokenizer, template, FINGERPRINT_CONVERSATION[1:])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fingerprint_mismatch(current: str, current_template: str, recorded: str, recorded_template: str, where: str) -> str:
    """The one warning line when the template about to render prompts is not the one `where` recorded."""
    return (
        f"template fingerprint {current[:12]} ({current_template}) differs from {recorded[:12]} recorded in {where} "
        f"({recorded_template}): prompts will not be rendered as in training"
    )


def template_label(tokenizer: Any, template: Template, spec: str) -> str:
    """Which template renders prompts, in words: alpaca, a named template or file, or the tokenizer's own."""
    if template == "alpaca":
        return "alpaca"
    if spec not in TEMPLATE_KEYWORDS:
        return spec
    return f"the chat template of {getattr(tokenizer, 'name_or_path', '') or 'the model'}"


def completion_text(tokenizer: Any, template: Template, answer: str) -> str:
    """An answer closed as a trained turn is: the template's end-of-turn text, then EOS unless that already was it
    (TRL appends EOS to any completion that lacks it; adding it here keeps wb's token count equal to TRL's)."""
    text = answer + (end_of_turn(tokenizer) if template == "chat" else "")
    eos = tokenizer.eos_token or ""
    return text if not eos or text.endswith(eos) else text + eos


def encode(
    tokenizer: Any, record: dict[str, Any], template: Template, max_length: int, train_on: str, line: int = 0
) -> Example:
    if "messages" in record and (template != "chat" or not supports_tools(tokenizer)):
        raise WbError(
            f"line {line}: a tool-calling conversation needs a chat template that renders tool calls and results; "
            f"this {'template' if template == 'chat' else 'alpaca template'} does not (use e.g. template: qwen)"
        )
    segments = chat_segments(tokenizer, record) if template == "chat" else alpaca_segments(tokenizer, record)
    ids: list[int] = []
    labels: list[int] = []
    for text, trained in segments:
        seg = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(seg)
        labels.extend(seg if (trained or train_on == "all") else [IGNORE] * len(seg))
    truncated = len(ids) > max_length
    return Example(line, ids[:max_length], labels[:max_length], truncated)


class PaddingCollator:
    """Pads to the longest sequence of the batch (batches are grouped by length, so little is padding)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), longest), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), longest), IGNORE, dtype=torch.long)
        attn = torch.zeros((len(features), longest), dtype=torch.long)
        for b, f in enumerate(features):
            n = len(f["input_ids"])
            ids[b, :n] = torch.tensor(f["input_ids"])
            labels[b, :n] = torch.tensor(f["labels"])
            attn[b, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": attn}
