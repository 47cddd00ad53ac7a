from __future__ import annotations

from pathlib import Path

import pytest

from workbench.clean.profile import BUILTIN, load
from workbench.clean.rule_registry import RULES
from workbench.errors import WbError


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_profiles_load_and_name_only_known_rules(name: str) -> None:
    profile = load(name)
    assert profile.name == name
    assert profile.rule_order and set(profile.rule_order) <= set(RULES)


def test_every_builtin_profile_keeps_chinese_punctuation_and_strict_drops_pii() -> None:
    for name in ("default", "strict", "zh"):
        assert load(name).normalize.keep_as_written
    assert load("strict").pii.action == "drop"


def test_profile_by_path_keeps_rule_order(tmp_path: Path) -> None:
    p = tmp_path / "mine.yaml"
    p.write_text("name: mine\nrules:\n  refusal:\n  empty_output:\n    placeholders: ['n/a']\n", encoding="utf-8")
    profile = load(str(p))
    assert profile.rule_order == ["refusal", "empty_output"]
    assert profile.as_dict()["rules"][1] == {"rule": "empty_output", "placeholders": ["n/a"]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: x\nrules:\n  no_such_rule:\n", "rules.no_such_rule: unknown rule"),
        ("name: x\nrules:\n  length_tokens:\n    max_total: many\n", "rules.length_tokens.max_total"),
        ("name: x\nrules:\n  repeated_lines:\n    max_fraction: 2\n", "rules.repeated_lines.max_fraction"),
        ("name: x\nnormalise: {}\n", "normalise: Extra inputs are not permitted"),
        ("name: x\nnormalize:\n  unicode: NFX\n", "normalize.unicode"),
        ("name: x\nrules: [a, b]\n", "rules: expected a mapping"),
        ("name: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "a profile must be a YAML mapping"),
    ],
)
def test_bad_profiles_fail_with_one_line_naming_file_and_field(tmp_path: Path, content: str, message: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(WbError) as info:
        load(str(p))
    text = str(info.value)
    assert str(p) in text and message in text and "\n" not in text


def test_missing_profile_names_the_builtins(tmp_path: Path) -> None:
    with pytest.raises(WbError, match="profile not found; built-in profiles are default, strict, zh"):
        load(str(tmp_path / "nope.yaml"))
