"""`wb train` for the preference methods, each a TRL trainer (no hand-written DPO or RL loop), driven by the same run
driver as SFT (`session.begin` / `run` / `read_log` / `finish`): same run folder, recipe.yaml, checkpoints, resume,
trainer_log.jsonl, manifest.

| method | TRL (1.16.0)                                  | data                      | reference                     |
|--------|-----------------------------------------------|---------------------------|-------------------------------|
| dpo    | `trl.DPOTrainer`                              | pairs                     | policy, adapter disabled      |
| orpo   | `trl.experimental.orpo.ORPOTrainer`           | pairs                     | none (odds ratio)             |
| simpo  | `trl.experimental.cpo.CPOTrainer`, loss simpo | pairs                     | none (length-normalised)      |
| kto    | `trl.KTOTrainer`                              | unpaired (or pairs split) | policy, adapter disabled      |
| reward | `trl.RewardTrainer`                           | pairs                     | -                             |
| grpo   | `trl.GRPOTrainer`                             | prompts                   | adapter disabled if beta > 0  |

TRL 1.16 has no PPOTrainer (PPO left the library; its maintained RL trainers are GRPO and RLOO), so RL from rewards
is GRPO: the policy samples `num_generations` answers per prompt, a trained reward model and/or a metric of the
registry scores them, and the group-relative advantage trains the policy.

`init_from: runs/sft` loads that run's adapter and keeps training it; TRL then keeps a frozen copy of it as the
reference adapter (the adapter's weights, not a second model). A fresh LoRA policy's reference is the policy with
its adapter disabled. `weights: full` trains every weight; the reference is then a second copy of the base.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench import pairs as pdata
from workbench.errors import WbError
from workbench.evaluate import scorers
from workbench.methods import registry as method_specs
from workbench.methods.spec import MethodSpec
from workbench.models import templates as tdata
from workbench.output import ensure_dir, follow_umask
from workbench.train import guards, hf, lora_linear, methods, preference_head, row_parallel
from workbench.train import preference_prepare as pprep
from workbench.train.recipe import Recipe
from workbench.train.session import (
    Session,
    TrainResult,
    begin,
    bf16_frozen_base,
    finish,
    lighten_steps,
    quiet,
    read_log,
    run,
    save_recipe,
)


def _wb(base: Any) -> Any:
    """A TRL trainer class with wb's CPU bf16 autocast around every loss, the non-finite-loss stop and SFT's save
    hooks (safetensors only; checkpoints that appear only when complete)."""

    class Wb(hf.StagedCheckpoints, hf.SafetensorsSaves, base):
        cpu_autocast: Callable[[], Any] = contextlib.nullcontext

        def autocast_smart_context_manager(self, cache_enabled: bool | None = True) -> Any:
            return self.cpu_autocast()

        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
            model.train()  # as Trainer.training_step does
            count = row_parallel.pair_parts(self, model, inputs)  # DPO's pairs split over threads (CPU)
            if count > 1:
                loss = row_parallel.pair_step(self, model, inputs, num_items_in_batch, count)
            else:
                loss = super().training_step(model, inputs, num_items_in_batch)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise guards.NonFiniteLoss(self.state.global_step + 1, value)
            return loss

    Wb.__name__ = Wb.__qualname__ = f"Wb{base.__name__}"
    return Wb


def _lora_config(recipe: Recipe, task_type: str) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=recipe.lora.r,
        lora_alpha=recipe.lora.alpha,
        lora_dropout=recipe.lora.dropout,
        target_modules=recipe.lora.target_modules,
        task_type=task_type,
        modules_to_save=["score"] if task_type == "SEQ_CLS" else None,
    )


def _load(recipe: Recipe, dtype: Any, choice: Any) -> Any:
    """The policy's base: with `weights: qlora` in 4-bit NF4 (methods.quantization_config), else at `dtype`."""
    from workbench.models.base import load_model

    quant = None
    if recipe.preference.weights == "qlora":
        quant = methods.quantization_config(recipe, dtype, quantized=True)
    head = method_specs.get(recipe.method).head
    return load_model(recipe.model, dtype=dtype, quantization_config=quant, head=head)


def _init_adapter(recipe: Recipe) -> Path:
    init = recipe.preference.init_from
    assert init is not None
    folder = init / "adapter" if (init / "adapter" / "adapter_config.json").is_file() else init
    if not (folder / "adapter_config.json").is_file():
        raise WbError(f"preference.init_from: {init} has no adapter (a finished LoRA run or an adapter folder)")
    return folder


