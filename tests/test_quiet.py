"""No line from a library reaches the user: every model command, run in a fresh process (libraries log to the real
stderr there), prints wb's own lines only. The processes run as on a CPU with AVX512-BF16 as far as bitsandbytes
can tell (`sim_avx512bf16/sitecustomize.py`): there its import looks a kernel up on the Hugging Face kernel hub and
logs two lines when that fails, which is what an AMX Xeon printed in every command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, write_jsonl

pytest.importorskip("torch")
pytest.importorskip("peft")

from workbench.models.base import tiny_model_dir
from workbench.train.recipe import Recipe
from workbench.train.trainer import train

SIMULATE_AVX512_BF16 = Path(__file__).resolve().parent / "sim_avx512bf16"
RECORDS = [
    {"instruction": f"What is the secret word number {i}?", "input": "", "output": word}
    for i, word in enumerate(["apple", "梨子", "grape", "桃子"])
]
TABLE = ("┏", "┃", "┡", "│", "└", "╭", "╰")
# wb's own plain progress lines in a pipe: `label: done/total` and `train: still working (N s)`, every 5 s at most
PROGRESS = re.compile(r"[^:]+: [\d,]+/[\d,]+|(train|eval): still working \(\d+ s\)")


def _recipe(root: Path, tiny: Path, **kw: object) -> Recipe:
    data = write_jsonl(root / "train.jsonl", RECORDS)
    fields = {"name": "t", "model": str(tiny), "data": data, "output_dir": root / "runs", "val_size": 0}
    fields |= {"max_length": 64, "max_steps": 3, "batch_size": 2, "logging_steps": 1, **kw}
    return Recipe.model_validate(fields)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny: Path) -> Path:
    return train(_recipe(tmp_path_factory.mktemp("quiet"), tiny)).run_dir


def _wb(cwd: Path, *args: str, stdin: str = "") -> tuple[list[str], list[str]]:
    """`wb ARGS` in a fresh process as bitsandbytes sees an AVX512-BF16 CPU: its stdout and stderr lines."""
    env = {**os.environ, "PYTHONPATH": f"{SIMULATE_AVX512_BF16}{os.pathsep}{REPO}", "OMP_NUM_THREADS": "1"}
    for name in ("DS_ACCELERATOR", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.pop(name, None)  # wb sets them itself
    done = subprocess.run(
        [sys.executable, "-m", "workbench.cli", *args],
        capture_output=True, text=True, env=env, cwd=cwd, input=stdin, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return [x for x in done.stdout.splitlines() if x.strip()], [x for x in done.stderr.splitlines() if x.strip()]


def test_the_simulation_makes_bitsandbytes_announce_its_kernel_lookup(tmp_path: Path) -> None:
    """Without wb's silencing, importing peft under the simulation prints the lines an AMX Xeon printed: the test
    below would catch them."""
    pytest.importorskip("bitsandbytes")
    env = {**os.environ, "PYTHONPATH": str(SIMULATE_AVX512_BF16), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", "import peft"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert "Failed to load CPU gemm_4bit_forward from kernels-community" in done.stderr


def test_wb_train_prints_only_its_own_lines(tmp_path: Path, tiny: Path) -> None:
    """Also with checkpoints written within a second of each other (Trainer's mtime note) and DeepSpeed installed."""
    r = _recipe(tmp_path, tiny, save_steps=1, save_total_limit=1)
    (tmp_path / "recipe.yaml").write_text(r.model_dump_json(), encoding="utf-8")
    stdout, stderr = _wb(tmp_path, "train", str(tmp_path / "recipe.yaml"))
    own = ("training ", "precision ", "step ", "done: ")
    assert [x for x in stdout + stderr if not x.startswith(own) and not PROGRESS.fullmatch(x)] == []
    assert any(x.startswith("done: 3 steps") for x in stdout + stderr)


def test_wb_eval_prints_only_its_own_lines(tmp_path: Path, run: Path) -> None:
    data = write_jsonl(tmp_path / "eval.jsonl", RECORDS)
    stdout, stderr = _wb(tmp_path, "eval", str(run), "--data", str(data), "--no-probes", "--max-new-tokens", "4")
    own = (*TABLE, "task (", "warning: ", "wrote ")
    assert [x for x in stdout + stderr if not x.startswith(own) and not PROGRESS.fullmatch(x)] == []
    assert any(x.startswith("wrote ") for x in stdout + stderr)


def test_wb_generate_and_chat_print_only_answers_and_their_own_lines(tmp_path: Path, run: Path) -> None:
    stdout, stderr = _wb(tmp_path, "generate", str(run), "What is the secret word number 1?", "--max-new-tokens", "4")
    assert stderr == []  # stdout holds the answer alone (a random tiny model's: any text, even blank or two lines)
    stdout, stderr = _wb(tmp_path, "chat", str(run), "--max-new-tokens", "4", stdin="hello\n/quit\n")
    assert stderr == ["adapters: t; active: t. /adapter NAME, /base, /reset, /quit"]
    assert stdout[0].startswith("t> ")


def test_wb_export_and_score_print_only_their_own_lines(tmp_path: Path, run: Path, tiny: Path) -> None:
    stdout, stderr = _wb(tmp_path, "export", str(run), "-o", str(tmp_path / "merged"), "--merge")
    assert [x.split(" into ")[0] for x in stderr] == [f"merging {run / 'adapter'}"]
    assert len(stdout) == 1 and stdout[0].startswith("wrote merged model to ")
    data = write_jsonl(tmp_path / "data.jsonl", RECORDS)
    stdout, stderr = _wb(tmp_path, "score", str(data), "--model", str(tiny), "-o", str(tmp_path / "s.jsonl"))
    own = (*TABLE, "precision ", "wb score (4 of 4 records)", "wrote ")
    assert [x for x in stdout + stderr if not x.startswith(own) and not PROGRESS.fullmatch(x)] == []
