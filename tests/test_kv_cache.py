"""The growing key/value cache of batched generation (`workbench.models.kv_cache`): the same keys, values and
answers as transformers' concatenating `DynamicCache`, through growth, reordering and cropping."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from transformers.cache_utils import DynamicLayer  # noqa: E402

from workbench import precision  # noqa: E402
from workbench.models import generate as gen  # noqa: E402
from workbench.models import kv_cache  # noqa: E402
from workbench.models import targets as runs  # noqa: E402
from workbench.models.base import tiny_model_dir  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny")


def test_a_growing_layer_holds_what_concatenation_holds_through_growth_reorder_and_crop() -> None:
    torch.manual_seed(0)
    grow = kv_cache._layer_class()(store_cast=False)
    plain = DynamicLayer()
    for length in (5, 1, 1, 70, 1, 3):  # past the first buffer (64 rows) and past its doubling
        k, v = torch.randn(3, 2, length, 4), torch.randn(3, 2, length, 4)
        got, want = grow.update(k, v), plain.update(k, v)
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
        assert grow.get_seq_length() == plain.get_seq_length()
    for layer in (grow, plain):
        layer.batch_select_indices(torch.tensor([2, 0]))  # transformers reorders or drops rows
        layer.crop(-4)
    k, v = torch.randn(2, 2, 2, 4), torch.randn(2, 2, 2, 4)
    got, want = grow.update(k, v), plain.update(k, v)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_under_autocast_it_stores_the_dtype_the_attention_casts_to() -> None:
    grow = kv_cache._layer_class()(store_cast=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        keys, values = grow.update(torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4))
    assert keys.dtype == values.dtype == torch.bfloat16
    keys, _ = kv_cache._layer_class()(store_cast=True).update(torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4))
    assert keys.dtype == torch.float32  # no autocast: kept as it came


@pytest.mark.parametrize("wanted", ["fp32", "bf16"])
def test_generation_with_the_growing_cache_gives_the_same_answers(
    tiny: Path, wanted: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = runs.load([runs.resolve_target(str(tiny))])
    prompts = ["Say something.", "把这句话翻译成英文：今天天气很好。" * 3, "List three colours, one per line, " * 6]
    settings = gen.GenerationSettings(max_new_tokens=80, batch_size=3, precision=wanted)  # past the first buffer
    made = []
    monkeypatch.setattr(
        gen, "generation_cache", lambda model: made.append(kv_cache.generation_cache(model)) or made[-1]
    )
    grown = gen.generate_answers(loaded, prompts, settings)
    assert len(made) == 1 and isinstance(made[0].layers[0], kv_cache._layer_class())
    assert made[0].get_seq_length() > 80  # generation filled this cache, not one of its own
    monkeypatch.setattr(gen, "generation_cache", lambda model: None)  # transformers' own cache
    monkeypatch.setattr(precision, "packs_linears", lambda: False)
    assert gen.generate_answers(loaded, prompts, settings) == grown
    assert max(a.generated_tokens for a in grown) == 80  # one ran long enough to outgrow the first buffer