def _policy(session: Session) -> tuple[Any, Any]:
    """(model, peft_config) for the TRL trainer: a fresh LoRA is TRL's to apply (so its reference is the policy with
    the adapter disabled); an init_from adapter is loaded trainable; full weights are made trainable here."""
    recipe, model = session.recipe, session.model
    pref = recipe.preference
    if recipe.gradient_checkpointing:
        model.config.use_cache = False
    if pref.weights == "qlora":  # 4-bit base: norms and head in fp32, inputs pass gradients (as wb's qlora method)
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=recipe.gradient_checkpointing)
    if pref.init_from is not None:
        from workbench.models.base import load_adapter

        return load_adapter(model, _init_adapter(recipe), trainable=True), None
    if pref.weights == "full":
        return methods.apply(model, recipe, "full"), None
    return model, _lora_config(recipe, "SEQ_CLS" if method_specs.get(recipe.method).head == "reward" else "CAUSAL_LM")


def _split(items: list[Any], recipe: Recipe) -> tuple[list[Any], list[Any]]:
    """Hold out val_size of the items (by seed; whole source lines, so a KTO pair's halves stay together)."""
    lines = sorted({it.line for it in items})
    if recipe.eval_data is not None or len(lines) < 10 or recipe.val_size == 0:
        return items, []
    random.Random(recipe.seed).shuffle(lines)
    held = set(lines[: round(len(lines) * recipe.val_size)])
    return [it for it in items if it.line not in held], [it for it in items if it.line in held]


class Prepared:
    """The checked train and validation examples of a preference run, and what the checks left out."""

    def __init__(self, train: pprep.Checked, val: pprep.Checked | None, template: tdata.Template) -> None:
        self.train, self.val, self.template = train, val, template

    def rows(self, checked: pprep.Checked, spec: MethodSpec) -> list[dict[str, Any]]:
        if spec.head == "reward":  # token ids (RewardTrainer would silently drop sequences longer than max_length)
            return [
                {"chosen_ids": ex.prompt_ids + ex.chosen_ids, "rejected_ids": ex.prompt_ids + ex.rejected_ids}
                for ex in checked.pairs
            ]
        if spec.data == "unpaired":
            return [{"prompt": ex.prompt, "completion": ex.completion, "label": ex.label} for ex in checked.unpaired]
        return [{"prompt": ex.prompt, "chosen": ex.chosen, "rejected": ex.rejected} for ex in checked.pairs]


def prepare(recipe: Recipe, tokenizer: Any) -> Prepared:
    """Read, render, tokenise and check the preference data (truncation rules per `preference.truncation`)."""
    if recipe.data is None:
        raise WbError("recipe: data: no preference data given (set data: in the recipe or pass --data FILE)")
    template = tdata.choose_template(tokenizer, recipe.template)
    pref = recipe.preference
    max_len = recipe.max_length
    unpaired = method_specs.get(recipe.method).data == "unpaired"

    def check(path: Path, items: list[Any]) -> pprep.Checked:
        if unpaired:
            return pprep.check_unpaired(
                str(path), tokenizer, template, items, max_len, pref.max_prompt_length, pref.truncation
            )
        return pprep.check_pairs(
            str(path), tokenizer, template, items, max_len, pref.max_prompt_length, pref.truncation
        )

    def read(path: Path) -> list[Any]:
        items: list[Any] = pdata.load_unpaired(path) if unpaired else pdata.load_pairs(path)
        return items[: recipe.max_samples] if path == recipe.data and recipe.max_samples else items

    data, eval_data = one_file(recipe.data), one_file(recipe.eval_data)
    assert data is not None
    train_items, val_items = _split(read(data), recipe)
    if eval_data is not None:
        val_items = read(eval_data)
    train = check(data, train_items)
    val = check(eval_data or data, val_items) if val_items else None
    return Prepared(train, val, template)


def one_file(data: Path | list[Any] | None) -> Path | None:
    """A preference recipe's data file (the recipe refuses source lists for preference methods)."""
    if isinstance(data, list):
        raise WbError("preference methods read one file: data as a list of sources is for SFT methods")
    return data


