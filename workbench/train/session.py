"""The run driver every training method shares (SFT here and in `trainer.py`, TRL's objectives in
`preference.py`), in three parts: `begin` (checks, precision, model and tokenizer loaded, the method applied, the
run folder started), the method's own Trainer run (`run`), and `finish` (the weights saved, the loss plot, the
manifest).

A run folder `runs/<name>/` gets: `recipe.yaml` (the resolved recipe, so `--resume` needs nothing else),
`checkpoints/` (Trainer checkpoints, safetensors), `adapter/` (a PEFT adapter, or wb's bottleneck adapter for
method `adapter`) or `model/` (freeze/full/galore), `tensorboard/` (with `report_to: [tensorboard]`),
`trainer_log.jsonl`, `loss.svg`, `sample_losses.jsonl` and `manifest.json` (written and read through
`workbench.runfile.folder.RunFolder`, the one owner of these files).
"""

from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench import precision
from workbench.errors import WbError
from workbench.manifest import build_manifest
from workbench.methods import registry
from workbench.methods.lora import MUTATING_INITS
from workbench.models import adapters
from workbench.models.losses import sample_losses
from workbench.output import atomic_write, ensure_dir, follow_umask
from workbench.quiet import quiet_libraries
from workbench.runfile.folder import RunFolder
from workbench.train import attention, distributed, glu, guards, hf, methods, rmsnorm
from workbench.train.memory import MMAP_THRESHOLD_BYTES, return_freed_memory, trim_heap
from workbench.train.plot import loss_svg
from workbench.train.recipe import Recipe
from workbench.train.task_eval import TaskEval, records_for_eval

LORA_INIT_DIR = "lora_init"  # a PiSSA/OLoRA adapter's initial state, removed once the converted adapter is saved


def _load_dtype(choice: precision.Choice) -> Any:
    """The dtype the base weights load in: on a GPU the training precision (Trainer's own mixed precision); on a
    CPU always fp32, with bf16 as autocast around the forward pass (master weights stay fp32)."""
    import torch

    if choice.device == "cpu":
        return torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[choice.name]


@dataclass
class TrainResult:
    run_dir: Path
    manifest: dict[str, Any]
    log: list[dict[str, Any]]
    warnings: list[str]


@dataclass
class Session:
    """What `begin` set up for one run: the model with its method applied, the tokenizer, the precision."""

    recipe: Recipe
    run_dir: Path
    tokenizer: Any
    model: Any
    choice: precision.Choice
    checkpoint: str | None
    started: float
    log_path: Path
    trainable: int
    total: int
    mmap_threshold: int | None
    resume: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)


def save_recipe(recipe: Recipe, run_dir: Path) -> None:
    RunFolder(run_dir).write_recipe(json.loads(recipe.model_dump_json()))


def begin(
    recipe: Recipe,
    resume: bool = False,
    on_status: Callable[[str], None] | None = None,
    load: Callable[[Recipe, Any, precision.Choice], Any] | None = None,
) -> Session:
    """Checks, seed, precision, tokenizer and model (`load(recipe, dtype, choice)` where a method loads another
    head), the method applied, and the run folder started (its recipe written, a stale log removed)."""
    from workbench.models.base import load_model, load_tokenizer
    from workbench.models.stack import deepspeed_on_cpu

    quiet_libraries()
    deepspeed_on_cpu()
    started = time.time()
    import torch
    from transformers import set_seed

    set_seed(recipe.seed)
    hf.check_dashboards(recipe)
    hf.check_optimizer(recipe)
    distributed.start()  # launched by torchrun / accelerate: join the process group before the run folder is touched
    # On CPU the activations live in the process heap; release_freed_memory keeps it from fragmenting (slower steps).
    released = recipe.release_freed_memory and not torch.cuda.is_available() and return_freed_memory()
    run_dir = recipe.run_dir
    checkpoint = str(guards.check_resume(recipe, on_status)) if resume else None
    if not resume and RunFolder(run_dir).finished():
        raise WbError(f"{run_dir}: a finished run is already there; choose another name or remove it")
    tokenizer = load_tokenizer(recipe.model, on_status)
    spec = registry.get(recipe.method)
    quantized = spec.quantized or (spec.family == "preference" and recipe.preference.weights == "qlora")
    choice = precision.for_training(recipe.precision, quantized)
    if on_status is not None:
        on_status(f"precision {choice.name} ({choice.reason})")
    dtype = _load_dtype(choice)
    if load is not None:
        model = load(recipe, dtype, choice)
    else:
        quant = methods.quantization_config(recipe, dtype)
        model = load_model(recipe.model, dtype=dtype, quantization_config=quant)
    return Session(
        recipe=recipe,
        run_dir=run_dir,
        tokenizer=tokenizer,
        model=model,
        choice=choice,
        checkpoint=checkpoint,
        started=started,
        log_path=RunFolder(run_dir).log_path,
        trainable=0,
        total=0,
        mmap_threshold=MMAP_THRESHOLD_BYTES if released else None,
        resume=resume,
    )


