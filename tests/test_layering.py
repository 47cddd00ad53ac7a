"""The package's import graph follows the data flow (the floors in `FLOORS` below): no import circles, and a
module imports only modules on its own floor or below. Report and gate read files only: nothing they import, even
lazily or through another wb module, loads training code, model code or the deep-learning stack. `evaluate/`,
`score/`, `report/` and `augment` import nothing from `train/`.

The graph is read from the source with `ast`, so imports inside functions (lazy ones) count as much as those at the
top of a module, and `from workbench.x import y` is an import of the module `workbench.x.y` where that is one.

While the code still breaks a rule, its `KNOWN_*` list names today's breaches exactly: a new one fails the test, and
so does a listed one that has gone (strike it from the list, so the list only shrinks).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "workbench"

# Floors, lowest first. A module's floor is that of the longest prefix listed here (a new top-level module is on
# floor 1 until it is listed: it may import only the bottom floor).
FLOORS: dict[str, int] = {
    "workbench": 1,
    "workbench.records": 1,
    "workbench.text": 1,
    "workbench.errors": 1,
    "workbench.io": 1,
    "workbench.io.streams": 1,
    "workbench.io.sniff": 1,
    "workbench.io.reader": 1,
    "workbench.io.options": 1,
    "workbench.io.jsontext": 1,
    "workbench.io.csvrows": 1,
    "workbench.io.formats": 1,
    "workbench.layouts": 1,
    "workbench.output": 1,
    "workbench.frames": 1,
    "workbench.manifest": 1,
    "workbench.yamlfile": 1,
    "workbench.quiet": 1,
    "workbench.charts": 1,
    "workbench.precision": 1,
    "workbench.console": 1,
    "workbench.preference_records": 1,
    "workbench.preference_shapes": 1,
    "workbench.preference_files": 1,
    "workbench.runfile": 1,
    "workbench.metric_specs": 1,
    "workbench.degenerate_kinds": 1,
    "workbench.score_specs": 1,
    "workbench.pairs": 1,
    "workbench.methods": 1,
    "workbench.clean": 2,
    "workbench.dedup": 2,
    "workbench.models": 2,
    "workbench.train": 3,
    "workbench.evaluate": 3,
    "workbench.score": 3,
    "workbench.augment": 3,
    "workbench.token_lengths": 3,
    "workbench.report": 4,
    "workbench.plan": 4,
    "workbench.export": 4,
    "workbench.review": 4,
    "workbench.advice": 4,
    "workbench.stats": 4,
    "workbench.stats_page": 4,
    "workbench.schemas": 4,
    "workbench.cli": 5,
    "workbench.commands": 5,
}

NO_TRAIN = ("workbench.evaluate", "workbench.score", "workbench.report", "workbench.augment")
FILES_ONLY = ("workbench.report", "workbench.review")
MODEL_CODE = ("workbench.train", "workbench.models")
DEEP_LEARNING = ("torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes", "deepspeed")

KNOWN_CIRCLES: set[str] = set()
KNOWN_TRAIN_IMPORTS: set[str] = set()
KNOWN_REPORT_REACH: set[str] = set()
KNOWN_FLOOR_BREACHES: set[str] = set()


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    wb_imports: set[str] = field(default_factory=set)
    third_party: set[str] = field(default_factory=set)


def _module_name(root: Path, path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


@cache
def graph(package: Path = PACKAGE) -> dict[str, Module]:
    """The import graph of the package at `package` (its folder's name is the top-level name)."""
    top_name = package.name
    modules = {}
    for path in sorted(package.rglob("*.py")):
        name, is_package = _module_name(package.parent, path)
        modules[name] = Module(name, path, is_package)
    for mod in modules.values():
        for candidates in _imports(mod):
            target = next((c for c in candidates if c in modules), candidates[-1])
            top = target.partition(".")[0]
            if top != top_name:
                mod.third_party.add(top)
            elif target in modules and target != mod.name:
                mod.wb_imports.add(target)
        # Python runs a module's parent packages' `__init__` before the module itself: an `__init__` that imports its
        # own submodules is a circle with each of them.
        parents = mod.name.split(".")[1:-1]
        for depth in range(1, len(parents) + 1):
            parent = ".".join([top_name, *parents[:depth]])
            if parent in modules and parent != mod.name:
                mod.wb_imports.add(parent)
    return modules


def _imports(mod: Module) -> Iterator[tuple[str, ...]]:
    """Every import anywhere in `mod`'s body, as the module names it may mean, most precise first: `from x import y`
    means the module `x.y` where that is one, else `x`."""
    package = mod.name if mod.is_package else mod.name.rpartition(".")[0]
    for node in ast.walk(ast.parse(mod.path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((alias.name,) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            yield from ((f"{source}.{alias.name}", source) for alias in node.names)


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def floor_of(name: str) -> int:
    best = max((p for p in FLOORS if _under(name, (p,))), key=len)
    return FLOORS[best]


def circles(g: dict[str, Module]) -> set[str]:
    """Strongly connected components of more than one module (Tarjan), each named by its sorted members."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[str] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g[v].wb_imports):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(" ↔ ".join(sorted(component)))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def cycle_path(g: dict[str, Module], members: set[str]) -> str:
    """One import path that goes round inside a circle, for the failure message."""
    start = min(members)
    paths = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(g[v].wb_imports & members):
            if w == start:
                return " → ".join([*paths[v], start])
            if w not in paths:
                paths[w] = [*paths[v], w]
                todo.append(w)
    return start


def reach(g: dict[str, Module], name: str) -> set[str]:
    """Every module of the package that `name` imports, directly or through others."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        for w in g[todo.pop()].wb_imports - seen:
            seen.add(w)
            todo.append(w)
    return seen


def _check(found: set[str], known: set[str], what: str) -> None:
    new = sorted(found - known)
    gone = sorted(known - found)
    assert not new, f"new {what}:\n  " + "\n  ".join(new)
    assert not gone, f"{what} listed as known but gone (strike them from the list):\n  " + "\n  ".join(gone)


def test_a_lazy_import_of_a_submodule_closes_a_circle(tmp_path: Path) -> None:
    pkg = tmp_path / "toy"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "low" / "reader.py").write_text("import json\n\ndef read():\n    from toy.high import view\n")
    (pkg / "high.py").write_text("from .low import reader\nimport torch\n\n\ndef view():\n    pass\n")
    g = graph(pkg)
    # `from toy.high import view`: view is a name; toy.low's `__init__` runs before the reader
    assert g["toy.low.reader"].wb_imports == {"toy.high", "toy.low"}
    assert g["toy.high"].wb_imports == {"toy.low.reader"}  # `from .low import reader`: the module itself
    assert g["toy.high"].third_party == {"torch"}
    assert circles(g) == {"toy.high ↔ toy.low.reader"}
    assert cycle_path(g, {"toy.high", "toy.low.reader"}) == "toy.high → toy.low.reader → toy.high"
    assert reach(g, "toy.low.reader") == {"toy.high", "toy.low.reader", "toy.low"}


def test_a_package_init_that_imports_its_submodules_is_a_circle(tmp_path: Path) -> None:
    pkg = tmp_path / "toy"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("from toy.low.reader import read\n")
    (pkg / "low" / "reader.py").write_text("def read():\n    pass\n")
    assert circles(graph(pkg)) == {"toy.low ↔ toy.low.reader"}  # reader runs toy/low/__init__ first


def test_no_import_circles_in_the_package() -> None:
    found = circles(graph())
    new = found - KNOWN_CIRCLES
    paths = [cycle_path(graph(), set(c.split(" ↔ "))) for c in sorted(new)]
    assert not new, "import circle:\n  " + "\n  ".join(paths)
    _check(found, KNOWN_CIRCLES, "import circles")


def test_evaluate_score_report_and_augment_import_nothing_from_train() -> None:
    found = {
        f"{mod.name} → {target}"
        for mod in graph().values()
        if _under(mod.name, NO_TRAIN)
        for target in sorted(mod.wb_imports)
        if _under(target, ("workbench.train",))
    }
    _check(found, KNOWN_TRAIN_IMPORTS, "imports of train/ from evaluate/, score/, report/ or augment")


def test_report_reaches_no_model_code_and_no_deep_learning_stack() -> None:
    g = graph()
    found = set()
    for mod in g.values():
        if not _under(mod.name, FILES_ONLY):
            continue
        reached = reach(g, mod.name)
        found |= {f"{mod.name} ⇝ {target}" for target in reached if _under(target, MODEL_CODE)}
        found |= {
            f"{mod.name} ⇝ {lib}" for via in reached | {mod.name} for lib in g[via].third_party & set(DEEP_LEARNING)
        }
    _check(found, KNOWN_REPORT_REACH, "report modules reaching model code or the deep-learning stack")


def test_every_module_imports_only_its_floor_or_below() -> None:
    found = {
        f"{mod.name} (floor {floor_of(mod.name)}) → {target} (floor {floor_of(target)})"
        for mod in graph().values()
        for target in mod.wb_imports
        if floor_of(target) > floor_of(mod.name)
    }
    _check(found, KNOWN_FLOOR_BREACHES, "imports from a higher floor")


def test_no_module_of_the_package_outgrows_one_concern() -> None:
    """A module over ~600 lines holds several concerns (issue 26 split the seven that had grown past it)."""
    sizes = {
        p.relative_to(ROOT).as_posix(): len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.rglob("*.py")
    }
    assert {path: n for path, n in sizes.items() if n > 620} == {}