def _prompt_rows(recipe: Recipe, tokenizer: Any) -> tuple[list[dict[str, Any]], tdata.Template, dict[str, list[int]]]:
    """GRPO's prompts, rendered; a prompt that leaves no room for max_completion_length tokens is refused/dropped."""
    if recipe.data is None:
        raise WbError("recipe: data: no prompts given (set data: in the recipe or pass --data FILE)")
    template = tdata.choose_template(tokenizer, recipe.template)
    pref = recipe.preference
    limit = min(recipe.max_length - pref.max_completion_length, pref.max_prompt_length or recipe.max_length)
    if limit < 1:
        raise WbError(
            f"max_length {recipe.max_length} leaves no room for max_completion_length {pref.max_completion_length}"
        )
    rows: list[dict[str, Any]] = []
    dropped: dict[str, list[int]] = {}
    prompts = one_file(recipe.data)
    assert prompts is not None
    for item in pdata.load_prompts(prompts)[: recipe.max_samples]:
        text = tdata.render_prompt(tokenizer, template, item.prompt)
        if len(tokenizer(text)["input_ids"]) > limit:
            dropped.setdefault(pprep.NO_ROOM, []).append(item.line)
            continue
        rows.append({"prompt": text, "reference": item.reference})
    if dropped and pref.truncation == "refuse":
        lines = dropped[pprep.NO_ROOM]
        raise WbError(
            f"{recipe.data}: {len(lines)} prompt(s) longer than {limit} tokens leave no room for "
            f"{pref.max_completion_length} sampled tokens within max_length {recipe.max_length} (lines "
            + ", ".join(str(n) for n in lines[:8])
            + "); raise max_length, shorten them, or set truncation: drop"
        )
    if not rows:
        raise WbError(f"{recipe.data}: no prompt is left to sample answers for")
    return rows, template, dropped


def metric_reward(name: str) -> Callable[..., list[float]]:
    """A GRPO reward function from a registry metric's per-item scorer (an answer it cannot score gets 0)."""
    score = scorers.scorer(name)
    if score is None:
        raise WbError(
            f"preference.reward_function: {name!r} is not a per-item metric "
            f"(choose one of: {', '.join(scorers.scorable())})"
        )
    from workbench.evaluate.suite import EvalSuite

    suite = EvalSuite(name="reward")

    def reward(prompts: list[str], completions: list[str], reference: list[str] | None = None, **_: Any) -> list[float]:
        refs = reference or [""] * len(completions)
        out = []
        for answer, ref in zip(completions, refs, strict=True):
            value = score(answer, scorers.ItemContext(reference=ref, references=[ref] if ref else [], suite=suite))
            out.append(float(value) if value is not None else 0.0)
        return out

    reward.__name__ = name
    return reward