def lighten_steps(model: Any) -> None:
    """What wb changes in a loaded model's forward pass for training, the same numbers with less work and memory
    (both drivers, SFT and TRL): on a CPU each sequence of a batch attended on its own (`attention`), the gated
    MLP keeping one activation fewer for the backward pass (`glu`), and a frozen RMSNorm its output, not its input
    (`rmsnorm`)."""
    attention.use(model)
    glu.fuse(model)
    rmsnorm.fuse(model)


def bf16_frozen_base(session: Session, model: Any, plain_lora: bool) -> int:
    """Under bf16 autocast on a CPU, a plain LoRA run holds its whole frozen base in bf16 — linear weights,
    embeddings (and the head tied to them), norms — with the adapters in fp32: what LLaMA-Factory, Axolotl and TRL's
    scripts train in when asked for bf16 (the model loaded in bf16, the adapters upcast), and what wb trains in on a
    GPU. Returns how many parameters it cast.

    With fp32 weights, autocast casts every frozen weight again at each forward pass (its cast cache holds weights
    that require grad only) and keeps the copies for backward, and the residual stream, the norms' outputs and
    PEFT's LoRA inputs stay fp32, each projection casting its own bf16 copy of its input. Held in bf16, the
    activations are bf16 throughout (the norms still normalise in fp32, the loss is still computed in fp32,
    `loss.HeadLogProbs`), the projections share their input and the LoRA layers take their fused path
    (`lora_linear`). SmolLM2-135M, LoRA r16 all-linear, 2 x 512 packed tokens, one core of an AMX Xeon: steps 3.65
    -> 2.9 s, peak RSS over 10 steps 2,749 -> 1,933 MB; the losses are those of the fp32-residual run to about
    three digits (bf16 rounding of the residual stream; tested).

    Not where the base weights enter anything but a product, a lookup or a norm: DoRA, PiSSA/OLoRA (whose
    initialisation moves part of each base weight into the adapter, and whose saved adapter is computed from it), a
    4-bit base; nor a sharded model. Adapter weights that do not train (a reference adapter) stay fp32.
    `plain_lora`: the caller's word that `model` trains a plain LoRA adapter over its frozen base (SFT:
    `MethodSpec.bf16_frozen_base`; TRL: a fresh LoRA)."""
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    recipe, choice = session.recipe, session.choice
    if (
        choice.device != "cpu"
        or choice.name != "bf16"
        or not plain_lora
        or recipe.lora.init in MUTATING_INITS
        or sharded(recipe)
    ):
        return 0
    adapters = {
        id(p)
        for m in model.modules()
        if isinstance(m, BaseTunerLayer)
        for name in m.adapter_layer_names
        for p in getattr(m, name).parameters()
    }
    frozen = [
        p for p in model.parameters() if not p.requires_grad and p.dtype == torch.float32 and id(p) not in adapters
    ]
    for p in frozen:
        p.data = p.data.to(torch.bfloat16)
    return len(frozen)


def apply_method(session: Session) -> None:
    """Gradient checkpointing and the recipe's method on the loaded model; the run folder started."""
    recipe, model = session.recipe, session.model
    if recipe.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()  # frozen embeddings (adapters) must still pass gradients back
        model.config.use_cache = False
    session.model = methods.apply(model, recipe)
    session.trainable, session.total = methods.count_parameters(session.model)
    if distributed.is_main():  # one writer; the other processes wait until the folder is there
        ensure_dir(session.run_dir)
        save_recipe(recipe, session.run_dir)
        if not session.resume and session.log_path.exists():
            session.log_path.unlink()
    if registry.get(recipe.method).takes_lora and recipe.lora.init in MUTATING_INITS:
        # PiSSA / OLoRA moved part of each base weight into the adapter: its initial state is kept, so the final
        # adapter can be saved as the difference, a plain LoRA over the unchanged base (PEFT's conversion).
        init = session.run_dir / LORA_INIT_DIR
        if distributed.is_main():
            if init.exists():
                shutil.rmtree(init)
            session.model.peft_config["default"].init_lora_weights = True
            session.model.save_pretrained(init, safe_serialization=True)
            session.model.peft_config["default"].init_lora_weights = recipe.lora.init
        session.extra["lora_init"] = init
    distributed.barrier()


