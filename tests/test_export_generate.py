"""`wb export`, `wb generate` and `wb chat` on tiny trained runs: merged logits, adapter switching, the cache."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import write_jsonl

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from workbench import precision  # noqa: E402
from workbench.errors import WbError  # noqa: E402
from workbench.export.pipeline import export  # noqa: E402
from workbench.models import generate as gen  # noqa: E402
from workbench.models import targets as runs  # noqa: E402
from workbench.models.base import tiny_model_dir  # noqa: E402
from workbench.train.recipe import Recipe  # noqa: E402
from workbench.train.trainer import train  # noqa: E402

FRUIT = [
    {"instruction": f"Name fruit number {i}.", "input": "", "output": w}
    for i, w in enumerate(["apple", "banana", "cherry", "梨子"])
]
COLOURS = [
    {"instruction": f"Name colour number {i}.", "input": "", "output": w}
    for i, w in enumerate(["red", "green", "blue", "黄色"])
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny")


def _run(root: Path, tiny: Path, name: str, records: list[dict[str, Any]], method: str = "lora") -> Path:
    data = write_jsonl(root / f"{name}.jsonl", records * 2)
    lr = 5e-2 if method == "prompt_tuning" else 2e-2
    recipe = Recipe.model_validate(
        {
            "name": name,
            "model": str(tiny),
            "data": data,
            "output_dir": root / "runs",
            "method": method,
            "val_size": 0,
            "max_length": 64,
            "max_steps": 6,
            "lr": lr,
            "batch_size": 4,
            "logging_steps": 1,
            "warmup_ratio": 0,
            "scheduler": "constant",
        }
    )
    return train(recipe).run_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "fruit": _run(root, tiny, "fruit", FRUIT),
        "colours": _run(root, tiny, "colours", COLOURS),
        "prompt": _run(root, tiny, "prompt", FRUIT, method="prompt_tuning"),
    }


def _logits(model: Any, tokenizer: Any, text: str) -> Any:
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        return model(input_ids=ids).logits[0]


def test_a_merged_model_loads_with_plain_transformers_and_equals_base_plus_adapter(
    trained: dict[str, Path], tmp_path: Path, auto_precision: str
) -> None:
    from transformers import AutoModelForCausalLM

    merged_dir = export(trained["fruit"], tmp_path / "merged", merge=True).path
    files = {p.name for p in merged_dir.iterdir()}
    assert "model.safetensors" in files and "tokenizer.json" in files
    assert not any(f.endswith((".bin", ".pt")) for f in files)
    loaded = runs.load([runs.resolve_target(trained["fruit"])])
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, use_safetensors=True).eval()
    text = "<|im_start|>user\nName fruit number 2.<|im_end|>\n<|im_start|>assistant\n"
    autocast = precision.resolve("auto").autocast  # served as the run computes on this kind of CPU
    with loaded.active_model() as model, autocast():
        tuned = _logits(model, loaded.tokenizer, text)
    loaded.use(None)
    with loaded.active_model() as model, autocast():
        base = _logits(model, loaded.tokenizer, text)
    with autocast():
        plain = _logits(merged, loaded.tokenizer, text)
    # bf16: the merged weights round to bf16 once, base and adapter separately (measured 0.11 on emulated bf16)
    tolerance = {"fp32": 1e-4, "bf16": 0.25}[auto_precision]
    assert torch.allclose(plain.float(), tuned.float(), atol=tolerance), (plain - tuned).abs().max()
    assert not torch.allclose(plain.float(), base.float(), atol=max(tolerance, 1e-3))  # the adapter changed something


def test_adapter_only_export_generates_like_the_run(trained: dict[str, Path], tmp_path: Path, wb: Any) -> None:
    result = wb("export", trained["fruit"], "--adapter-only", "-o", tmp_path / "adapter")
    assert result.exit_code == 0, result.stderr
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "wb_adapter.json"} <= files
    from_run = wb("generate", trained["fruit"], "Name fruit number 1.", "--max-new-tokens", "6", "-q")
    from_copy = wb("generate", tmp_path / "adapter", "Name fruit number 1.", "--max-new-tokens", "6", "-q")
    assert from_run.exit_code == 0 and from_run.stdout == from_copy.stdout
    merged = wb("export", trained["fruit"], "--merge", "-o", tmp_path / "merged", "-q")
    assert merged.exit_code == 0
    # Merged weights equal base + adapter in fp32; under bf16 autocast they round differently (near-tied logits of
    # a random model can then flip), so the comparison runs in fp32.
    fp32 = ("--max-new-tokens", "6", "-q", "--precision", "fp32")
    from_merged = wb("generate", tmp_path / "merged", "Name fruit number 1.", *fp32)
    assert from_merged.stdout == wb("generate", trained["fruit"], "Name fruit number 1.", *fp32).stdout


def test_export_refuses_what_it_cannot_do(trained: dict[str, Path], tmp_path: Path, wb: Any) -> None:
    virtual = wb("export", trained["prompt"], "--merge", "-o", tmp_path / "m")
    assert virtual.exit_code == 2 and "cannot be merged" in virtual.stderr and "--adapter-only" in virtual.stderr
    neither = wb("export", trained["fruit"], "-o", tmp_path / "m")
    assert neither.exit_code == 2 and "--merge or --adapter-only" in neither.stderr
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    taken = wb("export", trained["fruit"], "--adapter-only", "-o", tmp_path / "taken")
    assert taken.exit_code == 2 and "already exists" in taken.stderr
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    not_a_run = wb("export", tmp_path / "taken", "--merge", "-o", tmp_path / "x")
    assert not_a_run.exit_code == 2 and "not a run folder" in not_a_run.stderr
    assert not list(tmp_path.glob(".*.tmp"))


def test_several_adapters_load_over_one_base_and_switch(trained: dict[str, Path], wb: Any) -> None:
    loaded = runs.load([runs.resolve_target(trained["fruit"]), runs.resolve_target(trained["colours"])])
    assert loaded.adapters == ["fruit", "colours"]
    text = "<|im_start|>user\nName colour number 0.<|im_end|>\n<|im_start|>assistant\n"
    seen = []
    for name in ["fruit", "colours", None]:
        loaded.use(name)
        with loaded.active_model() as model:
            seen.append(_logits(model, loaded.tokenizer, text))
    assert not torch.allclose(seen[0], seen[1], atol=1e-3)
    assert not torch.allclose(seen[0], seen[2], atol=1e-3)
    with pytest.raises(WbError, match="no adapter named 'nope'"):
        loaded.use("nope")
    result = wb(
        "generate", "--adapter", trained["fruit"], "--adapter", trained["colours"], "Name colour number 0.", "--base"
    )
    assert result.exit_code == 0, result.stderr
    assert [line.split(":")[0].strip("─ ") for line in result.stdout.splitlines() if "Name colour" in line] == [
        "fruit",
        "colours",
        "base",
    ]


def test_adapters_of_different_bases_are_refused(trained: dict[str, Path], tmp_path: Path) -> None:
    other = tiny_model_dir(tmp_path / "other", seed=1)
    (tmp_path / "foreign").mkdir()
    config = json.loads((trained["fruit"] / "adapter" / "adapter_config.json").read_text())
    for f in (trained["fruit"] / "adapter").iterdir():
        (tmp_path / "foreign" / f.name).write_bytes(f.read_bytes())
    (tmp_path / "foreign" / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": str(other)})
    )
    with pytest.raises(WbError, match="different base models"):
        runs.load([runs.resolve_target(trained["fruit"]), runs.resolve_target(tmp_path / "foreign")])


def test_batched_greedy_generation_equals_one_at_a_time_and_keeps_order(trained: dict[str, Path]) -> None:
    loaded = runs.load([runs.resolve_target(trained["fruit"])])
    prompts = [gen.prompt_for(loaded, r) for r in FRUIT + COLOURS + [{"instruction": "一个很长的问题" * 12}]]
    # fp32: under bf16 autocast padding changes the rounding, and a random model's near-tied logits can flip.
    one = gen.generate(loaded, prompts, gen.GenerationSettings(max_new_tokens=8, batch_size=1, precision="fp32"))
    batched = gen.generate(loaded, prompts, gen.GenerationSettings(max_new_tokens=8, batch_size=4, precision="fp32"))
    assert batched == one
    assert len(set(one)) > 1


def test_the_cache_answers_repeated_prompts_without_generating(
    trained: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auto_precision: str
) -> None:
    loaded = runs.load([runs.resolve_target(trained["fruit"]), runs.resolve_target(trained["colours"])])
    cache = gen.GenerationCache(tmp_path / "gen.sqlite")
    prompts = [gen.prompt_for(loaded, r) for r in FRUIT]
    settings = gen.GenerationSettings(max_new_tokens=5, batch_size=2)
    first = gen.generate(loaded, prompts, settings, cache)
    calls: list[int] = []
    real = gen._generate_batches

    def counting(loaded: Any, todo: list[str], *args: Any) -> Any:
        calls.append(len(todo))
        return real(loaded, todo, *args)

    monkeypatch.setattr(gen, "_generate_batches", counting)
    again = gen.generate(loaded, prompts, settings, gen.GenerationCache(tmp_path / "gen.sqlite"))
    assert again == first and calls == []
    # Another adapter, other settings or a new prompt are not served from the cache.
    loaded.use("colours")
    gen.generate(loaded, prompts[:2], settings, cache)
    gen.generate(loaded, prompts[:2], settings.model_copy(update={"max_new_tokens": 6}), cache)
    loaded.use("fruit")
    gen.generate(loaded, [*prompts, gen.prompt_for(loaded, {"instruction": "new"})], settings, cache)
    assert calls == [2, 2, 1]


def test_chat_keeps_history_and_switches_adapters(trained: dict[str, Path]) -> None:
    from typer.testing import CliRunner

    from workbench.cli import app

    args = ["chat", "--adapter", str(trained["fruit"]), "--adapter", str(trained["colours"]), "--max-new-tokens", "4"]
    typed = "Name fruit number 1.\n/adapter colours\nAnd a colour?\n/quit\n"
    result = CliRunner().invoke(app, args, input=typed, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("fruit> ") and lines[-1].startswith("colours> ")
    assert "active: colours" in result.stderr


def test_chat_says_an_unknown_adapter_and_goes_on(trained: dict[str, Path]) -> None:
    from typer.testing import CliRunner

    from workbench.cli import app

    args = ["chat", "--adapter", str(trained["fruit"]), "--adapter", str(trained["colours"]), "--max-new-tokens", "4"]
    typed = "/adapter nosuch\n/adapter\n第一种水果？\n/adapter colours\nAnd a colour?\n"
    result = CliRunner().invoke(app, args, input=typed, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert "error: no adapter named 'nosuch'; loaded: fruit, colours" in result.stderr
    assert "error: no adapter named ''; loaded: fruit, colours" in result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("fruit> ") and lines[1].startswith("colours> ")


class Terminal(io.StringIO):
    """Typed input: a terminal, where `input()` prompts and Ctrl-D (the end of this text) raises EOFError."""

    def isatty(self) -> bool:
        return True


def test_ctrl_d_at_a_terminal_ends_the_chat_quietly(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from workbench import cli

    monkeypatch.setattr("sys.stdin", Terminal("Name fruit number 1.\n"))
    cli.chat(adapter=[trained["fruit"]], max_new_tokens=4)  # returns: no EOFError, no exit
    typed = capsys.readouterr()
    assert typed.out.startswith("you> fruit> ") and typed.out.endswith("you> \n")


def test_a_missing_or_unfinished_run_is_one_line(tmp_path: Path, wb: Any) -> None:
    run = tmp_path / "runs" / "half"
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text("name: half\nmethod: lora\n")
    result = wb("generate", run, "hello")
    assert result.exit_code == 2 and "not finished" in result.stderr and "--resume" in result.stderr


def _pickled_copy(run: Path, dest: Path) -> Path:
    """A copy of `run` whose adapter weights are a torch.save pickle (`adapter_model.bin`), its safetensors gone."""
    from safetensors.torch import load_file

    shutil.copytree(run, dest)
    adapter = dest / "adapter"
    torch.save(load_file(str(adapter / "adapter_model.safetensors")), adapter / "adapter_model.bin")
    (adapter / "adapter_model.safetensors").unlink()
    return dest


COMMANDS = ["generate", "generate-adapter", "chat", "export-merge", "export-adapter", "eval", "score"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_pickled_adapter_is_refused_by_every_command_that_loads_it(
    trained: dict[str, Path], tmp_path: Path, wb: Any, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("WB_CACHE", str(tmp_path / "cache"))
    run = _pickled_copy(trained["fruit"], tmp_path / "runs" / "pickled")
    data = write_jsonl(tmp_path / "eval.jsonl", [{"instruction": "说出水果 1。", "output": "香蕉"}, *FRUIT])
    out = tmp_path / "out"
    args = {
        "generate": ["generate", run, "Name fruit number 1.", "--max-new-tokens", "4"],
        "generate-adapter": ["generate", "--adapter", trained["colours"], "--adapter", run / "adapter", "Hi"],
        "chat": ["chat", run, "--max-new-tokens", "4"],
        "export-merge": ["export", run, "--merge", "-o", out],
        "export-adapter": ["export", run, "--adapter-only", "-o", out],
        "eval": ["eval", run, "--data", data, "--no-probes", "--max-new-tokens", "4", "--no-cache", "-o", out],
        "score": ["score", data, "--model", run, "--no-cache", "-o", out],
    }[command]
    from typer.testing import CliRunner

    from workbench.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], input="Name fruit number 1.\n/quit\n")
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: adapter {run / 'adapter'}: only pickle weights (adapter_model.bin), no adapter_model.safetensors; "
        "wb loads safetensors only — save it with safe_serialization=True, or convert it with a tool you trust"
    ]
    assert result.stdout == "" and not out.exists()


def test_exported_and_trained_weights_follow_the_umask(trained: dict[str, Path], tmp_path: Path, wb: Any) -> None:
    old = os.umask(0o027)
    try:
        merged = wb("export", trained["fruit"], "--merge", "-o", tmp_path / "merged", "-q")
        adapter = wb("export", trained["fruit"], "--adapter-only", "-o", tmp_path / "adapter", "-q")
    finally:
        os.umask(old)
    assert merged.exit_code == 0 and adapter.exit_code == 0
    for folder in (tmp_path / "merged", tmp_path / "adapter"):
        assert folder.stat().st_mode & 0o777 == 0o750
        modes = {p.name: oct(p.stat().st_mode & 0o777) for p in folder.iterdir()}
        assert set(modes.values()) == {oct(0o640)}, modes  # model.safetensors too, not safetensors' private 0600
    assert {"model.safetensors", "config.json"} <= set(os.listdir(tmp_path / "merged"))
    # The run's own folders were written under the umask the tests run with.
    run_files = [p for p in trained["fruit"].rglob("*") if p.is_file()]
    assert any(p.name == "adapter_model.safetensors" for p in run_files)
    assert {oct(p.stat().st_mode & 0o777) for p in run_files} == {oct(0o666 & ~old)}
