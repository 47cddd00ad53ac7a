"""The recipe's `template`: a named template or a Jinja file, used by training and by generation alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import write_jsonl

pytest.importorskip("torch")
pytest.importorskip("peft")

from workbench.errors import WbError
from workbench.models import templates as tdata
from workbench.models.base import load_tokenizer, tiny_model_dir
from workbench.models.targets import load, resolve_target
from workbench.train import recipe as recipes
from workbench.train.trainer import train

FIXTURES = Path(__file__).resolve().parent / "data" / "templates"
CUSTOM = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}: {{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant: {% endif %}"
)
RECORDS = [{"instruction": f"Word {i}?", "input": "", "output": w} for i, w in enumerate(["apple", "梨子"] * 4)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny")


def test_named_templates_are_the_real_models_templates() -> None:
    pairs = {"llama3": "llama3-instruct.jinja", "qwen": "qwen2.5-instruct.jinja", "glm4": "glm-4-9b-chat.jinja"}
    for name, fixture in pairs.items():
        assert tdata.template_text(name) == (FIXTURES / fixture).read_text(encoding="utf-8")
    assert "<|im_start|>assistant" in (tdata.template_text("chatml") or "")


@pytest.mark.parametrize("name", tdata.NAMED_TEMPLATES)
def test_a_named_template_replaces_the_tokenizers_and_masks_its_turns(tiny: Path, name: str) -> None:
    tokenizer = load_tokenizer(str(tiny))
    assert tdata.choose_template(tokenizer, name) == "chat"
    assert tokenizer.chat_template == tdata.template_text(name)
    record = {"instruction": "Hi", "input": "", "output": "Hello there", "system": "", "history": [["1+1?", "2"]]}
    ex = tdata.encode(tokenizer, record, "chat", 512, "responses")
    trained = tokenizer.decode([t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != tdata.IGNORE])
    eot = {"chatml": "<|im_end|>", "qwen": "<|im_end|>", "llama3": "<|eot_id|>", "glm4": ""}[name]
    assert trained.replace("\n", "") == f"2{eot}Hello there{eot}"


def test_recipe_template_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(WbError, match=r"recipe: template: .*'qwen7' is neither auto, chat, alpaca, a named template"):
        recipes.load(None, ["template=qwen7"])
    jinja = tmp_path / "mine.jinja"
    jinja.write_text(CUSTOM, encoding="utf-8")
    assert recipes.load(None, [f"template={jinja}"]).template == str(jinja)


def test_a_template_file_trains_and_generation_renders_with_the_runs_copy(tmp_path: Path, tiny: Path) -> None:
    jinja = tmp_path / "mine.jinja"
    jinja.write_text(CUSTOM, encoding="utf-8")
    data = write_jsonl(tmp_path / "train.jsonl", RECORDS)
    rec = recipes.load(
        None,
        [f"template={jinja}", "max_steps=2", "val_size=0", "max_length=64", "batch_size=4", "name=t"],
        model=str(tiny),
        data=data,
        output_dir=tmp_path / "runs",
    )
    run = train(rec).run_dir
    jinja.unlink()  # the run keeps its own copy
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["template"] == tdata.RUN_TEMPLATE_FILE
    assert (run / tdata.RUN_TEMPLATE_FILE).read_text(encoding="utf-8") == CUSTOM
    loaded = load([resolve_target(run)])
    assert loaded.template == "chat" and loaded.tokenizer.chat_template == CUSTOM
    record: dict[str, Any] = {"instruction": "Word 1?", "input": "", "output": "", "system": "", "history": []}
    assert (
        tdata.prompt_text(loaded.tokenizer, "chat", record)
        == "<|im_start|>user: Word 1?<|im_end|>\n<|im_start|>assistant: "
    )


def test_tool_conversations_train_with_a_tool_template_and_are_refused_without(tmp_path: Path, tiny: Path) -> None:
    from test_tool_conversations import OPENAI

    from workbench.records import to_tool_conversation

    data = write_jsonl(tmp_path / "train.jsonl", [*RECORDS, to_tool_conversation(OPENAI)])
    common = ["max_steps=2", "val_size=0", "max_length=512", "batch_size=4"]
    fields = {"model": str(tiny), "data": data, "output_dir": tmp_path / "runs"}
    run = train(recipes.load(None, [*common, "template=qwen", "name=tools"], **fields)).run_dir
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["examples"]["train"] == len(RECORDS) + 1 and manifest["template"] == "qwen"
    with pytest.raises(WbError, match=r"line 9: a tool-calling conversation needs a chat template"):
        train(recipes.load(None, [*common, "template=llama3", "name=refused"], **fields))


BROKEN_TEMPLATES = {
    "sandbox.jinja": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "blocked by Jinja's sandbox: access to"),
    "syntax.jinja": ("{% for m in messages %}{{ m['content'] }", "syntax error on line 1: unexpected '}'"),
    "raises.jinja": ("{{ raise_exception('只接受中文对话') }}", "the template failed: 只接受中文对话"),
}


@pytest.mark.parametrize("name", sorted(BROKEN_TEMPLATES))
def test_a_broken_template_file_is_one_line_naming_it_in_stats_and_train(
    tmp_path: Path, tiny: Path, name: str, wb: Any
) -> None:
    text, error = BROKEN_TEMPLATES[name]
    jinja = tmp_path / name
    jinja.write_text(text, encoding="utf-8")
    data = write_jsonl(tmp_path / "train.jsonl", RECORDS)
    runs = tmp_path / "runs"
    stats = wb("stats", data, "--tokenizer", tiny, "--template", jinja)
    train_ = wb(
        "train", "--data", data, f"model={tiny}", f"template={jinja}", f"output_dir={runs}", "max_steps=1", "-q"
    )
    for result in (stats, train_):
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: template {jinja}: {error}"), result.stderr
    assert not runs.exists()  # nothing of a run is written
