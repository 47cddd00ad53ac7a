"""`wb train` on a tiny random model with the real SmolLM2 tokenizer: masking, packing, methods, resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import counting_casts, split_on_two_threads, write_jsonl

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from workbench import precision  # noqa: E402
from workbench.errors import WbError  # noqa: E402
from workbench.models import templates as tdata  # noqa: E402
from workbench.models.base import load_model, load_tokenizer, tiny_model_dir  # noqa: E402
from workbench.models.losses import sample_losses  # noqa: E402
from workbench.train.guards import checkpoint_problem  # noqa: E402
from workbench.train.loss import fusable_head, trained_positions_loss  # noqa: E402
from workbench.train.packing import PackedCollator, pack  # noqa: E402
from workbench.train.prepare import prepare  # noqa: E402
from workbench.train.recipe import Recipe  # noqa: E402
from workbench.train.trainer import train  # noqa: E402

MEMORISE = [
    {"instruction": f"What is the secret word number {i}?", "input": "", "output": word}
    for i, word in enumerate(["apple", "banana", "cherry", "梨子", "grape", "lemon", "mango", "桃子"])
]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tokenizer(tiny: Path) -> Any:
    return load_tokenizer(str(tiny))


def recipe(tmp_path: Path, tiny: Path, records: list[dict[str, Any]] = MEMORISE, **kw: Any) -> Recipe:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = write_jsonl(tmp_path / "train.jsonl", records)
    fields = {
        "name": "t",
        "model": str(tiny),
        "data": data,
        "output_dir": tmp_path / "runs",
        "val_size": 0,
        "max_length": 128,
        "epochs": 1,
        "max_steps": 12,
        "lr": 5e-3,
        "batch_size": 4,
        "logging_steps": 1,
        "warmup_ratio": 0,
        "scheduler": "constant",
        "save_steps": 1000,
        **kw,
    }
    return Recipe.model_validate(fields)


def test_only_the_answer_and_its_end_of_turn_token_are_trained(tokenizer: Any) -> None:
    record = {
        "instruction": "法国的首都是哪里？",
        "input": "",
        "output": "Paris.",
        "system": "Be brief.",
        "history": [],
    }
    ex = tdata.encode(tokenizer, record, "chat", 512, "responses")
    trained = [t for t, label in zip(ex.input_ids, ex.labels, strict=True) if label != tdata.IGNORE]
    assert tokenizer.decode(trained) == "Paris.<|im_end|>"  # the newline the template writes after it is masked
    masked = tokenizer.decode([t for t, label in zip(ex.input_ids, ex.labels, strict=True) if label == tdata.IGNORE])
    prompt = tdata.prompt_text(tokenizer, "chat", record)
    assert masked == prompt + "\n"
    assert prompt.endswith("<|im_start|>assistant\n") and "法国的首都是哪里？" in prompt
    everything = tdata.encode(tokenizer, record, "chat", 512, "all")
    assert everything.trained_tokens == len(everything.input_ids)


def test_every_assistant_turn_of_a_conversation_is_trained(tokenizer: Any) -> None:
    record = {"instruction": "And 3+3?", "input": "", "output": "6", "system": "", "history": [["2+2?", "4"]]}
    ex = tdata.encode(tokenizer, record, "chat", 512, "responses")
    spans, run = [], []
    for t, label in zip(ex.input_ids, ex.labels, strict=True):
        if label != tdata.IGNORE:
            run.append(t)
        elif run:
            spans.append(tokenizer.decode(run))
            run = []
    if run:
        spans.append(tokenizer.decode(run))
    assert spans == ["4<|im_end|>", "6<|im_end|>"]


def test_alpaca_template_masks_the_prompt_and_trains_eos(tokenizer: Any) -> None:
    record = {"instruction": "Say hi", "input": "to Bob", "output": "Hi Bob", "system": "", "history": []}
    ex = tdata.encode(tokenizer, record, "alpaca", 512, "responses")
    trained = [t for t, label in zip(ex.input_ids, ex.labels, strict=True) if label != tdata.IGNORE]
    assert tokenizer.decode(trained) == "Hi Bob" + tokenizer.eos_token
    assert tdata.prompt_text(tokenizer, "alpaca", record).endswith("### Input:\nto Bob\n\n### Response:\n")


def test_packing_keeps_examples_apart(tiny: Path, tokenizer: Any, auto_precision: str) -> None:
    model = load_model(str(tiny)).eval()
    a = tdata.encode(tokenizer, MEMORISE[0], "chat", 128, "responses")
    b = tdata.encode(tokenizer, MEMORISE[3], "chat", 128, "responses")
    packed = pack([a, b], 256)
    assert len(packed) == 1 and packed[0].lengths == sorted([len(a.input_ids), len(b.input_ids)], reverse=True)
    batch = PackedCollator(tokenizer.pad_token_id)([vars(packed[0])])
    with torch.no_grad(), precision.resolve("auto").autocast():
        together = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
        ).logits[0]
        first, second = (a, b) if len(a.input_ids) >= len(b.input_ids) else (b, a)
        alone_1 = model(input_ids=torch.tensor([first.input_ids])).logits[0]
        alone_2 = model(input_ids=torch.tensor([second.input_ids])).logits[0]
    n = len(first.input_ids)
    tolerance = {"fp32": 1e-4, "bf16": 5e-2}[auto_precision]  # bf16: padding-free rows round alike (measured 0.023)
    assert torch.allclose(together[:n].float(), alone_1.float(), atol=tolerance)
    assert torch.allclose(together[n:].float(), alone_2.float(), atol=tolerance)


def _sum_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Summed next-token loss of a batch from full logits (the model's own loss with a sum reduction)."""
    n = int((batch["labels"][:, 1:] != tdata.IGNORE).sum())
    return model(**batch, num_items_in_batch=1).loss, n


