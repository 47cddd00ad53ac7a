"""wb's vLLM LoRA rules (`workbench.export.serving.vllm_problems`) against vLLM's own code, adapter by adapter.

vLLM does not install here (no GPU, and its wheel pins another torch), so the checks it runs when `vllm serve
--enable-lora` loads an adapter are executed from the source of its wheel: `PEFTHelper.from_local_dir` and
`validate_legal` (vllm/lora/peft_helper.py, run whole, with a stub logger and a stub `LoRAConfig` holding
`max_lora_rank`), and `parse_fine_tuned_lora_name` / `is_base_embedding_weights` (vllm/lora/utils.py, those two
functions) with LoRAModel.from_local_checkpoint's expected-module test for LlamaForCausalLM. Adapters of each kind are
made with PEFT on wb's tiny Llama (LoRA, rsLoRA with per-module ranks and alphas, LoRA on the embeddings, DoRA,
LoRA biases, modules_to_save, rank 600, IA3, prompt tuning, bias "all", an unconverted PiSSA init), and two of them
go through `wb export --adapter`; wb's verdict must agree with vLLM's on every one.

    pip download vllm==0.34.0 --no-deps -d /tmp/vllm && unzip -q /tmp/vllm/vllm-*.whl 'vllm/*' -d /tmp/vllm/src
    PYTHONPATH=. python bench/vllm_lora_parity.py /tmp/vllm/src/vllm
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LLAMA_EXPECTED = {*LINEAR, "embed_tokens", "lm_head"}  # LlamaForCausalLM's linear layers and embedding_modules


@dataclass
class StubLoRAConfig:
    max_lora_rank: int  # the one field validate_legal reads


class _Log:
    def info_once(self, *args: Any, **kwargs: Any) -> None: ...


def load_vllm(src: Path) -> tuple[Any, dict[str, Any]]:
    """vLLM's PEFTHelper class and its two weight-name functions, executed from its source."""
    for name in ("vllm", "vllm.config", "vllm.config.lora", "vllm.logger"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["vllm.config.lora"].LoRAConfig = StubLoRAConfig  # type: ignore[attr-defined]
    sys.modules["vllm.logger"].init_logger = lambda name: _Log()  # type: ignore[attr-defined]
    sys.modules.setdefault("regex", re)  # PEFTHelper uses regex.match like re.match
    helper = types.ModuleType("vllm_peft_helper")
    sys.modules["vllm_peft_helper"] = helper  # dataclasses looks its module up; compile without this file's future
    code = compile((src / "lora" / "peft_helper.py").read_text(), "vllm/lora/peft_helper.py", "exec", dont_inherit=True)
    exec(code, helper.__dict__)
    wanted = {"parse_fine_tuned_lora_name", "is_base_embedding_weights"}
    tree = ast.parse((src / "lora" / "utils.py").read_text())
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    utils: dict[str, Any] = {}
    exec(compile(ast.Module(body=funcs, type_ignores=[]), "vllm/lora/utils.py", "exec", dont_inherit=True), utils)
    return helper.PEFTHelper, utils


def vllm_verdict(peft_helper: Any, utils: dict[str, Any], folder: Path, max_lora_rank: int = 512) -> str:
    from workbench.export.serving import _weight_names

    try:
        helper = peft_helper.from_local_dir(str(folder), max_position_embeddings=None)
        helper.validate_legal(StubLoRAConfig(max_lora_rank))
        unexpected = []
        for key in _weight_names(folder / "adapter_model.safetensors"):
            if utils["is_base_embedding_weights"](key) or "base_layer" in key:  # check_unexpected_modules skips
                continue
            module, _ = utils["parse_fine_tuned_lora_name"](key, None)
            if module.rsplit(".", 1)[-1] not in LLAMA_EXPECTED | set(helper.modules_to_save or ()):
                unexpected.append(module)
        if unexpected:
            raise ValueError(f"expected target modules in {sorted(LLAMA_EXPECTED)} but received {unexpected}")
        return "ok"
    except Exception as err:  # vLLM's refusal, whatever its type
        return f"refused: {type(err).__name__}: {err}"


def make_adapters(root: Path) -> dict[str, Path]:
    import torch
    from peft import IA3Config, LoraConfig, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from workbench.models.base import tiny_model_dir

    tiny = tiny_model_dir(root / "tiny")

    def save(name: str, config: Any) -> Path:
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny), config)
        for p in model.parameters():
            if p.requires_grad:
                torch.nn.init.normal_(p, std=0.01)
        model.save_pretrained(root / name, safe_serialization=True)
        return root / name

    def lora(**kw: Any) -> Any:
        return LoraConfig(task_type="CAUSAL_LM", **{"r": 8, "lora_alpha": 16, "target_modules": LINEAR, **kw})

    folders = {
        "lora": save("lora", lora(r=16, lora_alpha=32)),
        "rslora+patterns": save(
            "rslora", lora(use_rslora=True, rank_pattern={"q_proj": 32}, alpha_pattern={"v_proj": 4})
        ),
        "lora on embeddings": save("embed", lora(target_modules=["q_proj", "embed_tokens"])),
        "dora": save("dora", lora(use_dora=True)),
        "lora_bias": save("lora_bias", lora(lora_bias=True)),
        "modules_to_save lm_head": save("save_head", lora(target_modules=["q_proj"], modules_to_save=["lm_head"])),
        "rank 600": save("big_rank", lora(r=600, target_modules=["q_proj"])),
        "ia3": save("ia3", IA3Config(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"])),
        "prompt tuning": save("prompt", PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM")),
    }
    config = json.loads((root / "lora" / "adapter_config.json").read_text())
    edits = {"bias all": {"bias": "all"}, "pissa init, unconverted": {"init_lora_weights": "pissa"}}
    for name, change in edits.items():
        folder = root / name.split(",")[0].replace(" ", "_")
        shutil.copytree(root / "lora", folder)
        (folder / "adapter_config.json").write_text(json.dumps({**config, **change}))
        folders[name] = folder
    return folders


def main() -> int:
    from workbench.export import serving
    from workbench.quiet import quiet_libraries

    quiet_libraries()
    peft_helper, utils = load_vllm(Path(sys.argv[1]))
    disagree = 0
    with tempfile.TemporaryDirectory() as tmp:
        folders = make_adapters(Path(tmp))
        served = serving.export_adapters(
            [f"a={folders['lora']}", f"b={folders['rslora+patterns']}"], Path(tmp) / "served"
        )
        folders |= {f"wb export --adapter: {a.name}": served.folder / a.name for a in served.adapters}
        for name, folder in folders.items():
            config = json.loads((folder / "adapter_config.json").read_text())
            weights = serving._weight_names(folder / "adapter_model.safetensors")
            problems = serving.vllm_problems(config, weights, {"LlamaForCausalLM"})
            limit = served.max_lora_rank if folder.parent == served.folder else 512
            theirs = vllm_verdict(peft_helper, utils, folder, limit)
            agree = (not problems) == (theirs == "ok")
            disagree += not agree
            print(f"{'agree' if agree else 'DISAGREE'}  {name}")
            print(f"    wb:   {'ok' if not problems else 'refused: ' + '; '.join(problems)}"[:200])
            print(f"    vLLM: {theirs}"[:200])
        print(f"serve line: {served.vllm_command()}")
    print(f"{len(folders) - disagree} of {len(folders)} verdicts agree")
    return 1 if disagree else 0


if __name__ == "__main__":
    sys.exit(main())
