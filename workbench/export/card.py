"""The model card of an export: `README.md` in the Hugging Face format (YAML front matter, then Markdown), written
from the run's own files so that a served model says how it was made, on what data, how it scored and how to load it.

Every number comes from the run's files as `wb report` reads them (`report.summary.load_run`: the train manifest,
the cleaning stats, eval/metrics.json), printed as the file holds it; nothing is recomputed. The forgetting verdict
per probe set is `evaluate.compare.change`, the words the report uses; the gate's verdicts are `wb gate`'s
(`report.gate.run_gate`) on the same summary, given a threshold file. A run not evaluated yet says so and shows no
evaluation number. Text from files is escaped for Markdown (`report.markdown.esc`); the front matter is written by
`yaml.safe_dump`, so any dataset name (quotes, Chinese, a colon) reads back as written.

Other exports (GGUF, several adapters for vLLM) add their own "how to serve" sections as `ServeSection`s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from workbench import __version__
from workbench.evaluate.compare import change
from workbench.models.base import HUB_ID
from workbench.models.embedded import EMBEDDED, EMBEDDED_ORIGIN
from workbench.models.templates import ALPACA_PROMPT
from workbench.output import atomic_write
from workbench.report.gate import GateResult, run_gate
from workbench.report.markdown import esc
from workbench.report.summary import Run, higher_is_better, load_run, stats_of
from workbench.runfile.folder import RunFolder

CARD = "README.md"
RECIPE_KEYS = (
    "epochs", "max_steps", "lr", "batch_size", "grad_accum", "max_length", "packing", "train_on", "scheduler",
    "warmup_ratio", "weight_decay", "seed", "precision",
)  # fmt: skip
TRAIN_KEYS = (
    "precision", "global_step", "train_loss", "best_eval_loss", "trainable_parameters", "total_parameters",
    "train_runtime_seconds",
)  # fmt: skip
TOP_RULES = 5
KIND_TEXT = {
    "merged": "the adapter merged into its base model (a plain transformers model)",
    "adapter": "the adapter alone (PEFT), loaded over its base model",
    "model": "the whole fine-tuned model (a plain transformers model)",
}


@dataclass(frozen=True)
class ServeSection:
    """A "how to serve" section another export adds to the card (llama.cpp, Ollama, vLLM with several adapters):
    its title and its Markdown body."""

    title: str
    body: str


@dataclass(frozen=True)
class CardInput:
    """What the card says of the export itself: its folder name, kind, base model, method and template record."""

    folder: str
    kind: str
    base_model: str
    method: str | None
    template: dict[str, Any]
    run_dir: Path | None = None
    lora: bool = False  # a LoRA adapter: vLLM serves it with --enable-lora


def write_card(
    dest: Path, info: CardInput, gate: Path | None = None, serving: Sequence[ServeSection] = ()
) -> GateResult | None:
    """Write README.md into `dest`; with `gate`, the run's summary is checked against that threshold file."""
    finished = info.run_dir is not None and RunFolder(info.run_dir).finished()
    run = load_run(info.run_dir) if info.run_dir is not None and finished else None
    result = run_gate(run.summary, gate) if run is not None and gate is not None else None
    with atomic_write(dest / CARD) as f:
        f.write(render_card(info, run, result, serving).encode("utf-8"))
    return result


def render_card(
    info: CardInput, run: Run | None, gate: GateResult | None = None, serving: Sequence[ServeSection] = ()
) -> str:
    """The card's text: YAML front matter, then the sections."""
    lines = ["---", yaml.safe_dump(front_matter(info, run), allow_unicode=True, sort_keys=False, width=10_000).rstrip()]
    lines += ["---", ""]
    name = run.name if run is not None else info.folder
    lines += [f"# {esc(name)}", "", f"Exported by wb {esc(__version__)}: {KIND_TEXT[info.kind]}.", ""]
    lines += _method(info, run)
    lines += _data(run)
    lines += _evaluation(run, gate)
    lines += _template(info)
    lines += _usage(info, serving)
    return "\n".join(lines).rstrip() + "\n"


def front_matter(info: CardInput, run: Run | None) -> dict[str, Any]:
    """The Hugging Face metadata: base_model (a hub id; a local folder is named in the text only), library_name,
    license (the recipe's), tags, datasets (the training files by name) and the pipeline."""
    recipe = _recipe(run)
    out: dict[str, Any] = {}
    if isinstance(recipe.get("license"), str):
        out["license"] = recipe["license"]
    hub = hub_id(info.base_model)
    if hub is not None:
        out["base_model"] = hub
    out["library_name"] = "peft" if info.kind == "adapter" else "transformers"
    out["tags"] = ["wb", *([info.method] if info.method else []), info.kind, "text-generation"]
    datasets = [name for name, _ in _data_files(run)]
    if datasets:
        out["datasets"] = datasets
    out["pipeline_tag"] = "text-generation"
    return out