def quiet(trainer: Any) -> None:
    """wb prints its own log lines (on_log): Trainer's printer and progress callbacks go."""
    from transformers import PrinterCallback, ProgressCallback

    for noisy in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(noisy)


def run(session: Session, trainer: Any) -> tuple[Any, float]:
    """`trainer.train()` from the session's checkpoint; a non-finite loss is one line naming the step."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    cpu_started = time.process_time()
    try:
        output = trainer.train(resume_from_checkpoint=session.checkpoint)
    except guards.NonFiniteLoss as nan:
        raise WbError(guards.non_finite_message(session.run_dir, nan)) from None
    return output, time.process_time() - cpu_started


def sharded(recipe: Recipe) -> bool:
    """FSDP or DeepSpeed: no process holds the whole model, so saving and forward passes take every process."""
    return recipe.fsdp is not None or recipe.deepspeed is not None


def save_weights(session: Session, final: Any, trainer: Any = None) -> None:
    """The adapter (PEFT methods, bottleneck adapters) or the whole model, with the tokenizer, in safetensors,
    written by the main process. A sharded model (`trainer` given) is gathered by every process through
    `Trainer.save_model`."""
    spec = registry.get(session.recipe.method)
    folder = session.run_dir / spec.saves
    if trainer is not None and sharded(session.recipe):
        trainer.save_model(str(folder))  # collective: each process hands its shards, rank 0 writes (no pickle)
    elif not distributed.is_main():
        pass
    elif spec.params == "bottleneck":
        adapters.save(final, folder)
    elif "lora_init" in session.extra:
        init = session.extra["lora_init"]
        with warnings.catch_warnings():  # PEFT warns that PiSSA changed the base: the conversion undoes that
            warnings.simplefilter("ignore", UserWarning)
            final.save_pretrained(folder, safe_serialization=True, path_initial_model_for_weight_conversion=str(init))
        shutil.rmtree(init, ignore_errors=True)
    else:
        final.save_pretrained(folder, safe_serialization=True)
    if distributed.is_main():
        session.tokenizer.save_pretrained(folder)
        follow_umask(folder)


def release_training_state(session: Session, trainer: Any) -> None:
    """After the steps and the save: the optimiser, its schedule, the gradients and the data loaders go, and the
    freed heap goes back to the system (`trim_heap`), so the per-example loss pass does not stack its memory on the
    steps' leftovers. A sharded model keeps its accelerator state (its forward passes stay collective)."""
    import gc

    if sharded(session.recipe):
        return
    trainer.accelerator.free_memory()
    trainer.optimizer = trainer.lr_scheduler = None
    trainer.model.zero_grad(set_to_none=True)
    gc.collect()
    trim_heap()


def read_log(session: Session) -> list[dict[str, Any]]:
    """trainer_log.jsonl's rows; `loss.svg` drawn from them (by the main process)."""
    folder = RunFolder(session.run_dir)
    log = folder.log_rows()
    if not distributed.is_main():
        return log
    with atomic_write(folder.loss_curve_path) as f:
        f.write(loss_svg(log).encode())
    return log


def input_files(recipe: Recipe) -> dict[str, Path]:
    """The recipe's data files for the manifest: `data` and `eval_data`, or `data[<name>]` per source of a mixture."""
    from workbench.train.prepare import sources_of

    out: dict[str, Path] = {}
    if isinstance(recipe.data, Path) and not recipe.replay:
        out["data"] = recipe.data
    elif recipe.data is not None:
        out.update({f"data[{s.label}]": s.path for s in sources_of(recipe)})
    if isinstance(recipe.eval_data, Path):
        out["eval_data"] = recipe.eval_data
    elif recipe.eval_data is not None:
        out.update({f"eval_data[{e.label}]": e.path for e in recipe.eval_data})
    return out


