"""Every `wb export` carries the run's chat template, its end-of-turn stop token and the template's fingerprint; plain
transformers renders and stops as wb did, and `wb generate` / `wb eval` warn once when the template was changed.

The base model here is a tiny model *without* a chat template whose EOS is `<|endoftext|>` (a base model, as
SmolLM2-135M is), trained with wb's named `chatml` template: the case where an export that drops the template, or
stops only at EOS, serves another format than the one the run trained with.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import write_jsonl
from test_export_card import pairs, split_card, tables

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from workbench.export.pipeline import export  # noqa: E402
from workbench.models import generate as gen  # noqa: E402
from workbench.models import targets as runs  # noqa: E402
from workbench.models import templates as tdata  # noqa: E402
from workbench.models.base import tiny_model_dir  # noqa: E402
from workbench.train.recipe import Recipe  # noqa: E402
from workbench.train.trainer import train  # noqa: E402

SYSTEM = 'Be brief. 简短回答 "一个词"。'
FRUIT = [
    {"instruction": f"Name fruit number {i}.", "input": "", "output": w, "system": SYSTEM}
    for i, w in enumerate(["apple", "banana", "cherry", "梨子"])
]
IM_END, ENDOFTEXT = 2, 0  # <|im_end|> and <|endoftext|> in SmolLM2's vocabulary
CONVERSATIONS: list[list[dict[str, str]]] = [
    list(tdata.FINGERPRINT_CONVERSATION),
    [{"role": "user", "content": "第一种水果？"}],
    [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Name fruit number 1."},
        {"role": "assistant", "content": "banana"},
        {"role": "user", "content": 'And "number" 3? 第三个'},
    ],
]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny base model with no chat template and `<|endoftext|>` as EOS."""
    from transformers import AutoTokenizer

    path = tiny_model_dir(tmp_path_factory.mktemp("models") / "base")
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = None
    tokenizer.eos_token = "<|endoftext|>"
    (path / "chat_template.jinja").unlink()
    tokenizer.save_pretrained(path)
    for name in ("config.json", "generation_config.json"):
        if (path / name).is_file():
            config = json.loads((path / name).read_text())
            (path / name).write_text(json.dumps({**config, "eos_token_id": ENDOFTEXT}))
    return path


def _train(root: Path, model: Path, name: str, method: str, template: str, steps: int, lr: float) -> Path:
    recipe = Recipe.model_validate(
        {
            "name": name,
            "model": str(model),
            "data": write_jsonl(root / f"{name}.jsonl", FRUIT * 2),
            "output_dir": root / "runs",
            "method": method,
            "template": template,
            "val_size": 0,
            "max_length": 64,
            "max_steps": steps,
            "lr": lr,
            "batch_size": 4,
            "logging_steps": 1,
            "warmup_ratio": 0,
            "scheduler": "constant",
        }
    )
    return train(recipe).run_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, base: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "lora": _train(root, base, "lora", "lora", "chatml", 2, 2e-2),
        # A whole model learns to answer and close its turn in a few steps (a tiny LoRA does not).
        "full": _train(root, base, "full", "full", "chatml", 24, 1e-2),
    }


@pytest.fixture(scope="module")
def merged(trained: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(trained["lora"], tmp_path_factory.mktemp("exports") / "merged", merge=True).path


def _run_sha(run: Path) -> str:
    return str(json.loads((run / "manifest.json").read_text())["template_sha256"])


def _assert_carries_chatml(folder: Path) -> None:
    chatml = (tdata.TEMPLATE_DIR / "chatml.jinja").read_text(encoding="utf-8")
    assert (folder / "chat_template.jinja").read_text(encoding="utf-8") == chatml
    assert json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))["chat_template"] == chatml
    eos = json.loads((folder / "generation_config.json").read_text())["eos_token_id"]
    assert sorted(eos) == [ENDOFTEXT, IM_END]


def test_a_merged_export_renders_prompts_as_the_run_with_plain_transformers(
    trained: dict[str, Path], merged: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _assert_carries_chatml(merged)
    plain = AutoTokenizer.from_pretrained(merged)
    loaded = runs.load([runs.resolve_target(trained["lora"])])
    for conversation in CONVERSATIONS:
        wb_prompt = tdata.render_prompt(loaded.tokenizer, loaded.template, conversation)  # type: ignore[arg-type]
        assert plain.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True) == wb_prompt
    model = AutoModelForCausalLM.from_pretrained(merged, use_safetensors=True)
    assert sorted(model.generation_config.eos_token_id) == [ENDOFTEXT, IM_END]
    info = json.loads((merged / "wb_export.json").read_text(encoding="utf-8"))
    sha = tdata.template_fingerprint(loaded.tokenizer, loaded.template)  # type: ignore[arg-type]
    assert info["template_sha256"] == _run_sha(trained["lora"]) == sha
    assert info["template_source"] == "chatml" and info["end_of_turn"] == "<|im_end|>"
    front, sections = split_card((merged / "README.md").read_text(encoding="utf-8"))
    assert front["library_name"] == "transformers" and front["datasets"] == ["lora.jsonl"] and "base_model" not in front
    assert pairs(sections["Chat template"])["fingerprint (sha256)"] == sha
    assert "Not evaluated yet" in sections["Evaluation"] and not tables(sections["Evaluation"])
    steps = json.loads((trained["lora"] / "manifest.json").read_text())["global_step"]
    assert int(pairs(sections["Method and recipe"])["global_step"]) == steps


