"""The "how to add X" checklists hold: a clean rule registered from this test module (as an extension module would,
after `workbench.clean.profile` was imported) is in the profile's JSON Schema, in the rule table docs/cleaning.md is
generated from, accepted by `wb clean` through a profile file that names it (its drops carry its name and reason,
the stats count them under its name, the accounting holds) and its parameters are checked by its own model (one line
naming the file and `rules.<rule>.<param>`, exit 2); and every command function of `workbench/commands/` is wired into
the app and named in the README or a docs page (tests/test_console.py keeps those modules and the app module under 200
lines).

Methods (tests/test_method_registry.py), metrics and degenerate kinds (tests/test_registries.py), input formats
(tests/test_readers.py) and record shapes (tests/test_clean_driver.py) have their own checklist tests."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import REPO, read_jsonl, write_jsonl
from pydantic import Field

from workbench import schemas
from workbench.clean import rule_registry
from workbench.clean.profile import Profile
from workbench.clean.rule_registry import OUTPUT, RULES, Check, Params, rule

TOY = "toy_marker_word"


class ToyMarkerParams(Params):
    word: str = Field("XYZZY", min_length=1, description="The word whose presence in the output drops a record.")


def _toy_marker(p: ToyMarkerParams) -> Check:
    return Check(OUTPUT.str.contains(p.word, literal=True), pl.lit(f"output contains the marker word '{p.word}'"))


@pytest.fixture
def toy_rule() -> Iterator[str]:
    """The toy rule, registered as an extension module registers one, and gone again after the test."""
    assert TOY not in RULES
    rule(TOY, "Output contains a marker word (a test's toy).", ToyMarkerParams, kinds=("sft",))(_toy_marker)
    try:
        yield TOY
    finally:
        RULES.pop(TOY, None)


def test_a_rule_registered_in_a_test_module_is_in_the_profile_schema_and_the_docs_table(toy_rule: str) -> None:
    schema = Profile.model_json_schema()
    assert schema["$defs"]["Rules"]["properties"][TOY] == {
        "anyOf": [{"$ref": "#/$defs/ToyMarkerParams"}, {"type": "null"}],
        "default": None,
    }
    assert schema["$defs"]["ToyMarkerParams"]["properties"]["word"]["minLength"] == 1
    on_disk = (schemas.SCHEMA_DIR / "clean-profile.schema.json").read_bytes()
    assert schemas.render()["clean-profile.schema.json"] != on_disk  # the published schema is stale until regenerated
    row = f"| `{TOY}` | SFT | Output contains a marker word (a test's toy). | `word: XYZZY` |"
    assert rule_registry.markdown_table().splitlines()[-1] == row
    page = (REPO / "docs" / "cleaning.md").read_text(encoding="utf-8")
    assert row in schemas.render_doc(page) and row not in page
    RULES.pop(TOY)  # unregistered, the shipped registry gives the published schema and page back
    assert schemas.render()["clean-profile.schema.json"] == on_disk
    assert schemas.render_doc(page) == page


def test_wb_clean_runs_a_rule_registered_in_a_test_module_through_a_profile_file(
    toy_rule: str, tmp_path: Path, wb: Any
) -> None:
    records = [
        {"instruction": "Name a colour.", "input": "", "output": "Blue is a colour."},
        {"instruction": "Say the magic word.", "input": "", "output": "The magic word is plugh."},
        {"instruction": "Name a fruit.", "input": "", "output": "An apple."},
        '{"instruction": "broken", "output": 5}',
    ]
    src = write_jsonl(tmp_path / "raw.jsonl", records)
    profile = tmp_path / "toy.yaml"
    profile.write_text(f"name: toy\nrules:\n  empty_output:\n  {TOY}:\n    word: plugh\n", encoding="utf-8")
    result = wb("clean", src, "--profile", profile, "-o", tmp_path / "clean.jsonl", "-q")
    assert result.exit_code == 0, result.output
    dropped = read_jsonl(tmp_path / "clean.dropped.jsonl")
    assert [(d["line"], d["rule"], d["reason"]) for d in dropped] == [
        (2, TOY, "output contains the marker word 'plugh'")
    ]
    stats = json.loads((tmp_path / "clean.stats.json").read_text(encoding="utf-8"))
    assert stats["dropped_by_rule"][TOY] == 1
    assert (stats["read"], stats["kept"], stats["dropped"], stats["rejected"]) == (4, 2, 1, 1)
    assert stats["read"] == stats["kept"] + stats["dropped"] + stats["rejected"] and stats["invariant_holds"]
    assert {"rule": TOY, "word": "plugh"} in stats["profile"]["rules"]
    assert [r["output"] for r in read_jsonl(tmp_path / "clean.jsonl")] == ["Blue is a colour.", "An apple."]


def test_a_bad_parameter_of_a_registered_rule_is_one_line_naming_the_file_and_field(
    toy_rule: str, tmp_path: Path, wb: Any
) -> None:
    src = write_jsonl(tmp_path / "raw.jsonl", [{"instruction": "Hi.", "output": "Hello."}])
    profile = tmp_path / "bad.yaml"
    for body, field in ((f"  {TOY}:\n    word: ''\n", "word"), (f"  {TOY}:\n    words: x\n", "words")):
        profile.write_text(f"name: bad\nrules:\n{body}", encoding="utf-8")
        result = wb("clean", src, "--profile", profile, "-o", tmp_path / "clean.jsonl")
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(profile) in lines[0] and f"rules.{TOY}.{field}:" in lines[0], lines


# --- commands -------------------------------------------------------------------------------------------------

COMMANDS = REPO / "workbench" / "commands"


def _command_functions() -> list[tuple[str, str]]:
    """(module, function) for every command of `workbench/commands/`: a public module-level function with a typer
    option or argument among its parameters (`Annotated[..., typer.Option(...)]`, or a shared one of
    `workbench/commands/options.py` such as `QuietOpt`)."""
    found = []
    for path in sorted(COMMANDS.glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                source = ast.unparse(node.args)
                if re.search(r"typer\.(Option|Argument)\(|\b[A-Z]\w*Opt\b", source):
                    found.append((path.stem, node.name))
    return found


def test_every_command_function_is_wired_into_the_app_and_documented() -> None:
    from workbench.cli import app

    commands = _command_functions()
    assert len(commands) >= 15, commands  # the AST scan finds them (clean, dedup, ..., report, gate)
    wired = {
        (c.callback.__module__, c.callback.__name__): c.name or c.callback.__name__.replace("_", "-")
        for c in app.registered_commands
        if c.callback is not None
    }
    docs = "\n".join(p.read_text(encoding="utf-8") for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])
    for module, function in commands:
        key = (f"workbench.commands.{module}", function)
        assert key in wired, f"workbench/commands/{module}.py: {function} is not wired into workbench/cli.py's app"
        assert re.search(rf"\bwb {re.escape(wired[key])}\b", docs), f"`wb {wired[key]}` is named in no README/docs page"