def _grpo_rewards(recipe: Recipe) -> list[Any]:
    from workbench.evaluate.preference_metrics import RewardScorer

    pref = recipe.preference
    funcs: list[Any] = []
    if pref.reward_model is not None:
        scorer = RewardScorer.load(pref.reward_model, batch_size=recipe.batch_size)

        def reward_model(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
            """Each sampled answer closed as in the reward model's training (end-of-turn, EOS), then scored."""
            close = tdata.completion_text
            texts = [p + close(scorer.tokenizer, scorer.template, c) for p, c in zip(prompts, completions, strict=True)]
            return scorer.score_texts(texts)

        funcs.append(reward_model)
    if pref.reward_function is not None:
        funcs.append(metric_reward(pref.reward_function))
    return funcs


def _dataset(rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(rows)


@dataclass
class _Parts:
    """What every TRL trainer is built from: the run, the policy, the datasets and the common arguments."""

    session: Session
    model: Any
    train_ds: Any
    eval_ds: Any
    grpo_rows: list[dict[str, Any]] | None
    has_val: bool
    common: dict[str, Any]
    kw: dict[str, Any]

    def args(self, config: Any, has_val: bool | None = None, **extra: Any) -> Any:
        s = self.session
        val = self.has_val if has_val is None else has_val
        return hf.training_args(s.recipe, s.run_dir, s.choice, val, config, **{**self.common, **extra})

    def data(self) -> dict[str, Any]:
        return {"train_dataset": self.train_ds, "eval_dataset": self.eval_ds}


def _dpo(p: _Parts) -> Any:
    from trl import DPOConfig, DPOTrainer

    recipe = p.session.recipe
    pref = recipe.preference
    extra: dict[str, Any] = {
        "beta": pref.beta,
        "max_length": recipe.max_length,
        "loss_type": [pref.loss_type or "sigmoid"],
    }
    args = p.args(DPOConfig, **extra)
    trainer = _wb(DPOTrainer)(model=p.model, ref_model=None, args=args, **p.data(), **p.kw)
    preference_head.completion_head(trainer)
    return trainer


def _orpo(p: _Parts) -> Any:
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    recipe = p.session.recipe
    args = p.args(ORPOConfig, beta=recipe.preference.beta, max_length=recipe.max_length)
    return _wb(ORPOTrainer)(model=p.model, args=args, **p.data(), **p.kw)


def _simpo(p: _Parts) -> Any:
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    recipe = p.session.recipe
    pref = recipe.preference
    extra: dict[str, Any] = {"beta": pref.beta, "max_length": recipe.max_length, "loss_type": pref.loss_type or "simpo"}
    extra |= {"simpo_gamma": pref.simpo_gamma, "cpo_alpha": 0.0}
    args = p.args(CPOConfig, **extra)
    return _wb(CPOTrainer)(model=p.model, args=args, **p.data(), **p.kw)


def _kto(p: _Parts) -> Any:
    from trl import KTOConfig, KTOTrainer

    recipe = p.session.recipe
    pref = recipe.preference
    if recipe.batch_size < 2:
        raise WbError("batch_size: KTO estimates its KL term within a batch and needs batch_size 2 or more")
    extra: dict[str, Any] = {"beta": pref.beta, "max_length": recipe.max_length, "loss_type": pref.loss_type or "kto"}
    extra |= {"desirable_weight": pref.desirable_weight, "undesirable_weight": pref.undesirable_weight}
    extra |= {"train_sampling_strategy": "sequential"}  # TRL: the KL completions pair each batch's neighbours
    args = p.args(KTOConfig, **extra)
    trainer = _wb(KTOTrainer)(model=p.model, ref_model=None, args=args, **p.data(), **p.kw)
    preference_head.completion_head(trainer)
    return trainer


def _reward(p: _Parts) -> Any:
    from trl import RewardConfig, RewardTrainer

    p.model.config.pad_token_id = p.session.pad_id
    args = p.args(RewardConfig, max_length=p.session.recipe.max_length)
    return _wb(RewardTrainer)(model=p.model, args=args, **p.data(), **p.kw)


def _grpo(p: _Parts) -> Any:
    from trl import GRPOConfig, GRPOTrainer

    recipe = p.session.recipe
    pref = recipe.preference
    assert p.grpo_rows is not None
    if (recipe.batch_size * recipe.grad_accum) % pref.num_generations:
        raise WbError(
            f"batch_size x grad_accum ({recipe.batch_size} x {recipe.grad_accum}) must be a multiple of "
            f"preference.num_generations {pref.num_generations} (GRPO batches whole groups of answers)"
        )
    extra: dict[str, Any] = {
        "beta": pref.beta,
        "num_generations": pref.num_generations,
        "max_completion_length": pref.max_completion_length,
        "temperature": pref.temperature,
        "loss_type": pref.loss_type or "dapo",
        "log_completions": False,
    }
    args = p.args(GRPOConfig, has_val=False, **extra)
    return _wb(GRPOTrainer)(
        model=p.model,
        reward_funcs=_grpo_rewards(recipe),
        args=args,
        train_dataset=_dataset(p.grpo_rows),
        **p.kw,
    )


# How each TRL trainer a method spec names (`MethodSpec.trainer`, workbench/methods/objectives.py) is built.
TRAINERS: dict[str, Callable[[_Parts], Any]] = {
    "DPOTrainer": _dpo,
    "ORPOTrainer": _orpo,
    "CPOTrainer": _simpo,
    "KTOTrainer": _kto,
    "RewardTrainer": _reward,
    "GRPOTrainer": _grpo,
}


def _build(
    session: Session, prep: Prepared | None, grpo_rows: list[dict[str, Any]] | None, callbacks: list[Any]
) -> Any:
    """The method's TRL trainer over the checked data."""
    recipe, tok = session.recipe, session.tokenizer
    spec = method_specs.get(recipe.method)
    model, peft_config = _policy(session)
    choice = session.choice
    common: dict[str, Any] = {
        "gradient_checkpointing": recipe.gradient_checkpointing,
        "train_sampling_strategy": "random",
    }
    train_ds = eval_ds = None
    if prep is not None:
        train_ds = _dataset(prep.rows(prep.train, spec))
        eval_ds = _dataset(prep.rows(prep.val, spec)) if prep.val is not None else None
    kw: dict[str, Any] = {"processing_class": tok, "callbacks": callbacks, "peft_config": peft_config}
    has_val = prep is not None and prep.val is not None
    parts = _Parts(session, model, train_ds, eval_ds, grpo_rows, has_val, common, kw)
    assert spec.trainer is not None
    trainer = TRAINERS[spec.trainer](parts)
    if choice.device == "cpu":
        trainer.cpu_autocast = choice.autocast
    if recipe.preference.reference == "base" and "ref" in getattr(trainer.model, "peft_config", {}):
        trainer.model.delete_adapter("ref")  # TRL then computes reference log-probs with the adapters disabled
    if hasattr(trainer.model, "peft_config"):
        lora_linear.fuse(trainer.model)  # TRL applied the LoRA: its projections take the fused training path
    # A fresh LoRA over a frozen base (not a 4-bit one, not an adapter to continue, not GRPO, which generates)
    plain_lora = peft_config is not None and recipe.preference.weights == "lora" and spec.data != "prompts"
    bf16_frozen_base(session, trainer.model, plain_lora)
    return trainer


def _save(session: Session, final: Any) -> Path:
    """The trained adapter alone (not TRL's frozen reference copy) or the whole model, with the tokenizer."""
    if hasattr(final, "peft_config"):
        folder = session.run_dir / "adapter"
        final.save_pretrained(folder, safe_serialization=True, selected_adapters=["default"])
    else:
        folder = session.run_dir / "model"
        final.save_pretrained(folder, safe_serialization=True)
    session.tokenizer.save_pretrained(folder)
    follow_umask(folder)
    return folder


def train(
    recipe: Recipe,
    resume: bool = False,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    on_status: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train a preference method per the recipe into `recipe.run_dir` (resume: from its last complete checkpoint)."""
    if recipe.preference.reward_function is not None:
        metric_reward(recipe.preference.reward_function)  # an unknown metric fails before the model loads
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # ORPO and CPO live in trl.experimental (pinned TRL)
    import datasets

    datasets.disable_progress_bars()  # TRL maps its datasets with progress bars; wb prints its own log lines
    session = begin(recipe, resume, on_status, load=_load)
    lighten_steps(session.model)
    tok = session.tokenizer
    prep: Prepared | None = None
    grpo_rows: list[dict[str, Any]] | None = None
    if method_specs.get(recipe.method).data == "prompts":
        grpo_rows, template, dropped = _prompt_rows(recipe, tok)
    else:
        prep = prepare(recipe, tok)
        template, dropped = prep.template, prep.train.dropped
    ensure_dir(session.run_dir)
    save_recipe(recipe, session.run_dir)
    if not resume and session.log_path.exists():
        session.log_path.unlink()
    trainer = _build(session, prep, grpo_rows, hf.callbacks(session.log_path, on_log))
    session.model = trainer.model
    session.trainable, session.total = methods.count_parameters(trainer.model)
    quiet(trainer)
    output, train_cpu = run(session, trainer)
    folder = _save(session, trainer.model)
    log = read_log(session)
    runtime = float(output.metrics.get("train_runtime", 0.0)) or 1e-9
    seen = next((int(r["num_tokens"]) for r in reversed(log) if isinstance(r.get("num_tokens"), int | float)), None)
    if prep is not None:
        n_train = len(prep.train.pairs or prep.train.unpaired)
        n_val = len((prep.val.pairs or prep.val.unpaired) if prep.val else [])
        per_epoch = sum(ex.tokens for ex in (prep.train.pairs or prep.train.unpaired))
        if seen is None:  # trainers that log no token count (ORPO, SimPO): the epochs trained times the data
            seen = round(per_epoch * float(trainer.state.epoch or 0))
    else:
        assert grpo_rows is not None
        n_train, n_val, per_epoch = len(grpo_rows), 0, 0
    fields: dict[str, Any] = {
        "template": tdata.template_for_run(recipe.template, template, session.run_dir),
        "template_sha256": tdata.template_fingerprint(session.tokenizer, template),
        "examples": {"train": n_train, "val": n_val},
        "tokens": {"all_per_epoch": per_epoch, "seen": seen},
        "tokens_per_second": round(seen / runtime, 1) if seen is not None else None,
        "preference": {
            "trainer": type(trainer).__bases__[-1].__name__,  # the TRL trainer wb's class is built on
            "reference": _reference(recipe, trainer),
            "dropped": {reason: len(lines) for reason, lines in sorted(dropped.items())},
            "dropped_lines": {reason: lines for reason, lines in sorted(dropped.items())},
            "weights": str(folder.name),
        },
    }
    warnings = [
        f"{len(lines)} record(s) dropped: {reason} (truncation: drop)" for reason, lines in sorted(dropped.items())
    ]
    manifest = finish(session, trainer, output, train_cpu, fields, {}, warnings)
    return TrainResult(session.run_dir, manifest, log, warnings)


def _reference(recipe: Recipe, trainer: Any) -> str:
    reference = method_specs.get(recipe.method).reference
    if reference == "none" or (reference == "unless beta 0" and recipe.preference.beta == 0):
        return "none"
    if getattr(trainer, "ref_model", None) is not None:
        return "copy of the base model"
    if "ref" in getattr(trainer.model, "peft_config", {}):
        return f"frozen copy of the adapter of {recipe.preference.init_from}"
    return "the policy with its adapter disabled (the base model)"