@pytest.mark.parametrize("train_on", ["responses", "all"])
def test_packed_loss_is_the_sum_of_the_examples_losses(tiny: Path, tokenizer: Any, train_on: str) -> None:
    model = load_model(str(tiny)).eval()
    examples = [tdata.encode(tokenizer, r, "chat", 128, train_on) for r in MEMORISE[:3]]
    packed = pack(examples, 512)
    assert len(packed) == 1
    batch = PackedCollator(tokenizer.pad_token_id)([vars(packed[0])])
    collate = tdata.PaddingCollator(tokenizer.pad_token_id)
    with torch.no_grad():
        together, n_together = _sum_loss(model, batch)
        alone = [_sum_loss(model, collate([{"input_ids": ex.input_ids, "labels": ex.labels}])) for ex in examples]
    assert n_together == sum(n for _, n in alone)
    assert torch.allclose(together, sum(loss for loss, _ in alone), rtol=1e-4)


@pytest.mark.parametrize(("packing", "fused"), [(True, True), (True, False), (False, True)])
def test_loss_on_trained_positions_only_equals_the_models_loss_and_gradients(
    tiny: Path, tokenizer: Any, packing: bool, fused: bool, monkeypatch: pytest.MonkeyPatch, auto_precision: str
) -> None:
    from workbench.train import loss as trainer

    monkeypatch.setattr(trainer, "HEAD_CHUNK_ELEMENTS", 7 * len(tokenizer))  # chunks of 7 positions
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(
        load_model(str(tiny)), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    )
    examples = [tdata.encode(tokenizer, r, "chat", 128, "responses") for r in MEMORISE]
    if packing:
        rows = [vars(p) for p in pack(examples, 160)]
        batch = PackedCollator(tokenizer.pad_token_id)(rows)
    else:
        batch = tdata.PaddingCollator(tokenizer.pad_token_id)(
            [{"input_ids": ex.input_ids, "labels": ex.labels} for ex in examples]
        )
    params = [p for p in model.parameters() if p.requires_grad]
    autocast = precision.resolve("auto").autocast
    for num_items in (None, torch.tensor(37)):
        kw = {} if num_items is None else {"num_items_in_batch": num_items}
        with autocast():
            full = model(**batch, **kw).loss
        full_grads = torch.autograd.grad(full, params)
        head = fusable_head(model) if fused else None
        assert (head is not None) == fused
        with autocast():
            fast = trained_positions_loss(model, batch, num_items, model.get_base_model().loss_function, head)
        fast_grads = torch.autograd.grad(fast, params)
        worst = max(
            float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))
            for a, b in zip(fast_grads, full_grads, strict=True)
        )
        assert torch.allclose(fast, full, rtol=1e-5), (fast, full)
        # bf16: the chunked head's gradients round apart from the full logits' (measured up to 1.7e-2 relative)
        assert worst < {"fp32": 1e-4, "bf16": 5e-2}[auto_precision], worst


