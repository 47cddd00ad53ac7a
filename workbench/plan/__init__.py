"""`wb plan`: which training method fits this model and this machine. `build` (the library function and the `Plan`),
`shapes` (the model's shape), `counts` (trainable and saved parameters, from the method specs), `memory` (peak
memory of one step, with its formulas and sources), `machine` (memory sizes, this machine, precision). Pure
arithmetic over a model's `config.json`; nothing here imports torch (but to ask torch for a GPU when installed).
This `__init__` imports nothing (a package init that imports its submodules is an import circle).
"""
