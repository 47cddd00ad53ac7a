"""Training recipes: defaults, overrides on the command line, and one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workbench.errors import WbError
from workbench.methods import registry
from workbench.train.recipe import Recipe, load, parse_overrides

REPO = Path(__file__).resolve().parent.parent


def test_defaults_follow_common_practice_for_small_data() -> None:
    r = Recipe()
    assert (r.lr, r.batch_size, r.epochs, r.scheduler, r.seed) == (2e-4, 4, 3, "cosine", 42)
    assert (r.lora.r, r.lora.alpha, r.lora.dropout, r.lora.target_modules) == (16, 32, 0.05, "all-linear")
    assert r.train_on == "responses" and r.packing is True


def test_overrides_are_typed_and_nested(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("name: demo\nmethod: lora\nlora:\n  r: 8\n  dropout: 0.1\n", encoding="utf-8")
    r = load(p, ["lora.r=64", "epochs=1", "packing=false", "lr=5e-5"])
    assert (r.lora.r, r.lora.dropout, r.epochs, r.packing, r.lr) == (64, 0.1, 1, False, 5e-5)
    assert parse_overrides(["a.b.c=1", "x=hello"]) == {"a": {"b": {"c": 1}}, "x": "hello"}


@pytest.mark.parametrize(
    ("content", "overrides", "message"),
    [
        ("name: x\nlearning_rate: 1\n", [], "learning_rate: Extra inputs are not permitted"),
        ("name: x\n", ["lora.rank=4"], "lora.rank: Extra inputs are not permitted"),
        ("name: x\nmethod: adapterz\n", [], "method: Input should be"),
        ("name: x\nlr: -1\n", [], "lr: Input should be greater than 0"),
        ("name: has space\n", [], "name: String should match pattern"),
        ("name: x\n", ["epochs"], "expected KEY=VALUE"),
        ("name: [oops\n", [], "not valid YAML"),
        ("name: x\n", ["lr=inf"], "lr: Input should be a finite number"),
        ("name: x\nlr: .nan\n", [], "lr: Input should be a finite number"),
        ("name: x\n", ["lora.dropout=.nan"], "lora.dropout: Input should be a finite number"),
        ("name: x\nmax_grad_norm: .inf\n", [], "max_grad_norm: Input should be a finite number"),
        ("name: x\n", ["name=.."], "name: Value error, '..' is not a run name"),
        ("name: .\n", [], "name: Value error, '.' is not a run name"),
    ],
)
def test_recipe_errors_name_the_key(tmp_path: Path, content: str, overrides: list[str], message: str) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(WbError) as info:
        load(p, overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_recipe_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(WbError, match="recipe not found"):
        load(tmp_path / "none.yaml")


def test_prompt_and_prefix_tuning_do_not_pack() -> None:
    assert Recipe(method="prompt_tuning").packing is False
    assert Recipe(method="prefix_tuning").packing is False


@pytest.mark.parametrize("path", sorted((REPO / "pipelines").glob("train-*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_are_valid(path: Path) -> None:
    r = load(path)
    assert r.method.replace("_", "-") in path.stem or path.stem == "train-demo"


@pytest.mark.parametrize(
    ("method", "loss_type", "message"),
    [
        ("dpo", "sigmoidd", "preference.loss_type: 'sigmoidd' is not one of method dpo's: sigmoid, hinge, ipo,"),
        ("kto", "sigmoid", "preference.loss_type: 'sigmoid' is not one of method kto's: kto, apo_zero_unpaired"),
        ("dpo", "exo_pair", "(exo_pair needs TRL's label_smoothing > 0, which wb does not set)"),
        ("orpo", "sigmoid", "preference.loss_type: method orpo has no loss variants; leave it out"),
    ],
)
def test_an_unknown_preference_loss_type_is_refused_at_load_with_the_accepted_ones(
    method: str, loss_type: str, message: str
) -> None:
    with pytest.raises(WbError) as err:
        load(None, [f"method={method}", f"preference.loss_type={loss_type}"])
    assert str(err.value).startswith("recipe: preference.loss_type: ") and message in str(err.value)


def test_every_accepted_loss_type_loads() -> None:
    for method in registry.names():
        for name in registry.get(method).loss_types:
            extra = ["preference.reward_function=json_valid"] if method == "grpo" else []
            assert load(None, [f"method={method}", f"preference.loss_type={name}", *extra]).preference.loss_type == name


def test_the_accepted_loss_types_are_trls_own() -> None:
    """wb's pinned list is TRL's (field choices where TRL gives them, else the values its help text lists), less the
    ones wb names as left out: a TRL that adds, renames or drops a loss fails here."""
    import dataclasses

    pytest.importorskip("trl")
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl import DPOConfig, GRPOConfig, KTOConfig
    from trl.experimental.cpo import CPOConfig

    def trls(config: type) -> list[str]:
        meta = next(f for f in dataclasses.fields(config) if f.name == "loss_type").metadata
        if "choices" in meta:
            return list(meta["choices"])
        listed = re.search(r"(?:Possible|Supported) values are:? (.*?)\. ", meta["help"])
        assert listed, meta["help"]
        return re.findall(r"'(\w+)'", listed.group(1))

    configs = {"dpo": DPOConfig, "simpo": CPOConfig, "kto": KTOConfig, "grpo": GRPOConfig}
    for method, config in configs.items():
        spec = registry.get(method)
        assert sorted(spec.loss_types + tuple(spec.loss_types_left_out)) == sorted(trls(config)), method
