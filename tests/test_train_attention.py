"""Training attention on CPU (`workbench.train.attention`): each sequence of a packed or padded batch attended on its
own gives the numbers of transformers' masked SDPA; masks of any other shape go to that SDPA unchanged; the switch is
not saved with the model. And `wb train`'s restart with glibc malloc settings (`workbench.train.memory`)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from workbench.models.base import load_model, tiny_model_dir
from workbench.models.templates import IGNORE, PaddingCollator
from workbench.train import attention
from workbench.train.packing import PackedCollator

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("attn") / "tiny")


def _ids(n: int, salt: int) -> list[int]:
    return [(i * 37 + salt * 11) % 900 + 5 for i in range(n)]


def _loss_and_grads(model: Any, batch: dict[str, Any]) -> tuple[Any, Any, list[Any]]:
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    return out.loss.detach(), out.logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def _batches() -> dict[str, dict[str, Any]]:
    a, b, c, d = _ids(40, 1), _ids(23, 2), _ids(9, 3), _ids(31, 4)
    packed = PackedCollator(0)(
        [
            {"input_ids": a + b + c, "labels": a + b + c, "lengths": [40, 23, 9]},
            {"input_ids": d + c, "labels": d + c, "lengths": [31, 9]},  # shorter: padding rows see nothing
        ]
    )
    right = PaddingCollator(0)([{"input_ids": x, "labels": x} for x in (a, b, d)])
    left = {
        "input_ids": torch.tensor([[0] * 17 + b, a]),
        "attention_mask": torch.tensor([[0] * 17 + [1] * 23, [1] * 40]),
        "labels": torch.tensor([[IGNORE] * 17 + b, a]),
    }
    return {"packed": packed, "right-padded": right, "left-padded": left}


@pytest.mark.parametrize("kind", ["packed", "right-padded", "left-padded"])
def test_attention_by_sequence_gives_the_masked_sdpa_numbers(tiny: Path, kind: str) -> None:
    model = load_model(str(tiny), dtype=torch.float32)
    model.config._attn_implementation = "sdpa"
    model.train()
    batch = _batches()[kind]
    loss, logits, grads = _loss_and_grads(model, batch)
    assert attention.use(model)
    assert model.config._attn_implementation == attention.ATTENTION
    loss_s, logits_s, grads_s = _loss_and_grads(model, batch)
    # It ran by sequence, not through the fallback.
    assert attention._LAST.layout.runs is not None
    runs = attention._LAST.layout.runs
    if kind == "packed":
        assert [r[0] for r in runs[0]] == ["causal"] * 3 and runs[1][-1][0] == "none"
    real = batch.get("attention_mask")
    # Padding positions carry no loss; their outputs may differ.
    keep = real.bool() if real is not None and real.dim() == 2 else batch["labels"] != IGNORE
    logits, logits_s = logits[keep], logits_s[keep]
    assert torch.allclose(logits, logits_s, atol=1e-5)
    assert torch.allclose(loss, loss_s, atol=1e-6)
    assert len(grads) == len(grads_s) > 0
    assert all(torch.allclose(g, h, atol=1e-5, rtol=1e-4) for g, h in zip(grads, grads_s, strict=True))
    # Also under inference mode (evaluation during training), where tensors keep no version counter.
    with torch.inference_mode():
        inferred = model(**batch).logits
    assert torch.allclose(inferred[keep], logits_s, atol=1e-5)


def test_masks_that_are_not_runs_of_keys_go_to_sdpa_unchanged() -> None:
    # A sliding window of 3 keys: each query sees a run, but it does not start at its sequence's start.
    n = 8
    i = torch.arange(n)
    window = ((i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - 3))[None, None]
    assert attention._layout(window) is None
    # Bidirectional over a prefix of 3 tokens (a prefix-LM mask): queries see keys after themselves.
    prefix = (i[None, :] <= i[:, None]) | ((i[None, :] < 3) & (i[:, None] < 3))
    assert attention._layout(prefix[None, None]) is None
    # A query that sees two separate runs.
    holes = torch.tril(torch.ones(n, n, dtype=torch.bool))
    holes[5, 2] = False
    assert attention._layout(holes[None, None]) is None

    class Module(torch.nn.Module):
        num_key_value_groups = 2
        is_causal = True

    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, n, 8), torch.randn(1, 2, n, 8), torch.randn(1, 2, n, 8)
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    for mask in (window[:, :], holes[None, None]):
        out, _ = attention.sdpa_by_sequence(Module(), q, k, v, mask, scaling=0.3)
        ref, _ = sdpa_attention_forward(Module(), q, k, v, mask, scaling=0.3)
        assert torch.equal(out, ref)


def test_the_attention_switch_is_not_saved_with_the_model(tiny: Path, tmp_path: Path) -> None:
    model = load_model(str(tiny), dtype=torch.float32)
    model.config._attn_implementation = "sdpa"
    assert attention.use(model)
    model.save_pretrained(tmp_path / "saved")
    assert attention.ATTENTION not in (tmp_path / "saved" / "config.json").read_text()
    reloaded = load_model(str(tmp_path / "saved"), dtype=torch.float32)
    assert reloaded.config._attn_implementation != attention.ATTENTION


def test_only_sdpa_on_cpu_is_switched(tiny: Path) -> None:
    model = load_model(str(tiny), dtype=torch.float32)
    model.config._attn_implementation = "eager"
    assert not attention.use(model)
    assert model.config._attn_implementation == "eager"


SHOW = (
    "import os, sys\n"
    "print('start', os.getpid(), os.environ.get('GLIBC_TUNABLES'), flush=True)\n"
    "print('caches', os.environ.get('ONEDNN_PRIMITIVE_CACHE_CAPACITY'), os.environ.get('LRU_CACHE_CAPACITY'))\n"
    "sys.argv = ['wb', *sys.argv[1:]]\n"
    "from workbench.cli import main\n"
    "main()\n"
)
GLIBC = sys.platform.startswith("linux") and (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")


def _run(args: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SHOW, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out, _ = proc.communicate(timeout=120)
    return proc.pid, [line for line in out.splitlines() if line.startswith(("start", "caches"))]


@pytest.mark.skipif(not GLIBC, reason="glibc malloc settings: Linux with glibc only")
def test_wb_train_restarts_itself_once_with_glibc_malloc_settings_and_keeps_the_users_own() -> None:
    from workbench.train.memory import KERNEL_CACHES, glibc_tunables

    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env = {k: v for k, v in env.items() if k not in KERNEL_CACHES}
    pid, starts = _run(["train", "--help"], env)
    # The same process (exec keeps the PID: locks, signals and a parent's wait are unaffected), started twice, the
    # second time with oneDNN's kernel caches bounded too.
    assert starts == [f"start {pid} None", "caches None None", f"start {pid} {glibc_tunables()}", "caches 128 128"]
    # Another command does not restart.
    pid, starts = _run(["clean", "--help"], env)
    assert starts == [f"start {pid} None", "caches None None"]
    # The user's own settings are left as they are.
    mine = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "LRU_CACHE_CAPACITY": "4"}
    pid, starts = _run(["train", "--help"], {**env, **mine})
    assert starts == [f"start {pid} glibc.malloc.arena_max=2", "caches None 4"]


@pytest.mark.skipif(not GLIBC, reason="glibc malloc settings: Linux with glibc only")
def test_a_child_started_with_wb_trains_environment_gets_what_wb_train_sets_and_keeps_the_callers_own() -> None:
    """`memory.train_environment`, for processes that run the trainer without `wb train`'s restart (the benches):
    the same malloc settings and kernel-cache bounds the restarted `wb train` has, values already given kept."""
    from workbench.train.memory import KERNEL_CACHES, glibc_tunables, train_environment

    assert train_environment({"X": "1"}) == {"X": "1", **KERNEL_CACHES, "GLIBC_TUNABLES": glibc_tunables()}
    mine = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "LRU_CACHE_CAPACITY": "4"}
    assert train_environment(mine) == {**KERNEL_CACHES, **mine}


def _lora_model(tiny: Path) -> Any:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(5)
    base = load_model(str(tiny), dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", init_lora_weights="gaussian")
    return get_peft_model(base, config)


def _kept_loss_grads(
    tiny: Path, batch: dict[str, Any], fuse: Any, autocast: bool = False
) -> list[tuple[Any, list[Any], int]]:
    """(loss, gradients, bytes autograd keeps) of the LoRA model as it is, then with `fuse(model)` applied."""
    results = []
    for fused in (False, True):
        model = _lora_model(tiny)
        if fused:
            fuse(model)
        model.train()
        kept: dict[int, int] = {}
        weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

        def pack(t: Any, kept: dict[int, int] = kept, weights: set[int] = weights) -> Any:
            if t.untyped_storage().data_ptr() not in weights:
                kept.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
            return t

        saving = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        with saving, torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(**batch).loss
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        results.append((loss.detach(), grads, sum(kept.values())))
    return results


@pytest.mark.parametrize("autocast", [False, True])
def test_the_gated_mlp_keeps_one_activation_fewer_with_the_same_numbers(tiny: Path, autocast: bool) -> None:
    from workbench.train import glu

    def fuse(model: Any) -> None:
        assert glu.fuse(model) == 2  # both layers' MLPs
        assert glu.fuse(model) == 0  # once

    batch = _batches()["packed"]
    (loss, grads, kept), (loss_f, grads_f, kept_f) = _kept_loss_grads(tiny, batch, fuse, autocast)
    assert torch.equal(loss, loss_f)
    assert len(grads) == len(grads_f) == 2 * 7 * 2
    assert all(torch.equal(g, h) for g, h in zip(grads, grads_f, strict=True))
    # One (tokens x intermediate) tensor a layer less.
    itemsize = 2 if autocast else 4
    assert kept - kept_f == 2 * batch["input_ids"].numel() * 128 * itemsize, (kept, kept_f)


def test_a_branch_sharing_an_earlier_prefix_gives_the_masked_sdpa_numbers() -> None:
    """A prompt, its chosen answer, then its rejected answer seeing the prompt and itself (not the chosen answer):
    how DPO's pairs run with their prompt computed once."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    prompt, chosen, rejected, n = 5, 4, 3, 12
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[: prompt + chosen, : prompt + chosen] = torch.tril(torch.ones(prompt + chosen, prompt + chosen)).bool()
    lo = prompt + chosen
    mask[lo:, :prompt] = True
    mask[lo:, lo:] = torch.tril(torch.ones(rejected, rejected)).bool()
    runs = attention._layout(mask[None, None])
    assert runs == [[("causal", 0, lo), ("branch", lo, n, 0, prompt)]]

    class Module(torch.nn.Module):
        num_key_value_groups = 2
        is_causal = True

    torch.manual_seed(1)
    q = torch.randn(1, 4, n, 8, requires_grad=True)
    k, v = torch.randn(1, 2, n, 8, requires_grad=True), torch.randn(1, 2, n, 8, requires_grad=True)
    out, _ = attention.sdpa_by_sequence(Module(), q, k, v, mask[None, None], scaling=0.3)
    ref, _ = sdpa_attention_forward(Module(), q, k, v, mask[None, None], scaling=0.3)
    assert torch.allclose(out, ref, atol=1e-6)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref.sum(), (q, k, v))
    assert all(torch.allclose(g, h, atol=1e-5) for g, h in zip(grads, ref_grads, strict=True))
    # A query seeing three runs of keys is not a branch: SDPA with the mask.
    mask[n - 1, prompt + 1] = True
    assert attention._layout(mask[None, None].clone()) is None


