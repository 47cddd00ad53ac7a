"""Training methods as data: one spec per method (`spec.MethodSpec`), registered in `registry`, one module per kind
of trainable parameters (`lora`, `ia3`, `prompts`, `llama_adapter`, `bottleneck`, `freeze`, `full`) and one for the
preference objectives (`objectives`).

This package sits on the bottom floor and imports no model code, so the recipe (train/), `wb plan` (plan/), the eval
pipeline and run targets (evaluate/, models/) all read the same facts. How a method is applied to a model lives in
`workbench.train.methods`, one function per trainable-parameter axis; a spec may bring its own `apply` instead.
This `__init__` imports nothing (a package init that imports its submodules is an import circle).

Adding a method: a module here whose `SPECS` holds its `MethodSpec` (family, trainable-parameter axis, what it saves,
whether it merges, its `count` of trainable parameters for `wb plan`, and its own `apply` when no applier of
`workbench.train.methods` fits), a recipe in `pipelines/`, a section in `workbench.train.recipe` only if it has
settings of its own, and `python -m workbench.schemas` to regenerate the recipe schema and docs/methods.md's table.
tests/test_method_registry.py registers a toy method from a test module and sees it in all of these.
"""
