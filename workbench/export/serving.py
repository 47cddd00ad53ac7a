"""`wb export --adapter runs/a --adapter runs/b -o DIR`: several runs' LoRA adapters over one base, each as vLLM's
LoRA serving and PEFT load it ("one model, several adapters, switched per task"), with the `vllm serve` line.

DIR/<name>/ is a PEFT adapter folder (adapter_config.json naming the common base, adapter_model.safetensors) with
the run's template bundle (`export.bundle`: the tokenizer with its chat template, generation_config.json with its
end-of-turn stop) and its model card (`export.card`, README.md) holding how the adapters are served together;
DIR/chat_template.jinja is that template once more, for the server's
`--chat-template`; DIR/README.md says how to serve and load them; DIR/wb_export.json is the manifest. The folder is
built beside DIR and renamed into place when complete.

Refused, in one line: a method whose adapter is not LoRA (its spec's `serves_as_lora` and `serving_note`), a run that
holds a whole model, adapters of different base models (compared by folder, else by the SHA-256 of their weights),
adapters trained with different chat templates (one server renders every request with one template, so one adapter
would answer in a format it was not trained on), and an adapter that vLLM would refuse: `vllm_problems` checks its
adapter_config.json and weight names against vLLM's LoRA loader, rule by rule, each with its source in vLLM's code
(bench/vllm_lora_parity.py runs vLLM's own checks beside it).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WbError
from workbench.export.bundle import tokenizer_source, write_bundle
from workbench.export.card import CARD, CardInput, ServeSection, write_card
from workbench.export.pipeline import check_out
from workbench.io.jsontext import read_json_object, write_json
from workbench.manifest import build_manifest
from workbench.methods import registry
from workbench.methods.spec import WHOLE_MODEL
from workbench.models.base import HUB_ID, load_tokenizer, resolve_model
from workbench.models.embedded import EMBEDDED, SOURCE_FILE
from workbench.models.folders import StatusFn, publish_folder, temp_dir_beside
from workbench.models.targets import ADAPTER_INFO, EXPORT_INFO, Target, resolve_target
from workbench.models.weights import ADAPTER_WEIGHTS, PICKLE_SUFFIXES, SAFETENSORS_WEIGHTS
from workbench.output import sha256_file

# vLLM's rules for a LoRA adapter, read in the source of vLLM 0.34.0 (its wheel on PyPI, 2026-12-06):
# vllm/lora/peft_helper.py, vllm/lora/lora_model.py, vllm/lora/utils.py, vllm/config/lora.py,
# vllm/model_executor/models/llama.py. `--max-lora-rank` takes one of these (config/lora.py: MaxLoRARanks); no
# module's rank may exceed it (PEFTHelper.validate_legal: "LoRA rank {r} is greater than max_lora_rank").
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# LlamaForCausalLM (MistralForCausalLM subclasses it): every linear layer takes LoRA (utils.get_supported_lora_modules:
# "In vLLM, all linear layers support LoRA", q/k/v packed as qkv_proj, gate/up as gate_up_proj) and so do its
# `embedding_modules`, embed_tokens and lm_head. LoRAModel.from_local_checkpoint refuses a weight of any other module
# ("expected target modules in ... but received ...").
LLAMA_ARCHITECTURES = frozenset({"LlamaForCausalLM", "MistralForCausalLM"})
LLAMA_LORA_MODULES = frozenset(
    {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "embed_tokens", "lm_head"}
)
# Weights vLLM skips on load (utils.is_base_embedding_weights): the base's own embeddings PEFT saves beside a LoRA
# on them.
_BASE_EMBEDDINGS = (".embed_tokens.base_layer.weight", ".lm_head.base_layer.weight")
# The weight names vLLM reads (utils.parse_fine_tuned_lora_name); any other "is unsupported LoRA weight".
_LORA_WEIGHT = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?:lora_A|lora_B)\.weight$")
_LORA_EMBEDDING = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_embedding_[AB]$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # an adapter's name: `--lora-modules NAME=PATH`, a folder name
TEMPLATE_FILE = "chat_template.jinja"


def vllm_problems(config: Mapping[str, Any], weight_names: Iterable[str], architectures: Iterable[str]) -> list[str]:
    """What would make vLLM refuse this adapter, or serve it otherwise than PEFT computes it: each problem as a
    phrase, empty when none. `config` is its adapter_config.json, `weight_names` the tensors of its
    adapter_model.safetensors, `architectures` those of the base's config.json."""
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        return [f"peft_type {peft_type}: vLLM's LoRA serving loads LORA adapters only"]
    problems = [  # PEFTHelper.from_dict: "Missing required configuration fields"
        f"adapter_config.json has no {key}" for key in ("r", "lora_alpha", "target_modules") if config.get(key) is None
    ]
    ranks = [config.get("r"), *(config.get("rank_pattern") or {}).values()]
    for r in ranks:  # PEFTHelper.__post_init__ ("must be a positive integer") and validate_legal
        if r is None:
            continue
        if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
            problems.append(f"rank {r!r} is not a positive integer")
        elif r > VLLM_MAX_LORA_RANKS[-1]:
            problems.append(f"rank r={r} is above vLLM's largest --max-lora-rank ({VLLM_MAX_LORA_RANKS[-1]})")
    # PEFTHelper._validate_features, in its order
    if config.get("modules_to_save"):
        problems.append(
            f"modules_to_save {config['modules_to_save']}: vLLM takes modules_to_save only for a classification "
            "head (classifier, score), not in a model that generates"
        )
    if config.get("use_dora"):
        problems.append("use_dora: vLLM does not yet support DoRA")
    if config.get("lora_bias"):
        problems.append("lora_bias: vLLM does not support LoRA bias")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in ("gaussian", "eva", "orthogonal", "mica", "lora_ga"):
        problems.append(
            f"init_lora_weights {init!r}: vLLM refuses inits that change the base weights (save the adapter "
            "converted to plain LoRA, as wb's pissa and olora runs are)"
        )
    for key, what in (
        ("alora_invocation_tokens", "Activated LoRA"),
        ("layer_replication", "layer_replication"),
        ("use_bdlora", "block-diagonal LoRA"),
        ("use_qalora", "QALoRA"),
    ):
        if config.get(key):
            problems.append(f"{key}: vLLM does not support {what}")
    if config.get("bias", "none") != "none":  # PEFTHelper.validate_legal: "Adapter bias is not supported."
        problems.append(f"bias {config['bias']!r}: vLLM does not support adapter biases")
    # LoRAModel.from_local_checkpoint/from_lora_tensors: each weight is parsed by utils.parse_fine_tuned_lora_name
    # ("... is unsupported LoRA weight") and its module must be one the model adapts ("expected target modules in").
    llama = bool(set(architectures) & LLAMA_ARCHITECTURES)
    unreadable, unexpected = [], set()
    for name in weight_names:
        if name.endswith(_BASE_EMBEDDINGS):
            continue
        module = _module(name)
        if module is None:
            unreadable.append(name)
        elif llama and module.rsplit(".", 1)[-1] not in LLAMA_LORA_MODULES:
            unexpected.add(module.rsplit(".", 1)[-1])
    if unreadable:
        shown = ", ".join(unreadable[:2]) + (f" and {len(unreadable) - 2} more" if len(unreadable) > 2 else "")
        problems.append(f"weights vLLM cannot read as LoRA A/B matrices: {shown}")
    if unexpected:
        problems.append(
            f"modules vLLM does not adapt on a Llama-family model: {', '.join(sorted(unexpected))} "
            f"(it takes {', '.join(sorted(LLAMA_LORA_MODULES))})"
        )
    return problems


