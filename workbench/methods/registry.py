"""The one list of training methods: every spec, by name. The built-in specs are the `SPECS` of each module of this
package (found by listing the package, so a new module needs no line here); a caller (a test, a plugin) adds one
with `register`. The recipe's `method` enum, `wb plan`'s methods and `wb train`'s dispatch are read from here.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from workbench.errors import WbError
from workbench.methods.spec import MethodSpec

_NOT_METHODS = frozenset({"registry", "spec", "sizing"})
_SPECS: dict[str, MethodSpec] = {}


def _specs() -> dict[str, MethodSpec]:
    if not _SPECS:
        found: dict[str, MethodSpec] = {}
        for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
            if info.name not in _NOT_METHODS:
                module = importlib.import_module(f"workbench.methods.{info.name}")
                found |= {spec.name: spec for spec in module.SPECS}
        _SPECS.update(sorted(found.items(), key=lambda kv: kv[1].order))
    return _SPECS


def register(spec: MethodSpec) -> None:
    """Add a method (a name already registered is refused)."""
    specs = _specs()
    if spec.name in specs:
        raise ValueError(f"method {spec.name!r} is already registered")
    specs[spec.name] = spec


def unregister(name: str) -> None:
    _specs().pop(name, None)


def names() -> list[str]:
    """Every method, in recipe order (the order the recipe schema's enum lists them)."""
    return [s.name for s in sorted(_specs().values(), key=lambda s: s.order)]


def planned() -> list[str]:
    """The methods `wb plan` estimates, in its table's order."""
    specs = [s for s in _specs().values() if s.count is not None]
    return [s.name for s in sorted(specs, key=lambda s: (s.plan_rank is None, s.plan_rank or 0, s.order))]


def find(name: str | None) -> MethodSpec | None:
    """The spec named `name`, or None (a run of an older wb, or no run at all)."""
    return _specs().get(name) if name is not None else None


def get(name: str) -> MethodSpec:
    spec = find(name)
    if spec is None:
        raise WbError(f"method {name!r}: not one of {', '.join(names())}")
    return spec


def scores_only(name: str | None) -> bool:
    """A run of a method whose model scores texts (a reward head) and generates nothing."""
    spec = find(name)
    return spec is not None and spec.head == "reward"


def markdown_table() -> str:
    """The table of every method in docs/methods.md (a generated block: a test fails when it drifts)."""
    lines = [
        "| method | family | trainable parameters | what it trains | run folder holds | merges | trainer |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names():
        s = get(name)
        family = "SFT" if s.family == "sft" else "preference"
        trainer = f"TRL `{s.trainer}`" if s.trainer else "wb's Trainer"
        holds, merges = f"`{s.saves}/`", "yes" if s.merges else "no"
        if s.params == "preference.weights":  # what preference.weights trains: a LoRA adapter, or every weight
            holds, merges = "`adapter/` (`model/` with weights full)", "a LoRA adapter: yes"
        lines.append(f"| `{s.name}` | {family} | {s.params} | {s.summary} | {holds} | {merges} | {trainer} |")
    return "\n".join(lines)