def hub_id(base: str) -> str | None:
    """The hub id of a base model spec: the embedded model's origin, or a spec that is an id and not a folder."""
    if base in ("", EMBEDDED):
        return EMBEDDED_ORIGIN
    if "/" in base and HUB_ID.match(base) and not Path(base).expanduser().exists():
        return base
    return None


def number(value: Any) -> str:
    """A number as the run's JSON file holds it (no rounding, no thousands separator), so the card equals it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    return "-" if value is None else esc(value)


def _row(key: str, value: Any) -> str:
    return f"| {esc(key)} | {number(value)} |"


def _table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def _interval(lo: Any, hi: Any) -> str:
    return f"[{number(lo)}, {number(hi)}]" if lo is not None and hi is not None else "-"


def _recipe(run: Run | None) -> dict[str, Any]:
    recipe = ((run.summary.get("train") or {}).get("recipe") if run is not None else None) or {}
    return recipe if isinstance(recipe, dict) else {}


def _data_files(run: Run | None) -> list[tuple[str, str | None]]:
    """(file name, sha256) of each training input the manifest records (`data`, or `data[<source>]` of a mix)."""
    inputs = ((run.train_manifest or {}).get("inputs") if run is not None else None) or {}
    out = []
    for key, entry in inputs.items():
        if (key == "data" or key.startswith("data[")) and isinstance(entry, dict) and entry.get("path"):
            out.append((Path(str(entry["path"])).name, entry.get("sha256")))
    return out


def _method(info: CardInput, run: Run | None) -> list[str]:
    lines = ["## Method and recipe", ""]
    base = hub_id(info.base_model) or f"{info.base_model} (a local folder)"
    rows = ["| key | value |", "|---|---|", f"| method | {esc(info.method or '-')} |", f"| base model | {esc(base)} |"]
    train = (run.summary.get("train") or {}) if run is not None else {}
    recipe = _recipe(run)
    rows += [_row(k, recipe[k]) for k in RECIPE_KEYS if recipe.get(k) is not None and k != "precision"]
    section = recipe.get(info.method or "")
    if isinstance(section, dict):  # the method's own settings (lora.r, lora.alpha, ...)
        rows += [_row(f"{info.method}.{k}", v) for k, v in section.items() if isinstance(v, int | float | str)]
    rows += [_row(k, train[k]) for k in TRAIN_KEYS if train.get(k) is not None]
    for split, n in (train.get("examples") or {}).items():
        rows.append(_row(f"examples.{split}", n))
    if run is None:
        rows.append("| run | no run record (exported from an adapter folder, or a run that did not finish) |")
    return [*lines, *rows, ""]


def _data(run: Run | None) -> list[str]:
    lines = ["## Data", ""]
    rows = [[esc(name), "trained on", esc(sha or "-")] for name, sha in _data_files(run)]
    raw = (((run.clean_manifest or {}).get("inputs") if run is not None else None) or {}).get("data")
    if isinstance(raw, dict) and raw.get("path"):  # the file `wb clean` read, as its manifest records it
        rows.append([esc(Path(str(raw["path"])).name), "cleaned from", esc(raw.get("sha256") or "-")])
    if rows:
        lines += [*_table(["file", "role", "sha256"], rows), ""]
    clean = run.summary.get("clean") if run is not None else None
    if clean:
        lines += ["Cleaning (`wb clean`): every record read was kept, dropped by a rule or rejected as malformed.", ""]
        lines += [
            "| count | value |",
            "|---|---|",
            *(_row(k, clean[k]) for k in ("read", "kept", "dropped", "rejected")),
        ]
        rules = sorted(((n, r) for r, n in (clean.get("dropped_by_rule") or {}).items() if n), key=lambda p: -p[0])
        if rules:
            lines += ["", "Top drop reasons (rule: records dropped):", ""]
            lines += _table(["rule", "dropped"], [[esc(r), number(n)] for n, r in rules[:TOP_RULES]])
        lines.append("")
    elif run is not None:
        why = run.summary.get("missing", {}).get("clean", "no cleaning statistics found")
        lines += [f"Cleaning statistics: not available ({esc(why)}).", ""]
    else:
        lines += ["Not recorded: there is no run record to read.", ""]
    return lines


def _evaluation(run: Run | None, gate: GateResult | None) -> list[str]:
    lines = ["## Evaluation", ""]
    s = run.summary if run is not None else {}
    task, forgetting = s.get("task"), s.get("forgetting") or {}
    if not task and not forgetting:
        why = s.get("missing", {}).get("eval") or "no eval/metrics.json in the run"
        lines += [f"Not evaluated yet: {esc(why)}. This card gives no evaluation numbers.", ""]
    if task:
        lines += [f"Task set (n = {number(task.get('n'))}), means with 95% bootstrap intervals (`wb eval`):", ""]
        rows = [
            [esc(m), number(st.get("tuned")), _interval(st.get("lower"), st.get("upper")), number(st.get("base")),
             number(st.get("delta")), _interval(st.get("delta_lower"), st.get("delta_upper"))]
            for m, st in stats_of(task).items()
        ]  # fmt: skip
        lines += [*_table(["metric", "tuned", "tuned 95% CI", "base", "delta", "delta 95% CI"], rows), ""]
    if forgetting:
        lines += ["Forgetting probes (base vs tuned on general sets; verdict from the paired interval):", ""]
        rows = [
            [esc(name), esc(m), number(sec.get("n")), number(st.get("base")), number(st.get("tuned")),
             number(st.get("delta")), _interval(st.get("delta_lower"), st.get("delta_upper")),
             esc(change(st, higher_is_better(m)) or "-")]
            for name, sec in forgetting.items()
            for m, st in stats_of(sec).items()
        ]  # fmt: skip
        lines += [*_table(["set", "metric", "n", "base", "tuned", "delta", "delta 95% CI", "verdict"], rows), ""]
    if gate is None:
        lines += ["No gate was checked at export (`wb export RUN --gate thresholds.yaml` adds its verdict).", ""]
    else:
        mark = "passed" if gate.passed else "failed"
        lines += [f"Gate ({esc(Path(gate.source).name)}): {mark}, {esc(gate.tally)}.", ""]
        rows = [
            [esc(r.check.metric), esc(r.check.threshold_text), number(r.value), esc(r.verdict)] for r in gate.results
        ]
        lines += [*_table(["check", "threshold", "value", "verdict"], rows), ""]
    return lines


def _template(info: CardInput) -> list[str]:
    t = info.template
    eos = ", ".join(str(i) for i in t.get("eos_token_id") or [])
    lines = ["## Chat template", ""]
    if t.get("template_kind") == "alpaca":
        prompt = ALPACA_PROMPT.replace("\n", "\\n")
        lines += [f"The run trained with the Alpaca format (`{prompt}`), so the export carries no chat template.", ""]
    else:
        lines += [
            "The exact template the run trained with is in `chat_template.jinja` and `tokenizer_config.json`.",
            "",
        ]
    lines += [
        "| key | value |",
        "|---|---|",
        f"| template | {esc(t.get('template_source'))} |",
        f"| fingerprint (sha256) | {esc(t.get('template_sha256'))} |",
        f"| end of turn | {esc(t.get('end_of_turn') or '-')} |",
        f"| eos_token_id | {eos or '-'} |",
        "",
        "The fingerprint is the sha256 of the prompt the template renders for a fixed conversation; `wb generate` and "
        "`wb eval` warn when the template they render with has another.",
        "",
    ]
    return lines


def _usage(info: CardInput, serving: Sequence[ServeSection]) -> list[str]:
    folder, base = info.folder, hub_id(info.base_model) or info.base_model
    lines = ["## How to use", ""]
    load = (
        f'model = AutoModelForCausalLM.from_pretrained("{folder}")'
        if info.kind != "adapter"
        else f'model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base}"), "{folder}")'
    )
    imports = "from transformers import AutoModelForCausalLM, AutoTokenizer"
    if info.kind == "adapter":
        imports += "\nfrom peft import PeftModel"
        lines += ["With PEFT over the base model (the adapter folder holds the run's tokenizer and template):", ""]
    else:
        lines += ["With transformers (stops at the end-of-turn token through generation_config.json):", ""]
    chat = info.template.get("template_kind") != "alpaca"
    prompt = (
        'prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}], tokenize=False, '
        "add_generation_prompt=True)"
        if chat
        else 'prompt = "### Instruction:\\nHello\\n\\n### Response:\\n"'
    )
    lines += [
        "```python",
        imports,
        "",
        f'tokenizer = AutoTokenizer.from_pretrained("{folder}")',
        load,
        prompt,
        'ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)',
        "out = model.generate(**ids, max_new_tokens=256)",
        'print(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))',
        "```",
        "",
        "With vLLM:",
        "",
    ]
    if info.kind != "adapter":
        lines += ["```", f"vllm serve {folder}", "```", ""]
    elif info.lora:
        template = f"{folder}/chat_template.jinja" if chat else ""
        flag = f" --chat-template {template}" if template else ""
        lines += ["```", f"vllm serve {base} --enable-lora --lora-modules {folder}={folder}{flag}", "```", ""]
    else:
        lines += [f"vLLM serves LoRA adapters only; a {esc(info.method)} adapter is served through PEFT.", ""]
    for section in serving:
        lines += [f"### {esc(section.title)}", "", section.body.rstrip(), ""]
    return lines
