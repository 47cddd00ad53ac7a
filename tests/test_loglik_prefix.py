"""Prefix reuse in `workbench.models.loglik`: the continuations after one context run as one row (the context once,
each continuation as a tree after it) and every log-likelihood is still that of its full row scored alone — options
of different token lengths, an option that is a prefix of another, Chinese text, a context whose last token merges
with the continuation (lm-eval's `_encode_pair` split, then its own full row), bf16, prefix tuning and rows longer than a
sliding window (full rows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch_needed = pytest.mark.skipif(
    __import__("importlib").util.find_spec("torch") is None, reason="needs the training extra (torch)"
)

CONTEXT_EN = "Question: Which city is the capital of France?\nAnswer:"
CONTEXT_ZH = "问题：水在标准大气压下多少摄氏度沸腾？\n答案："
REQUESTS = [
    # Options of different token lengths, one a prefix of another, one repeated.
    (CONTEXT_EN, " Paris"),
    (CONTEXT_EN, " Paris, the largest city of France"),
    (CONTEXT_EN, " Berlin"),
    (CONTEXT_EN, " Paris"),
    (CONTEXT_EN, " Lyon, on the Rhône"),
    # Chinese text, as context and continuations.
    (CONTEXT_ZH, " 100摄氏度"),
    (CONTEXT_ZH, " 一百度"),
    (CONTEXT_ZH, " 50摄氏度左右"),
    # Letters: one token each after one context.
    ("Q?\nA. x\nB. y\nAnswer:", " A"),
    ("Q?\nA. x\nB. y\nAnswer:", " B"),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from workbench.models.base import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("prefix") / "tiny")


@pytest.fixture(scope="module")
def loaded(tiny: Path) -> Any:
    from workbench.models.targets import Target, load

    return load([Target(str(tiny), str(tiny))])


def _requests(pairs: list[tuple[str, str]]) -> list[Any]:
    from workbench.models.loglik import split_pair

    return [split_pair(c, x) for c, x in pairs]


def _full_row(model: Any, tok: Any, context: str, continuation: str, bf16: bool = False) -> tuple[float, int]:
    """lm-eval's recipe with plain transformers, one full row alone (no padding, no wb code): the whole text
    tokenised once, the continuation's tokens those after the context's token count."""
    import torch

    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    n_ctx = len(tok(context, add_special_tokens=False)["input_ids"])
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=torch.tensor([whole[:-1]])).logits[0]
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    return sum(float(logprobs[i - 1, whole[i]]) for i in range(n_ctx, len(whole))), len(whole) - n_ctx


def _count_rows(model: Any, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    forward = model.forward

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counting)
    return calls


@torch_needed
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_continuations_sharing_a_context_run_as_one_row_and_score_as_their_full_rows_alone_in_fp32(
    loaded: Any, monkeypatch: pytest.MonkeyPatch, batch_size: int
) -> None:
    from workbench.models.loglik import loglikelihoods

    requests = _requests(REQUESTS)
    expected = [_full_row(loaded.model, loaded.tokenizer, r.context, r.continuation) for r in requests]
    calls = _count_rows(loaded.model, monkeypatch)
    got = loglikelihoods(loaded, requests, batch_size=batch_size, precision="fp32")
    assert [n for _, n in got] == [n for _, n in expected]
    assert [v for v, _ in got] == pytest.approx([v for v, _ in expected], abs=1e-4)  # measured: 3.2e-6 at most
    # One row per distinct context: three contexts, whatever the number or length of the continuations.
    assert sum(int(c["input_ids"].shape[0]) for c in calls) == 3
    assert all(c["attention_mask"].dim() == 4 for c in calls)  # tree rows: a 4D mask and position ids
    # The options of different lengths are different numbers of tokens; the prefix shares its first token.
    lengths = [n for _, n in got]
    assert lengths[1] > lengths[0] and lengths[0] == lengths[3] and got[0] == got[3]


@torch_needed
def test_a_context_whose_last_token_merges_with_the_continuation_keeps_lm_evals_split_on_its_own_full_row(
    loaded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workbench.models.loglik import Request, _encode, _plan, loglikelihoods

    tok = loaded.tokenizer
    # "wor" + "ld": the joined text tokenises as " world", so its ids do not start with the context's own ids.
    merged = Request("Hello wor", "ld peace")
    whole, start, clean = _encode(tok, merged, 1024)
    context_ids = tok(merged.context, add_special_tokens=False)["input_ids"]
    assert not clean and whole[: len(context_ids)] != context_ids
    assert start == len(context_ids)  # lm-eval's split all the same: the continuation is what follows 2 ids
    other = Request("Hello wor", " and more")  # the same context, a continuation that does not merge
    assert _encode(tok, other, 1024)[2]
    rows, places = _plan([_encode(tok, r, 1024) for r in (merged, other)], shared=True)
    assert len(rows) == 2 and rows[places[0][0][0]].ids == whole[:-1]  # the merged one: its full row, alone
    also = Request("Hello wor", " and less")  # shares the context row with `other`
    want = [_full_row(loaded.model, tok, r.context, r.continuation) for r in (merged, other, also)]
    calls = _count_rows(loaded.model, monkeypatch)
    got = loglikelihoods(loaded, [merged, other, also], precision="fp32")
    assert [n for _, n in got] == [n for _, n in want]
    assert [v for v, _ in got] == pytest.approx([v for v, _ in want], abs=1e-4)
    assert sum(int(c["input_ids"].shape[0]) for c in calls) == 2  # the merged full row; one for the other two


@torch_needed
def test_prefix_reuse_under_bf16_stays_within_bf16_rounding_of_the_full_rows(loaded: Any, auto_precision: str) -> None:
    from workbench.models.loglik import loglikelihoods

    requests = _requests(REQUESTS)
    bf16 = auto_precision == "bf16"
    expected = [_full_row(loaded.model, loaded.tokenizer, r.context, r.continuation, bf16=bf16) for r in requests]
    got = loglikelihoods(loaded, requests, batch_size=4, precision="auto")
    # bf16: other matrix shapes (the tree row and its padding) round differently; the sums here (-11 to -159) moved
    # by at most 0.008 on an AVX2 EPYC (bf16 emulated), as padding alone does (test_mc: 0.011); fp32: 3.2e-6.
    tolerance = {"fp32": 1e-4, "bf16": 5e-2}[auto_precision]
    assert [n for _, n in got] == [n for _, n in expected]
    assert [v for v, _ in got] == pytest.approx([v for v, _ in expected], abs=tolerance)


@torch_needed
def test_a_prefix_tuning_adapter_scores_full_rows_with_its_virtual_tokens(
    tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.models.loglik import loglikelihoods
    from workbench.models.targets import Loaded

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    model = get_peft_model(base, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)).eval()
    tok = AutoTokenizer.from_pretrained(tiny)
    loaded = Loaded(model=model, tokenizer=tok, template="chatml", base=str(tiny))
    requests = _requests(REQUESTS[:5])
    expected = [_full_row(model, tok, r.context, r.continuation) for r in requests]
    calls = _count_rows(model, monkeypatch)
    got = loglikelihoods(loaded, requests, batch_size=2, precision="fp32")
    assert [v for v, _ in got] == pytest.approx([v for v, _ in expected], abs=1e-4)
    assert all(c["attention_mask"].dim() == 2 for c in calls)  # virtual tokens need the 2D mask: full rows
    without, _ = _full_row(base, tok, requests[0].context, requests[0].continuation)
    assert got[0][0] != pytest.approx(without, abs=1e-3)  # the virtual tokens did count


@torch_needed
def test_rows_longer_than_a_sliding_window_run_whole_since_a_4d_mask_would_replace_the_window(
    loaded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workbench.models.loglik import loglikelihoods

    requests = _requests(REQUESTS[:3])
    expected = [_full_row(loaded.model, loaded.tokenizer, r.context, r.continuation) for r in requests]
    monkeypatch.setattr(loaded.model.config, "sliding_window", 8, raising=False)  # Llama ignores it: same sums
    calls = _count_rows(loaded.model, monkeypatch)
    got = loglikelihoods(loaded, requests, precision="fp32")
    assert all(c["attention_mask"].dim() == 2 for c in calls)  # the model builds its own (windowed) mask
    assert [v for v, _ in got] == pytest.approx([v for v, _ in expected], abs=1e-4)
