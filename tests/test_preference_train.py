"""`wb train` preference methods (TRL trainers) on a tiny random model with the real SmolLM2 tokenizer: each method
trains a few steps and improves; DPO resumes exactly; a reward model is saved in safetensors and scores; `wb eval
--prefs` reports implicit-reward and reward-model accuracy with intervals; refusals name their lines."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import split_on_two_threads, write_jsonl

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from workbench import metric_specs  # noqa: E402
from workbench.errors import WbError  # noqa: E402
from workbench.evaluate import scorers  # noqa: E402
from workbench.models.base import tiny_model_dir  # noqa: E402
from workbench.runfile.evals import EvalMetrics  # noqa: E402
from workbench.runfile.gate_paths import gate_path_problem, resolve  # noqa: E402
from workbench.runfile.training import LogRow  # noqa: E402
from workbench.train.recipe import Recipe  # noqa: E402
from workbench.train.trainer import train  # noqa: E402

# A learnable rule, in English and Chinese: the chosen answer is polite and complete, the rejected one curt.
PAIRS = [
    {"prompt": f"Describe the number {i}.", "chosen": f"The number {i} is an integer. Thank you!", "rejected": f"{i}"}
    if i % 2
    else {
        "prompt": [{"role": "user", "content": f"请介绍数字 {i}。"}],
        "chosen": f"数字 {i} 是一个整数。谢谢！",
        "rejected": f"{i}",
    }
    for i in range(16)
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "pairs.jsonl", PAIRS)


def recipe(out: Path, tiny: Path, data: Path, method: str, **kw: Any) -> Recipe:
    fields: dict[str, Any] = {
        "name": method,
        "model": str(tiny),
        "method": method,
        "data": data,
        "output_dir": out,
        "val_size": 0,
        "max_length": 128,
        "max_steps": 4,
        "lr": 5e-3,
        "batch_size": 4,
        "logging_steps": 1,
        "warmup_ratio": 0,
        "scheduler": "constant",
        "save_steps": 1000,
        **kw,
    }
    return Recipe.model_validate(fields)


def log_of(run: Path) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in (run / "trainer_log.jsonl").read_text(encoding="utf-8").splitlines()]
    for row in rows:
        LogRow.model_validate(row)  # the run schema reads every row
    return [r for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory: pytest.TempPathFactory, tiny: Path, pairs_file: Path) -> Path:
    out = tmp_path_factory.mktemp("runs")
    train(recipe(out, tiny, pairs_file, "dpo", save_steps=2))
    return out / "dpo"


def test_dpo_lowers_its_loss_and_logs_the_implicit_rewards(dpo_run: Path) -> None:
    rows = log_of(dpo_run)
    assert rows[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # log 2: the policy starts as its reference
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.2
    assert rows[-1]["rewards/accuracies"] == 1.0 and rows[-1]["rewards/margins"] > rows[0]["rewards/margins"]
    manifest = json.loads((dpo_run / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["method"] == "dpo" and manifest["global_step"] == 4
    assert manifest["preference"]["trainer"] == "DPOTrainer"
    assert manifest["preference"]["reference"].startswith("the policy with its adapter disabled")
    assert manifest["examples"] == {"train": 16, "val": 0} and manifest["tokens_per_second"] > 0
    adapter = dpo_run / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and not list(adapter.rglob("*.bin"))
    assert not (adapter / "ref").exists()  # only the trained adapter is saved


def test_wb_train_dpo_runs_its_pairs_without_padding_and_with_each_prompt_once(
    tiny: Path, pairs_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a CPU `wb train` takes the unpadded path of `preference_head` for every policy and reference pass (PEFT
    hands the model extra keyword arguments set to None; they must not turn it off)."""
    from workbench.train import preference_head

    unpadded = preference_head._unpadded
    passes: list[tuple[int, int]] = []

    def spy(model: Any, args: Any, kwargs: dict[str, Any], labels: Any) -> Any:
        result = unpadded(model, args, kwargs, labels)
        computed = -1 if result is None else result[0]["input_ids"].shape[1]
        passes.append((computed, int(kwargs["attention_mask"].sum())))
        return result

    monkeypatch.setattr(preference_head, "_unpadded", spy)
    threads = torch.get_num_threads()
    train(recipe(tmp_path, tiny, pairs_file, "dpo", max_steps=1))
    assert len(passes) == (2 if threads == 1 else 4)  # the policy and the reference (of each part, split on 2 threads)
    assert all(0 < computed < real for computed, real in passes)  # padding out, the rejected answers' prompts once


