"""Training methods live in one registry (`workbench.methods`): a method registered from here (a spec with its own
apply function and parameter count) is accepted by a recipe, listed in the recipe schema and the methods table of
docs/methods.md, planned by `wb plan` with its parameter count and trained by `wb train`, with no other change; and
no module of the package tests a method's name (`method == "qlora"`, `method in ("full", "galore")`) or lists method names side by side: the spec answers."""

from __future__ import annotations

import ast
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import write_jsonl

from workbench import schemas
from workbench.methods import registry
from workbench.methods.sizing import Options, Shape
from workbench.methods.spec import MethodSpec
from workbench.plan.build import build_plan
from workbench.train.recipe import Recipe, load

PACKAGE = Path(__file__).resolve().parent.parent / "workbench"
TOY = "toy_norm"


def _norm_only(model: Any, recipe: Any) -> Any:
    """The toy method: only the final norm trains."""
    for p in model.parameters():
        p.requires_grad = False
    for p in model.model.norm.parameters():
        p.requires_grad = True
    return model


def _norm_count(shape: Shape, opts: Options) -> int:
    return shape.hidden


TOY_SPEC = MethodSpec(
    TOY,
    "sft",
    "custom",
    "the final norm alone (a test's toy)",
    order=99,
    saves="model",
    plan_rank=99,
    count=_norm_count,
    apply=_norm_only,
)


@pytest.fixture
def toy() -> Iterator[MethodSpec]:
    registry.register(TOY_SPEC)
    try:
        yield TOY_SPEC
    finally:
        registry.unregister(TOY)


def test_a_method_registered_in_a_test_module_is_accepted_by_a_recipe_and_named_in_its_schema_and_docs(
    toy: MethodSpec,
) -> None:
    assert load(None, [f"method={TOY}"]).method == TOY
    assert Recipe.model_json_schema()["properties"]["method"]["enum"][-1] == TOY
    on_disk = (schemas.SCHEMA_DIR / "train-recipe.schema.json").read_bytes()
    assert schemas.render()["train-recipe.schema.json"] != on_disk  # the published schema is stale until regenerated
    page = (schemas.ROOT / "docs" / "methods.md").read_text(encoding="utf-8")
    regenerated = schemas.render_doc(page)
    assert regenerated != page  # so is the methods table of docs/methods.md
    assert (
        f"| `{TOY}` | SFT | custom | the final norm alone (a test's toy) | `model/` | no | wb's Trainer |"
        in regenerated
    )
    registry.unregister(TOY)
    assert schemas.render()["train-recipe.schema.json"] == on_disk
    assert schemas.render_doc(page) == page
    assert all(f"| `{name}` |" in page for name in registry.names())
    with pytest.raises(Exception, match=r"method: Input should be 'lora', .* or 'grpo'$"):
        load(None, [f"method={TOY}"])


def test_wb_plan_lists_a_registered_method_with_its_parameter_count(toy: MethodSpec, wb: Any) -> None:
    p = build_plan(params=7e9, memory="24GB")
    toy_estimate = next(e for e in p.estimates if e.method == TOY)
    assert toy_estimate.trainable == 4096  # Llama-2-7B's final norm
    assert toy_estimate.adapter_bytes > 13e9  # it saves the whole model (bf16 on a GPU)
    assert [e.method for e in p.estimates][-1] == TOY
    shown = json.loads(wb("plan", "--params", "7e9", "--memory", "24GB", "--method", TOY, "--json").stdout)
    assert [(m["method"], m["trainable"]) for m in shown["methods"]] == [(TOY, 4096)]
    table = wb("plan", "--params", "7e9", "--memory", "24GB")
    assert table.exit_code == 0 and TOY in table.stdout


def test_a_registered_method_trains_with_its_own_apply_function(toy: MethodSpec, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from workbench.models.base import tiny_model_dir
    from workbench.plan.shapes import read_config, shape_from_config
    from workbench.train.trainer import train

    tiny = tiny_model_dir(tmp_path / "tiny")
    data = write_jsonl(tmp_path / "train.jsonl", [{"instruction": f"Say {w}.", "output": w} for w in "abcd"])
    r = load(
        None,
        [f"method={TOY}", "max_steps=2", "val_size=0", "max_length=64", "batch_size=2", "save_steps=1000"],
        model=str(tiny),
        data=data,
        output_dir=tmp_path / "runs",
        name="toy",
    )
    result = train(r)
    shape = shape_from_config(read_config(tiny), str(tiny / "config.json"))
    assert result.manifest["trainable_parameters"] == _norm_count(shape, Options())
    assert (result.run_dir / "model" / "model.safetensors").is_file()  # what its spec says it saves


# ---------------------------------------------------------------------------------------------------------------
# No method-name tests outside the registry


def _names() -> set[str]:
    return set(registry.names())


def _strings(node: ast.AST) -> list[str]:
    """The string constants of a literal, or of a tuple/list/set literal of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def _is_method(node: ast.AST) -> bool:
    """An expression naming a method: `method`, `recipe.method`, `target.method`, `self.method`, `spec.name`..."""
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return name == "method" or name.endswith("_method")


def method_name_tests(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, code) of each comparison of a method with a method's name (`==`, `!=`, `in`, `not in`), each `match`
    on a method with a method's name as a case, and each literal listing two or more method names."""
    found = []
    tree = ast.parse(source)
    literals = {  # `Literal["lora", "qlora", "full"]`: the values of another field (preference.weights), not a list
        id(n.slice) for n in ast.walk(tree) if isinstance(n, ast.Subscript) and ast.unparse(n.value) == "Literal"
    }
    for node in ast.walk(tree):
        if id(node) in literals:
            continue
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            for op, (a, b) in zip(node.ops, itertools.pairwise(sides), strict=True):
                if not isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn):
                    continue
                for subject, other in ((a, b), (b, a)):
                    if _is_method(subject) and set(_strings(other)) & names:
                        found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Match) and _is_method(node.subject):
            cases = [c.pattern for c in node.cases if isinstance(c.pattern, ast.MatchValue)]
            if any(set(_strings(c.value)) & names for c in cases):
                found.append((node.lineno, f"match {ast.unparse(node.subject)}"))
        elif isinstance(node, ast.Tuple | ast.List | ast.Set) and len(set(_strings(node)) & names) >= 2:
            found.append((node.lineno, ast.unparse(node)))
    return sorted(dict(sorted(found, reverse=True)).items())  # one per line


def test_the_scan_finds_each_kind_of_method_name_test() -> None:
    names = {"lora", "qlora", "full", "galore"}
    code = """
if recipe.method == "qlora": pass
if method in ("full", "galore"): pass
if "lora" != target.method: pass
FULL = ["full", "galore"]
match recipe.method:
    case "lora": pass
if pref.weights == "qlora" or method == "paraphrase" or spec.quantized: pass
weights: Literal["lora", "qlora", "full"] = "lora"
"""
    assert [line for line, _ in method_name_tests(code, names)] == [2, 3, 4, 5, 6]


def test_no_module_outside_the_registry_tests_a_method_by_name() -> None:
    names = _names()
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {code}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if PACKAGE / "methods" not in path.parents
        for line, code in method_name_tests(path.read_text(encoding="utf-8"), names)
    ]
    assert not found, "ask the method's spec (workbench/methods/) instead:\n  " + "\n  ".join(found)
