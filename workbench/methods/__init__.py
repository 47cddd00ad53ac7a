"""Training methods as data: one spec per method (`spec.MethodSpec`), registered in `registry`, one module per kind
of trainable parameters (`lora`, `ia3`, `prompts`, `llama_adapter`, `bottleneck`, `freeze`, `full`, `preference`).

This package sits on the bottom floor and imports no model code, so the recipe (train/), `wb plan` (plan/), the eval
pipeline and run targets (evaluate/, models/) all read the same facts. How a method is applied to a model lives in
`workbench.train.methods`, one function per trainable-parameter axis; a spec may bring its own `apply` instead.
This `__init__` imports nothing (a package init that imports its submodules is an import circle).
"""
