"""The deep-learning stack, imported on demand: torch and transformers offline and quiet, with a one-line error when
the training extra is missing (`train_stack`), DeepSpeed kept from warning on a machine without a GPU
(`deepspeed_on_cpu`), transformers' progress bars off while a model is converted or saved (`quiet_transformers`), and
the pad token every tokenizer wb loads gets (`ensure_pad_token`). Modules that load or build models import it; it
imports torch and transformers only inside its functions.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections.abc import Iterator
from typing import Any

from workbench.errors import WbError
from workbench.quiet import quiet_libraries


def deepspeed_on_cpu() -> None:
    """DeepSpeed (the [deepspeed] extra), imported by transformers when a model is built, warns on a machine without
    a GPU that it falls back to its CPU accelerator: name that accelerator, so it says nothing."""
    if "DS_ACCELERATOR" not in os.environ and importlib.util.find_spec("deepspeed") is not None:
        import torch

        if not torch.cuda.is_available():
            os.environ["DS_ACCELERATOR"] = "cpu"


def train_stack() -> tuple[Any, Any]:
    """torch and transformers, imported now, offline; a clear error when the training extra is missing."""
    quiet_libraries()
    deepspeed_on_cpu()
    try:
        import torch
        import transformers
    except ImportError as e:
        raise WbError(f"models need torch and transformers ({e.name} is missing): pip install 'wb[train]'") from None
    return torch, transformers


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No per-tensor progress bars from transformers while converting or saving (the caller reports progress).

    The GGUF reader uses tqdm directly rather than transformers' switch, so its `tqdm` is swapped for a silent one.
    """
    from transformers.utils import logging as hf_logging

    gguf_utils: Any = None
    with contextlib.suppress(ImportError):
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    enabled = hf_logging.is_progress_bar_enabled()
    bar = getattr(gguf_utils, "tqdm", None)
    hf_logging.disable_progress_bar()
    if bar is not None:
        gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar
        if enabled:
            hf_logging.enable_progress_bar()


def ensure_pad_token(tokenizer: Any) -> None:
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
