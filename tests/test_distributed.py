"""`wb train` across processes on CPU (gloo), under torchrun and accelerate launch, with DDP and with FSDP: the same
losses as one process with the global batch, one writer of the run folder, resumable checkpoints, a whole adapter.

Each launch starts two Python processes that load torch and transformers (about a minute here), so the test is
marked slow.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, write_jsonl

pytest.importorskip("torch")
pytest.importorskip("peft")

from workbench.models.base import tiny_model_dir
from workbench.train.recipe import Recipe
from workbench.train.trainer import train

TORCHRUN = Path(sys.executable).with_name("torchrun")
ACCELERATE = Path(sys.executable).with_name("accelerate")
RECORDS = [
    {"instruction": f"Secret word number {i}? " + "Think. " * (i % 5), "input": "", "output": word}
    for i, word in enumerate(["apple", "banana", "cherry", "梨子", "grape", "lemon", "mango", "桃子"] * 2)
]
# Losses of the 2-process run against the 1-process run with the global batch: the same examples in every step;
# only the order of float sums differs (gradients all-reduced over gloo, token counts gathered), about 1e-6 here.
TOLERANCE = 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fields(tmp: Path, tiny: Path, **kw: Any) -> dict[str, Any]:
    tmp.mkdir(parents=True, exist_ok=True)
    return {
        "name": "d",
        "model": str(tiny),
        "data": str(write_jsonl(tmp / "train.jsonl", RECORDS)),
        "output_dir": str(tmp / "runs"),
        "val_size": 0,
        "max_length": 128,
        "packing": False,
        "max_steps": 4,
        "save_steps": 2,
        "lr": 5e-3,
        "logging_steps": 1,
        "warmup_ratio": 0,
        "scheduler": "constant",
        "precision": "fp32",
        "sample_losses": True,
        "lora": {"dropout": 0.0},  # dropout masks are drawn per process: off, so the runs can be compared
        **kw,
    }


def _launch(tmp: Path, *args: str, launcher: str = "torchrun") -> subprocess.CompletedProcess[str]:
    """`wb ARGS` on 2 CPU processes, started by torchrun or by accelerate launch (its torchrun launcher)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    port = str(_free_port())
    if launcher == "torchrun":
        cmd = [str(TORCHRUN), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", port]
    else:
        cmd = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
        cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port]
    cmd += [str(REPO / "tests" / "record_writes.py"), str(tmp / "runs"), str(tmp / "writes-"), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _curve(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (run_dir / "trainer_log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def _weight_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".pkl", ".safetensors"}}


def _same_weights(one: Path, launched: Path, folder: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tensors of `folder/name` in the one-process run and in the launched run, after checking that the launched
    run holds every tensor of the one-process run at its full shape and nearly its value (a tied output head may be
    written once more, as the same tensor as the embeddings)."""
    from safetensors import safe_open

    tensors = []
    for d in (one, launched):
        with safe_open(str(d / folder / name), "pt") as f:
            tensors.append({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118
    assert tensors[0] and tensors[0].keys() <= tensors[1].keys()
    assert all(tensors[0][k].shape == tensors[1][k].shape for k in tensors[0])
    assert max(float((tensors[0][k] - tensors[1][k]).abs().max()) for k in tensors[0]) < 1e-3
    return tensors[0], tensors[1]


def _kill_after_step_2_and_resume(done: Path, killed: Path, curve: list[tuple[int, float]]) -> None:
    """Copy the finished 2-process launch folder `done` as if killed after its step-2 checkpoint (no checkpoint-4,
    no manifest, the log cut at step 2), resume it on 2 processes, and check it reaches `curve` again."""
    shutil.copytree(done, killed, ignore=shutil.ignore_patterns("writes-*"))
    kd = killed / "runs" / "d"
    shutil.rmtree(kd / "checkpoints" / "checkpoint-4")
    (kd / "manifest.json").unlink()
    log = [x for x in (kd / "trainer_log.jsonl").read_text().splitlines() if json.loads(x).get("step", 0) <= 2]
    (kd / "trainer_log.jsonl").write_text("\n".join(log) + "\n")
    saved = json.loads(json.dumps(__import__("yaml").safe_load((kd / "recipe.yaml").read_text())))
    saved["output_dir"] = str(killed / "runs")
    (kd / "recipe.yaml").write_text(json.dumps(saved))
    _launch(killed, "train", "--resume", str(kd))
    assert [s for s, _ in _curve(kd)] == [1, 2, 3, 4]
    assert all(abs(x - y) <= TOLERANCE for (_, x), (_, y) in zip(_curve(kd), curve, strict=True))
    assert json.loads((kd / "manifest.json").read_text())["global_step"] == 4


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The tiny model and its one-process run at batch 4."""
    root = tmp_path_factory.mktemp("one")
    tiny = tiny_model_dir(root / "tiny")
    return tiny, train(Recipe.model_validate(_fields(root / "one", tiny, batch_size=4)))


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_global_batch_and_resume(
    tmp_path: Path, baseline: tuple[Path, Any]
) -> None:
    tiny, one = baseline

    two_dir = tmp_path / "two"
    recipe = two_dir / "recipe.yaml"
    fields = _fields(two_dir, tiny, batch_size=2)
    recipe.write_text(json.dumps(fields), encoding="utf-8")
    launched = _launch(two_dir, "train", str(recipe))
    run_dir = two_dir / "runs" / "d"

    # The same loss, step by step, as one process at batch 4.
    a, b = _curve(one.run_dir), _curve(run_dir)
    assert [s for s, _ in a] == [s for s, _ in b] == [1, 2, 3, 4]
    assert all(abs(x - y) <= TOLERANCE for (_, x), (_, y) in zip(a, b, strict=True)), (a, b)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["global_step"] == 4
    assert manifest["examples"]["train"] == len(RECORDS)
    # Per-example losses: each process computed half, rank 0 gathered them; the same as one process's.
    rows = [{r["line"]: r["loss"] for r in map(json.loads, (d / "sample_losses.jsonl").read_text().splitlines())}
            for d in (one.run_dir, run_dir)]  # fmt: skip
    assert rows[0].keys() == rows[1].keys() and len(rows[0]) == len(RECORDS)
    assert all(abs(rows[0][k] - rows[1][k]) <= 1e-3 for k in rows[0])
    # Token counts cover both processes: the same as the one-process run's.
    assert manifest["tokens"]["trained_seen"] == one.manifest["tokens"]["trained_seen"]

    # Rank 0 wrote the run folder; rank 1 wrote nothing (and said nothing).
    wrote0 = (two_dir / "writes-0.txt").read_text().splitlines()
    wrote1 = (two_dir / "writes-1.txt").read_text().splitlines()
    assert any(p.endswith("trainer_log.jsonl") for p in wrote0) and any("manifest.json" in p for p in wrote0)
    assert any("checkpoint-2" in p for p in wrote0)
    # Trainer makes each checkpoint folder on every rank (each saves its RNG state there, natively: not seen here).
    assert [p for p in wrote1 if not Path(p).name.startswith("checkpoint-")] == []
    assert {Path(p).name for p in wrote1} <= {"checkpoint-2", "checkpoint-4"}
    assert launched.stdout.count("done: 4 steps") == 1
    assert {p.name for p in run_dir.iterdir()} == {
        "adapter", "checkpoints", "loss.svg", "manifest.json", "recipe.yaml", "sample_losses.jsonl", "trainer_log.jsonl",
    }  # fmt: skip

    # A run killed after its step-2 checkpoint resumes on two processes to the same curve.
    _kill_after_step_2_and_resume(two_dir, tmp_path / "killed", b)


@pytest.mark.slow
def test_fsdp_under_accelerate_launch_trains_like_one_process_and_saves_the_whole_adapter(
    tmp_path: Path, baseline: tuple[Path, Any]
) -> None:
    tiny, one = baseline
    fields = _fields(
        tmp_path, tiny, batch_size=2, fsdp={"config": {"transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]}}
    )
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps(fields), encoding="utf-8")
    launched = _launch(tmp_path, "train", str(recipe), launcher="accelerate")
    run_dir = tmp_path / "runs" / "d"
    a, b = _curve(one.run_dir), _curve(run_dir)
    assert [s for s, _ in b] == [1, 2, 3, 4]
    assert all(abs(x - y) <= TOLERANCE for (_, x), (_, y) in zip(a, b, strict=True)), (a, b)
    # The adapter is gathered from both shards: every tensor at its full shape and nearly the value the one-process
    # run saved, and no other.
    alone, gathered = _same_weights(one.run_dir, run_dir, "adapter", "adapter_model.safetensors")
    assert alone.keys() == gathered.keys()
    assert _weight_files(run_dir / "adapter") == {"adapter_model.safetensors"}  # no pickles beside the weights
    assert json.loads((run_dir / "manifest.json").read_text())["processes"] == 2
    assert launched.stdout.count("done: 4 steps") == 1
    assert (tmp_path / "writes-1.txt").exists()  # the second process ran, and wrote no file of the run
    assert [p for p in (tmp_path / "writes-1.txt").read_text().splitlines() if "checkpoint-" not in p] == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "method"),
    [(3, "lora"), (2, "full")],
    ids=["zero3-lora", "zero2-full"],
)
def test_deepspeed_zero_on_two_cpu_processes_trains_like_one_process_and_saves_the_whole_weights(
    tmp_path: Path, baseline: tuple[Path, Any], stage: int, method: str
) -> None:
    """The shipped ZeRO configs (`pipelines/deepspeed-zero{2,3}.json`) under torchrun on CPU: DeepSpeed's CPU
    accelerator over gloo, its 'auto' values filled by Trainer. The losses equal one process's with the global batch;
    the adapter or model is gathered whole, in safetensors only; a ZeRO-3 run killed after step 2 resumes."""
    pytest.importorskip("deepspeed")
    tiny, one = baseline
    if method != "lora":
        one = train(Recipe.model_validate(_fields(tmp_path / "one", tiny, batch_size=4, method=method)))
    config = REPO / "pipelines" / f"deepspeed-zero{stage}.json"
    fields = _fields(tmp_path / "ds", tiny, batch_size=2, method=method, deepspeed=str(config))
    recipe = tmp_path / "ds" / "recipe.yaml"
    recipe.write_text(json.dumps(fields), encoding="utf-8")
    launched = _launch(tmp_path / "ds", "train", str(recipe))
    run_dir = tmp_path / "ds" / "runs" / "d"
    a, b = _curve(one.run_dir), _curve(run_dir)
    assert [s for s, _ in b] == [1, 2, 3, 4]
    assert all(abs(x - y) <= TOLERANCE for (_, x), (_, y) in zip(a, b, strict=True)), (a, b)
    assert launched.stdout.count("done: 4 steps") == 1
    assert "Setting accelerator to CPU" not in launched.stdout + launched.stderr  # wb names the accelerator
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["global_step"] == 4

    folder, name = ("adapter", "adapter_model.safetensors") if method == "lora" else ("model", "model.safetensors")
    assert _weight_files(run_dir / folder) == {name}  # no pickled training arguments beside the weights
    _same_weights(one.run_dir, run_dir, folder, name)

    if stage == 3:  # ZeRO-3 checkpoints hold every process's partitions: a killed run resumes from them
        _kill_after_step_2_and_resume(tmp_path / "ds", tmp_path / "killed", b)
