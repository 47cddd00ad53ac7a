"""The methods beyond LoRA on a tiny model: bottleneck adapters, LLaMA-Adapter, GaLore, P-Tuning, P-Tuning v2, IA3,
the LoRA options (rsLoRA, PiSSA/OLoRA/gaussian init, LoRA+, regex targets), NEFTune and the dashboards."""

from __future__ import annotations

import json
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
from workbench.models import adapters  # noqa: E402
from workbench.models import generate as gen  # noqa: E402
from workbench.models import targets as runs  # noqa: E402
from workbench.models.base import load_model, load_tokenizer, tiny_model_dir  # noqa: E402
from workbench.models.losses import sample_losses  # noqa: E402
from workbench.train import hf, methods  # noqa: E402
from workbench.train import recipe as recipes  # noqa: E402
from workbench.train.prepare import prepare  # noqa: E402
from workbench.train.recipe import Recipe  # noqa: E402
from workbench.train.trainer import train  # noqa: E402

MEMORISE = [
    {"instruction": f"What is the secret word number {i}?", "input": "", "output": word}
    for i, word in enumerate(["apple", "banana", "cherry", "梨子", "grape", "lemon", "mango", "桃子"])
]
COLOURS = [
    {"instruction": f"Name colour number {i}.", "input": "", "output": w}
    for i, w in enumerate(["red", "green", "blue", "黄色"])
]
PROMPT = "<|im_start|>user\nWhat is the secret word number 3?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny")


def recipe(root: Path, tiny: Path, records: list[dict[str, Any]] = MEMORISE, **kw: Any) -> Recipe:
    root.mkdir(parents=True, exist_ok=True)
    data = write_jsonl(root / "train.jsonl", records)
    fields = {
        "name": "t",
        "model": str(tiny),
        "data": data,
        "output_dir": root / "runs",
        "val_size": 0,
        "max_length": 128,
        "epochs": 1,
        "max_steps": 15,
        "lr": 2e-2,
        "batch_size": 4,
        "logging_steps": 1,
        "warmup_ratio": 0,
        "scheduler": "constant",
        "save_steps": 1000,
        **kw,
    }
    return Recipe.model_validate(fields)


def losses(result: Any) -> list[float]:
    return [row["loss"] for row in result.log if "loss" in row]


def logits(model: Any, tokenizer: Any, text: str = PROMPT) -> Any:
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        return model(input_ids=ids).logits[0]


def kill_after_step_3(run: Path, killed: Path) -> None:
    """A copy of a 6-step run as if killed after its step-3 checkpoint: that checkpoint and its log only."""
    shutil.copytree(run, killed)
    shutil.rmtree(killed / "checkpoints" / "checkpoint-6")
    (killed / "manifest.json").unlink()
    log = [x for x in (killed / "trainer_log.jsonl").read_text().splitlines() if json.loads(x).get("step", 0) <= 3]
    (killed / "trainer_log.jsonl").write_text("\n".join(log) + "\n")


def curve(result: Any) -> list[tuple[int, float]]:
    return [(r["step"], round(r["loss"], 5)) for r in result.log if "loss" in r]