def test_the_fused_head_casts_its_weight_once_under_autocast_with_the_same_numbers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under bf16 autocast the chunked head casts the frozen head weight to bf16 once, not twice a chunk (autocast
    caches casts of weights that require grad only), and its log-probabilities and gradients are those of the
    products autocast computes chunk by chunk."""
    from workbench.train import loss as wloss

    torch.manual_seed(0)
    weight = torch.randn(96, 16)  # vocabulary x hidden, frozen
    hidden = torch.randn(10, 16, requires_grad=True)
    targets = torch.randint(0, 96, (10,))
    monkeypatch.setattr(wloss, "HEAD_CHUNK_ELEMENTS", 3 * 96)  # 4 chunks of 3 positions
    weight_casts = counting_casts(lambda t, kw: t.numel() == weight.numel())
    with torch.autocast("cpu", dtype=torch.bfloat16), weight_casts as seen:
        logps, _ = wloss.head_log_probs(hidden, weight, targets)
    assert seen.casts == 1
    (grad,) = torch.autograd.grad(logps.sum(), hidden)
    expected, jac = [], []
    for lo in range(0, 10, 3):  # what the chunks computed before: autocast's products, chunk by chunk
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = (hidden.detach()[lo : lo + 3] @ weight.T).float()
        logp = torch.log_softmax(logits, -1)
        expected.append(logp.gather(1, targets[lo : lo + 3, None])[:, 0])
        probs = logp.exp()
        probs[torch.arange(len(probs)), targets[lo : lo + 3]] -= 1
        with torch.autocast("cpu", dtype=torch.bfloat16):
            jac.append(probs @ weight)
    assert torch.equal(logps, torch.cat(expected))
    assert torch.equal(grad, (-torch.cat(jac)).to(grad.dtype))


def test_a_zero3_partitioned_output_head_is_not_fused(tiny: Path) -> None:
    """Under DeepSpeed ZeRO-3 a parameter outside its module's forward is an empty partition tagged `ds_id`:
    the fused head loss would read it there, so the head is not fused (the model's own logits are used)."""
    model = load_model(str(tiny))
    head = model.get_output_embeddings()
    head.weight.requires_grad_(False)
    assert fusable_head(model) is head
    head.weight.ds_id = 7  # what deepspeed.zero.Init puts on a partitioned parameter
    assert fusable_head(model) is None


def test_sample_losses_are_each_examples_own_mean_loss_in_input_order(
    tiny: Path, tokenizer: Any, auto_precision: str
) -> None:
    model = load_model(str(tiny))
    records = [*MEMORISE, {"instruction": "Count", "input": "to ten", "output": "one two three " * 5}]
    examples = [tdata.encode(tokenizer, r, "chat", 128, "responses") for r in reversed(records)]
    choice = precision.resolve("auto")
    losses = sample_losses(model, examples, tokenizer.pad_token_id, batch_size=3, choice=choice)
    with torch.no_grad(), choice.autocast():
        alone = [
            float(model(input_ids=torch.tensor([ex.input_ids]), labels=torch.tensor([ex.labels])).loss)
            for ex in examples
        ]
    # fp32: the same numbers; bf16: a batch of 3 padded rows runs other product shapes than one row alone, whose
    # bf16 roundings differ (up to 1.2e-4 relative on an AMX Xeon); two examples' losses differ by 1.6e-3 or more,
    # so a mix-up of order still fails
    assert losses == pytest.approx(alone, rel={"fp32": 1e-4, "bf16": 5e-4}[auto_precision])


@pytest.mark.parametrize("method", ["lora", "dora", "prompt_tuning", "prefix_tuning", "freeze", "full"])
def test_each_method_lowers_the_loss_on_a_memorisable_set(tmp_path: Path, tiny: Path, method: str) -> None:
    lr = {"prompt_tuning": 5e-2, "prefix_tuning": 2e-2, "full": 3e-3, "freeze": 3e-3}.get(method, 2e-2)
    result = train(recipe(tmp_path, tiny, method=method, lr=lr, max_steps=15))
    losses = [row["loss"] for row in result.log if "loss" in row]
    assert len(losses) >= 10
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses
    m = result.manifest
    assert 0 < m["trainable_parameters"] <= m["total_parameters"]
    # The per-example loss pass (a forward over the epoch) is opt-in: by default no sample_losses.jsonl.
    assert not (result.run_dir / "sample_losses.jsonl").exists() and "sample_losses" not in m["outputs"]
    if method in ("lora", "dora", "prompt_tuning", "prefix_tuning"):
        files = {p.name for p in (result.run_dir / "adapter").iterdir()}
        assert "adapter_model.safetensors" in files and not any(f.endswith(".bin") for f in files)
        assert m["trainable_parameters"] < m["total_parameters"] / 2
    else:
        assert (result.run_dir / "model" / "model.safetensors").is_file()


def test_a_run_writes_its_log_losses_curve_and_manifest(tmp_path: Path, tiny: Path) -> None:
    result = train(
        recipe(
            tmp_path,
            tiny,
            max_steps=4,
            val_size=0.25,
            records=MEMORISE * 2,
            release_freed_memory=True,
            sample_losses=True,
        )
    )
    run = result.run_dir
    log = [json.loads(x) for x in (run / "trainer_log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all(r["tokens_per_second"] > 0 and "learning_rate" in r and "grad_norm" in r for r in steps[1:])
    assert any("eval_loss" in r for r in log)
    losses = [json.loads(x) for x in (run / "sample_losses.jsonl").read_text().splitlines()]
    assert len(losses) == 12 and losses == sorted(losses, key=lambda r: -r["loss"])
    assert (run / "loss.svg").read_text().startswith("<svg")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["examples"] == {"train": 12, "val": 4} and manifest["seed"] == 42
    assert manifest["inputs"]["data"]["sha256"] and manifest["versions"]["torch"]
    assert manifest["malloc_mmap_threshold"] == (1 << 20 if sys.platform == "linux" else None)


def _killed_after(run: Path, killed: Path, step: int, last: int) -> None:
    """`run` copied to `killed` as a run killed right after its step-`step` checkpoint: without checkpoint-`last`, the
    manifest and the log's later rows."""
    shutil.copytree(run, killed)
    shutil.rmtree(killed / "checkpoints" / f"checkpoint-{last}")
    (killed / "manifest.json").unlink()
    log = [x for x in (killed / "trainer_log.jsonl").read_text().splitlines() if json.loads(x).get("step", 0) <= step]
    (killed / "trainer_log.jsonl").write_text("\n".join(log) + "\n")


@pytest.mark.parametrize("packing", [True, False])
def test_resume_gives_the_same_loss_curve_as_an_uninterrupted_run(tmp_path: Path, tiny: Path, packing: bool) -> None:
    batch = 1 if packing else 2  # packed: 2 sequences an epoch; padded: 4 batches an epoch
    # A cosine schedule with 2 warmup steps: a scheduler not restored from the checkpoint restarts its warmup.
    kw = {"max_steps": 6, "save_steps": 3, "packing": packing, "batch_size": batch}
    kw |= {"scheduler": "cosine", "warmup_ratio": 0.3}
    full = train(recipe(tmp_path / "a", tiny, **kw))
    _killed_after(full.run_dir, tmp_path / "b" / "runs" / "t", 3, 6)
    ran: list[dict[str, Any]] = []  # the rows the resumed process itself logged
    resumed = train(recipe(tmp_path / "b", tiny, **kw), resume=True, on_log=ran.append)
    curve = lambda res: [(r["step"], round(r["loss"], 5)) for r in res.log if "loss" in r]  # noqa: E731
    assert curve(resumed) == curve(full)
    # It ran the remaining steps only, at the uninterrupted run's learning rates (the scheduler's state restored).
    rates = lambda rows: [(r["step"], r["learning_rate"]) for r in rows if "loss" in r]  # noqa: E731
    assert rates(ran) == rates(full.log)[3:] and [step for step, _ in rates(ran)] == [4, 5, 6]
    lrs = [lr for _, lr in rates(full.log)]
    assert lrs[0] < lrs[1] < lrs[2] > lrs[3] > lrs[4] > lrs[5]  # 2 warmup steps from 0, then the cosine decay


def _visible(checkpoints: Path) -> list[str]:
    return sorted(p.name for p in checkpoints.iterdir() if not p.name.startswith("."))


def test_a_run_killed_while_saving_a_checkpoint_resumes_from_the_last_complete_one(tmp_path: Path, tiny: Path) -> None:
    """kill -9 in the middle of checkpoint-2 (its weights and optimizer.pt written, trainer_state.json not yet)."""
    from conftest import REPO

    r = recipe(tmp_path, tiny, max_steps=4, save_steps=1, batch_size=2, packing=False)
    (tmp_path / "recipe.json").write_text(r.model_dump_json(), encoding="utf-8")
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from transformers import Trainer\n"
        "from workbench.train.recipe import Recipe\n"
        "from workbench.train.trainer import train\n"
        "save_rng = Trainer._save_rng_state\n"
        "def killed(self, output_dir):\n"
        "    if self.state.global_step == 2:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    save_rng(self, output_dir)\n"
        "Trainer._save_rng_state = killed\n"
        "train(Recipe.model_validate_json(Path(sys.argv[1]).read_text(encoding='utf-8')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "recipe.json")], capture_output=True, text=True, env=env
    )
    assert done.returncode == -9, done.stderr[-2000:]
    checkpoints = r.run_dir / "checkpoints"
    assert _visible(checkpoints) == ["checkpoint-1"]  # the half-written checkpoint-2 is not one
    half = {p.name for p in (checkpoints / ".wb-stage" / "checkpoint-2").iterdir()}
    assert {"adapter_model.safetensors", "optimizer.pt"} <= half and "trainer_state.json" not in half
    assert (r.run_dir / ".wb-lock").exists()  # the killed run's lock file stays; its flock went with the process
    said: list[str] = []
    ran: list[dict[str, Any]] = []
    resumed = train(r, resume=True, on_log=ran.append, on_status=said.append)
    assert f"resuming from {checkpoints / 'checkpoint-1'}" in said
    assert [row["step"] for row in ran if "loss" in row] == [2, 3, 4]
    assert resumed.manifest["global_step"] == 4
    assert _visible(checkpoints) == ["checkpoint-3", "checkpoint-4"] and not (checkpoints / ".wb-stage").exists()


@pytest.mark.parametrize("damage", ["no trainer_state.json", "optimizer.pt is truncated"])
def test_an_incomplete_checkpoint_an_older_wb_left_is_skipped_with_a_line(
    tmp_path: Path, tiny: Path, damage: str
) -> None:
    r = recipe(tmp_path, tiny, max_steps=2, save_steps=1, batch_size=2, packing=False)
    done = train(r)
    (done.run_dir / "manifest.json").unlink()  # killed while saving checkpoint-2, by a wb that saved in place
    second = done.run_dir / "checkpoints" / "checkpoint-2"
    if damage == "no trainer_state.json":
        (second / "trainer_state.json").unlink()
    else:
        optimizer = (second / "optimizer.pt").read_bytes()
        (second / "optimizer.pt").write_bytes(optimizer[: len(optimizer) // 2])
    said: list[str] = []
    ran: list[dict[str, Any]] = []
    more = recipe(tmp_path, tiny, max_steps=3, save_steps=1, batch_size=2, packing=False)
    resumed = train(more, resume=True, on_log=ran.append, on_status=said.append)
    first = done.run_dir / "checkpoints" / "checkpoint-1"
    assert said[:2] == [
        f"skipping {second}: incomplete ({damage}; the run was stopped while saving it)",
        f"resuming from {first}",
    ]
    assert [row["step"] for row in ran if "loss" in row] == [2, 3] and resumed.manifest["global_step"] == 3
    assert checkpoint_problem(second) is None  # saved again, whole


def test_resume_without_a_complete_checkpoint_is_one_line(tmp_path: Path, tiny: Path) -> None:
    r = recipe(tmp_path, tiny, max_steps=1, save_steps=1)
    done = train(r)
    (done.run_dir / "manifest.json").unlink()
    (done.run_dir / "checkpoints" / "checkpoint-1" / "trainer_state.json").write_text('{"global_step": 1, "log')
    with pytest.raises(WbError, match=r"runs/t: no complete checkpoint to resume from$"):
        train(r, resume=True)


def test_records_without_trainable_tokens_stop_the_run(tmp_path: Path, tiny: Path, tokenizer: Any) -> None:
    long_prompt = {"instruction": "word " * 200, "input": "", "output": "short"}
    r = recipe(tmp_path, tiny, records=[MEMORISE[0], long_prompt], max_length=64)
    with pytest.raises(WbError, match=r"1 record\(s\) have no trainable tokens .* \(lines 2\)"):
        prepare(r, tokenizer, 2048)


def test_recipe_errors_are_clear(tmp_path: Path, tiny: Path, tokenizer: Any) -> None:
    with pytest.raises(WbError, match="max_length: 4096 is more than the model supports"):
        prepare(recipe(tmp_path, tiny, max_length=4096), tokenizer, 2048)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(WbError, match=r"file is empty|no records"):
        prepare(Recipe(model=str(tiny), data=empty), tokenizer, 2048)
    with pytest.raises(WbError, match="model 'no-such/model' not found"):
        train(recipe(tmp_path, tiny, model="no-such/model"))


def test_truncated_examples_warn_that_their_end_of_turn_is_not_trained(
    tmp_path: Path, tiny: Path, tokenizer: Any
) -> None:
    long_answer = {"instruction": "Count", "input": "", "output": "one two three " * 40}
    prepared = prepare(recipe(tmp_path, tiny, records=[MEMORISE[0], long_answer], max_length=64), tokenizer, 2048)
    assert any("1 of 2 examples are longer than max_length 64" in w for w in prepared.warnings)


def test_qlora_trains_a_4bit_base_on_cpu(tmp_path: Path, tiny: Path) -> None:
    pytest.importorskip("bitsandbytes")
    result = train(recipe(tmp_path, tiny, method="qlora", lr=2e-2, max_steps=15))
    losses = [row["loss"] for row in result.log if "loss" in row]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses
    config = json.loads((result.run_dir / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert result.manifest["method"] == "qlora"
    assert result.manifest["malloc_mmap_threshold"] is None  # glibc's allocator left alone unless asked


def test_qlora_without_bitsandbytes_is_one_line(tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if it were not installed
    with pytest.raises(WbError, match="qlora needs bitsandbytes"):
        train(recipe(tmp_path, tiny, method="qlora"))


def _strict_json(line: str) -> dict[str, Any]:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} in trainer_log.jsonl")

    row: dict[str, Any] = json.loads(line, parse_constant=refuse)
    return row


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, tiny: Path
) -> None:
    # lr 1e30 is a finite number (the recipe accepts it); one Adam step then puts the weights near 1e30
    r = recipe(tmp_path, tiny, lr=1e30, max_steps=6, save_steps=1, batch_size=2, packing=False)
    with pytest.raises(WbError, match=r"training loss is (nan|inf) at step 2; stopped, the last good checkpoint is"):
        train(r)
    run = r.run_dir
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-1"]
    assert not (run / "manifest.json").exists() and not (run / "adapter").exists()
    log = [_strict_json(x) for x in (run / "trainer_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log if "loss" in row] == [1]


def test_resuming_a_finished_run_is_refused_unless_max_steps_is_raised(tmp_path: Path, tiny: Path) -> None:
    done = train(recipe(tmp_path, tiny, max_steps=2, save_steps=2))
    adapter = (done.run_dir / "adapter" / "adapter_model.safetensors").read_bytes()
    with pytest.raises(WbError, match=r"the run is finished \(step 2\); to train further raise max_steps or epochs"):
        train(recipe(tmp_path, tiny, max_steps=2, save_steps=2), resume=True)
    assert (done.run_dir / "adapter" / "adapter_model.safetensors").read_bytes() == adapter
    more = train(recipe(tmp_path, tiny, max_steps=4, save_steps=2), resume=True)
    assert more.manifest["global_step"] == 4
    assert [r["step"] for r in more.log if "loss" in r] == [1, 2, 3, 4]


def test_wb_train_resume_of_a_finished_run_is_one_line_with_exit_2(tmp_path: Path, tiny: Path, wb: Any) -> None:
    done = train(recipe(tmp_path, tiny, max_steps=2, save_steps=2))
    manifest = (done.run_dir / "manifest.json").read_bytes()
    result = wb("train", "--resume", done.run_dir, "-q")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {done.run_dir}: the run is finished (step 2); to train further raise max_steps or epochs, "
        f"e.g. wb train --resume {done.run_dir} max_steps=4"
    ]
    assert (done.run_dir / "manifest.json").read_bytes() == manifest


def test_wb_train_with_run_name_dot_dot_writes_nothing(
    tmp_path: Path, tiny: Path, wb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", MEMORISE)
    monkeypatch.chdir(tmp_path)
    result = wb("train", "--data", data, f"model={tiny}", "name=..", "max_steps=1", "-q")
    assert result.exit_code == 2 and "name: Value error, '..' is not a run name" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]


def test_output_dir_that_is_a_file_is_one_line(tmp_path: Path, tiny: Path) -> None:
    (tmp_path / "runs").write_text("not a folder\n")
    with pytest.raises(WbError, match=r"runs/t: cannot create the folder: .*runs is a file"):
        train(recipe(tmp_path, tiny, max_steps=1))


def test_checkpoints_and_the_adapter_hold_no_pickled_arguments_and_follow_the_umask(tmp_path: Path, tiny: Path) -> None:
    old = os.umask(0o027)
    try:
        result = train(recipe(tmp_path, tiny, max_steps=2, save_steps=1))
    finally:
        os.umask(old)
    checkpoints = sorted(p.name for p in (result.run_dir / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-1", "checkpoint-2"]
    assert not list(result.run_dir.rglob("training_args.bin"))  # Trainer's pickled TrainingArguments
    files = [p for p in result.run_dir.rglob("*") if p.is_file()]
    assert sum(p.name == "adapter_model.safetensors" for p in files) == 3
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o640)}  # safetensors' own files are 0600


def test_a_checkpoint_with_pickled_weights_is_not_resumed(tmp_path: Path, tiny: Path, wb: Any) -> None:
    from safetensors.torch import load_file

    run = train(recipe(tmp_path, tiny, max_steps=2, save_steps=2)).run_dir
    (run / "manifest.json").unlink()  # killed before it finished
    checkpoint = run / "checkpoints" / "checkpoint-2"
    torch.save(load_file(str(checkpoint / "adapter_model.safetensors")), checkpoint / "adapter_model.bin")
    (checkpoint / "adapter_model.safetensors").unlink()
    log = (run / "trainer_log.jsonl").read_bytes()
    result = wb("train", "--resume", run, "max_steps=4", "-q")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: checkpoint {checkpoint}: only pickle weights (adapter_model.bin), no adapter_model.safetensors or "
        "model.safetensors; wb loads safetensors only — save it with safe_serialization=True, or convert it with a "
        "tool you trust"
    ]
    assert (run / "trainer_log.jsonl").read_bytes() == log and not (run / "manifest.json").exists()


HOLD_LOCK = """
import sys
from pathlib import Path
from workbench.output import locked_run
with locked_run(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_second_writer_of_a_run_folder_is_refused_in_one_line_and_a_killed_writer_blocks_nothing(
    tmp_path: Path, tiny: Path, wb: Any
) -> None:
    """`wb train name=t` while another process writes runs/t (it holds the run's lock): exit 2, one line, and the
    first run's recipe.yaml and log untouched. Once that process is killed (kill -9), the next run goes ahead."""
    from conftest import REPO

    data = write_jsonl(tmp_path / "其他.jsonl", MEMORISE[:4])
    run = tmp_path / "runs" / "t"
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text("name: t\nlr: 0.005\n", encoding="utf-8")
    (run / "trainer_log.jsonl").write_text('{"loss": 2.174, "step": 1}\n', encoding="utf-8")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        args = ("train", "--data", data, f"model={tiny}", "name=t", f"output_dir={tmp_path / 'runs'}", "lr=0.001")
        second = wb(*args, "max_steps=1", "max_length=128", "-q")
        assert second.exit_code == 2
        assert second.stderr.strip().splitlines() == [
            f"error: {run}: another wb process is writing this run folder now (pid {holder.pid}); wait for it to finish"
        ]
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".wb-lock"} == before
    finally:
        holder.kill()
        holder.wait()
    assert (run / ".wb-lock").exists()  # left by the killed holder; the OS dropped its flock
    third = wb(*args, "max_steps=1", "max_length=128", "-q")
    assert third.exit_code == 0, third.stderr
    assert (run / "manifest.json").is_file() and not (run / ".wb-lock").exists()


def test_wb_eval_into_a_run_folder_being_written_is_refused(tmp_path: Path, tiny: Path, wb: Any) -> None:
    from workbench.output import locked_run

    done = train(recipe(tmp_path, tiny, max_steps=1))
    with locked_run(done.run_dir):  # another process training or evaluating into it
        result = wb("eval", done.run_dir, "--no-probes", "--no-base", "--no-cache", "-q")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {done.run_dir}: another wb process is writing this run folder now (pid {os.getpid()}); "
        "wait for it to finish"
    ]
    assert not (done.run_dir / "eval").exists()


def test_a_short_run_logs_every_step_so_its_curve_has_every_point(tmp_path: Path, tiny: Path) -> None:
    fields = recipe(tmp_path, tiny, max_steps=4).model_dump(exclude={"logging_steps"})  # the default interval
    result = train(Recipe.model_validate(fields))
    losses = [(row["step"], row["loss"]) for row in result.log if "loss" in row]
    assert [step for step, _ in losses] == [1, 2, 3, 4]  # was step 1 alone ("loss 2.174 -> 2.174")
    assert len({loss for _, loss in losses}) == 4


@pytest.mark.parametrize(("steps", "every"), [(4, 1), (50, 1), (51, 2), (200, 4), (10_000, 200)])
def test_the_default_log_interval_gives_about_50_points_over_a_run(
    tmp_path: Path, tiny: Path, steps: int, every: int
) -> None:
    from transformers import TrainerState

    from workbench import precision
    from workbench.train import hf

    r = Recipe.model_validate(recipe(tmp_path, tiny, max_steps=steps).model_dump(exclude={"logging_steps"}))
    state = TrainerState()  # Trainer turns the interval into steps for the run's length
    state.compute_steps(hf.training_args(r, r.run_dir, precision.for_training("fp32"), False), steps)
    assert state.logging_steps == every


class _MaskDropout(torch.nn.Module):
    """torch's dropout arithmetic (`x * keep / (1 - p)`) on wb's keep mask."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Any) -> Any:
        from workbench.train.lora_linear import keep_mask

        if not self.training:
            return x
        return x * keep_mask(x, self.p).to(x.dtype).div_(1 - self.p)  # two passes, as torch's dropout


def test_lora_dropout_masks_keep_each_element_with_probability_one_minus_p_and_follow_the_seed() -> None:
    from workbench.train.lora_linear import _draw, keep_mask

    like = torch.empty(1000, 1000)
    assert [_draw(p)[0] for p in (0.05, 0.3, 0.001)] == [16, 16, 32]  # both ways of drawing
    for p in (0.05, 0.3, 0.001):
        torch.manual_seed(1)
        first, second = keep_mask(like, p), keep_mask(like, p)
        torch.manual_seed(1)
        assert torch.equal(keep_mask(like, p), first)  # seeded: the same masks
        assert not torch.equal(first, second)  # each draw its own
        for keep in (first, second):
            dropped = 1 - keep.float().mean().item()
            assert abs(dropped - p) < 4 * (p * (1 - p) / 1e6) ** 0.5, (p, dropped)
            # No pattern along rows or columns: every row and column drops about p of its elements.
            rows, cols = 1 - keep.float().mean(1), 1 - keep.float().mean(0)
            assert (rows - p).abs().max() < 6 * (p * (1 - p) / 1000) ** 0.5
            assert (cols - p).abs().max() < 6 * (p * (1 - p) / 1000) ** 0.5
        assert (first & second).float().mean().item() == pytest.approx((1 - p) ** 2, abs=0.003)  # independent


def _lora_step(
    tiny: Path, fused: bool, autocast: bool, dropout: float = 0.3, bf16_base: bool = False
) -> tuple[Any, dict[str, Any], int, Any]:
    """One LoRA step (a packed batch of a Chinese and an English example): the loss, the adapter's gradients, the
    bytes autograd kept for the backward pass, and the model. `bf16_base`: every frozen parameter cast to bf16, the
    adapters left fp32 (`session.bf16_frozen_base`)."""
    from peft import LoraConfig, get_peft_model

    from workbench.train import lora_linear

    torch.manual_seed(3)
    base = load_model(str(tiny), dtype=torch.float32)
    config = LoraConfig(
        r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear", init_lora_weights="gaussian"
    )
    model = get_peft_model(base, config)
    if bf16_base:  # (without autocast: the bf16 base's values in fp32, a reference for the bf16 runs)
        for param in model.parameters():
            if not param.requires_grad:
                param.data = param.data.to(torch.bfloat16).to(torch.bfloat16 if autocast else torch.float32)
    if fused:
        assert lora_linear.fuse(model) == 7 * 2  # every projection of the 2 layers
    elif dropout > 0:  # PEFT's path, its dropout drawing wb's masks (torch's dropout draws other numbers)
        for module in model.modules():
            if hasattr(module, "lora_dropout"):
                for name, layer in list(module.lora_dropout.items()):
                    module.lora_dropout[name] = _MaskDropout(layer.p)
    model.train()
    ids = [[(i * 37 + 11) % 900 + 5 for i in range(n)] for n in (40, 23)]
    batch = PackedCollator(0)([{"input_ids": ids[0] + ids[1], "labels": ids[0] + ids[1], "lengths": [40, 23]}])
    with torch.no_grad():  # B starts at zero: give the update a value, so that every gradient term is exercised
        for i, (name, param) in enumerate(model.named_parameters()):
            if "lora_B" in name:
                param.normal_(0, 0.05, generator=torch.Generator().manual_seed(i))
    kept: dict[int, int] = {}
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack_hook(t: Any) -> Any:
        if t.untyped_storage().data_ptr() not in weights and t.shape[-1:] != (base.config.vocab_size,):  # nor logits
            kept.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t

    torch.manual_seed(7)  # the same dropout masks on both sides
    saving = torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda t: t)
    with saving, torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(**batch).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, sum(kept.values()), model


@pytest.mark.parametrize(("autocast", "dropout"), [(False, 0.3), (True, 0.0), (False, 0.0), (True, 0.3)])
def test_fused_lora_layers_give_peft_numbers_and_keep_less_for_the_backward_pass(
    tiny: Path, autocast: bool, dropout: float
) -> None:
    loss, grads, kept, plain = _lora_step(tiny, fused=False, autocast=autocast, dropout=dropout)
    loss_f, grads_f, kept_f, fused = _lora_step(tiny, fused=True, autocast=autocast, dropout=dropout)
    assert grads.keys() == grads_f.keys() and len(grads) == 2 * 7 * 2  # A and B of 7 modules in 2 layers
    assert all(grads[k].abs().max() > 0 for k in grads)
    if autocast:  # under autocast the layers take PEFT's own path: the very same numbers
        assert torch.equal(loss_f, loss)
        assert all(torch.equal(grads_f[k], grads[k]) for k in grads)
        # and memory, but for the dropout: wb's keeps its mask as bits, not torch's float noise (measured 745 -> 542 kB)
        assert kept_f < kept * 0.8 if dropout else kept_f == kept, (kept_f, kept)
        return
    # The same dropout masks, the same loss and adapter gradients, up to the order of floating-point additions.
    torch.testing.assert_close(loss_f, loss, rtol=1e-5, atol=1e-6)
    for k in grads:
        torch.testing.assert_close(grads_f[k], grads[k], rtol=1e-4, atol=1e-6)
    # No copy of each dropped-out input is kept: with dropout, a mask of bits is.
    if dropout:
        assert kept_f < kept * 0.8, (kept_f, kept)
    else:
        assert kept_f <= kept, (kept_f, kept)
    # The saved adapter is the same file: same keys; in eval mode (PEFT's own path) the same logits.
    assert plain.state_dict().keys() == fused.state_dict().keys()
    plain.eval()
    fused.eval()
    ids = torch.tensor([[5, 17, 230, 41, 8]])
    with torch.no_grad():
        assert torch.equal(plain(input_ids=ids).logits, fused(input_ids=ids).logits)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_fused_lora_layers_over_a_bf16_base_under_autocast_give_peft_numbers_to_bf16_rounding(
    tiny: Path, dropout: float
) -> None:
    """A bf16 frozen base with fp32 adapters under CPU autocast (`session.bf16_frozen_base`): the fused path runs its
    products in bf16 with bf16 copies of the adapter weights, as autocast runs PEFT's, with the same masks; PEFT's
    path casts each projection's input to fp32 for the adapter and back, and keeps its dropped-out copy."""
    loss, grads, kept, _ = _lora_step(tiny, fused=False, autocast=True, dropout=dropout, bf16_base=True)
    loss_f, grads_f, kept_f, fused = _lora_step(tiny, fused=True, autocast=True, dropout=dropout, bf16_base=True)
    exact, grads_e, _, _ = _lora_step(tiny, fused=False, autocast=False, dropout=dropout, bf16_base=True)
    assert grads.keys() == grads_f.keys() == grads_e.keys() and len(grads) == 2 * 7 * 2
    assert {g.dtype for g in grads_f.values()} == {torch.float32}  # the adapters train in fp32
    assert all(p.dtype == torch.bfloat16 for n, p in fused.named_parameters() if "lora_" not in n)
    # Both bf16 runs sit within bf16 rounding of the exact values of the bf16 weights; the fused one no further off.
    torch.testing.assert_close(loss_f, exact, rtol=2e-4, atol=0)
    torch.testing.assert_close(loss, exact, rtol=2e-4, atol=0)
    off = {k: float((grads[k] - grads_e[k]).norm() / grads_e[k].norm()) for k in grads}
    off_f = {k: float((grads_f[k] - grads_e[k]).norm() / grads_e[k].norm()) for k in grads}
    assert max(off_f.values()) < 0.04 and sum(off_f.values()) <= 1.2 * sum(off.values()), (off_f, off)
    # PEFT's path keeps each projection's fp32 cast of its input and, with dropout, its dropped-out copy
    assert kept_f < kept * (0.7 if dropout else 0.9), (kept_f, kept)


@pytest.mark.parametrize("reentrant", [False, True])
def test_fused_lora_layers_under_gradient_checkpointing_replay_their_dropout_masks(tiny: Path, reentrant: bool) -> None:
    """A checkpointed layer runs its forward twice (the first time without recording gradients when reentrant): both
    passes must drop the same elements, or the gradients belong to another network than the loss."""
    from peft import LoraConfig, get_peft_model

    from workbench.train import lora_linear

    results = []
    for checkpointing in (False, True):
        torch.manual_seed(3)
        base = load_model(str(tiny), dtype=torch.float32)
        if checkpointing:
            base.gradient_checkpointing_enable({"use_reentrant": reentrant})
            base.enable_input_require_grads()
        config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.3, target_modules="all-linear")
        model = get_peft_model(base, config)
        assert lora_linear.fuse(model) == 14
        with torch.no_grad():
            for i, (name, param) in enumerate(model.named_parameters()):
                if "lora_B" in name:
                    param.normal_(0, 0.05, generator=torch.Generator().manual_seed(i))
        model.train()
        ids = torch.tensor([[(i * 37 + 11) % 900 + 5 for i in range(48)]])
        torch.manual_seed(7)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (loss, grads), (loss_c, grads_c) = results
    torch.testing.assert_close(loss_c, loss, rtol=1e-6, atol=1e-6)  # other masks would move it by far more
    assert grads.keys() == grads_c.keys() and len(grads) == 28
    for k in grads:
        torch.testing.assert_close(grads_c[k], grads[k], rtol=1e-5, atol=1e-7)


def test_fused_lora_layers_leave_mixed_dtypes_without_autocast_to_peft(tiny: Path) -> None:
    """A bf16 base with fp32 adapters (PEFT's default for a bf16 model, as on a GPU) and no autocast: PEFT casts the
    input for the adapter; the fused path, whose products need one dtype, hands the call to PEFT's forward."""
    from peft import LoraConfig, get_peft_model

    from workbench.train import lora_linear

    base = load_model(str(tiny), dtype=torch.bfloat16)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear"))
    assert {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {torch.float32}
    ids = torch.tensor([[(i * 37 + 11) % 900 + 5 for i in range(24)]])
    model.train()
    plain = model(input_ids=ids, labels=ids).loss
    assert lora_linear.fuse(model) == 14
    fused = model(input_ids=ids, labels=ids).loss
    fused.backward()
    assert torch.equal(fused.detach(), plain.detach())
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)


# -- a batch split over threads (row_parallel) ---------------------------------------------------------------------


@pytest.fixture
def two_threads() -> Iterator[list[int]]:
    """torch on two threads for the test (the suite runs on one), and a count of the steps `row_parallel` split."""
    yield from split_on_two_threads("step")


def _adapter(run: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(run / "adapter" / "adapter_model.safetensors")


def _losses(run: Path, key: str = "loss") -> list[float]:
    return [r[key] for r in map(json.loads, (run / "trainer_log.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.parametrize("packing", [True, False])
def test_a_batch_split_over_two_threads_trains_as_the_whole_batch_does(
    tmp_path: Path, tiny: Path, two_threads: list[int], packing: bool
) -> None:
    """Without dropout the split step's losses, gradients (through the adapter they train) and token counts are the
    whole batch's, up to float rounding; with gradient accumulation too."""
    kw = {"max_steps": 4, "batch_size": 2, "grad_accum": 2, "packing": packing, "lora": {"dropout": 0.0}}
    split = train(recipe(tmp_path / "split", tiny, records=MEMORISE * 4, **kw)).run_dir
    steps = len(two_threads)
    assert steps >= 6 and set(two_threads) == {2}  # micro-batches of two rows, each in two parts
    torch.set_num_threads(1)
    whole = train(recipe(tmp_path / "whole", tiny, records=MEMORISE * 4, **kw)).run_dir
    assert len(two_threads) == steps  # one thread: not split
    assert _losses(split) == pytest.approx(_losses(whole), rel=1e-4)
    assert _losses(split, "grad_norm") == pytest.approx(_losses(whole, "grad_norm"), rel=1e-3)
    a, b = _adapter(split), _adapter(whole)
    assert a.keys() == b.keys()
    for name in a:  # Adam's steps (lr 5e-3) follow the gradients' signs: a near-zero one may differ in rounding
        torch.testing.assert_close(a[name], b[name], rtol=1e-3, atol=1e-4)
    tokens = lambda run: json.loads((run / "manifest.json").read_text())["tokens"]  # noqa: E731
    assert tokens(split) == tokens(whole)


def test_a_split_run_with_dropout_is_the_same_run_every_time(
    tmp_path: Path, tiny: Path, two_threads: list[int]
) -> None:
    """Each part draws its masks from a generator of its own seeded in part order: the same seed, the same run,
    whichever thread gets ahead; another seed, other masks."""
    kw = {"max_steps": 3, "batch_size": 2, "lora": {"dropout": 0.3}}
    runs = [
        train(recipe(tmp_path / name, tiny, seed=seed, **kw)).run_dir for name, seed in [("a", 7), ("b", 7), ("c", 8)]
    ]
    assert two_threads == [2] * 9
    assert _losses(runs[0]) == _losses(runs[1])
    first, again, other = (_adapter(run) for run in runs)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize(
    "change",
    [{}, {"method": "full"}, {"gradient_checkpointing": True}, {"neftune_noise_alpha": 5.0}, {"batch_size": 1}],
    ids=["lora", "full", "checkpointing", "neftune", "one-row"],
)
def test_a_step_is_split_only_where_its_numbers_stay_the_runs(
    tmp_path: Path, tiny: Path, two_threads: list[int], change: dict[str, Any]
) -> None:
    """Full fine-tuning (two copies of every gradient), gradient checkpointing (its replay would draw other masks),
    NEFTune (noise from torch's global generator) and one-row batches run as transformers runs them."""
    train(recipe(tmp_path, tiny, max_steps=2, **{"batch_size": 2, **change}))
    assert two_threads == ([2, 2] if not change else [])


def test_a_split_run_with_dropout_resumes_on_the_same_curve(tmp_path: Path, tiny: Path, two_threads: list[int]) -> None:
    """The parts' seeds come from torch's generator, which a checkpoint restores: a run killed after its step-2
    checkpoint goes on as the uninterrupted one did."""
    kw = {"max_steps": 4, "save_steps": 2, "batch_size": 2, "packing": False, "lora": {"dropout": 0.3}}
    full = train(recipe(tmp_path / "a", tiny, **kw))
    _killed_after(full.run_dir, tmp_path / "b" / "runs" / "t", 2, 4)
    resumed = train(recipe(tmp_path / "b", tiny, **kw), resume=True)
    assert set(two_threads) == {2} and len(two_threads) == 4 + 2  # every step split, in both runs
    assert _losses(resumed.run_dir) == _losses(full.run_dir)
    first, again = _adapter(full.run_dir), _adapter(resumed.run_dir)  # the log's losses have 4 digits; the weights all
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_a_batch_whose_half_trains_nothing_is_not_split(two_threads: list[int]) -> None:
    """That half would take the model's own loss, a mean over no token (NaN); the whole batch is well defined."""
    from types import SimpleNamespace

    from workbench.train import row_parallel

    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 2))
    model[0].requires_grad_(False)
    trainer = SimpleNamespace(
        args=SimpleNamespace(gradient_checkpointing=False, neftune_noise_alpha=None),
        accelerator=SimpleNamespace(num_processes=1),
        model_accepts_loss_kwargs=True,
        _fast_loss=lambda model, return_outputs: True,
    )
    labels = torch.full((4, 6), tdata.IGNORE)
    labels[0, 3] = labels[2, 4] = 7
    assert row_parallel.parts(trainer, model, {"input_ids": labels.clamp(min=0), "labels": labels}) == 2
    labels[2, 4] = tdata.IGNORE  # rows 2 and 3, the second half, train nothing now
    assert row_parallel.parts(trainer, model, {"input_ids": labels.clamp(min=0), "labels": labels}) == 1