def adapter_rank(config: Mapping[str, Any]) -> int:
    """The largest rank of any module (`r`, or a larger one in `rank_pattern`): what `--max-lora-rank` must hold."""
    return max([int(config["r"]), *(int(r) for r in (config.get("rank_pattern") or {}).values())])


def _module(weight: str) -> str | None:
    """The module a LoRA weight belongs to (`model.layers.0.self_attn.q_proj`), None for a weight vLLM cannot read."""
    match = _LORA_WEIGHT.match(weight) or _LORA_EMBEDDING.match(weight)
    return match["module"] if match is not None else None


def max_lora_rank(ranks: Iterable[int]) -> int:
    """The smallest `--max-lora-rank` vLLM accepts that holds every rank."""
    top = max(ranks, default=1)
    return next(choice for choice in VLLM_MAX_LORA_RANKS if choice >= top)


@dataclass(frozen=True)
class ServedAdapter:
    name: str
    source: str  # the run or adapter folder it came from, as given
    method: str | None
    rank: int
    alpha: float
    rslora: bool
    modules: tuple[str, ...]  # the module names its weights adapt (their last part: q_proj, ...)
    sha256: str  # of its adapter_model.safetensors


@dataclass(frozen=True)
class Serving:
    """Adapters written for serving over one base: what their model cards and README.md say about serving them."""

    folder: Path
    base: str  # the base reference every adapter_config.json names (a hub id, or a local folder)
    adapters: tuple[ServedAdapter, ...]
    template: str  # "chat" (DIR/chat_template.jinja holds it) or "alpaca"
    warnings: tuple[str, ...] = ()
    base_note: str = ""  # where a local base folder came from, and that it travels with the adapters
    files: tuple[str, ...] = field(default=())

    @property
    def max_lora_rank(self) -> int:
        return max_lora_rank(a.rank for a in self.adapters)

    def vllm_command(self) -> str:
        """The `vllm serve` line: the base, each adapter by name, the rank limit they need, the run's template."""
        q = shlex.quote
        modules = " ".join(q(f"{a.name}={self.folder / a.name}") for a in self.adapters)
        line = f"vllm serve {q(self.base)} --enable-lora --lora-modules {modules}"
        line += f" --max-lora-rank {self.max_lora_rank} --max-loras {len(self.adapters)}"
        if self.template == "chat":
            line += f" --chat-template {q(str(self.folder / TEMPLATE_FILE))}"
        return line

    def peft_snippet(self) -> str:
        """Python that loads every adapter over the base with PEFT and switches between them."""
        first, *rest = self.adapters
        lines = [
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f"base = AutoModelForCausalLM.from_pretrained({self.base!r})",
            f"tokenizer = AutoTokenizer.from_pretrained({str(self.folder / first.name)!r})  # the run's template",
            f"model = PeftModel.from_pretrained(base, {str(self.folder / first.name)!r}, adapter_name={first.name!r})",
        ]
        lines += [f"model.load_adapter({str(self.folder / a.name)!r}, adapter_name={a.name!r})" for a in rest]
        lines.append(f"model.set_adapter({self.adapters[-1].name!r})  # switch per request or task")
        return "\n".join(lines)

    def markdown(self, level: int = 2) -> str:
        """How to serve and load the adapters (Markdown, headings at `level`), for each adapter's model card and the
        folder's README.md."""
        h = "#" * level
        rows = "\n".join(
            f"| `{a.name}` | `{_cell(a.source)}` | {a.method or 'lora'} | {a.rank} | {a.alpha:g}"
            f"{' (rsLoRA)' if a.rslora else ''} | {', '.join(a.modules)} |"
            for a in self.adapters
        )
        first = self.adapters[0].name
        if self.template == "chat":
            request = (
                "curl http://localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \\\n"
                f'  -d \'{{"model": "{first}", "messages": [{{"role": "user", "content": "Hello"}}]}}\''
            )
            template = (
                f"`{TEMPLATE_FILE}` is the chat template the runs trained with; `--chat-template` makes the server "
                "render every request with it, whatever the base's own tokenizer holds."
            )
        else:
            request = (
                "curl http://localhost:8000/v1/completions -H 'Content-Type: application/json' \\\n"
                f'  -d \'{{"model": "{first}", "prompt": "### Instruction:\\nHello\\n\\n### Response:\\n"}}\''
            )
            template = (
                "The runs trained with the Alpaca prompt format (no chat template): send completions in that format."
            )
        ranks = ", ".join(str(r) for r in VLLM_MAX_LORA_RANKS)
        return "\n".join(
            [
                f"{h} Adapters",
                "",
                f"Base model: `{_cell(self.base)}` (every adapter's `base_model_name_or_path`).{self.base_note}",
                "",
                "| adapter | from | method | rank | alpha | modules |",
                "|---|---|---|---|---|---|",
                rows,
                "",
                f"{h} Serve with vLLM",
                "",
                "```",
                self.vllm_command(),
                "```",
                "",
                f'Ask for an adapter by its name (`"model": "{first}"`); the base answers under its own name.',
                f"`--max-lora-rank {self.max_lora_rank}` is the smallest of vLLM's choices ({ranks}) that holds the "
                f"largest rank here; `--max-loras {len(self.adapters)}` lets one batch mix every adapter. {template}",
                "",
                "```",
                request,
                "```",
                "",
                f"{h} Load with PEFT",
                "",
                "```python",
                self.peft_snippet(),
                "```",
                "",
            ]
        )


