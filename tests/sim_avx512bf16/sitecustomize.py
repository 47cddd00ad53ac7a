"""Put this folder on PYTHONPATH to make bitsandbytes believe the CPU has AVX512-BF16, as on an AMX or AVX512-BF16
Xeon: its CPU backend then looks up a kernel on the Hugging Face kernel hub when it is imported (by peft or
transformers) and logs two lines about it when the lookup fails offline. Tests use it to check that those lines
never reach a wb user, on any CPU."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any


class _SayAvx512Bf16(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        if name != "bitsandbytes.functional":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            module.has_avx512bf16 = lambda: True  # type: ignore[attr-defined]

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


sys.meta_path.insert(0, _SayAvx512Bf16())
