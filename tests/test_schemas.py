from __future__ import annotations

import json

import pytest
import yaml

from workbench import schemas
from workbench.clean.profile import BUILTIN, _pipelines_dir


def test_schema_files_match_the_models() -> None:
    for name, content in schemas.render().items():
        on_disk = (schemas.SCHEMA_DIR / name).read_bytes()
        assert on_disk == content, f"schemas/{name} is stale: run `make schemas`"


def test_generated_doc_blocks_match_the_registry_and_the_run_schema() -> None:
    for name in schemas.DOCS:
        text = (schemas.ROOT / name).read_text(encoding="utf-8")
        assert "generated: " in text, f"{name} has no generated block"
        assert schemas.render_doc(text) == text, f"{name} is stale: run `make schemas`"


def test_every_registered_metric_is_in_the_evaluation_docs_and_every_shipped_gate_path_is_valid() -> None:
    from workbench import metric_specs
    from workbench.report import gate

    page = (schemas.ROOT / "docs" / "evaluation.md").read_text(encoding="utf-8")
    for name in metric_specs.names():
        assert f"| `{name}` |" in page
    for check in gate.load(schemas.ROOT / "pipelines" / "gate.yaml").resolved():
        assert gate.path_problem(check.metric) is None


def test_every_registered_rule_is_in_the_cleaning_docs_with_its_defaults() -> None:
    from workbench.clean.rule_registry import RULES

    page = (schemas.ROOT / "docs" / "cleaning.md").read_text(encoding="utf-8")
    assert len(RULES) >= 23  # the SFT, score and preference rules
    for name in RULES:
        assert f"| `{name}` |" in page
    assert "| `repeated_ngrams` | SFT, pairs, KTO |" in page and "`n: 4`, `max_fraction: 0.6`" in page
    assert "| `contradictory_pair` | pairs, KTO (across the file) |" in page
    assert "\\<\\|im_end\\|>" in page  # a description's `|` and `<` cannot break the table


def test_a_newly_registered_rule_makes_the_cleaning_docs_stale_until_regenerated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import polars as pl

    from workbench.clean import rule_registry

    class ToyParams(rule_registry.Params):
        max_exclamations: int = 3

    def build(p: ToyParams) -> rule_registry.Check:
        return rule_registry.Check(rule_registry.OUTPUT.str.count_matches("!") > p.max_exclamations, pl.lit("shouts"))

    toy = rule_registry.Rule("toy_shouting", "Output shouts: too many '!'.", ToyParams, build)
    monkeypatch.setitem(rule_registry.RULES, "toy_shouting", toy)
    page = (schemas.ROOT / "docs" / "cleaning.md").read_text(encoding="utf-8")
    regenerated = schemas.render_doc(page)
    assert regenerated != page
    assert "| `toy_shouting` | SFT, pairs, KTO | Output shouts: too many '!'. | `max_exclamations: 3` |" in regenerated


def test_builtin_profiles_validate_against_the_published_schema() -> None:
    import jsonschema

    schema = json.loads((schemas.SCHEMA_DIR / "clean-profile.schema.json").read_text())
    for name in BUILTIN:
        jsonschema.validate(yaml.safe_load((_pipelines_dir() / f"clean-{name}.yaml").read_text()), schema)


def test_record_schema_accepts_a_record_and_rejects_a_wrong_type() -> None:
    import jsonschema

    schema = json.loads((schemas.SCHEMA_DIR / "record.schema.json").read_text())
    jsonschema.validate({"instruction": "你好", "output": "Hi", "history": [["q", "a"]]}, schema)
    try:
        jsonschema.validate({"instruction": "x", "output": 5}, schema)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("output=5 must not validate")


def test_the_architecture_page_maps_every_module_of_the_package() -> None:
    page = (schemas.ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    package = schemas.ROOT / "workbench"
    missing = [p for p in package.rglob("*.py") if f"| `{p.relative_to(schemas.ROOT).as_posix()}` |" not in page]
    assert not missing, f"docs/architecture.md does not map {missing}: run `make schemas`"