def test_dpo_checkpoints_hold_no_pickled_arguments_and_follow_the_umask(dpo_run: Path) -> None:
    checkpoints = sorted(p.name for p in (dpo_run / "checkpoints").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2", "checkpoint-4"]
    assert not list(dpo_run.rglob("training_args.bin"))  # TRL's Trainer pickles its DPOConfig there
    weights = [dpo_run / "adapter" / "adapter_model.safetensors"]
    weights += [dpo_run / "checkpoints" / name / "adapter_model.safetensors" for name in checkpoints]
    mask = os.umask(0)
    os.umask(mask)
    assert {oct(p.stat().st_mode & 0o777) for p in weights} == {oct(0o666 & ~mask)}  # not safetensors' 0600


def test_dpo_refuses_to_start_from_a_pickled_adapter(
    dpo_run: Path, tiny: Path, pairs_file: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    shutil.copytree(dpo_run, tmp_path / "sft")
    adapter = tmp_path / "sft" / "adapter"
    torch.save(load_file(str(adapter / "adapter_model.safetensors")), adapter / "adapter_model.bin")
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(WbError) as refused:
        train(recipe(tmp_path, tiny, pairs_file, "dpo", name="more", preference={"init_from": tmp_path / "sft"}))
    assert str(refused.value).startswith(f"adapter {adapter}: only pickle weights (adapter_model.bin), no ")


def test_dpo_resume_equals_the_uninterrupted_run(tiny: Path, pairs_file: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    # A cosine schedule after a warmup step: a scheduler not restored from the checkpoint restarts its warmup.
    kw = {"save_steps": 2, "max_steps": 4, "scheduler": "cosine", "warmup_ratio": 0.25}
    whole = train(recipe(tmp_path / "a", tiny, pairs_file, "dpo", **kw))
    # The same run killed after its step-2 checkpoint: that checkpoint and its log only.
    killed = tmp_path / "b" / "dpo"
    shutil.copytree(whole.run_dir, killed)
    shutil.rmtree(killed / "checkpoints" / "checkpoint-4")
    shutil.rmtree(killed / "adapter")
    (killed / "manifest.json").unlink()
    log = [x for x in (killed / "trainer_log.jsonl").read_text().splitlines() if json.loads(x).get("step", 0) <= 2]
    (killed / "trainer_log.jsonl").write_text("\n".join(log) + "\n")
    ran: list[dict[str, Any]] = []  # the rows the resumed process itself logged
    train(recipe(tmp_path / "b", tiny, pairs_file, "dpo", **kw), resume=True, on_log=ran.append)
    # Only the remaining steps ran, at the uninterrupted run's learning rates (the scheduler's state restored).
    rates = lambda rows: [(r["step"], r["learning_rate"]) for r in rows if "loss" in r]  # noqa: E731
    assert rates(ran) == rates(whole.log)[2:] and [step for step, _ in rates(ran)] == [3, 4]
    lrs = [lr for _, lr in rates(whole.log)]
    assert lrs[0] < lrs[1] > lrs[2] > lrs[3]  # the warmup step from 0, then the cosine decay
    adapter = load_file(str(whole.run_dir / "adapter" / "adapter_model.safetensors"))
    resumed = load_file(str(killed / "adapter" / "adapter_model.safetensors"))
    assert adapter.keys() == resumed.keys()
    for key in adapter:
        torch.testing.assert_close(resumed[key], adapter[key], rtol=1e-4, atol=1e-6)


def test_a_dpo_run_stopped_while_saving_a_checkpoint_resumes_from_the_last_complete_one(
    tiny: Path, pairs_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TRL's trainers save checkpoints as SFT's Trainer does: visible only once complete."""
    from transformers import Trainer

    save_rng = Trainer._save_rng_state

    def stopped(self: Any, output_dir: str) -> None:  # weights and optimizer.pt written, trainer_state.json not yet
        if self.state.global_step == 2:
            raise KeyboardInterrupt
        save_rng(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_rng_state", stopped)
    r = recipe(tmp_path, tiny, pairs_file, "dpo", save_steps=1, max_steps=3)
    with pytest.raises(KeyboardInterrupt):
        train(r)
    checkpoints = r.run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-1"]
    half = checkpoints / ".wb-stage" / "checkpoint-2"  # stopped half-written, out of sight
    assert (half / "adapter_model.safetensors").is_file() and not (half / "trainer_state.json").exists()
    monkeypatch.setattr(Trainer, "_save_rng_state", save_rng)
    said: list[str] = []
    ran: list[dict[str, Any]] = []
    train(r, resume=True, on_log=ran.append, on_status=said.append)
    assert f"resuming from {checkpoints / 'checkpoint-1'}" in said
    assert [row["step"] for row in ran if "loss" in row] == [2, 3]
    assert sorted(p.name for p in checkpoints.glob("*checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    assert not (checkpoints / ".wb-stage").exists()


def test_implicit_accuracy_is_reported_with_an_interval_and_gated(dpo_run: Path, pairs_file: Path) -> None:
    from workbench.evaluate.config import EvalConfig
    from workbench.evaluate.pipeline import evaluate
    from workbench.report.summary import load_run

    result = evaluate(dpo_run, EvalConfig(probes=[], prefs=pairs_file, base=False, cache=False))
    pref = result.metrics.preference
    assert pref is not None and pref.implicit_accuracy is not None and pref.implicit_margin is not None
    assert pref.n == 16 and pref.implicit_accuracy.tuned == 1.0
    assert pref.implicit_accuracy.lower == 1.0 and pref.implicit_margin.tuned is not None
    assert pref.implicit_margin.tuned > 0
    rows = [json.loads(x) for x in (dpo_run / "eval" / "preference_scores.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and all(r["implicit"]["chosen"] > r["implicit"]["rejected"] for r in rows)
    summary = load_run(dpo_run).summary
    assert resolve(summary, "pref.implicit_accuracy.lower") == 1.0
    assert gate_path_problem("pref.implicit_accuracy.lower") is None
    assert gate_path_problem("pref.nope.lower") is not None
    assert "final_preference" in summary["train"] and summary["train"]["final_preference"]["rewards_accuracies"] == 1.0


def test_pairs_whose_chosen_equals_rejected_are_warned_about_and_left_out(
    dpo_run: Path, pairs_file: Path, tmp_path: Path
) -> None:
    from workbench.evaluate.config import EvalConfig
    from workbench.evaluate.pipeline import evaluate
    from workbench.report.gate import GateFile
    from workbench.report.gate import evaluate as check_gate
    from workbench.report.summary import load_run

    same = [
        {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "Hi!"},
        {"prompt": [{"role": "user", "content": "你好吗？"}], "chosen": "我很好。", "rejected": " 我很好。\n"},
    ]
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [same[0], *PAIRS[:8], same[1], *PAIRS[8:]])
    config = EvalConfig(probes=[], prefs=mixed, base=False, cache=False)
    result = evaluate(dpo_run, config, out_dir=tmp_path / "mixed")
    pref = result.metrics.preference
    assert pref is not None and pref.n == 16 and pref.excluded_identical == 2
    warned = [w for w in result.warnings if "same chosen and rejected" in w]
    assert len(warned) == 1 and "2 of 18 pairs" in warned[0] and "(lines 1, 10)" in warned[0]
    clean = evaluate(dpo_run, config.model_copy(update={"prefs": pairs_file}), out_dir=tmp_path / "clean")
    for key in ("implicit_accuracy", "implicit_margin"):  # the numbers are those of the 16 informative pairs
        assert getattr(pref, key) == getattr(clean.metrics.preference, key)
    rows = [json.loads(x) for x in (tmp_path / "mixed" / "preference_scores.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rows] == [2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18]

    # Only identical pairs: nothing is measured, and a gate on the margin is missing, not a pass at 0.000 [0, 0].
    only = write_jsonl(tmp_path / "same.jsonl", same)
    run = tmp_path / "copy"
    shutil.copytree(dpo_run, run, ignore=shutil.ignore_patterns("eval"))
    result = evaluate(run, config.model_copy(update={"prefs": only}))
    only_pref = result.metrics.preference
    assert only_pref is not None and only_pref.n == 0 and only_pref.implicit_margin is None
    gate = GateFile.model_validate({"checks": ["pref.implicit_margin.tuned >= 0"]})
    verdict = check_gate(gate, load_run(run).summary).results[0]
    assert verdict.verdict == "missing", verdict


@pytest.mark.parametrize("method", ["orpo", "simpo", "kto"])
def test_method_lowers_its_loss(method: str, tiny: Path, pairs_file: Path, tmp_path: Path) -> None:
    extra = {"preference": {"beta": 2.0}} if method == "simpo" else {}
    result = train(recipe(tmp_path, tiny, pairs_file, method, **extra))
    rows = log_of(result.run_dir)
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert "rewards/chosen" in rows[-1] and "rewards/rejected" in rows[-1]
    if method == "kto":
        assert result.manifest["examples"]["train"] == 32  # each pair split into a desirable and an undesirable one
        assert result.manifest["preference"]["trainer"] == "KTOTrainer"
    else:
        assert result.manifest["preference"]["reference"] == "none"


def test_reward_model_is_saved_in_safetensors_and_scores_chosen_higher(
    tiny: Path, pairs_file: Path, tmp_path: Path
) -> None:
    from workbench import pairs as pdata
    from workbench.evaluate.config import EvalConfig
    from workbench.evaluate.pipeline import evaluate
    from workbench.evaluate.preference_metrics import RewardScorer

    result = train(recipe(tmp_path, tiny, pairs_file, "reward"))
    rows = log_of(result.run_dir)
    assert rows[-1]["loss"] < rows[0]["loss"] and rows[-1]["accuracy"] >= rows[0]["accuracy"]
    adapter = result.run_dir / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and "score" in config["modules_to_save"]
    assert (adapter / "adapter_model.safetensors").is_file() and not list(result.run_dir.rglob("adapter*.bin"))
    scorer = RewardScorer.load(result.run_dir)
    chosen, rejected = scorer.score_pairs(pdata.load_pairs(pairs_file))
    assert sum(c > r for c, r in zip(chosen, rejected, strict=True)) == 16
    metrics = evaluate(result.run_dir, EvalConfig(probes=[], prefs=pairs_file)).metrics.preference
    assert metrics is not None and metrics.reward_accuracy is not None and metrics.reward_margin is not None
    assert metrics.reward_accuracy.tuned == 1.0 and metrics.reward_margin.lower is not None
    assert metrics.reward_margin.lower > 0
    EvalMetrics.model_validate(json.loads((result.run_dir / "eval" / "metrics.json").read_text()))
    from workbench.models.targets import load, resolve_target

    with pytest.raises(WbError, match="is a reward model: it scores texts and does not generate"):
        load([resolve_target(result.run_dir)])
    # RL from the trained reward model: GRPO samples answers, the reward model scores them, KL is logged.
    pref = {"reward_model": result.run_dir, "num_generations": 2, "max_completion_length": 6, "beta": 0.1}
    rl = train(recipe(tmp_path, tiny, pairs_file, "grpo", name="rl", preference=pref, max_steps=2))
    rl_rows = log_of(rl.run_dir)
    assert len(rl_rows) == 2 and all("kl" in r and "reward_std" in r for r in rl_rows)
    assert any(r["reward_std"] > 0 for r in rl_rows)  # the reward model tells sampled answers apart
    # Base vs tuned answers to task prompts under the reward model: a paired interval and a win rate.
    task = write_jsonl(tmp_path / "task.jsonl", [{"instruction": f"Describe {i}.", "output": "ok"} for i in range(6)])
    config = EvalConfig(data=task, probes=[], reward_model=result.run_dir, cache=False, review_size=0)
    config = config.model_copy(update={"generation": config.generation.model_copy(update={"max_new_tokens": 6})})
    won = evaluate(rl.run_dir, config).metrics.preference
    assert won is not None and won.reward_score is not None and won.win_rate is not None
    score = won.reward_score
    assert score.wins is not None and score.ties is not None and score.losses is not None
    assert score.wins + score.ties + score.losses == 6
    assert score.delta_lower is not None and 0 <= won.win_rate <= 1


def test_grpo_samples_scores_with_a_registry_metric_and_logs_kl(tiny: Path, pairs_file: Path, tmp_path: Path) -> None:
    def short(prediction: str, ctx: scorers.ItemContext) -> int:
        return int(len(prediction) < 12)

    metric_specs.register_metric("short_answer_test", "answer under 12 characters", ["text"], binary=True, score=short)
    try:
        pref = {"reward_function": "short_answer_test", "num_generations": 2, "max_completion_length": 8, "beta": 0.1}
        result = train(recipe(tmp_path, tiny, pairs_file, "grpo", preference=pref, max_steps=3))
    finally:
        metric_specs.unregister_metric("short_answer_test")
    rows = log_of(result.run_dir)
    assert len(rows) == 3 and all("reward" in r and "kl" in r for r in rows)
    assert all(0 <= r["reward"] <= 1 for r in rows)
    assert result.manifest["preference"]["trainer"] == "GRPOTrainer"
    assert (result.run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_grpo_refuses_an_unknown_reward_function(tiny: Path, pairs_file: Path, tmp_path: Path) -> None:
    with pytest.raises(WbError, match="reward_function: 'rouge_l' is not a per-item metric"):
        train(recipe(tmp_path, tiny, pairs_file, "grpo", preference={"reward_function": "rouge_l"}))


def test_training_refuses_pairs_identical_after_truncation(tiny: Path, tmp_path: Path) -> None:
    shared = "同一个很长的开头，" * 30
    rows = [*PAIRS[:4], {"prompt": "x", "chosen": shared + "对", "rejected": shared + "错"}]
    data = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(WbError, match=r"identical after truncation to max_length 128 \(lines 5\)"):
        train(recipe(tmp_path, tiny, data, "dpo"))
    assert not (tmp_path / "dpo" / "manifest.json").exists()
    dropped = train(recipe(tmp_path, tiny, data, "dpo", preference={"truncation": "drop"}, max_steps=1))
    assert dropped.manifest["preference"]["dropped"] == {"identical_after_truncation": 1}
    assert dropped.manifest["examples"]["train"] == 4


def test_dpo_continues_an_sft_adapter_against_a_frozen_copy(
    dpo_run: Path, tiny: Path, pairs_file: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from workbench.evaluate.config import EvalConfig
    from workbench.evaluate.pipeline import evaluate
    from workbench.export.pipeline import export

    shutil.copytree(dpo_run, tmp_path / "sft")  # any finished LoRA run: its adapter is the starting point
    result = train(recipe(tmp_path, tiny, pairs_file, "dpo", name="more", preference={"init_from": tmp_path / "sft"}))
    assert result.manifest["preference"]["reference"].startswith("frozen copy of the adapter")
    rows = log_of(result.run_dir)
    assert rows[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # starts equal to its reference: the SFT adapter
    merged = export(result.run_dir, tmp_path / "merged", merge=True)
    assert (merged.path / "model.safetensors").is_file()
    # `wb eval --prefs` loads the starting adapter as the reference; a pickle in its place is refused.
    config = EvalConfig(probes=[], prefs=pairs_file, base=False, cache=False)
    pref = evaluate(result.run_dir, config).metrics.preference
    assert pref is not None and pref.settings["reference"] == str(tmp_path / "sft" / "adapter") and pref.n == 16
    adapter = tmp_path / "sft" / "adapter"
    torch.save(load_file(str(adapter / "adapter_model.safetensors")), adapter / "adapter_model.bin")
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(WbError, match=f"^adapter {re.escape(str(adapter))}: only pickle weights"):
        evaluate(result.run_dir, config)


def test_dpo_on_a_4bit_base_qlora_lowers_its_loss(tiny: Path, pairs_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    r = recipe(tmp_path, tiny, pairs_file, "dpo", name="dpo-q", preference={"weights": "qlora"})
    result = train(r)
    rows = log_of(tmp_path / "dpo-q")
    assert rows[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # the reference is the 4-bit base, adapter off
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.1
    assert result.manifest["precision"] == "fp32" or result.manifest["device"] != "cpu"
    assert result.manifest["precision_reason"].startswith("QLoRA on CPU") or result.manifest["device"] != "cpu"
    assert (tmp_path / "dpo-q" / "adapter" / "adapter_model.safetensors").is_file()
    with pytest.raises(Exception, match="weights qlora: the reward head"):
        recipe(tmp_path, tiny, pairs_file, "reward", preference={"weights": "qlora"})


def test_dpo_on_full_weights_lowers_its_loss_and_saves_the_whole_model(
    tiny: Path, pairs_file: Path, tmp_path: Path
) -> None:
    result = train(recipe(tmp_path, tiny, pairs_file, "dpo", name="dpo-full", lr=5e-4, preference={"weights": "full"}))
    rows = log_of(tmp_path / "dpo-full")
    assert rows[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # the reference: a second copy of the base
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.1
    assert result.manifest["trainable_parameters"] == result.manifest["total_parameters"]
    model = tmp_path / "dpo-full" / "model"
    assert (model / "model.safetensors").is_file() and not (tmp_path / "dpo-full" / "adapter").exists()


def test_an_unknown_loss_type_is_one_line_and_writes_nothing(
    tiny: Path, pairs_file: Path, tmp_path: Path, wb: Any
) -> None:
    out = tmp_path / "runs"
    args = [f"model={tiny}", "method=dpo", "preference.loss_type=sigmoidd", f"output_dir={out}", "max_steps=1", "-q"]
    result = wb("train", "--data", pairs_file, *args)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: recipe: preference.loss_type: 'sigmoidd' is not one of method dpo's: sigmoid, hinge, ipo, nca_pair, "
        "robust, bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, apo_down, discopop, sft, sigmoid_norm"
    ]
    assert not out.exists()


def _lora_trainer(config_cls: Any, trainer_cls: Any, rows: list[dict[str, Any]], tiny: Path, tmp_path: Path) -> Any:
    """A TRL trainer of `rows` (batches of 4) on the tiny model with a fresh LoRA adapter (B not zero)."""
    from datasets import Dataset
    from peft import LoraConfig

    from workbench.models.base import load_model, load_tokenizer

    torch.manual_seed(0)
    args = config_cls(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_length=128, beta=0.1, report_to=[], use_cpu=True
    )
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False)
    return trainer_cls(
        model=load_model(str(tiny)),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=load_tokenizer(str(tiny)),
        peft_config=lora,
    )


class _HeadRun:
    """One batch of a TRL preference trainer scored twice: by TRL's own head, then by wb's `completion_head`
    (with attention by sequence when asked), recording how many positions each pass sent through the head."""

    def __init__(self, trainer: Any, monkeypatch: pytest.MonkeyPatch, by_sequence: bool, metrics: Any = None) -> None:
        from workbench import precision
        from workbench.train import attention
        from workbench.train import loss as wloss
        from workbench.train.preference_head import completion_head

        model = trainer.model
        model.train()
        self.batch = next(iter(trainer.get_train_dataloader()))
        params = [p for p in model.parameters() if p.requires_grad]
        autocast = precision.resolve("auto").autocast
        wanted = metrics or (lambda k: k != "num_tokens")  # num_tokens: a running sum over the steps

        def step() -> tuple[Any, list[Any], dict[str, float]]:
            trainer._metrics["train"].clear()
            with autocast():
                value = trainer.compute_loss(model, self.batch)
            logged = {k: v[-1] for k, v in trainer._metrics["train"].items() if v and wanted(k)}
            return value, list(torch.autograd.grad(value, params)), logged

        self.stock = step()
        self.scored: list[int] = []
        head_log_probs = wloss.head_log_probs

        def spy(hidden: Any, *a: Any, **kw: Any) -> Any:
            self.scored.append(hidden.shape[0])
            return head_log_probs(hidden, *a, **kw)

        monkeypatch.setattr(wloss, "head_log_probs", spy)
        assert completion_head(trainer)
        assert not by_sequence or attention.use(model)
        self.ours = step()

    def assert_same_numbers(self, auto_precision: str) -> None:
        """TRL's loss, logged metrics and gradients, to fp32 or bf16 rounding."""
        (stock_loss, stock_grads, stock_metrics), (loss, grads, metrics) = self.stock, self.ours
        tol = {"fp32": 1e-5, "bf16": 2e-2}[auto_precision]
        assert float(loss.detach()) == pytest.approx(float(stock_loss.detach()), rel=tol)
        assert metrics.keys() == stock_metrics.keys() and metrics
        for k in metrics:
            assert metrics[k] == pytest.approx(stock_metrics[k], rel=tol, abs=tol), k
        worst = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(grads, stock_grads, strict=True))
        assert worst < {"fp32": 1e-4, "bf16": 5e-2}[auto_precision], worst


@pytest.mark.parametrize("by_sequence", [False, True])
def test_dpo_scores_only_the_completion_positions_with_trls_values_and_gradients(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auto_precision: str, by_sequence: bool
) -> None:
    """wb's fused head for DPO (`completion_head`) gives TRL's loss, gradients and logged metrics on a padded batch
    of chosen and rejected answers, running the output head at the completion positions only (TRL's own runs it
    at every position on a CPU); with attention by sequence (as `wb train` runs on a CPU) the padding is left out
    and each pair's prompt runs once: the same numbers."""
    from trl import DPOConfig, DPOTrainer

    from workbench.models.base import load_tokenizer
    from workbench.train import attention
    from workbench.train import loss as wloss

    monkeypatch.setattr(wloss, "HEAD_CHUNK_ELEMENTS", 5 * len(load_tokenizer(str(tiny))))  # chunks of 5 positions
    # prompts of several lengths, answers shorter than them: a padded batch mostly of prompt and padding
    rows = [
        {
            "prompt": "Describe the number. " * (3 + 4 * i),
            "chosen": f"The number {i} is an integer.",
            "rejected": f"{i}",
        }
        for i in range(4)
    ]
    trainer = _lora_trainer(DPOConfig, DPOTrainer, rows, tiny, tmp_path)
    names = {"entropy", "logits/chosen", "logits/rejected", "mean_token_accuracy", "logps/chosen"}
    run = _HeadRun(trainer, monkeypatch, by_sequence, metrics=names.__contains__)
    batch = run.batch
    if by_sequence:  # one row: per pair the prompt and the chosen answer, then the rejected one sharing that prompt
        runs = attention._LAST.layout.runs
        assert runs is not None and len(runs) == 1 and [r[0] for r in runs[0]] == ["causal", "branch"] * 4
        prompts = (batch["completion_mask"] == 0) & batch["attention_mask"].bool()
        assert sum(r[2] - r[1] for r in runs[0]) == int(batch["attention_mask"].sum() - prompts[4:].sum())

    completion = int(batch["completion_mask"][:, 1:].sum())
    assert run.scored == [completion, completion]  # the policy, then the reference
    assert completion < batch["completion_mask"][:, 1:].numel() / 2  # prompts and padding are most of the batch
    assert float(run.stock[0].detach()) != pytest.approx(0.6931, abs=1e-3)  # the policy is not its reference
    assert run.ours[2].keys() == names
    run.assert_same_numbers(auto_precision)


def test_kto_scores_only_the_completion_positions_with_trls_values_and_gradients(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auto_precision: str
) -> None:
    """KTO's policy, KL and reference passes go through the same head as DPO's (`completion_head`): TRL's loss,
    gradients and logged metrics on a padded batch of desirable and undesirable answers, the output head at the
    completion positions only, the padding left out (attention by sequence, as `wb train` runs on a CPU)."""
    from trl import KTOConfig, KTOTrainer

    rows = [
        {"prompt": " ".join(["Describe the number."] * (3 + 4 * i)), "completion": f" {i} is an integer." * (i % 2 + 1)}
        | {"label": i % 2 == 0}
        for i in range(4)
    ]
    trainer = _lora_trainer(KTOConfig, KTOTrainer, rows, tiny, tmp_path)
    run = _HeadRun(trainer, monkeypatch, by_sequence=True)
    completion_mask = run.batch["completion_mask"][:, 1:]
    assert int(completion_mask.sum()) in run.scored  # the policy's pass: its completion positions alone
    assert all(n < completion_mask.numel() / 2 for n in run.scored)  # never the whole padded batch
    assert len(run.scored) >= 3  # policy, KL and reference passes
    run.assert_same_numbers(auto_precision)


def test_bf16_dpo_holds_its_whole_frozen_base_in_bf16_and_follows_the_run_over_fp32_weights(
    tiny: Path, pairs_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under CPU bf16 autocast a DPO run with a fresh LoRA holds its whole frozen base in bf16 (the policy's and,
    adapter disabled, the reference's passes) and trains fp32 adapters: its losses and rewards follow the run over
    fp32 weights to bf16 rounding, and the adapter is saved in fp32."""
    from safetensors.torch import load_file

    from workbench.train import session as wsession
    from workbench.train import trl_trainers

    held: list[tuple[int, set[Any]]] = []
    real = wsession.bf16_frozen_base

    def hold(session: Any, model: Any, plain_lora: bool) -> int:
        n = real(session, model, plain_lora)
        held.append((n, {p.dtype for p in model.parameters() if not p.requires_grad}))
        return n

    monkeypatch.setattr(trl_trainers, "bf16_frozen_base", hold)
    kw = {"precision": "bf16", "lora": {"r": 4, "alpha": 8, "dropout": 0.1}}
    bf16 = train(recipe(tmp_path / "held", tiny, pairs_file, "dpo", **kw))
    monkeypatch.setattr(trl_trainers, "bf16_frozen_base", lambda *a: 0)
    cast = train(recipe(tmp_path / "cast", tiny, pairs_file, "dpo", **kw))
    # the tiny model: 2 layers of 7 projections, the embeddings, 2 norms a layer and the final one
    assert held == [(20, {torch.bfloat16})] and bf16.manifest["precision"] == "bf16"
    numbers = lambda run: [(r["loss"], r["rewards/chosen"], r["rewards/rejected"]) for r in log_of(run)]  # noqa: E731
    ours, theirs = numbers(bf16.run_dir), numbers(cast.run_dir)
    assert len(ours) == len(theirs) == 4 and ours != theirs  # measured: losses 0.15 %, rewards 0.004 apart at most
    for (loss, chosen, rejected), (loss_c, chosen_c, rejected_c) in zip(ours, theirs, strict=True):
        assert abs(loss - loss_c) <= 0.005 * loss_c and abs(chosen - chosen_c) <= 0.02, (ours, theirs)
        assert abs(rejected - rejected_c) <= 0.02, (ours, theirs)
    a, b = (load_file(r.run_dir / "adapter" / "adapter_model.safetensors") for r in (bf16, cast))
    assert a.keys() == b.keys() and {t.dtype for t in a.values()} == {torch.float32}


# -- DPO's pairs split over threads (row_parallel.pair_step) -------------------------------------------------------


@pytest.fixture
def two_threads() -> Iterator[list[int]]:
    """torch on two threads for the test (the suite runs on one), and a count of the DPO steps split into parts."""
    yield from split_on_two_threads("pair_step")


SPLIT_LOGGED = ("loss", "grad_norm", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


def test_dpo_pairs_split_over_two_threads_train_as_the_whole_batch_does(
    tiny: Path, pairs_file: Path, tmp_path: Path, two_threads: list[int]
) -> None:
    """Without dropout, a DPO step whose pairs run on two threads (the reference pass once, for the whole batch,
    before them) logs the whole batch's loss, rewards and token-weighted metrics and trains the same adapter, up to
    float rounding; with gradient accumulation too."""
    from safetensors.torch import load_file

    kw = {"lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "grad_accum": 2}
    split = train(recipe(tmp_path / "split", tiny, pairs_file, "dpo", **kw)).run_dir
    assert two_threads == [2] * 8  # 4 steps of 2 micro-batches, each of 4 pairs in 2 parts
    torch.set_num_threads(1)
    whole = train(recipe(tmp_path / "whole", tiny, pairs_file, "dpo", **kw)).run_dir
    assert len(two_threads) == 8  # one thread: TRL's own step
    rows = [log_of(run) for run in (split, whole)]
    assert len(rows[0]) == len(rows[1]) == 4
    for a, b in zip(*rows, strict=True):
        assert a["num_tokens"] == b["num_tokens"]  # the batch's tokens, counted once
        assert {k: a[k] for k in SPLIT_LOGGED} == pytest.approx({k: b[k] for k in SPLIT_LOGGED}, rel=1e-4, abs=1e-6)
    first, second = (load_file(run / "adapter" / "adapter_model.safetensors") for run in (split, whole))
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=1e-3, atol=1e-4)


def test_a_split_dpo_run_with_dropout_is_the_same_run_every_time_and_aot_and_kto_are_not_split(
    tiny: Path, pairs_file: Path, tmp_path: Path, two_threads: list[int]
) -> None:
    """Each part draws its dropout masks from a generator seeded in part order: the same seed, the same run. A loss
    that compares pairs across the batch (`aot` sorts the batch's ratios) is not a mean over pairs: not split; nor
    KTO, whose batches are not pairs."""
    kw = {"lora": {"r": 4, "alpha": 8, "dropout": 0.1}, "max_steps": 2}
    runs = [train(recipe(tmp_path / name, tiny, pairs_file, "dpo", **kw)).run_dir for name in ("a", "b")]
    assert two_threads == [2] * 4
    assert log_of(runs[0]) == log_of(runs[1])
    train(recipe(tmp_path / "aot", tiny, pairs_file, "dpo", preference={"loss_type": "aot"}, **kw))
    train(recipe(tmp_path / "kto", tiny, pairs_file, "kto", **kw))  # its batches are not pairs
    assert two_threads == [2] * 4


def test_a_split_dpo_steps_reference_pass_gives_the_policys_numbers_while_the_adapter_is_zero(
    tiny: Path, pairs_file: Path, tmp_path: Path, two_threads: list[int]
) -> None:
    """Under bf16 a product's rounding can depend on the rows it runs on: each part's reference pass runs on its own
    rows, thread and thread count, as its policy pass does, so at the first step (the adapter's B still zero) the
    policy is its reference to the bit: loss ln 2, rewards 0, as TRL's own step gives. (On SmolLM2-135M a reference
    taken over the whole batch put the first loss at 0.7112; the tiny model here does not show that difference.)"""
    kw = {"precision": "bf16", "lora": {"r": 4, "alpha": 8, "dropout": 0.1}, "max_steps": 1}
    first = log_of(train(recipe(tmp_path, tiny, pairs_file, "dpo", **kw)).run_dir)[0]
    assert two_threads == [2]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-7)  # the loss as a float32: 0.6931471824645996
    assert first["rewards/chosen"] == first["rewards/rejected"] == 0.0


def test_a_split_dpo_steps_metrics_are_the_batchs_weighted_by_pairs_or_tokens() -> None:
    """What TRL logs (and a dashboard shows) of a split step: a mean over pairs weighted by the parts' pairs, a mean
    over tokens by the parts' tokens of that kind, the token count set once."""
    from collections import defaultdict

    from workbench.train import row_parallel

    metrics = row_parallel._PartMetrics(2)
    values = [{"rewards/chosen": 1.0, "entropy": 2.0, "logits/rejected": 4.0}, {"rewards/chosen": 4.0, "entropy": 5.0}]
    for i, part in enumerate(values):
        row_parallel._PART.index = i
        for key, value in part.items():
            metrics["train"][key].append(value)
        metrics["train"]["num_tokens"] = [99 + i]  # each part's own running count: replaced by the batch's
    # part 0: one pair, 3 chosen and 1 rejected completion tokens; part 1: two pairs, 2 + 2 chosen, 0 rejected
    masks = [torch.tensor([[0, 1, 1, 1], [0, 1, 0, 0]]), torch.tensor([[0, 1, 1, 0], [0, 1, 1, 0], [0] * 4, [0] * 4])]
    into: dict[str, list[float]] = defaultdict(list)
    split = [{"completion_mask": m} for m in masks]
    row_parallel._merge(into, metrics, split, [(0, 1), (1, 3)], 120)
    assert into["rewards/chosen"] == [pytest.approx((1.0 * 1 + 4.0 * 2) / 3)]  # by pairs
    assert into["entropy"] == [pytest.approx((2.0 * 4 + 5.0 * 4) / 8)]  # by completion tokens
    assert into["logits/rejected"] == [4.0]  # one part only: its value as it is
    assert into["num_tokens"] == [120]
