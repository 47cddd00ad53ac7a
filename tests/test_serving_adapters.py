"""`wb export --adapter A --adapter B -o DIR`: several runs' LoRA adapters over one base, as PEFT and vLLM's LoRA
serving load them: the export loads in PEFT and switching adapters gives each run's own logits; different bases,
different chat templates, methods that are not LoRA and adapters vLLM would refuse (rank, modules_to_save, DoRA,
biases, per-module ranks, unknown modules) are refused in one line; the `vllm serve` line names every adapter and
the rank limit they need."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import write_jsonl

from workbench.errors import WbError
from workbench.export import serving
from workbench.methods import registry

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from workbench.export.pipeline import export  # noqa: E402
from workbench.models import targets as runs  # noqa: E402
from workbench.models.base import tiny_model_dir  # noqa: E402
from workbench.train.recipe import Recipe  # noqa: E402
from workbench.train.trainer import train  # noqa: E402

FRUIT = [{"instruction": f"Name fruit number {i}.", "output": w} for i, w in enumerate(["apple", "梨子", "🍒 cherry"])]
COLOURS = [{"instruction": f"Name colour number {i}.", "output": w} for i, w in enumerate(["red", "黄色", "أزرق"])]
PROMPT = "<|im_start|>user\nName fruit number 1.<|im_end|>\n<|im_start|>assistant\n"
LLAMA = {"LlamaForCausalLM"}


def _run(root: Path, model: Path, name: str, records: list[dict[str, Any]], **settings: Any) -> Path:
    recipe = Recipe.model_validate(
        {
            "name": name,
            "model": str(model),
            "data": write_jsonl(root / f"{name}.jsonl", records * 2),
            "output_dir": root / "runs",
            "val_size": 0,
            "max_length": 64,
            "max_steps": 4,
            "lr": 2e-2,
            "batch_size": 3,
            "warmup_ratio": 0,
            "scheduler": "constant",
            **settings,
        }
    )
    return train(recipe).run_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    models = tmp_path_factory.mktemp("models")
    tiny, other = tiny_model_dir(models / "tiny"), tiny_model_dir(models / "other", seed=1)
    root = tmp_path_factory.mktemp("runs")
    return {
        "tiny": tiny,
        "fruit": _run(root, tiny, "fruit", FRUIT),
        "colours": _run(root, tiny, "colours", COLOURS, lora={"r": 8, "alpha": 16}),
        "prompt": _run(root, tiny, "prompt", FRUIT, method="prompt_tuning", max_steps=1),
        "other": _run(root, other, "other", COLOURS, max_steps=1),
    }


@pytest.fixture(scope="module")
def exported(trained: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> serving.Serving:
    out = tmp_path_factory.mktemp("export") / "served"
    return serving.export_adapters([str(trained["fruit"]), f"c={trained['colours']}"], out)


def _logits(model: Any, tokenizer: Any) -> Any:
    ids = tokenizer(PROMPT, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        return model(input_ids=ids).logits[0].float()


def test_two_adapters_load_in_peft_over_the_named_base_and_switching_gives_each_runs_own_logits(
    trained: dict[str, Path], exported: serving.Serving
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = exported.folder
    config = json.loads((out / "fruit" / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["base_model_name_or_path"] == str(trained["tiny"].resolve()) == exported.base
    assert json.loads((out / "c" / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"] == (
        exported.base
    )
    base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"], use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(out / "fruit")
    model = PeftModel.from_pretrained(base, out / "fruit", adapter_name="fruit")
    model.load_adapter(out / "c", adapter_name="c")
    served = {}
    for name in ("fruit", "c"):
        model.set_adapter(name)
        served[name] = _logits(model, tokenizer)
    for name, run in (("fruit", trained["fruit"]), ("c", trained["colours"])):
        alone = runs.load([runs.resolve_target(run)])
        with alone.active_model() as m:
            own = _logits(m, alone.tokenizer)
        assert torch.allclose(served[name], own, atol=1e-5), (name, (served[name] - own).abs().max())
    assert not torch.allclose(served["fruit"], served["c"], atol=1e-3)  # switching changes the answer


def test_each_adapter_folder_is_a_peft_folder_with_the_runs_chat_template_and_the_serve_line_names_them(
    trained: dict[str, Path], exported: serving.Serving
) -> None:
    from transformers import AutoTokenizer

    out = exported.folder
    for name, data in (("fruit", "fruit.jsonl"), ("c", "colours.jsonl")):
        files = {p.name for p in (out / name).iterdir()}
        assert {
            "adapter_config.json",
            "adapter_model.safetensors",
            "wb_adapter.json",
            "generation_config.json",
        } <= files
        assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files)
        card = (out / name / "README.md").read_text(encoding="utf-8")  # the run's model card, not PEFT's blank one
        assert card.startswith("---\n") and f"datasets:\n- {data}\n" in card  # this run's own data
        assert "#### Serve with vLLM" in card and exported.vllm_command() in card
        messages = [{"role": "user", "content": "Name fruit number 1."}]
        rendered = AutoTokenizer.from_pretrained(out / name).apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        assert rendered.endswith(PROMPT)  # the run's template (SmolLM2's adds its default system turn first)
    run_template = runs.load([runs.resolve_target(trained["fruit"])]).tokenizer.chat_template
    assert (out / "chat_template.jinja").read_text(encoding="utf-8") == run_template
    assert [(a.name, a.rank, a.alpha) for a in exported.adapters] == [("fruit", 16, 32.0), ("c", 8, 16.0)]
    assert exported.adapters[0].modules == ("down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj")
    command = exported.vllm_command()
    assert command == (
        f"vllm serve {exported.base} --enable-lora --lora-modules fruit={out / 'fruit'} c={out / 'c'} "
        f"--max-lora-rank 16 --max-loras 2 --chat-template {out / 'chat_template.jinja'}"
    )
    page = (out / "README.md").read_text(encoding="utf-8")
    assert command in page and exported.peft_snippet() in page and "| `c` |" in page
    assert "It is a local folder: copy it with these adapters" in page  # the tiny base is no hub model
    manifest = json.loads((out / "wb_export.json").read_text(encoding="utf-8"))
    assert manifest["max_lora_rank"] == 16 and manifest["vllm_command"] == command
    assert [a["name"] for a in manifest["adapters"]] == ["fruit", "c"]
    info = json.loads((out / "c" / "wb_adapter.json").read_text(encoding="utf-8"))
    assert (info["base_model"], info["template"], info["method"]) == (exported.base, "chat", "lora")
    run_sha = json.loads((trained["colours"] / "manifest.json").read_text(encoding="utf-8"))["template_sha256"]
    assert info["template_sha256"] == run_sha  # the fingerprint the run trained with
    # wb itself reads the exported folder as the run: the same answer
    copy = runs.load([runs.resolve_target(out / "c")])
    alone = runs.load([runs.resolve_target(trained["colours"])])
    with copy.active_model() as a, alone.active_model() as b:
        assert torch.equal(_logits(a, copy.tokenizer), _logits(b, alone.tokenizer))


def test_adapters_of_different_bases_are_refused_naming_both(trained: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(WbError, match=r"^fruit and other were trained on different base models \(.*tiny and .*other\)"):
        serving.export_adapters([str(trained["fruit"]), str(trained["other"])], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_same_base_weights_in_another_folder_count_as_one_base(trained: dict[str, Path], tmp_path: Path) -> None:
    twin = tiny_model_dir(tmp_path / "twin")  # same seed: byte-identical weights
    fruit = runs.resolve_target(trained["fruit"])
    moved = runs.Target("moved", str(twin), fruit.adapter, fruit.template, fruit.method)
    assert len(serving._one_base([fruit, moved], None)) == 2
    other = tiny_model_dir(tmp_path / "seed2", seed=2)
    with pytest.raises(WbError, match="different base models"):
        serving._one_base([fruit, runs.Target("o", str(other), fruit.adapter)], None)


def test_a_prompt_tuning_run_is_refused_with_its_reason(trained: dict[str, Path], tmp_path: Path, wb: Any) -> None:
    result = wb("export", "--adapter", trained["fruit"], "--adapter", trained["prompt"], "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {trained['prompt']}: cannot be served as a vLLM LoRA adapter: prompt_tuning adapters add virtual "
        "tokens; vLLM's LoRA serving loads low-rank weight updates (lora_A, lora_B) only"
    ]
    assert not (tmp_path / "out").exists()


def _adapter_copy(trained: dict[str, Path], tmp_path: Path, name: str, **changes: Any) -> Path:
    folder = export(trained["fruit"], tmp_path / name, merge=False).path
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    (folder / "adapter_config.json").write_text(json.dumps({**config, **changes}), encoding="utf-8")
    return folder


def test_an_adapter_vllm_would_refuse_is_refused_before_anything_is_written(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    big = _adapter_copy(trained, tmp_path, "big", r=1024)
    with pytest.raises(WbError, match=r"rank r=1024 is above vLLM's largest --max-lora-rank \(512\)"):
        serving.export_adapters([str(big)], tmp_path / "out")
    saved = _adapter_copy(trained, tmp_path, "saved", modules_to_save=["lm_head"])
    with pytest.raises(
        WbError, match=r"modules_to_save \['lm_head'\]: vLLM takes modules_to_save only for a classification head"
    ):
        serving.export_adapters([f"a={trained['fruit']}", f"b={saved}"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_method_whose_spec_says_it_does_not_serve_is_refused_by_its_note(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    folder = export(trained["fruit"], tmp_path / "dora", merge=False).path
    info = json.loads((folder / runs.ADAPTER_INFO).read_text(encoding="utf-8"))
    (folder / runs.ADAPTER_INFO).write_text(json.dumps({**info, "method": "dora"}), encoding="utf-8")
    with pytest.raises(WbError, match="dora adapters carry a magnitude vector per module"):
        serving.export_adapters([str(folder)], tmp_path / "out")
    assert all(registry.get(n).serving_note for n in registry.names() if not registry.get(n).serves_as_lora)


def test_the_cli_writes_the_adapters_and_prints_the_serve_line(
    trained: dict[str, Path], tmp_path: Path, wb: Any
) -> None:
    out = tmp_path / "served"
    result = wb("export", "--adapter", f"fruit={trained['fruit']}", "--adapter", trained["colours"], "-o", out)
    assert result.exit_code == 0, result.stderr
    assert f"--lora-modules fruit={out / 'fruit'} colours={out / 'colours'} --max-lora-rank 16" in result.stdout
    again = wb("export", "--adapter", trained["fruit"], "-o", out)
    assert again.exit_code == 2 and "already exists" in again.stderr
    twice = wb("export", "--adapter", trained["fruit"], "--adapter", trained["fruit"], "-o", tmp_path / "x")
    assert twice.exit_code == 2 and "two adapters are named fruit" in twice.stderr
    mixed = wb("export", trained["fruit"], "--adapter", trained["colours"], "-o", tmp_path / "y")
    assert mixed.exit_code == 2 and "give no RUN" in mixed.stderr
    gated = wb("export", "--adapter", trained["fruit"], "--gate", "pipelines/gate.yaml", "-o", tmp_path / "z")
    assert gated.exit_code == 2 and "--gate" in gated.stderr and not (tmp_path / "z").exists()


def test_different_chat_templates_are_refused(trained: dict[str, Path], tmp_path: Path) -> None:
    folder = export(trained["fruit"], tmp_path / "llama3", merge=False).path
    info = json.loads((folder / runs.ADAPTER_INFO).read_text(encoding="utf-8"))
    (folder / runs.ADAPTER_INFO).write_text(json.dumps({**info, "template": "llama3"}), encoding="utf-8")
    with pytest.raises(WbError, match=r"fruit and llama3 were trained with different chat templates \(.* and llama3\)"):
        serving.export_adapters([str(trained["fruit"]), str(folder)], tmp_path / "out")


# ---------------------------------------------------------------------------------------------------------------
# vLLM's rules, one by one (no model needed)

GOOD = {"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": ["q_proj"], "bias": "none"}
WEIGHTS = [
    "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
    "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
]


@pytest.mark.parametrize(
    ("change", "weights", "problem"),
    [
        (
            {"peft_type": "PROMPT_TUNING"},
            WEIGHTS,
            "peft_type PROMPT_TUNING: vLLM's LoRA serving loads LORA adapters only",
        ),
        ({"r": 600}, WEIGHTS, "rank r=600 is above vLLM's largest --max-lora-rank (512)"),
        ({"r": 0}, WEIGHTS, "rank 0 is not a positive integer"),
        ({"lora_alpha": None}, WEIGHTS, "adapter_config.json has no lora_alpha"),
        ({"modules_to_save": ["score"]}, WEIGHTS, "modules_to_save ['score']: vLLM takes modules_to_save only"),
        ({"use_dora": True}, WEIGHTS, "use_dora: vLLM does not yet support DoRA"),
        ({"lora_bias": True}, WEIGHTS, "lora_bias: vLLM does not support LoRA bias"),
        ({"init_lora_weights": "pissa"}, WEIGHTS, "init_lora_weights 'pissa': vLLM refuses inits that change the base"),
        ({"use_qalora": True}, WEIGHTS, "use_qalora: vLLM does not support QALoRA"),
        ({"layer_replication": [[0, 2]]}, WEIGHTS, "layer_replication: vLLM does not support layer_replication"),
        ({"bias": "lora_only"}, WEIGHTS, "bias 'lora_only': vLLM does not support adapter biases"),
        ({"rank_pattern": {"q_proj": 1024}}, WEIGHTS, "rank r=1024 is above vLLM's largest --max-lora-rank (512)"),
        ({"rank_pattern": {"q_proj": 0}}, WEIGHTS, "rank 0 is not a positive integer"),
        ({}, [*WEIGHTS, "base_model.model.lm_head.weight"], "weights vLLM cannot read as LoRA A/B matrices: base_"),
        ({}, ["base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"], "weights vLLM cannot"),
        (
            {},
            ["base_model.model.model.layers.0.mlp.act_fn.lora_A.weight"],
            "modules vLLM does not adapt on a Llama-family model: act_fn (it takes down_proj",
        ),
    ],
)
def test_each_vllm_rule_flags_its_problem(change: dict[str, Any], weights: list[str], problem: str) -> None:
    assert serving.vllm_problems(GOOD, WEIGHTS, LLAMA) == []
    found = serving.vllm_problems({**GOOD, **change}, weights, LLAMA)
    assert len(found) == 1 and found[0].startswith(problem), found


def test_rslora_embeddings_and_the_base_embedding_copy_pass_and_other_architectures_skip_the_module_check() -> None:
    embed = [
        "base_model.model.model.embed_tokens.lora_embedding_A",
        "base_model.model.model.embed_tokens.lora_embedding_B",
        "base_model.model.model.embed_tokens.base_layer.weight",
    ]
    assert serving.vllm_problems({**GOOD, "use_rslora": True}, [*WEIGHTS, *embed], LLAMA) == []
    # per-module ranks and alphas: vLLM 0.34 scales each module as PEFT does (PEFTHelper.get_rank_and_scaling)
    patterns = {**GOOD, "rank_pattern": {"q_proj": 64}, "alpha_pattern": {"q_proj": 8}, "init_lora_weights": "gaussian"}
    assert serving.vllm_problems(patterns, WEIGHTS, LLAMA) == []
    assert serving.adapter_rank(patterns) == 64 and serving.max_lora_rank([serving.adapter_rank(patterns)]) == 64
    odd = ["base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"]
    assert serving.vllm_problems(GOOD, odd, {"GPT2LMHeadModel"}) == []
    assert serving.vllm_problems(GOOD, odd, LLAMA) != []


@pytest.mark.parametrize(
    ("ranks", "limit"), [([8], 8), ([16, 8], 16), ([17], 32), ([300], 320), ([512], 512), ([1], 1)]
)
def test_the_max_lora_rank_is_the_smallest_vllm_choice_holding_every_rank(ranks: list[int], limit: int) -> None:
    assert serving.max_lora_rank(ranks) == limit


def test_adapter_names_come_from_the_folder_or_name_equals_path(tmp_path: Path) -> None:
    assert serving.parse_adapter("runs/fruit") == ("fruit", Path("runs/fruit"))
    assert serving.parse_adapter("水果=runs/a") == ("a", Path("水果=runs/a"))  # not a name: a path
    assert serving.parse_adapter("sql=runs/a") == ("sql", Path("runs/a"))
    with pytest.raises(WbError, match="adapter name '水果=a'"):
        serving.export_adapters(["水果=a"], tmp_path / "out")


def test_every_adapter_config_names_the_base_wb_trained_on_and_a_named_template_travels(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    # An adapter folder whose adapter_config.json names the hub model while wb_adapter.json names the folder it ran on
    moved = _adapter_copy(trained, tmp_path, "moved", base_model_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct")
    info = json.loads((moved / runs.ADAPTER_INFO).read_text(encoding="utf-8"))
    (moved / runs.ADAPTER_INFO).write_text(json.dumps({**info, "template": "llama3"}), encoding="utf-8")
    served = serving.export_adapters([str(moved)], tmp_path / "out")
    config = json.loads((tmp_path / "out" / "moved" / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["base_model_name_or_path"] == str(trained["tiny"].resolve()) == served.base
    rendered = AutoTokenizer.from_pretrained(tmp_path / "out" / "moved").apply_chat_template(
        [{"role": "user", "content": "你好"}], tokenize=False, add_generation_prompt=True
    )
    assert "<|start_header_id|>user<|end_header_id|>\n\n你好<|eot_id|>" in rendered  # llama3's, not the base's
    assert "<|start_header_id|>" in (tmp_path / "out" / "chat_template.jinja").read_text(encoding="utf-8")


def test_hostile_paths_stay_inside_their_table_cell_and_are_quoted_in_the_serve_line() -> None:
    a = serving.ServedAdapter("sql", "runs/a|b`c", "lora", 16, 32.0, False, ("q_proj",), "0" * 64)
    b = serving.ServedAdapter("chat", "runs/聊天", "dpo", 64, 16.0, True, ("q_proj",), "1" * 64)
    served = serving.Serving(Path("served adapters"), "/models/base; rm -rf ~", (a, b), "chat")
    row = next(line for line in served.markdown().splitlines() if line.startswith("| `sql`"))
    assert row == "| `sql` | `runs/a\\|b'c` | lora | 16 | 32 | q_proj |"
    assert served.vllm_command() == (
        "vllm serve '/models/base; rm -rf ~' --enable-lora --lora-modules 'sql=served adapters/sql' "
        "'chat=served adapters/chat' --max-lora-rank 64 --max-loras 2 --chat-template "
        "'served adapters/chat_template.jinja'"
    )


def test_a_qlora_adapter_is_served_with_a_warning_that_the_base_is_not_4_bit(
    trained: dict[str, Path], tmp_path: Path, wb: Any
) -> None:
    folder = export(trained["fruit"], tmp_path / "q", merge=False).path
    info = json.loads((folder / runs.ADAPTER_INFO).read_text(encoding="utf-8"))
    (folder / runs.ADAPTER_INFO).write_text(json.dumps({**info, "method": "qlora"}), encoding="utf-8")
    result = wb("export", "--adapter", folder, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == [
        "warning: q: trained over the base in 4-bit NF4; vLLM serves it over the base as the folder holds it"
    ]


def test_a_peft_folder_without_a_tokenizer_takes_the_bases_template(trained: dict[str, Path], tmp_path: Path) -> None:
    folder = export(trained["fruit"], tmp_path / "bare", merge=False).path
    for p in list(folder.iterdir()):
        if p.name not in ("adapter_config.json", "adapter_model.safetensors", runs.ADAPTER_INFO):
            p.unlink()
    served = serving.export_adapters([str(folder)], tmp_path / "out")
    base_template = runs.load([runs.resolve_target(str(trained["tiny"]))]).tokenizer.chat_template
    assert served.template == "chat"
    assert (tmp_path / "out" / "chat_template.jinja").read_text(encoding="utf-8") == base_template


def test_the_embedded_base_is_named_as_wbs_conversion_of_its_gguf(tmp_path: Path) -> None:
    folder = tmp_path / "smollm2"
    folder.mkdir()
    source = {"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
    (folder / "wb_source.json").write_text(json.dumps(source), encoding="utf-8")
    note = serving._base_note(str(folder.resolve()), folder)
    assert "wb's conversion of `SmolLM2-135M-Instruct.Q4_1.gguf` (HuggingFaceTB/SmolLM2-135M-Instruct)" in note
    assert serving._base_note("HuggingFaceTB/SmolLM2-135M-Instruct", folder) == ""  # a hub id travels by itself