def _branch_mask(prompt: int, chosen: int, rejected: int) -> Any:
    """A prompt and its chosen answer causally, then the rejected answer seeing the prompt and itself."""
    n, lo = prompt + chosen + rejected, prompt + chosen
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[:lo, :lo] = torch.tril(torch.ones(lo, lo)).bool()
    mask[lo:, :prompt] = True
    mask[lo:, lo:] = torch.tril(torch.ones(rejected, rejected)).bool()
    return mask


def test_short_bf16_runs_take_their_backward_in_fp32_nearer_the_exact_gradients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under bf16 a short run (`attention.FP32_BACKWARD_MAX` query x key positions) keeps torch's bf16 forward (the
    same output to the bit) and takes its backward pass in fp32: for a DPO pair's causal sequence and its branch,
    grouped-query heads, the gradients of query, key and value come out in bf16 and nearer the exact (fp64) ones
    than bf16's own backward gives them. Above the limit a run keeps bf16's backward (the same gradients)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    class Module(torch.nn.Module):
        num_key_value_groups = 3
        is_causal = True

    mask = _branch_mask(prompt=24, chosen=40, rejected=33)[None, None]
    n = mask.shape[-1]
    torch.manual_seed(3)
    q = torch.randn(1, 6, n, 32, dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(1, 2, n, 32, dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    grad = torch.randn(1, n, 6, 32, dtype=torch.bfloat16)
    exact_inputs = [t.detach().double().requires_grad_() for t in (q, k, v)]
    exact_out, _ = sdpa_attention_forward(Module(), *exact_inputs, mask, scaling=0.2)
    exact = torch.autograd.grad(exact_out, exact_inputs, grad.double())

    def run(limit: int) -> tuple[Any, list[Any], list[float]]:
        monkeypatch.setattr(attention, "FP32_BACKWARD_MAX", limit)
        out, _ = attention.sdpa_by_sequence(Module(), q, k, v, mask, scaling=0.2)
        grads = torch.autograd.grad(out, (q, k, v), grad)
        errors = [float((g.double() - e).norm() / e.norm()) for g, e in zip(grads, exact, strict=True)]
        return out.detach(), list(grads), errors

    out, grads, errors = run(attention.FP32_BACKWARD_MAX)
    bf16_out, bf16_grads, bf16_errors = run(0)  # every run above the limit: bf16's backward
    assert torch.equal(out, bf16_out)
    assert [(g.dtype, g.shape) for g in grads] == [(t.dtype, t.shape) for t in (q, k, v)]
    assert all(e < b for e, b in zip(errors, bf16_errors, strict=True)), (errors, bf16_errors)
    assert max(errors) < 5e-3
    assert not any(torch.equal(g, b) for g, b in zip(grads, bf16_grads, strict=True))
    # The limit between the branch (33 queries x 57 keys) and the chosen sequence (64 x 64): the branch alone takes
    # fp32, so the query's gradient differs from bf16's; below both, every gradient is bf16's.
    _, mixed, _ = run(64 * 64 - 1)
    assert not torch.equal(mixed[0], bf16_grads[0])
    _, above, _ = run(33 * 57 - 1)
    assert all(torch.equal(g, b) for g, b in zip(above, bf16_grads, strict=True))


def test_a_frozen_rmsnorm_keeps_its_output_not_its_input_with_the_same_numbers(tiny: Path) -> None:
    """The loss is the model's to the bit (the same forward operations); the gradients agree to float rounding (the
    normalised input is recovered as output / weight); what autograd keeps shrinks by one (tokens x hidden) tensor
    for each norm whose output the next projections keep anyway: layer 0's post-attention norm and both of layer
    1's (layer 0's input norm sees the frozen embeddings: nothing kept; the final norm feeds the frozen head)."""
    from workbench.train import rmsnorm

    def fuse(model: Any) -> None:
        assert rmsnorm.fuse(model) == 5  # two a layer and the final one
        assert rmsnorm.fuse(model) == 0  # once

    batch = _batches()["packed"]
    (loss, grads, kept), (loss_f, grads_f, kept_f) = _kept_loss_grads(tiny, batch, fuse)
    assert torch.equal(loss, loss_f)
    assert len(grads) == len(grads_f) == 2 * 7 * 2
    for g, h in zip(grads, grads_f, strict=True):
        torch.testing.assert_close(h, g, rtol=1e-4, atol=1e-6)
    hidden = load_model(str(tiny)).config.hidden_size
    assert kept - kept_f == 3 * batch["input_ids"].numel() * hidden * 4, (kept, kept_f)


def test_an_rmsnorm_that_trains_or_has_a_zero_weight_runs_the_models_own_forward(tiny: Path) -> None:
    from workbench.train import rmsnorm

    model = _lora_model(tiny)
    rmsnorm.fuse(model)
    norm = model.base_model.model.model.layers[1].input_layernorm
    x = torch.randn(3, 5, model.config.hidden_size, requires_grad=True)
    assert type(norm(x).grad_fn).__name__ == "FrozenRMSNormBackward"
    with torch.no_grad():
        norm.weight[0] = 0.0
    assert type(norm(x).grad_fn).__name__ == "MulBackward0"  # the output / weight would lose feature 0
    with torch.no_grad():
        norm.weight[0] = 1.0
    norm.weight.requires_grad_(True)
    assert type(norm(x).grad_fn).__name__ == "MulBackward0"  # its gradient needs the normalised input


def test_one_malloc_arena_only_where_the_cpu_has_no_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """One arena serialises the split step's two threads' allocations: kept where training runs in fp32 (it saved
    memory there); two where bf16 autocast allocates from both threads at once (one made steps 35 % slower)."""
    from workbench.precision import CPU_BF16_ENV
    from workbench.train import memory

    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert memory.glibc_tunables() == f"{memory.NO_CACHES}:{memory.ONE_ARENA}"
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    assert memory.glibc_tunables() == f"{memory.NO_CACHES}:{memory.TWO_ARENAS}"
    monkeypatch.delenv(CPU_BF16_ENV)  # the CPU's own flags decide
    for flags, arenas in (
        (["avx2", "amx_tile"], memory.TWO_ARENAS),
        (["avx512_bf16"], memory.TWO_ARENAS),
        (["avx2"], memory.ONE_ARENA),
    ):
        monkeypatch.setattr(memory, "cpu_flags", lambda flags=flags: flags)
        assert memory.glibc_tunables() == f"{memory.NO_CACHES}:{arenas}"
    monkeypatch.undo()
    if sys.platform.startswith("linux") and platform.machine() == "x86_64":
        assert "fpu" in memory.cpu_flags()  # the real file: every x86 CPU lists fpu among its flags
