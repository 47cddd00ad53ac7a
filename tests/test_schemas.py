from __future__ import annotations

import json

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


def test_every_registered_metric_is_in_the_readme_and_every_shipped_gate_path_is_valid() -> None:
    from workbench.evaluate import registry
    from workbench.report import gate

    readme = (schemas.ROOT / "README.md").read_text(encoding="utf-8")
    for name in registry.names():
        assert f"| `{name}` |" in readme
    for check in gate.load(schemas.ROOT / "pipelines" / "gate.yaml").resolved():
        assert gate.path_problem(check.metric) is None


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
