"""The model card `wb export` writes (README.md): Hugging Face front matter that reads back as written, and every
number in its text equal to the run's own files (train manifest, cleaning stats, eval/metrics.json, the gate); a run
not evaluated yet says so and shows no evaluation number. Runs here are written by `report_fixtures.make_run` (no
model is trained: the card reads files only); tests/test_export_bundle.py checks the card of a real export."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from report_fixtures import make_run

from workbench.evaluate.compare import change
from workbench.export.card import CardInput, ServeSection, render_card, write_card
from workbench.metric_specs import higher_is_better
from workbench.report.gate import run_gate
from workbench.report.summary import load_run

TEMPLATE = {
    "template_kind": "chat",
    "template_source": "chatml",
    "template_sha256": "5f5ad4dc6b7d99fc7ed36b319557eda102b64bcb2d74edc261a778209d6f9553",
    "end_of_turn": "<|im_end|>",
    "eos_token_id": [0, 2],
}
_CELL = re.compile(r"(?<!\\)\|")


def _info(run: Path | None, kind: str = "merged", base: str = "embedded") -> CardInput:
    return CardInput("merged", kind, base, "lora", TEMPLATE, run, lora=True)


def split_card(text: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(front matter, {section title: body}) of a card."""
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    sections = dict(re.findall(r"(?ms)^## (.+?)\n(.*?)(?=^## |\Z)", body))
    return yaml.safe_load(head), sections