def finish(
    session: Session,
    trainer: Any,
    output: Any,
    train_cpu: float,
    fields: dict[str, Any],
    outputs: dict[str, Path],
    warnings: list[str],
) -> dict[str, Any]:
    """The manifest: what every method records (inputs, config, precision, parameters, steps, losses, memory,
    time), plus the method's own `fields`; validated against the run schema and written last."""
    import torch

    recipe = session.recipe
    runtime = float(output.metrics.get("train_runtime", 0.0)) or 1e-9
    manifest = build_manifest(
        command="train",
        started=session.started,
        inputs=input_files(recipe),
        outputs={"trainer_log": session.log_path, **outputs},
        config=json.loads(recipe.model_dump_json()),
        seed=recipe.seed,
    )
    manifest.update(
        {
            "model": recipe.model,
            "method": recipe.method,
            **session.choice.record(),
            "malloc_mmap_threshold": session.mmap_threshold,
            "trainable_parameters": session.trainable,
            "total_parameters": session.total,
            **fields,
            "train_runtime_seconds": round(runtime, 2),
            "train_cpu_seconds": round(train_cpu, 1),
            "global_step": output.global_step,
            "train_loss": output.training_loss,
            "best_checkpoint": trainer.state.best_model_checkpoint,
            **_best(recipe, trainer),
            "gpu_peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)
            if torch.cuda.is_available()
            else None,
            "warnings": warnings,
        }
    )
    if not math.isfinite(output.training_loss):
        manifest["warnings"].append("training loss is not finite: lower lr or check the data")
    RunFolder(session.run_dir).write_manifest(manifest)  # checked against the run schema: typed, finite numbers
    return manifest


def source_counts(sources: dict[str, dict[str, Any]], epochs_run: float) -> dict[str, dict[str, Any]]:
    """Each source's part of the mixture, with the examples of it seen over the epochs the run trained."""
    return {
        name: {**s, "epochs_run": round(epochs_run, 4), "seen": round(s["per_epoch"] * epochs_run)}
        for name, s in sources.items()
    }


def last_eval_losses(log: list[dict[str, Any]], names: list[str]) -> dict[str, float]:
    """The last logged eval loss of each source (`eval_<name>_loss` rows of trainer_log.jsonl)."""
    out: dict[str, float] = {}
    for row in log:
        for name in names:
            if f"eval_{name}_loss" in row:
                out[name] = row[f"eval_{name}_loss"]
    return out


def task_eval(session: Session, prepared: Any, warnings: list[str]) -> TaskEval | None:
    """The recipe's eval_metrics as a TaskEval over the first eval_generate_limit validation records, or None."""
    recipe = session.recipe
    if not recipe.eval_metrics:
        return None
    records = records_for_eval(prepared.val_records, recipe.eval_generate_limit) if prepared.val else []
    if not records:
        warnings.append(
            f"eval_metrics {', '.join(recipe.eval_metrics)}: no validation records with an instruction and an answer "
            "(set eval_data or val_size): the metrics are not computed"
        )
        return None
    from workbench.models.generate import GenerationCache

    return TaskEval(
        records=records,
        metrics=list(recipe.eval_metrics),
        tokenizer=session.tokenizer,
        template=prepared.template,
        base=recipe.model,
        precision=session.choice.name,
        max_new_tokens=recipe.eval_max_new_tokens,
        batch_size=max(recipe.batch_size, 8),
        cache=GenerationCache(),
    )


def _best(recipe: Recipe, trainer: Any) -> dict[str, Any]:
    """What picked the best checkpoint and its value, and the best eval loss either way (from the log history)."""
    losses = [float(h["eval_loss"]) for h in trainer.state.log_history if "eval_loss" in h]
    name, _ = hf.best_metric(recipe)
    return {
        "metric_for_best": name,
        "best_metric": trainer.state.best_metric,
        "best_eval_loss": min(losses) if losses else None,
    }


def per_example_losses(session: Session, final: Any, examples: list[Any]) -> list[float] | None:
    """Each training example's loss under the final weights (on the main process; None on the others).

    Across processes each computes every N-th example and the main process gathers them; a sharded model's forward
    pass is collective, so there every process goes through all examples in step."""
    recipe, pad_id, choice = session.recipe, session.pad_id, session.choice
    world, rank = distributed.world_size(), distributed.rank()
    if world == 1 or sharded(recipe):
        losses = sample_losses(final, examples, pad_id, recipe.batch_size, choice)
        return losses if distributed.is_main() else None
    parts = distributed.gather_to_main(sample_losses(final, examples[rank::world], pad_id, recipe.batch_size, choice))
    if parts is None:
        return None
    return [parts[i % world][i // world] for i in range(len(examples))]
