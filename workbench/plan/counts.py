"""Parameter counts `wb plan` reports, read from the method specs (`workbench.methods`): how many parameters a
method trains, exactly as PEFT (or wb's own adapter, freeze, full) creates them, and how many its run folder
stores. The formula of each method is in its spec's module (`workbench.methods.lora`, `.prompts`, ...).
"""

from __future__ import annotations

from workbench.errors import WbError
from workbench.methods import registry
from workbench.methods.sizing import Options, Shape
from workbench.methods.spec import MethodSpec


def planned_spec(method: str) -> MethodSpec:
    """The spec of a method `wb plan` estimates; any other name is one line listing those it does."""
    spec = registry.find(method)
    if spec is None or spec.count is None:
        raise WbError(f"--method: {method!r} is not one of {', '.join(registry.planned())}")
    return spec


def trainable_parameters(shape: Shape, method: str, opts: Options) -> int:
    """How many parameters the method trains, as PEFT (or wb's own adapter, freeze, full) creates them."""
    spec = registry.find(method)
    if spec is None or spec.count is None:
        raise WbError(f"method {method!r}: not one of {', '.join(registry.planned())}")
    return spec.count(shape, opts)


def saved_parameters(shape: Shape, method: str, opts: Options) -> int:
    """Numbers the run folder stores: the adapter's (a prompt method's computed prompt), else the whole model."""
    spec = planned_spec(method)
    if spec.saved is not None:
        return spec.saved(shape, opts)
    return trainable_parameters(shape, method, opts) if spec.saves == "adapter" else shape.total_params()