def test_a_whole_model_export_stops_at_the_end_of_turn_token_with_plain_transformers(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = export(trained["full"], tmp_path / "model", merge=True)
    assert out.kind == "model" and not out.warnings
    _assert_carries_chatml(out.path)
    tokenizer = AutoTokenizer.from_pretrained(out.path)
    model = AutoModelForCausalLM.from_pretrained(out.path, use_safetensors=True).eval()
    loaded = runs.load([runs.resolve_target(trained["full"])])
    settings = gen.GenerationSettings(max_new_tokens=12, batch_size=1, precision="fp32")
    for record in FRUIT:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": record["instruction"]}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert prompt == gen.prompt_for(loaded, record)
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            new = model.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1] :].tolist()
        assert new[-1] == IM_END and len(new) < 12  # stopped at <|im_end|>, not run on to max_new_tokens
        answer = tokenizer.decode(new, skip_special_tokens=True)
        assert answer == record["output"] == gen.generate(loaded, [prompt], settings)[0]


def test_an_adapter_only_export_carries_the_template_and_its_fingerprint(
    trained: dict[str, Path], tmp_path: Path, wb: Any
) -> None:
    from transformers import AutoTokenizer

    gate = tmp_path / "gate.yaml"
    gate.write_text("checks:\n  - task.rouge_l.tuned >= 0.1\n", encoding="utf-8")
    result = wb("export", trained["lora"], "--adapter-only", "-o", tmp_path / "adapter", "--gate", gate)
    assert result.exit_code == 0 and "warning" not in result.stderr, result.stderr
    assert "gate failed: 0 of 1 checks pass, 1 missing (in the model card)" in result.stdout
    folder = tmp_path / "adapter"
    _assert_carries_chatml(folder)
    info = json.loads((folder / "wb_adapter.json").read_text(encoding="utf-8"))
    assert info["template_sha256"] == _run_sha(trained["lora"]) and info["template_source"] == "chatml"
    front, sections = split_card((folder / "README.md").read_text(encoding="utf-8"))
    assert front["library_name"] == "peft" and "--enable-lora --lora-modules adapter=adapter" in sections["How to use"]
    assert "Not evaluated yet" in sections["Evaluation"] and tables(sections["Evaluation"]) == [
        [["task.rouge_l.tuned", ">= 0.1", "-", "missing"]]
    ]
    plain = AutoTokenizer.from_pretrained(folder)
    loaded = runs.load([runs.resolve_target(trained["lora"])])
    for conversation in CONVERSATIONS:
        wb_prompt = tdata.render_prompt(loaded.tokenizer, loaded.template, conversation)  # type: ignore[arg-type]
        assert plain.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True) == wb_prompt
    args = ("Name fruit number 1.", "--system", SYSTEM, "--max-new-tokens", "5", "-q", "--precision", "fp32")
    from_copy = wb("generate", folder, *args)
    assert from_copy.exit_code == 0 and from_copy.stderr == ""
    assert from_copy.stdout == wb("generate", trained["lora"], *args).stdout


def test_a_changed_template_is_one_warning_line_naming_both_fingerprints(merged: Path, tmp_path: Path, wb: Any) -> None:
    clean = wb("generate", merged, "第一种水果？", "--max-new-tokens", "2")
    assert clean.exit_code == 0 and "warning" not in clean.stderr, clean.stderr
    tampered = tmp_path / "tampered"
    shutil.copytree(merged, tampered)
    jinja = tampered / "chat_template.jinja"
    jinja.write_text(jinja.read_text(encoding="utf-8").replace("'<|im_end|>' + '\\n'", "'<|im_end|>' + '\\n\\n'"))
    recorded = json.loads((merged / "wb_export.json").read_text())["template_sha256"]
    from transformers import AutoTokenizer

    now = tdata.template_fingerprint(AutoTokenizer.from_pretrained(tampered), "chat")
    assert now != recorded

    def warned(stderr: str) -> list[str]:
        return [line for line in stderr.splitlines() if line.startswith("warning: template fingerprint")]

    generated = wb("generate", tampered, "第一种水果？", "--max-new-tokens", "2")
    assert generated.exit_code == 0, generated.stderr
    [line] = warned(generated.stderr)
    assert now[:12] in line and recorded[:12] in line and "wb_export.json" in line and "(chatml)" in line
    data = write_jsonl(tmp_path / "eval.jsonl", FRUIT[:2])
    args = ("--data", data, "--no-probes", "--no-cache", "--max-new-tokens", "2", "-o", tmp_path / "ev")
    evaluated = wb("eval", tampered, *args)
    assert evaluated.exit_code == 0, evaluated.stderr
    assert len(warned(evaluated.stderr)) == 1 and now[:12] in warned(evaluated.stderr)[0]
    kept = json.loads((tmp_path / "ev" / "metrics.json").read_text(encoding="utf-8"))["warnings"]
    assert [w for w in kept if w.startswith("template fingerprint")] == [line.removeprefix("warning: ")]


def test_an_alpaca_run_exports_no_chat_template(tmp_path: Path, wb: Any) -> None:
    """A run that trained with the Alpaca format on a model that has a chat template: the export does not offer the
    chat template the run never used, and wb renders the export's prompts in the Alpaca format again."""
    tiny = tiny_model_dir(tmp_path / "chat-model")
    run = _train(tmp_path, tiny, "alpaca", "lora", "alpaca", 1, 2e-2)
    out = export(run, tmp_path / "merged", merge=True).path
    assert not (out / "chat_template.jinja").exists()
    assert "chat_template" not in json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    loaded = runs.load([runs.resolve_target(out)])
    assert loaded.template == "alpaca" and not loaded.warnings
    info = json.loads((out / "wb_export.json").read_text(encoding="utf-8"))
    assert info["template_kind"] == "alpaca" and info["template_sha256"] == _run_sha(run) == loaded.template_sha256
