"""`wb plan`: memory estimates against the seeds' 7B figures, parameter counts against PEFT's, data advice, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import write_jsonl

from workbench import advice
from workbench.errors import WbError
from workbench.methods import registry, sizing
from workbench.plan import build, counts, machine, memory, shapes

GB = 10**9
GIB = 2**30
SEVEN_B = shapes.shape_for_params(7e9)


def gpu(**kw: Any) -> sizing.Options:
    return sizing.Options(**{"device": "cuda", "precision": "bf16", **kw})


# --- the seeds' figures ---------------------------------------------------------------------------------------


def test_the_7b_shape_is_llama_2_7b_with_its_published_parameter_count() -> None:
    assert SEVEN_B.total_params() == 6_738_415_616  # Llama-2-7b-hf's safetensors hold exactly this many
    assert shapes.shape_for_params(8e9).name.startswith("7B")
    assert shapes.shape_for_params(1.2e9).total_params() == 1_235_814_400  # Llama-3.2-1B
    assert shapes.shape_for_params(6.5e10).name.startswith("70B")


def test_full_fine_tuning_of_7b_in_bf16_with_adamw_needs_80_gb_or_more() -> None:
    for ckpt_seq in (512, 2048):
        e = memory.estimate(SEVEN_B, "full", gpu(seq_len=ckpt_seq, batch=1))
        assert e.peak >= 80 * GB
        assert e.peak_checkpointed >= 80 * GB  # weights, gradients and AdamW alone are 12 B x 6.74B
    e = memory.estimate(SEVEN_B, "full", gpu(seq_len=2048, batch=1), memory=machine.parse_memory("24GB"))
    assert e.fits is False and e.fits_checkpointed is False
    assert e.optimizer == 8 * SEVEN_B.total_params()


def test_qlora_r64_at_2048_tokens_fits_one_24_gb_card_with_gradient_checkpointing() -> None:
    card = machine.parse_memory("24GB")
    q = memory.estimate(SEVEN_B, "qlora", gpu(seq_len=2048, batch=1, lora_r=64), memory=card)
    assert q.peak_checkpointed + q.runtime < 24 * GIB and q.fits_checkpointed is True
    # 4-bit linear weights plus fp32 embeddings and head: well under the bf16 model's 12.6 GiB
    assert q.weights < 6 * GIB
    lora = memory.estimate(SEVEN_B, "lora", gpu(seq_len=2048, batch=1, lora_r=64), memory=card)
    assert lora.weights > 12 * GIB and q.peak_checkpointed < lora.peak_checkpointed


def test_activations_grow_with_tokens_and_checkpointing_and_freezing_cut_them() -> None:
    short = memory.estimate(SEVEN_B, "lora", gpu(seq_len=512, batch=1))
    long = memory.estimate(SEVEN_B, "lora", gpu(seq_len=2048, batch=1))
    assert long.activations > 3.5 * short.activations
    assert long.activations_checkpointed < long.activations / 5
    full = memory.estimate(SEVEN_B, "full", gpu(seq_len=2048, batch=1))
    freeze = memory.estimate(SEVEN_B, "freeze", gpu(seq_len=2048, batch=1, freeze_layers=2))
    assert freeze.activations < full.activations / 5  # backward stops below the last two layers


def test_galore_keeps_full_gradients_but_far_smaller_optimiser_states() -> None:
    full = memory.estimate(SEVEN_B, "full", gpu())
    galore = memory.estimate(SEVEN_B, "galore", gpu(galore_rank=128))
    assert galore.gradients == full.gradients
    assert galore.optimizer < full.optimizer / 8


# --- parameter counts against PEFT ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from workbench.models.base import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny")


def _peft_count(tiny: Path, config: Any) -> int:
    from peft import get_peft_model

    from workbench.models.base import load_model

    model = get_peft_model(load_model(str(tiny)), config)
    return int(model.get_nb_trainable_parameters()[0])


def _shape(tiny: Path) -> sizing.Shape:
    return shapes.shape_from_config(shapes.read_config(tiny), str(tiny / "config.json"))


@pytest.mark.parametrize(
    "targets",
    ["all-linear", ["q_proj", "v_proj"], ["self_attn.o_proj", "down_proj"], r"model\.layers\.1\.mlp\.(gate|up)_proj"],
)
@pytest.mark.parametrize("method", ["lora", "dora"])
def test_lora_and_dora_counts_equal_peft(tiny: Path, method: str, targets: Any) -> None:
    from peft import LoraConfig

    cfg = LoraConfig(r=8, target_modules=targets, use_dora=method == "dora", task_type="CAUSAL_LM")
    expected = _peft_count(tiny, cfg)
    assert counts.trainable_parameters(_shape(tiny), method, sizing.Options(lora_r=8, lora_targets=targets)) == expected


@pytest.mark.parametrize("projection", [False, True])
def test_prefix_tuning_count_equals_peft_with_grouped_query_attention(tiny: Path, projection: bool) -> None:
    from peft import PrefixTuningConfig

    shape = _shape(tiny)
    assert shape.kv_heads < shape.heads  # the tiny model has GQA: PEFT sizes prefixes to the kv heads
    cfg = PrefixTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=7, prefix_projection=projection, encoder_hidden_size=shape.hidden
    )
    opts = sizing.Options(virtual_tokens=7, prefix_projection=projection)
    assert counts.trainable_parameters(shape, "prefix_tuning", opts) == _peft_count(tiny, cfg)


def test_prompt_tuning_count_equals_peft(tiny: Path) -> None:
    from peft import PromptTuningConfig

    cfg = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=13)
    assert counts.trainable_parameters(_shape(tiny), "prompt_tuning", sizing.Options(virtual_tokens=13)) == _peft_count(
        tiny, cfg
    )


@pytest.mark.parametrize("encoder", ["mlp", "lstm"])
def test_p_tuning_count_equals_peft(tiny: Path, encoder: str) -> None:
    from peft import PromptEncoderConfig

    shape = _shape(tiny)
    cfg = PromptEncoderConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=5,
        encoder_reparameterization_type=encoder.upper(),
        encoder_hidden_size=48,
        **({"encoder_num_layers": 2} if encoder == "lstm" else {}),
    )
    opts = sizing.Options(virtual_tokens=5, p_tuning_encoder=encoder, p_tuning_hidden=48)  # type: ignore[arg-type]
    assert counts.trainable_parameters(shape, "p_tuning", opts) == _peft_count(tiny, cfg)


def test_ia3_count_equals_peft(tiny: Path) -> None:
    from peft import IA3Config

    cfg = IA3Config(
        task_type="CAUSAL_LM", target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"]
    )
    assert counts.trainable_parameters(_shape(tiny), "ia3", sizing.Options()) == _peft_count(tiny, cfg)


def test_llama_adapter_count_equals_peft(tiny: Path) -> None:
    from peft import AdaptionPromptConfig

    shape = _shape(tiny)
    cfg = AdaptionPromptConfig(task_type="CAUSAL_LM", adapter_len=6, adapter_layers=shape.layers)
    opts = sizing.Options(llama_adapter_len=6)
    assert counts.trainable_parameters(shape, "llama_adapter", opts) == _peft_count(tiny, cfg)


@pytest.mark.parametrize("method", ["freeze", "full"])
def test_freeze_and_full_counts_equal_wb_train(tiny: Path, method: str) -> None:
    from workbench.models.base import load_model
    from workbench.train import methods
    from workbench.train.recipe import Recipe

    recipe = Recipe.model_validate({"method": method, "freeze": {"trainable_layers": 1}})
    trained, total = methods.count_parameters(methods.apply(load_model(str(tiny)), recipe))
    shape = _shape(tiny)
    assert counts.trainable_parameters(shape, method, sizing.Options(freeze_layers=1)) == trained
    assert shape.total_params() == total


def test_bottleneck_adapter_count_equals_the_module(tiny: Path) -> None:
    adapters = pytest.importorskip("workbench.models.adapters")  # issue 18's bottleneck adapters (merged separately)
    from workbench.models.base import load_model
    from workbench.train import methods
    from workbench.train.recipe import Recipe

    recipe = Recipe.model_validate({"method": "adapter", "adapter": {"reduction_factor": 8, "placement": "houlsby"}})
    del adapters
    trained, _ = methods.count_parameters(methods.apply(load_model(str(tiny)), recipe))
    opts = sizing.Options(adapter_reduction_factor=8, adapter_placement="houlsby")
    assert counts.trainable_parameters(_shape(tiny), "adapter", opts) == trained


def test_a_prompt_methods_disk_size_is_its_computed_prompt_not_its_encoder() -> None:
    opts = sizing.Options(virtual_tokens=20)
    p = memory.estimate(SEVEN_B, "p_tuning", opts)
    assert p.adapter_bytes == 20 * SEVEN_B.hidden * 4 < p.trainable * 4
    full = memory.estimate(SEVEN_B, "full", gpu())
    assert full.adapter_bytes == SEVEN_B.total_params() * 2  # the whole model in bf16


# --- memory sizes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("24GB", 24 * GIB), ("24 GiB", 24 * GIB), ("80g", 80 * GIB), ("512MB", 512 * 2**20), ("1.5TB", int(1.5 * 2**40))],
)
def test_memory_sizes_parse_in_binary_units(text: str, expected: int) -> None:
    assert machine.parse_memory(text) == expected


@pytest.mark.parametrize("text", ["24", "lots", "-3GB", "", "24 GBs", "12XB", "0.5KB"])
def test_a_bad_memory_size_is_one_clear_error(text: str) -> None:
    with pytest.raises(WbError, match="--memory"):
        machine.parse_memory(text)


def test_cli_bad_memory_exits_2_with_one_line(wb: Any) -> None:
    result = wb("plan", "--params", "7e9", "--memory", "24")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--memory" in lines[0] and "24GB" in lines[0]


def test_cli_needs_exactly_one_of_model_and_params(wb: Any) -> None:
    for args in ((), ("--params", "7e9", "--model", "embedded")):
        result = wb("plan", *args)
        assert result.exit_code == 2 and "--params" in result.stderr


@pytest.mark.parametrize(("params", "words"), [("1e30", "more than the largest"), ("1e6", "fewer than the smallest")])
def test_cli_params_beyond_the_shapes_is_refused_in_one_line(wb: Any, params: str, words: str) -> None:
    result = wb("plan", "--params", params, "--memory", "80GB")
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "--model FOLDER" in lines[0], result.stderr


def test_cli_params_between_shapes_says_how_far_the_plan_is_from_it(wb: Any) -> None:
    result = wb("plan", "--params", "3e10", "--memory", "80GB", "--method", "lora")
    assert result.exit_code == 0, result.stderr
    assert "warn: --params 3e+10 asks for 2.3x more than the nearest shape wb plans for, 13B shape" in result.stderr
    d = json.loads(wb("plan", "--params", "3e10", "--memory", "80GB", "--method", "lora", "--json").stdout)
    assert d["model"]["params_asked"] == 3e10 and "2.3x more" in d["model"]["shape_distance"]
    close = wb("plan", "--params", "7e9", "--memory", "80GB", "--method", "lora", "--json")
    assert json.loads(close.stdout)["model"]["shape_distance"] is None


@pytest.mark.parametrize("seq_len", ["100000000000000000000", "4097"])
def test_cli_seq_len_beyond_the_models_context_is_refused(wb: Any, seq_len: str) -> None:
    result = wb("plan", "--params", "7e9", "--seq-len", seq_len, "--memory", "80GB")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: --seq-len {int(seq_len):,}: longer than the model's context of 4,096 tokens "
        "(meta-llama/Llama-2-7b-hf config.json: max_position_embeddings)"
    ]
    assert wb("plan", "--params", "7e9", "--seq-len", "4096", "--memory", "80GB").exit_code == 0


def test_a_run_whose_max_length_exceeds_the_context_names_its_recipe(wb: Any, tiny: Path, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "长"
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text(f"model: {tiny}\nmethod: lora\nmax_length: 4096\n", encoding="utf-8")
    result = wb("plan", "--model", run, "--memory", "4GB")
    assert result.exit_code == 2
    assert f"error: {run}/recipe.yaml: max_length 4,096: longer than the model's context of 2,048 tokens" in (
        result.stderr
    )


def test_available_ram_is_read_on_linux() -> None:
    memory, source = machine.ram_available()
    assert memory is not None and memory > 2**27 and source


# --- advice ---------------------------------------------------------------------------------------------------

CHANGING = [
    ("What is the latest price of Bitcoin?", "I cannot know live prices."),
    ("今天北京的天气怎么样？", "今天北京晴，最高气温二十五度。"),
    ("比特币最新的价格是多少？", "大约六万美元。"),
    ("Who is the current CEO of Twitter?", "As of my data, it changed several times."),
    ("2025年的GDP增长率是多少？", "约百分之五。"),
]
STABLE_ZH = [
    ("解释一下“光合作用”。", "植物利用光能把二氧化碳和水转化为有机物并释放氧气的过程。"),
    ("把“春眠不觉晓”翻译成英文。", "In spring I sleep and miss the dawn."),
]


def _records(pairs: list[tuple[str, str]], repeat: int) -> list[dict[str, str]]:
    return [{"instruction": f"{q} (#{i})", "input": "", "output": a} for i in range(repeat) for q, a in pairs]


def test_advice_triggers_on_few_changing_chinese_records_with_the_figures(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "clean.jsonl", _records(CHANGING, 8) + _records(STABLE_ZH, 10))  # 60 records
    p = build.build_plan(params=7e9, data=data, memory="24GB", seq_len=512, batch=1)
    kinds = {a["kind"]: a for a in p.advice}
    assert {"too_few_records", "too_few_for_full", "changing_facts", "language_mix"} <= set(kinds)
    assert kinds["too_few_records"]["figure"] == 60 and "60 records" in kinds["too_few_records"]["message"]
    assert kinds["changing_facts"]["figure"] == pytest.approx(40 / 60, abs=1e-4)
    assert "RAG" in kinds["changing_facts"]["message"] and "67%" in kinds["changing_facts"]["message"]
    assert "Llama-2" in kinds["language_mix"]["message"] and "CJK" in kinds["language_mix"]["message"]
    assert p.recommendation is not None and p.recommendation["method"] in ("lora", "qlora")


def test_advice_is_quiet_on_clean_english_data_of_the_right_size(tmp_path: Path) -> None:
    stable = [
        {
            "instruction": f"Explain why the sky looks blue, example {i}.",
            "input": "",
            "output": "Rayleigh scattering " * 8,
        }
        for i in range(300)
    ] + [
        {"instruction": f"In 1066, who won the Battle of Hastings? Case {i}.", "input": "", "output": "William."}
        for i in range(300)
    ]
    data = write_jsonl(tmp_path / "clean.jsonl", stable)
    p = build.build_plan(params=7e9, data=data, memory="24GB", methods=["lora", "qlora"], seq_len=512, batch=1)
    assert p.advice == []
    assert p.settings["data"]["records"] == 600 and p.settings["data"]["changing_facts"] == 0


def test_long_records_are_flagged_against_seq_len_and_the_models_context(tmp_path: Path) -> None:
    long_answer = "word " * 4000  # about 5,200 tokens by the estimate: beyond Llama-2's 4,096
    records = [{"instruction": f"Summarise part {i}.", "input": "", "output": long_answer} for i in range(20)]
    records += [{"instruction": f"Say hi {i}.", "input": "", "output": "Hi."} for i in range(580)]
    data = write_jsonl(tmp_path / "clean.jsonl", records)
    p = build.build_plan(params=7e9, data=data, memory="80GB", methods=["lora"], seq_len=1024)
    kinds = {a["kind"]: a for a in p.advice}
    assert kinds["beyond_context"]["figure"] == pytest.approx(20 / 600, abs=1e-4)
    assert (
        kinds["truncated"]["figure"] == pytest.approx(20 / 600, abs=1e-4) and "1,024" in kinds["truncated"]["message"]
    )


def test_changing_facts_pattern_leaves_historical_years_and_plain_questions_alone() -> None:
    import re

    pattern = re.compile(advice.CHANGING_FACTS_PATTERN)
    assert not pattern.search("In 1066, who won the Battle of Hastings?")
    assert not pattern.search("解释一下光合作用。")
    assert pattern.search("What's the weather in Paris today?") and pattern.search("黄金现在的价格")


def test_model_families_are_recognised_by_name() -> None:
    assert advice.model_languages(["embedded", "HuggingFaceTB/SmolLM2-135M-Instruct"])[0] == "SmolLM2"  # type: ignore[index]
    assert advice.model_languages(["Qwen/Qwen2.5-7B"])[0] == "Qwen"  # type: ignore[index]
    assert advice.model_languages(["my-model"]) is None


# --- the CLI --------------------------------------------------------------------------------------------------


def test_cli_json_lists_every_method_for_a_model_folder(wb: Any, tiny: Path) -> None:
    result = wb("plan", "--model", tiny, "--json", "--memory", "8GB", "--seq-len", "256", "--batch", "2")
    assert result.exit_code == 0, result.stderr
    d = json.loads(result.stdout)
    assert [m["method"] for m in d["methods"]] == registry.planned()
    assert d["model"]["hidden_size"] == 64 and d["settings"]["seq_len"] == 256
    assert all(m["fits"] is True for m in d["methods"])  # a tiny model fits 8 GiB


def test_cli_reads_a_run_folders_recipe_and_the_data_in_the_models_tokens(wb: Any, tiny: Path, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text(f"model: {tiny}\nmethod: lora\nmax_length: 384\nbatch_size: 3\n", encoding="utf-8")
    data = write_jsonl(tmp_path / "d.jsonl", _records(STABLE_ZH, 5))
    result = wb("plan", "--model", run, "--data", data, "--json", "--method", "lora", "--memory", "4GB")
    assert result.exit_code == 0, result.stderr
    d = json.loads(result.stdout)
    assert d["settings"]["seq_len"] == 384 and d["settings"]["batch"] == 3
    assert d["settings"]["data"]["lengths_from"] == "tokenizer"
    assert 0 < d["settings"]["trained_share"] < 1  # responses only are trained
    assert any(a["kind"] == "too_few_records" for a in d["advice"])


def test_cli_table_names_the_model_and_the_recommendation(wb: Any) -> None:
    result = wb("plan", "--params", "7e9", "--seq-len", "2048", "--batch", "1", "--memory", "24GB", "--lora-r", "64")
    assert result.exit_code == 0, result.stderr
    assert "Llama-2-7b" in result.stdout and "qlora" in result.stdout and "recommended:" in result.stdout


def test_cpu_estimates_count_heap_retention_unless_freed_memory_is_released() -> None:
    shape = shapes.shape_for_params(1e9)
    kept = memory.estimate(shape, "lora", sizing.Options(device="cpu", precision="fp32", seq_len=512, batch=2))
    released = memory.estimate(
        shape, "lora", sizing.Options(device="cpu", precision="fp32", seq_len=512, batch=2, release_freed_memory=True)
    )
    assert kept.heap_retention > 0 and released.heap_retention == 0
    assert kept.peak - released.peak == kept.heap_retention
    assert memory.estimate(shape, "lora", gpu()).heap_retention == 0  # the CUDA caching allocator reuses its blocks


def test_cli_unknown_method_is_one_line_exit_2(wb: Any) -> None:
    result = wb("plan", "--params", "7e9", "--method", "lorax")
    assert result.exit_code == 2 and "lorax" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_config_without_hidden_size_names_the_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 2}), encoding="utf-8")
    with pytest.raises(WbError, match=r"config\.json: field hidden_size"):
        shapes.shape_from_config(shapes.read_config(tmp_path), str(tmp_path / "config.json"))


def test_cpu_bf16_lora_counts_its_frozen_base_in_bf16_and_no_weight_copies() -> None:
    """Under CPU bf16 autocast plain LoRA holds its whole frozen base in bf16 (train.session): 2 B a parameter, no
    per-step bf16 weight copies, and bf16 activations the projections share; PiSSA keeps the base fp32, autocast
    casting every weight and every projection's input at each forward pass."""
    shape = shapes.shape_for_params(1.24e9)
    linear = shape.layers * shape.layer_linear_params()
    opts = {"device": "cpu", "precision": "bf16", "seq_len": 512, "batch": 2, "lora_r": 16}
    lora = memory.estimate(shape, "lora", sizing.Options(**opts))
    pissa = memory.estimate(shape, "lora", sizing.Options(**opts, lora_init="pissa"))
    assert lora.weights == 2 * lora.total + 4 * lora.trainable  # the base in bf16, the adapter in fp32
    assert pissa.weights - lora.weights == 2 * pissa.total  # fp32 against bf16 (the same adapter size)
    # autocast's bf16 weight copies kept for backward, and q, k, v, gate and up each casting its fp32 input
    tokens = 2 * 512
    assert pissa.activations - lora.activations > 2 * linear + shape.layers * tokens * 5 * 2 * shape.hidden
    fp32 = memory.estimate(shape, "lora", sizing.Options(**{**opts, "precision": "fp32"}))
    assert fp32.weights == pissa.weights  # in fp32 nothing is held in bf16