def tables(section: str) -> list[list[list[str]]]:
    """The Markdown tables of a section, each as rows of cells as a reader sees them (header and rule left out)."""
    found: list[list[list[str]]] = []
    block: list[str] = []
    for line in [*section.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
        elif block:
            rows = [[html.unescape(c.strip().replace("\\", "")) for c in _CELL.split(r.strip("|"))] for r in block[2:]]
            found.append(rows)
            block = []
    return found


def pairs(section: str) -> dict[str, str]:
    """The two-column `| key | value |` rows of a section."""
    return {row[0]: row[1] for table in tables(section) for row in table if len(row) == 2}


def _interval(lo: Any, hi: Any) -> str:
    return f"[{lo!r}, {hi!r}]"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_run(tmp_path_factory.mktemp("card"), name="demo")
    clean_manifest = run.parent.parent / "data" / "clean.manifest.json"  # the raw file wb clean read, as it records it
    written = json.loads(clean_manifest.read_text(encoding="utf-8"))
    written["inputs"] = {"data": {"path": "data/原始 raw.jsonl", "bytes": 10, "sha256": "c" * 64}}
    clean_manifest.write_text(json.dumps(written, ensure_ascii=False), encoding="utf-8")
    return run


def test_every_number_in_the_card_equals_the_run_files(evaluated: Path) -> None:
    front, sections = split_card(render_card(_info(evaluated), load_run(evaluated)))
    manifest = json.loads((evaluated / "manifest.json").read_text(encoding="utf-8"))
    stats = json.loads((evaluated.parent.parent / "data" / "clean.stats.json").read_text(encoding="utf-8"))
    metrics = json.loads((evaluated / "eval" / "metrics.json").read_text(encoding="utf-8"))

    method = pairs(sections["Method and recipe"])
    assert float(method["lr"]) == manifest["config"]["lr"] and int(method["lora.r"]) == manifest["config"]["lora"]["r"]
    for key in ("global_step", "train_loss", "best_eval_loss", "trainable_parameters", "total_parameters"):
        assert float(method[key]) == manifest[key], key
    assert int(method["examples.train"]) == manifest["examples"]["train"]

    data = sections["Data"]
    counts = pairs(data)
    assert [int(counts[k]) for k in ("read", "kept", "dropped", "rejected")] == [
        stats[k] for k in ("read", "kept", "dropped", "rejected")
    ]
    files, _, rules = tables(data)
    raw = json.loads((evaluated.parent.parent / "data" / "clean.manifest.json").read_text(encoding="utf-8"))
    assert files == [
        ["clean.jsonl", "trained on", manifest["inputs"]["data"]["sha256"]],
        ["原始 raw.jsonl", "cleaned from", raw["inputs"]["data"]["sha256"]],
    ]
    top = sorted(((r, n) for r, n in stats["dropped_by_rule"].items() if n), key=lambda p: -p[1])[:5]
    assert [(r, int(n)) for r, n in rules] == top and len(top) == 4
    assert front["datasets"] == ["clean.jsonl"]

    task_rows, forgetting_rows, *_ = tables(sections["Evaluation"])
    assert {row[0] for row in task_rows} == set(metrics["task"]["metrics"])
    for name, tuned, tuned_ci, base, delta, delta_ci in task_rows:
        st = metrics["task"]["metrics"][name]
        assert (float(tuned), float(base), float(delta)) == (st["tuned"], st["base"], st["delta"]), name
        assert tuned_ci == _interval(st["lower"], st["upper"]) and delta_ci == _interval(
            st["delta_lower"], st["delta_upper"]
        )
    expected = {(s, m) for s, sec in metrics["forgetting"].items() for m in sec["metrics"]}
    assert {(row[0], row[1]) for row in forgetting_rows} == expected
    for set_name, metric, n, base, tuned, delta, delta_ci, verdict in forgetting_rows:
        sec = metrics["forgetting"][set_name]
        st = sec["metrics"][metric]
        assert (int(n), float(base), float(tuned), float(delta)) == (sec["n"], st["base"], st["tuned"], st["delta"])
        assert delta_ci == _interval(st["delta_lower"], st["delta_upper"])
        assert verdict == change(st, higher_is_better(metric)) != ""
    assert "No gate was checked" in sections["Evaluation"]

    template = pairs(sections["Chat template"])
    assert template["fingerprint (sha256)"] == TEMPLATE["template_sha256"] and template["template"] == "chatml"


def test_the_gate_verdict_and_thresholds_are_the_gates_own(evaluated: Path, tmp_path: Path) -> None:
    gate_file = tmp_path / "gate.yaml"
    gate_file.write_text(
        "checks:\n  - task.rouge_l.delta_lower >= 0.5\n  - clean.dropped_fraction <= 0.2\n"
        "  - metric: forgetting.general_en.accuracy.delta_lower\n    min: -0.02\n    allow_inconclusive: true\n",
        encoding="utf-8",
    )
    (tmp_path / "out").mkdir()
    result = write_card(tmp_path / "out", _info(evaluated), gate=gate_file)
    expected = run_gate(load_run(evaluated).summary, gate_file)
    assert result is not None and result.headline == expected.headline
    _, sections = split_card((tmp_path / "out" / "README.md").read_text(encoding="utf-8"))
    gate_rows = tables(sections["Evaluation"])[-1]
    assert [row[0] for row in gate_rows] == [r.check.metric for r in expected.results]
    for (_, threshold, value, verdict), r in zip(gate_rows, expected.results, strict=True):
        assert threshold == r.check.threshold_text and verdict == r.verdict
        assert (value == "-" and r.value is None) or float(value) == r.value
    assert f"{'passed' if expected.passed else 'failed'}, {expected.tally}" in sections["Evaluation"]
    assert "fail" in {r.verdict for r in expected.results}  # the card shows a failing gate as failing


def test_a_run_without_evaluation_says_so_and_gives_no_evaluation_number(tmp_path: Path) -> None:
    run = make_run(tmp_path, name="fresh", evaluate=False)
    text = render_card(_info(run), load_run(run))
    _, sections = split_card(text)
    evaluation = sections["Evaluation"]
    assert "Not evaluated yet" in evaluation and "no evaluation numbers" in evaluation
    assert not tables(evaluation) and "tuned" not in evaluation
    assert pairs(sections["Data"])["kept"] == "300"  # the rest of the card is still there


def test_front_matter_round_trips_chinese_and_quoted_dataset_names_and_the_recipe_license(tmp_path: Path) -> None:
    run = make_run(tmp_path, name="zh", evaluate=False)
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    hostile = 'data/客服对话 "v2": it\'s <b>#1 &amp; | {x}.jsonl'
    manifest["inputs"] = {
        "data[zh]": {**manifest["inputs"]["data"], "path": hostile},
        "data[en]": {**manifest["inputs"]["data"], "path": "data/en: - [a].jsonl"},
    }
    manifest["config"]["license"] = "apache-2.0"
    (run / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    text = render_card(_info(run, kind="adapter"), load_run(run))
    front, sections = split_card(text)
    assert front["datasets"] == ['客服对话 "v2": it\'s <b>#1 &amp; | {x}.jsonl', "en: - [a].jsonl"]
    assert front["license"] == "apache-2.0" and front["library_name"] == "peft"
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "<b>" not in text.split("\n---\n", 1)[1]  # escaped in the Markdown body, kept in the YAML
    files = tables(sections["Data"])[0]
    assert files[0][0] == front["datasets"][0]


def test_a_local_base_model_is_named_in_the_text_not_in_the_metadata(evaluated: Path, tmp_path: Path) -> None:
    local = tmp_path / "models" / "tiny"
    local.mkdir(parents=True)
    front, sections = split_card(render_card(_info(evaluated, base=str(local)), load_run(evaluated)))
    assert "base_model" not in front and front["library_name"] == "transformers" and "license" not in front
    assert pairs(sections["Method and recipe"])["base model"] == f"{local} (a local folder)"


def test_extra_serving_sections_follow_the_loading_instructions(evaluated: Path) -> None:
    gguf = ServeSection("llama.cpp", "```\nllama-cli -m merged/model-f16.gguf -cnv\n```")
    text = render_card(_info(evaluated, kind="adapter"), load_run(evaluated), serving=[gguf])
    usage = split_card(text)[1]["How to use"]
    assert "PeftModel.from_pretrained" in usage and "--enable-lora --lora-modules merged=merged" in usage
    assert usage.index("With vLLM") < usage.index("### llama.cpp") < usage.index("llama-cli -m merged/model-f16.gguf")


def test_the_recipe_license_is_an_id_or_refused() -> None:
    from pydantic import ValidationError

    from workbench.train.recipe import Recipe

    assert Recipe.model_validate({"license": "llama3.1"}).license == "llama3.1"
    with pytest.raises(ValidationError, match="license"):
        Recipe.model_validate({"license": "MIT; rm -rf /"})


def test_an_export_without_a_run_record_invents_nothing() -> None:
    """An adapter folder exported alone (no run folder): the card has its template and loading, and no numbers."""
    front, sections = split_card(render_card(_info(None, kind="adapter"), None))
    assert "datasets" not in front and "license" not in front and front["library_name"] == "peft"
    assert "no run record" in sections["Method and recipe"] and "Not recorded" in sections["Data"]
    assert "Not evaluated yet" in sections["Evaluation"] and not tables(sections["Evaluation"])
    assert set(pairs(sections["Method and recipe"])) == {"method", "base model", "run"}
