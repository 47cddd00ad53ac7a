"""Masking with real models' chat templates (their `tokenizer_config.json` strings in tests/data/templates/): the
trained tokens of a multi-turn record are exactly the assistant turns, each with its end-of-turn token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

from workbench.models import templates as tdata

TEMPLATES = Path(__file__).resolve().parent / "data" / "templates"
SPECIAL = [
    "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>",
    "<|end_header_id|>", "<|eot_id|>", "[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>",
    "<|observation|>", "<think>", "</think>",
]  # fmt: skip
CORPUS = [
    "You are a helpful assistant. What is the capital of France? Paris. Translate to English.",
    "你好，请问今天天气怎么样？今天是晴天。把这句话翻译成英文。",
    "system user assistant tool Today Date Cutting Knowledge [INST] [/INST]",
]


def tiny_tokenizer(template: str) -> Any:
    """A byte-level BPE tokenizer trained in code on a few sentences, with the templates' special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = template
    return fast


RECORD = {
    "system": "Answer briefly.",
    "history": [
        ["What is the capital of France?", "<think>\nThe user asks about France.\n</think>\n\nParis."],
        ["把这句话翻译成英文：你好", "Hello."],
    ],
    "instruction": "Today?",
    "input": "",
    "output": "<think>\nA date question.\n</think>\n\nIt is sunny.",
}
PLAIN = RECORD["history"][0][1]

# What each template trains, turn by turn: the assistant text as that template renders it in the full conversation,
# then its end-of-turn token.
EXPECTED = {
    "qwen2.5-instruct.jinja": [f"{PLAIN}<|im_end|>", "Hello.<|im_end|>", f"{RECORD['output']}<|im_end|>"],
    # Earlier answers lose their <think> block once a later user turn exists; the last keeps it.
    "qwen3.jinja": ["Paris.<|im_end|>", "Hello.<|im_end|>", f"{RECORD['output']}<|im_end|>"],
    "llama3-instruct.jinja": [f"{PLAIN}<|eot_id|>", "Hello.<|eot_id|>", f"{RECORD['output']}<|eot_id|>"],
    "mistral-7b-instruct-v0.2.jinja": [f" {PLAIN}</s>", " Hello.</s>", f" {RECORD['output']}</s>"],
    # GLM-4 closes a turn with the next role tag: there is no end-of-turn text to train.
    "glm-4-9b-chat.jinja": [f"\n{PLAIN}", "\nHello.", f"\n{RECORD['output']}"],
}


def trained_spans(tokenizer: Any, ex: tdata.Example) -> list[str]:
    spans, run = [], []
    for tok, label in zip(ex.input_ids, ex.labels, strict=True):
        if label != tdata.IGNORE:
            run.append(tok)
        elif run:
            spans.append(tokenizer.decode(run))
            run = []
    if run:
        spans.append(tokenizer.decode(run))
    return spans


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_trained_tokens_are_exactly_the_assistant_turns_with_their_end_of_turn(name: str) -> None:
    tokenizer = tiny_tokenizer((TEMPLATES / name).read_text(encoding="utf-8"))
    ex = tdata.encode(tokenizer, RECORD, "chat", 4096, "responses")
    assert trained_spans(tokenizer, ex) == EXPECTED[name]
    # The tokens are the whole conversation exactly as the template renders it.
    full = tokenizer.apply_chat_template(tdata.messages_of(RECORD), tokenize=False)
    assert tokenizer.decode(ex.input_ids) == full
    # Generation continues from the prompt the last trained turn follows.
    prompt = tdata.prompt_text(tokenizer, "chat", RECORD)
    assert full.startswith(prompt) and full[len(prompt) :].rstrip() == EXPECTED[name][-1]


def test_qwen2_5_default_system_prompt_is_rendered_and_masked() -> None:
    tokenizer = tiny_tokenizer((TEMPLATES / "qwen2.5-instruct.jinja").read_text(encoding="utf-8"))
    record = {**RECORD, "system": "", "history": []}
    ex = tdata.encode(tokenizer, record, "chat", 4096, "responses")
    masked = tokenizer.decode([t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab == tdata.IGNORE])
    assert masked.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    assert trained_spans(tokenizer, ex) == [f"{RECORD['output']}<|im_end|>"]


def test_end_of_turn_text_is_read_from_the_template() -> None:
    got = {n: tdata.end_of_turn(tiny_tokenizer((TEMPLATES / n).read_text(encoding="utf-8"))) for n in EXPECTED}
    assert got == {
        "glm-4-9b-chat.jinja": "",
        "llama3-instruct.jinja": "<|eot_id|>",
        "mistral-7b-instruct-v0.2.jinja": "</s>",
        "qwen2.5-instruct.jinja": "<|im_end|>",
        "qwen3.jinja": "<|im_end|>",
    }