CASES = {
    "adapter-pfeiffer": ("adapter", {"lr": 2e-2}),
    "adapter-houlsby-gelu": ("adapter", {"lr": 2e-2, "adapter": {"placement": "houlsby", "non_linearity": "gelu"}}),
    "llama_adapter": ("llama_adapter", {"lr": 5e-2}),
    "galore": ("galore", {"lr": 3e-3, "galore": {"rank": 8, "update_proj_gap": 5}}),
    "p_tuning-mlp": ("p_tuning", {"lr": 2e-2}),
    "p_tuning-lstm": ("p_tuning", {"lr": 2e-2, "p_tuning": {"encoder": "lstm", "encoder_hidden_size": 32}}),
    "p_tuning_v2": ("prefix_tuning", {"lr": 2e-2, "prefix_tuning": {"projection": True}}),
    "ia3": ("ia3", {"lr": 1e-1}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_new_method_lowers_the_loss_on_a_memorisable_set(tmp_path: Path, tiny: Path, case: str) -> None:
    method, kw = CASES[case]
    result = train(recipe(tmp_path, tiny, method=method, **kw))
    curve = losses(result)
    assert len(curve) == 15
    assert sum(curve[-3:]) / 3 < sum(curve[:3]) / 3 - 0.3, curve
    m = result.manifest
    assert m["method"] == method and 0 < m["trainable_parameters"] <= m["total_parameters"]
    if method == "galore":  # full-parameter training: every weight, saved as a whole model
        assert m["trainable_parameters"] == m["total_parameters"]
        assert (result.run_dir / "model" / "model.safetensors").is_file()
    else:
        files = {p.name for p in (result.run_dir / "adapter").iterdir()}
        assert "adapter_model.safetensors" in files and not any(f.endswith((".bin", ".pt")) for f in files)
        assert m["trainable_parameters"] < m["total_parameters"] / 10


def test_a_new_bottleneck_adapter_leaves_the_model_unchanged_and_houlsby_doubles_it(tiny: Path) -> None:
    tok = load_tokenizer(str(tiny))
    model = load_model(str(tiny)).eval()
    before = logits(model, tok)
    pfeiffer = adapters.add(model, adapters.Spec(16, "relu", "pfeiffer"), "p")
    assert torch.equal(logits(model, tok), before)  # W_up starts at zero: the identity
    houlsby = adapters.add(model, adapters.Spec(16, "relu", "houlsby"), "h")
    assert pfeiffer.bottleneck_size == houlsby.bottleneck_size == 4  # hidden 64 / 16
    size = {
        name: sum(p.numel() for layer in model.model.layers for p in layer.bottleneck[name].parameters())
        for name in "ph"
    }
    assert size["h"] == 2 * size["p"] == 2 * 2 * (64 * 4 + 4 + 4 * 64 + 64)
    with pytest.raises(WbError, match="already loaded"):
        adapters.add(model, adapters.Spec(16, "relu", "pfeiffer"), "p")


@pytest.fixture(scope="module")
def adapter_runs(tmp_path_factory: pytest.TempPathFactory, tiny: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapter-runs")
    common = {"method": "adapter", "max_steps": 8, "lr": 3e-2, "max_length": 64}
    words = train(recipe(root / "w", tiny, name="words", **common)).run_dir
    colours = train(recipe(root / "c", tiny, records=COLOURS * 2, name="colours", **common)).run_dir
    return {"words": words, "colours": colours}


def test_bottleneck_adapters_load_by_name_switch_and_switch_off(adapter_runs: dict[str, Path], tiny: Path) -> None:
    targets = [runs.resolve_target(adapter_runs["words"]), runs.resolve_target(adapter_runs["colours"])]
    assert all(t.bottleneck and t.method == "adapter" for t in targets)
    loaded = runs.load(targets, dtype="float32")
    assert loaded.adapters == ["words", "colours"] and loaded.active == "words"
    with loaded.active_model() as m:
        words = logits(m, loaded.tokenizer)
    loaded.use("colours")
    with loaded.active_model() as m:
        colours = logits(m, loaded.tokenizer)
    loaded.use(None)
    with loaded.active_model() as m:
        bare = logits(m, loaded.tokenizer)
    base = logits(load_model(str(tiny)).eval(), loaded.tokenizer)
    assert torch.allclose(bare, base, atol=1e-6)
    assert not torch.allclose(words, colours, atol=1e-3) and not torch.allclose(words, base, atol=1e-3)
    loaded.use("words")
    with loaded.active_model() as m:
        assert torch.equal(logits(m, loaded.tokenizer), words)  # switching back restores the first adapter
    with pytest.raises(WbError, match="no adapter named 'nope'; loaded: words, colours"):
        loaded.use("nope")
    # The bare base inside active_model() leaves the choice as it was afterwards.
    assert loaded.active == "words"


def test_a_bottleneck_adapter_exports_alone_generates_the_same_and_refuses_to_merge(
    adapter_runs: dict[str, Path], tmp_path: Path, wb: Any
) -> None:
    merged = wb("export", adapter_runs["words"], "--merge", "-o", tmp_path / "m")
    assert merged.exit_code == 2 and "cannot be merged" in merged.stderr and "--adapter-only" in merged.stderr
    assert len(merged.stderr.strip().splitlines()) == 1 and not (tmp_path / "m").exists()
    out = wb("export", adapter_runs["words"], "--adapter-only", "-o", tmp_path / "a")
    assert out.exit_code == 0, out.stderr
    files = {p.name for p in (tmp_path / "a").iterdir()}
    assert {adapters.CONFIG_FILE, adapters.WEIGHTS_FILE, "wb_adapter.json"} <= files
    args = ("What is the secret word number 3?", "--max-new-tokens", "6", "-q", "--precision", "fp32")
    from_run = wb("generate", adapter_runs["words"], *args)
    from_copy = wb("generate", tmp_path / "a", *args)
    assert from_run.exit_code == 0 and from_run.stdout == from_copy.stdout and from_run.stdout.strip()
    loaded = runs.load([runs.resolve_target(p) for p in adapter_runs.values()])
    prompts = [gen.prompt_for(loaded, r) for r in MEMORISE + COLOURS]
    one = gen.generate(loaded, prompts, gen.GenerationSettings(max_new_tokens=6, batch_size=1, precision="fp32"))
    batched = gen.generate(loaded, prompts, gen.GenerationSettings(max_new_tokens=6, batch_size=4, precision="fp32"))
    assert batched == one
    cache = gen.GenerationCache(tmp_path / "cache.sqlite")
    words_id = cache.identity(loaded)
    loaded.use("colours")
    assert cache.identity(loaded).adapter_sha256 not in (None, words_id.adapter_sha256)  # the cache tells them apart


def test_a_bottleneck_adapter_that_does_not_fit_the_model_is_one_line(
    adapter_runs: dict[str, Path], tmp_path: Path, tiny: Path
) -> None:
    folder = tmp_path / "bad"
    shutil.copytree(adapter_runs["words"] / "adapter", folder)
    config = json.loads((folder / adapters.CONFIG_FILE).read_text())
    (folder / adapters.CONFIG_FILE).write_text(json.dumps({**config, "num_layers": 5}))
    with pytest.raises(WbError, match="trained on a model with hidden size 64 and 5 layers; this one has 64 and 2"):
        adapters.load(load_model(str(tiny)), folder, "x")
    (folder / adapters.CONFIG_FILE).write_text(json.dumps({**config, "placement": "sideways"}))
    with pytest.raises(WbError, match="not a bottleneck adapter config"):
        adapters.read_spec(folder)
    (folder / adapters.CONFIG_FILE).write_text(json.dumps({**config, "reduction_factor": 8}))  # other shapes
    with pytest.raises(WbError, match="does not fit this model's adapter"):
        adapters.load(load_model(str(tiny)), folder, "x")


def test_resume_of_a_bottleneck_adapter_run_gives_the_same_curve_and_checkpoints_hold_the_adapter_only(
    tmp_path: Path, tiny: Path
) -> None:
    kw = {"method": "adapter", "max_steps": 6, "save_steps": 3, "batch_size": 2}
    full = train(recipe(tmp_path / "a", tiny, **kw))
    checkpoint = full.run_dir / "checkpoints" / "checkpoint-3"
    names = {p.name for p in checkpoint.iterdir()}
    assert adapters.WEIGHTS_FILE in names and "model.safetensors" not in names
    kill_after_step_3(full.run_dir, tmp_path / "b" / "runs" / "t")
    resumed = train(recipe(tmp_path / "b", tiny, **kw), resume=True)
    assert curve(resumed) == curve(full)


def test_llama_adapter_runs_generate_and_refuse_to_merge(tmp_path: Path, tiny: Path, wb: Any) -> None:
    run = train(recipe(tmp_path, tiny, method="llama_adapter", lr=5e-2, max_steps=6)).run_dir
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "ADAPTION_PROMPT" and config["adapter_len"] == 10 and config["adapter_layers"] == 2
    out = wb("generate", run, "What is the secret word number 3?", "--max-new-tokens", "4", "-q")
    assert out.exit_code == 0 and out.stdout.strip()
    merged = wb("export", run, "--merge", "-o", tmp_path / "m")
    assert merged.exit_code == 2 and "adaption prompts" in merged.stderr


def test_llama_adapter_refuses_layers_and_architectures_it_cannot_adapt(tmp_path: Path, tiny: Path) -> None:
    model = load_model(str(tiny))
    with pytest.raises(WbError, match=r"llama_adapter\.adapter_layers: 3 is more than the model's 2 layers"):
        methods.apply(model, recipe(tmp_path, tiny, method="llama_adapter", llama_adapter={"adapter_layers": 3}))
    model.config.model_type = "qwen2"
    with pytest.raises(WbError, match="support llama, mistral models, not qwen2"):
        methods.apply(model, recipe(tmp_path, tiny, method="llama_adapter"))


def test_an_ia3_run_merges_into_weights_equal_to_base_plus_adapter(tmp_path: Path, tiny: Path) -> None:
    from transformers import AutoModelForCausalLM

    run = train(recipe(tmp_path, tiny, method="ia3", lr=1e-1, max_steps=6)).run_dir
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == {"k_proj", "v_proj", "down_proj"}
    assert config["feedforward_modules"] == ["down_proj"]
    merged_dir = export(run, tmp_path / "merged", merge=True, dtype="float32").path
    loaded = runs.load([runs.resolve_target(run)], dtype="float32")
    with loaded.active_model() as m:
        tuned = logits(m, loaded.tokenizer)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, use_safetensors=True).eval()
    base = logits(load_model(str(tiny)).eval(), loaded.tokenizer)
    assert torch.allclose(logits(merged, loaded.tokenizer), tuned, atol=1e-4)
    assert not torch.allclose(tuned, base, atol=1e-3)


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_adapters_are_saved_as_plain_lora_over_the_unchanged_base(
    tmp_path: Path, tiny: Path, init: str, auto_precision: str
) -> None:
    r = recipe(tmp_path, tiny, max_steps=8, lora={"init": init, "r": 4, "dropout": 0.0}, sample_losses=True)
    result = train(r)
    run = result.run_dir
    assert not (run / "lora_init").exists()
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["init_lora_weights"] is True  # [A | A0], [B | -B0]: rank 2r
    # The trained model (mutated base + adapter) wrote sample_losses.jsonl under the run's precision; the saved
    # adapter over the original base must give the same losses under the same precision: to float rounding in fp32;
    # in bf16 the two factorisations round differently (measured up to 6.5e-3 on an AMX Xeon, 1.8e-2 emulated).
    choice = precision.resolve("auto")
    assert json.loads((run / "manifest.json").read_text())["precision"] == choice.name == auto_precision
    written = {row["line"]: row["loss"] for row in map(json.loads, (run / "sample_losses.jsonl").read_text().split())}
    tok = load_tokenizer(str(tiny))
    prepared = prepare(r, tok, 2048)
    loaded = runs.load([runs.resolve_target(run)], dtype="float32")
    with loaded.active_model() as m:
        again = sample_losses(m, prepared.train, tok.pad_token_id, 4, choice)
    want = [written[ex.line] for ex in prepared.train]
    assert again == pytest.approx(want, abs={"fp32": 2e-4, "bf16": 5e-2}[auto_precision])
    assert min(again) < 10.5  # it learnt something (the untrained model is near ln(vocab) ≈ 10.8)


def test_rslora_and_gaussian_init_reach_the_adapter_config(tmp_path: Path, tiny: Path) -> None:
    run = train(recipe(tmp_path, tiny, max_steps=2, lora={"use_rslora": True, "init": "gaussian"})).run_dir
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert config["use_rslora"] is True and config["init_lora_weights"] == "gaussian"


def test_lora_target_modules_as_a_regex_adapts_only_the_matching_layers(tmp_path: Path, tiny: Path) -> None:
    from safetensors.torch import load_file

    run = train(recipe(tmp_path, tiny, max_steps=2, lora={"target_modules": r".*\.(q_proj|v_proj)"})).run_dir
    keys = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    adapted = {k.split(".lora_")[0].rsplit(".", 1)[1] for k in keys}
    assert adapted == {"q_proj", "v_proj"}
    model = load_model(str(tiny))
    with pytest.raises(WbError, match=r"lora.target_modules: '.\*\\\\.nothing' matches no module"):
        methods.apply(model, recipe(tmp_path, tiny, lora={"target_modules": r".*\.nothing"}))


def test_loraplus_gives_the_b_matrices_ratio_times_the_learning_rate(tmp_path: Path, tiny: Path) -> None:
    r = recipe(tmp_path, tiny, loraplus_lr_ratio=16, lr=1e-3, weight_decay=0.01)
    model = methods.apply(load_model(str(tiny)), r)
    trainer = hf.trainer_class()(
        model=model, args=hf.training_args(r, tmp_path / "run", _cpu_fp32(), False), train_dataset=[]
    )
    trainer.loraplus_lr_ratio = 16
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in model.named_parameters()}
    by_lr: dict[float, set[str]] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            by_lr.setdefault(round(group["lr"], 9), set()).add("lora_B" if "lora_B" in names[id(p)] else "lora_A")
            assert group["weight_decay"] == 0.01
    assert by_lr == {1e-3: {"lora_A"}, 1.6e-2: {"lora_B"}}
    result = train(r.model_copy(update={"lr": 5e-3}))
    curve = losses(result)
    assert sum(curve[-3:]) / 3 < sum(curve[:3]) / 3 - 0.3, curve


def _cpu_fp32() -> Any:
    from workbench import precision

    return precision.Choice("fp32", "cpu", "test")


@pytest.mark.parametrize("method", ["lora", "adapter", "prompt_tuning"])
def test_neftune_noises_the_embeddings_of_the_trained_loss_only_while_training(
    tmp_path: Path, tiny: Path, method: str
) -> None:
    plain = train(recipe(tmp_path / "plain", tiny, name="plain", method=method, max_steps=3))
    noisy = train(recipe(tmp_path / "noisy", tiny, name="noisy", method=method, max_steps=3, neftune_noise_alpha=5))
    # Step 1's loss is taken before any update: only the noise can make it differ.
    assert losses(noisy)[0] != losses(plain)[0]
    assert abs(losses(noisy)[0] - losses(plain)[0]) < 0.5
    loaded = runs.load([runs.resolve_target(noisy.run_dir)], dtype="float32")
    with loaded.active_model() as m:
        embeddings = m.get_input_embeddings()
        assert not embeddings._forward_hooks  # the Trainer took its hook off after training
        first = logits(m, loaded.tokenizer)
        assert torch.equal(first, logits(m, loaded.tokenizer))  # generation is noise-free


def test_galore_projects_the_attention_and_mlp_gradients(tmp_path: Path, tiny: Path) -> None:
    from galore_torch import GaLoreAdamW

    r = recipe(tmp_path, tiny, method="galore", galore={"rank": 8, "update_proj_gap": 5})
    model = methods.apply(load_model(str(tiny)), r)
    trainer = hf.trainer_class()(
        model=model, args=hf.training_args(r, tmp_path / "run", _cpu_fp32(), False), train_dataset=[]
    )
    optimizer = trainer.create_optimizer()
    assert isinstance(optimizer, GaLoreAdamW)
    projected = [g for g in optimizer.param_groups if "rank" in g]
    assert len(projected) == 1 and projected[0]["rank"] == 8 and projected[0]["update_proj_gap"] == 5
    assert len(projected[0]["params"]) == 2 * 7  # q k v o gate up down in each of the 2 layers
    with pytest.raises(WbError, match=r"galore\.target_modules: \['nothing'\] matches no linear layer"):
        methods.apply(
            load_model(str(tiny)), recipe(tmp_path, tiny, method="galore", galore={"target_modules": ["nothing"]})
        )


def test_galore_adafactor_trains_and_8bit_adamw_without_a_gpu_is_one_line(tmp_path: Path, tiny: Path) -> None:
    result = train(recipe(tmp_path / "a", tiny, method="galore", lr=3e-3, galore={"rank": 8, "optimizer": "adafactor"}))
    curve_ = losses(result)
    assert sum(curve_[-3:]) / 3 < sum(curve_[:3]) / 3 - 0.3, curve_
    if not torch.cuda.is_available():
        with pytest.raises(WbError, match=r"galore\.optimizer: adamw_8bit needs a GPU"):
            train(recipe(tmp_path / "b", tiny, method="galore", galore={"optimizer": "adamw_8bit"}))


def test_resume_of_a_galore_run_gives_the_same_curve(tmp_path: Path, tiny: Path) -> None:
    kw = {"method": "galore", "lr": 3e-3, "max_steps": 6, "save_steps": 3, "batch_size": 2}
    kw["galore"] = {"rank": 8, "update_proj_gap": 2}
    full = train(recipe(tmp_path / "a", tiny, **kw))
    kill_after_step_3(full.run_dir, tmp_path / "b" / "runs" / "t")
    resumed = train(recipe(tmp_path / "b", tiny, **kw), resume=True)
    assert curve(resumed) == curve(full)


def test_tensorboard_gets_the_loss_curve_in_the_run_folder(tmp_path: Path, tiny: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(recipe(tmp_path, tiny, max_steps=3, report_to=["tensorboard"])).run_dir
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert steps == [1, 2, 3]


def test_a_dashboard_that_is_not_installed_is_one_line(
    tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers.integrations as integrations

    monkeypatch.setattr(integrations, "is_wandb_available", lambda: False)
    with pytest.raises(WbError, match=r"report_to: wandb is not installed: pip install wandb"):
        train(recipe(tmp_path, tiny, report_to=["wandb"]))
    assert not (tmp_path / "runs" / "t").exists()
    args = hf.training_args(
        recipe(tmp_path, tiny, report_to=["wandb", "mlflow", "wandb"]), tmp_path, _cpu_fp32(), False
    )
    assert args.report_to == ["wandb", "mlflow"] and args.run_name == "t"
    assert hf.training_args(recipe(tmp_path, tiny), tmp_path, _cpu_fp32(), False).report_to == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["report_to=[neptune]"], "report_to.0: Input should be 'tensorboard', 'wandb' or 'mlflow'"),
        (
            ["method=full", "loraplus_lr_ratio=16"],
            "recipe: loraplus_lr_ratio is for lora, dora and qlora, not method full",
        ),
        (["loraplus_lr_ratio=0.5"], "loraplus_lr_ratio: Input should be greater than or equal to 1"),
        (["lora.init=loftq"], "lora.init: Input should be 'default', 'gaussian', 'pissa' or 'olora'"),
        (["lora.target_modules=(q_proj"], "lora.target_modules: Value error, '(q_proj' is not a regular expression"),
        (["method=qlora", "lora.init=pissa"], "lora.init pissa rewrites the base weights"),
        (["adapter.placement=parallel"], "adapter.placement: Input should be 'pfeiffer' or 'houlsby'"),
        (["adapter.reduction_factor=0"], "adapter.reduction_factor: Input should be greater than or equal to 1"),
        (["adapter.non_linearity=swish"], "adapter.non_linearity: Input should be 'relu', 'gelu', 'silu' or 'tanh'"),
        (["p_tuning.encoder=gru"], "p_tuning.encoder: Input should be 'mlp' or 'lstm'"),
        (["ia3.feedforward_modules=[up_proj]"], "ia3.feedforward_modules: up_proj not in ia3.target_modules"),
        (["galore.rank=0"], "galore.rank: Input should be greater than or equal to 1"),
        (["galore.optimizer=sgd"], "galore.optimizer: Input should be 'adamw', 'adamw_8bit' or 'adafactor'"),
        (["neftune_noise_alpha=-1"], "neftune_noise_alpha: Input should be greater than 0"),
        (["llama_adapter.adapter_len=0"], "llama_adapter.adapter_len: Input should be greater than or equal to 1"),
        (["prefix_tuning.projektion=true"], "prefix_tuning.projektion: Extra inputs are not permitted"),
    ],
)
def test_new_recipe_keys_are_checked_at_load_in_one_line(overrides: list[str], message: str, wb: Any) -> None:
    with pytest.raises(WbError) as err:
        recipes.load(None, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)
    result = wb("train", *overrides)
    assert result.exit_code == 2 and message in result.stderr


def test_virtual_token_methods_do_not_pack_and_the_shipped_recipes_load() -> None:
    assert Recipe(method="p_tuning").packing is False
    assert Recipe(method="llama_adapter").packing is True and Recipe(method="adapter").packing is True
    root = Path(__file__).resolve().parent.parent / "pipelines"
    for name, method in [
        ("adapter", "adapter"),
        ("llama-adapter", "llama_adapter"),
        ("galore", "galore"),
        ("p-tuning", "p_tuning"),
        ("ia3", "ia3"),
    ]:
        assert recipes.load(root / f"train-{name}.yaml").method == method
    assert recipes.load(root / "train-prefix-tuning.yaml", ["prefix_tuning.projection=true"]).prefix_tuning.projection
