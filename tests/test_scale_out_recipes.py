"""Recipe keys for sharded multi-GPU training: `fsdp` (FSDP2 settings) and `deepspeed` (a ZeRO-2/3 JSON file),
checked when the recipe loads, so a mistake is one line naming the key before any model is loaded."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from workbench.errors import WbError
from workbench.train import recipe as recipes

SHIPPED = ["fsdp-7b-lora.yaml", "deepspeed-zero3-7b-full.yaml"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_scale_out_recipes_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the deepspeed path is relative to the working directory, as documented
    rec = recipes.load(Path("pipelines") / name)
    assert (rec.fsdp is None) != (rec.deepspeed is None)


def test_fsdp_settings_become_trainer_fsdp_config() -> None:
    rec = recipes.load(REPO / "pipelines" / "fsdp-7b-lora.yaml")
    assert rec.fsdp is not None
    cfg = rec.fsdp.trainer_config()
    assert cfg["version"] == 2 and cfg["reshard_after_forward"] is True and cfg["cpu_offload"] is False
    assert cfg["transformer_layer_cls_to_wrap"] == ["Qwen2DecoderLayer"]
    zero2 = recipes.load(None, ["fsdp.sharding=shard_grad_op", "fsdp.offload=true", "fsdp.auto_wrap=false"])
    assert zero2.fsdp is not None
    assert zero2.fsdp.trainer_config() == {
        "version": 2, "reshard_after_forward": False, "cpu_offload": True, "auto_wrap_policy": "NO_WRAP",
    }  # fmt: skip


def test_training_arguments_carry_fsdp_and_refuse_deepspeed_when_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    from workbench import precision
    from workbench.train import hf

    choice = precision.for_training("fp32")
    rec = recipes.load(REPO / "pipelines" / "fsdp-7b-lora.yaml")
    args = hf.training_args(rec, Path("/tmp/wb-fsdp-args"), choice, False)
    assert args.fsdp_config["transformer_layer_cls_to_wrap"] == ["Qwen2DecoderLayer"]
    assert args.fsdp_config["reshard_after_forward"] is True
    monkeypatch.chdir(REPO)
    ds = recipes.load(Path("pipelines/deepspeed-zero3-7b-full.yaml"))
    # DeepSpeed absent, whether or not this machine has it (make installs it): None in sys.modules hides a package
    # from importlib.util.find_spec and import alike.
    monkeypatch.setitem(sys.modules, "deepspeed", None)
    with pytest.raises(WbError, match=r"deepspeed: pipelines/deepspeed-zero3.json: DeepSpeed is not installed"):
        hf.training_args(ds, Path("/tmp/wb-ds-args"), choice, False)


def _load(tmp: Path, extra: dict[str, Any]) -> recipes.Recipe:
    path = tmp / "r.yaml"
    path.write_text(json.dumps({"name": "x", **extra}), encoding="utf-8")
    return recipes.load(path)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"fsdp": {"config": {"transformer_layer_cls": ["X"]}}},
            r"fsdp\.config: Value error, unknown key 'transformer_layer_cls'",
        ),
        ({"fsdp": {"config": {"version": 1}}}, r"fsdp\.config: Value error, version: 1; wb passes FSDP2 settings"),
        ({"fsdp": {"sharding": "hybrid"}}, r"fsdp\.sharding: Input should be 'full_shard' or 'shard_grad_op'"),
        ({"fsdp": {"shard": "full"}}, r"fsdp\.shard: Extra inputs are not permitted"),
        ({"deepspeed": "missing.json"}, r"deepspeed: Value error, missing\.json: no such file"),
    ],
)
def test_bad_scale_out_keys_are_one_line(tmp_path: Path, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(WbError, match=message) as err:
        _load(tmp_path, extra)
    assert "\n" not in str(err.value) and str(err.value).startswith(str(tmp_path / "r.yaml"))


def test_deepspeed_file_must_parse_and_name_zero_2_or_3(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"zero_optimization": {"stage": 3,}}', encoding="utf-8")
    with pytest.raises(WbError, match=r"bad\.json: not valid JSON \(line 1: "):
        _load(tmp_path, {"deepspeed": str(bad)})
    stage1 = tmp_path / "z1.json"
    stage1.write_text('{"zero_optimization": {"stage": 1}}', encoding="utf-8")
    with pytest.raises(WbError, match=r"z1\.json: zero_optimization\.stage: 1, expected 2 or 3"):
        _load(tmp_path, {"deepspeed": str(stage1)})
    listed = tmp_path / "list.json"
    listed.write_text("[]", encoding="utf-8")
    with pytest.raises(WbError, match=r"list\.json: a DeepSpeed config is a JSON object"):
        _load(tmp_path, {"deepspeed": str(listed)})
    zero2 = tmp_path / "z2.json"
    zero2.write_text((REPO / "pipelines" / "deepspeed-zero2.json").read_text(), encoding="utf-8")
    assert _load(tmp_path, {"deepspeed": str(zero2)}).deepspeed == zero2


def test_fsdp_and_deepspeed_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(WbError, match="fsdp and deepspeed both set: choose one way to shard the model"):
        _load(tmp_path, {"fsdp": {}, "deepspeed": str(REPO / "pipelines" / "deepspeed-zero3.json")})


def test_wb_train_with_a_bad_deepspeed_file_exits_2_with_one_line(tmp_path: Path, wb: Any) -> None:
    result = wb("train", "deepspeed=nowhere.json", "max_steps=1", "-q")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == ["error: recipe: deepspeed: Value error, nowhere.json: no such file"]