def _cell(text: str) -> str:
    """A path inside a Markdown code span in a table cell: no backtick can end the span, no bar split the cell."""
    return text.replace("`", "'").replace("|", "\\|")


def parse_adapter(spec: str) -> tuple[str, Path]:
    """`runs/a` (named after its folder) or `name=runs/a`."""
    name, sep, path = spec.partition("=")
    if sep and NAME.match(name) and not Path(spec).exists():
        return name, Path(path)
    folder = Path(spec)
    return folder.resolve().name if folder.name in ("", ".", "..") else folder.name, folder


def export_adapters(specs: list[str], out: Path, force: bool = False, on_status: StatusFn | None = None) -> Serving:
    """Write each adapter of `specs` (`runs/a` or `name=runs/a`) to `out/<name>/` over their one base model."""
    started = time.time()
    if not specs:
        raise WbError("--adapter: give at least one run or adapter folder")
    named = [parse_adapter(spec) for spec in specs]
    names = [name for name, _ in named]
    for name in names:
        if not NAME.match(name):
            raise WbError(f"adapter name {name!r}: use letters, digits, '.', '_' or '-' (name it: --adapter NAME=RUN)")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise WbError(f"two adapters are named {twice[0]}; name them apart: --adapter NAME=RUN")
    targets = [_servable(name, path) for name, path in named]
    bases = _one_base(targets, on_status)
    template, template_text = _one_template(targets, on_status)
    architectures = _architectures(bases[0])
    served, warnings = [], []
    for name, target in zip(names, targets, strict=True):
        served.append(_checked(name, target, architectures))
        spec = registry.find(target.method)
        if spec is not None and spec.quantized:
            warnings.append(
                f"{name}: trained over the base in 4-bit NF4; vLLM serves it over the base as the folder holds it"
            )
    if not architectures & LLAMA_ARCHITECTURES:
        shown = ", ".join(sorted(architectures)) or "an unnamed architecture"
        warnings.append(f"the base is {shown}: its adapted modules were not checked against vLLM (Llama family only)")
    base_ref = _reference(targets[0].base, bases[0])
    note = _base_note(base_ref, bases[0])
    check_out(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = Serving(out, base_ref, tuple(served), template, tuple(warnings), base_note=note)
    with temp_dir_beside(out) as tmp:
        for adapter, target in zip(served, targets, strict=True):
            warnings += _write_adapter(target, tmp / adapter.name, base_ref, result.markdown(level=4), on_status)
        if template_text is not None:
            (tmp / TEMPLATE_FILE).write_text(template_text, encoding="utf-8")
        title = f"# {len(served)} adapter{'s' if len(served) > 1 else ''} over one base, for serving\n\n"
        (tmp / CARD).write_text(title + result.markdown(), encoding="utf-8")
        manifest = build_manifest(
            command="export",
            started=started,
            inputs={},
            outputs={},
            config={"adapters": {a.name: a.source for a in served}, "kind": "adapters"},
        )
        manifest.update(
            {
                "base_model": base_ref,
                "template": template,
                "adapters": [a.__dict__ for a in served],
                "max_lora_rank": result.max_lora_rank,
                "vllm_command": result.vllm_command(),
                "warnings": warnings,
            }
        )
        write_json(tmp / EXPORT_INFO, manifest)
        files = tuple(sorted(p.name for p in tmp.iterdir()))
        if force and out.exists():
            shutil.rmtree(out)
        publish_folder(tmp, out)
    return Serving(out, base_ref, tuple(served), template, tuple(warnings), note, files)


def _servable(name: str, path: Path) -> Target:
    """The run or adapter folder as a target, refused when its method's adapter is not LoRA or it has none."""
    if not path.is_dir():
        raise WbError(f"--adapter {name}={path}: no such folder; give a run folder (runs/NAME) or an adapter folder")
    target = resolve_target(path)
    if target.run_dir is None and target.adapter is None:
        raise WbError(f"{path}: not a run folder (recipe.yaml) or an adapter folder (adapter_config.json)")
    spec = registry.find(target.method)
    if spec is not None and not spec.serves_as_lora:
        raise WbError(f"{path}: cannot be served as a vLLM LoRA adapter: {target.method} {spec.serving_note}")
    if target.adapter is None:
        raise WbError(f"{path}: cannot be served as a vLLM LoRA adapter: {target.method} {WHOLE_MODEL}")
    return target


def _one_base(targets: list[Target], on_status: StatusFn | None) -> list[Path]:
    """Each target's base folder, refused unless they are one model: the same folder, or the same weight bytes."""
    folders = [resolve_model(t.base, on_status) for t in targets]
    first, first_folder = targets[0], folders[0]
    for target, folder in zip(targets[1:], folders[1:], strict=True):
        if Path(os.path.realpath(folder)) == Path(os.path.realpath(first_folder)):
            continue
        if _weights_sha256(folder) != _weights_sha256(first_folder):
            raise WbError(
                f"{first.name} and {target.name} were trained on different base models ({first.base} and "
                f"{target.base}); export adapters of one base together"
            )
    return folders


def _weights_sha256(folder: Path) -> str:
    files = [folder / n for n in SAFETENSORS_WEIGHTS if (folder / n).is_file()]
    if files and files[0].name.endswith(".index.json"):
        index = json.loads(files[0].read_text(encoding="utf-8"))
        files = [folder / f for f in sorted(set(index.get("weight_map", {}).values()))]
    return ":".join(sha256_file(f) for f in files)


def _one_template(targets: list[Target], on_status: StatusFn | None) -> tuple[str, str | None]:
    """("chat", its text) or ("alpaca", None): the template every run trained with, refused when they differ."""
    from workbench.models import templates as tdata

    seen: list[tuple[Target, str, str | None]] = []
    for target in targets:
        tokenizer = load_tokenizer(tokenizer_source(target), on_status)
        kind = tdata.choose_template(tokenizer, target.template)
        text = str(tokenizer.chat_template) if kind == "chat" else None
        for other, other_kind, other_text in seen:
            if (other_kind, other_text) != (kind, text):
                raise WbError(
                    f"{other.name} and {target.name} were trained with different chat templates "
                    f"({_template_label(other)} and {_template_label(target)}); one server renders every request "
                    "with one template, so export adapters of one template together"
                )
        seen.append((target, kind, text))
    return seen[0][1], seen[0][2]


def _template_label(target: Target) -> str:
    return "the base's own" if target.template in ("auto", "chat") else target.template


def _architectures(base: Path) -> set[str]:
    config = read_json_object(base / "config.json", "the base's config")
    return {str(a) for a in config.get("architectures") or []}


def _checked(name: str, target: Target, architectures: set[str]) -> ServedAdapter:
    """The adapter's facts for serving, refused in one line with every problem vLLM would have with it."""
    assert target.adapter is not None
    config_path = target.adapter / "adapter_config.json"
    config = read_json_object(config_path, "the adapter config")
    weights = _weight_names(target.adapter / ADAPTER_WEIGHTS)
    problems = vllm_problems(config, weights, architectures)
    if problems:
        raise WbError(f"{target.adapter}: vLLM would not serve this adapter as trained: {'; '.join(problems)}")
    modules = sorted({m.rsplit(".", 1)[-1] for m in map(_module, weights) if m is not None})
    return ServedAdapter(
        name=name,
        source=str(target.run_dir or target.adapter),
        method=target.method,
        rank=adapter_rank(config),
        alpha=float(config["lora_alpha"]),
        rslora=bool(config.get("use_rslora")),
        modules=tuple(modules),
        sha256=sha256_file(target.adapter / ADAPTER_WEIGHTS),
    )


def _weight_names(path: Path) -> list[str]:
    """The tensor names of a safetensors file, read from its header (no tensor is loaded)."""
    try:
        with path.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
    except (OSError, ValueError) as err:
        raise WbError(f"{path}: not a readable safetensors file ({err})") from None
    return sorted(k for k in header if k != "__metadata__")


def _reference(spec: str, folder: Path) -> str:
    """How the served adapters name their base: a hub id as the run named it, else the local folder (the embedded
    model is wb's own conversion, which no hub holds)."""
    text = str(spec).strip()
    if text not in ("", EMBEDDED) and HUB_ID.match(text) and not Path(text).expanduser().exists():
        return text
    return str(Path(folder).resolve())


def _base_note(base_ref: str, folder: Path) -> str:
    """For a local base folder: that it must travel with the adapters, and what it was converted from (wb's
    embedded model: a dequantised GGUF, whose weights are not the hub model's)."""
    if base_ref != str(Path(folder).resolve()):
        return ""
    note = " It is a local folder: copy it with these adapters and give its new path to `vllm serve`."
    try:
        source = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return note
    if isinstance(source, dict) and source.get("gguf_file"):
        note += (
            f" It is wb's conversion of `{_cell(str(source['gguf_file']))}` ({_cell(str(source.get('model')))}), "
            "whose weights differ from the hub model's: serve the adapters over this folder."
        )
    return note


def _write_adapter(target: Target, dest: Path, base_ref: str, serving: str, on_status: StatusFn | None) -> list[str]:
    """The adapter's files (no pickles, no card or record of an earlier export), its config naming the common base,
    the run's template bundle (`export.bundle`), and its model card (`export.card`) with `serving`, how the adapters
    of this export are served together; the bundle's warnings."""
    assert target.adapter is not None
    dest.mkdir()
    for p in target.adapter.iterdir():
        if p.is_file() and p.suffix not in PICKLE_SUFFIXES and p.name not in (ADAPTER_INFO, EXPORT_INFO, CARD):
            shutil.copy2(p, dest / p.name)
    config = json.loads((dest / "adapter_config.json").read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_ref
    write_json(dest / "adapter_config.json", config)
    bundle = write_bundle(target, dest, on_status)
    info = {"base_model": base_ref, "template": bundle.kind, "method": target.method, **bundle.record()}
    write_json(dest / ADAPTER_INFO, info)
    card = CardInput(dest.name, "adapter", base_ref, target.method, bundle.record(), target.run_dir, lora=True)
    write_card(dest, card, serving=[ServeSection("Served with the other adapters of this export", serving)])
    return bundle.warnings
