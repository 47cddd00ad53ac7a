"""Offline and quiet: wb never downloads, and no line a library announces reaches the user.

`quiet_libraries()` is called before the deep-learning libraries are imported: by the command line at start (so it
holds whatever a command imports first) and by the library functions that load models (so it holds for notebook
and test callers too). It imports nothing heavy, so `wb --help` and `wb clean` stay fast.

- The Hugging Face libraries are switched to offline mode (no hub lookups, no telemetry).
- A log record that no handler takes would be printed by Python's last-resort handler: with a null handler on the
  root logger none reaches the terminal, while an application that configures logging still receives them.
- Loggers that announce at import what the user cannot act on are raised to ERROR: bitsandbytes (imported by peft
  and transformers whenever it is installed) says an optional CPU kernel package is missing, and on a CPU with
  AVX512-BF16 looks its 4-bit kernel up on the Hugging Face kernel hub, which fails offline and is logged by
  `kernels` and by bitsandbytes.
- Warnings libraries raise on every run for their own maintainers (renames planned for transformers 6, PEFT's
  prefix tuning passing `past_key_values`, galore-torch's AdamW copy, Trainer's checkpoint-mtime note) are filtered.
"""

from __future__ import annotations

import logging
import os
import warnings

_LOUD_AT_IMPORT = ("bitsandbytes", "kernels")


def offline() -> None:
    """wb never downloads: switch the Hugging Face libraries to offline mode before they are imported."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"


def _not_checkpoint_mtime(record: logging.LogRecord) -> bool:
    return "mtime may not be reliable" not in record.getMessage()


def quiet_libraries() -> None:
    """Offline, and silence what libraries announce that is not the user's to act on; call before importing them."""
    offline()
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())
    for name in _LOUD_AT_IMPORT:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"This implementation of AdamW is deprecated", category=FutureWarning)
    # Trainer says when two checkpoints were written within a second of each other (fast steps) that it orders
    # them by step number instead of by time, which is what it should do anyway.
    checkpoints = logging.getLogger("transformers.trainer_utils")
    if _not_checkpoint_mtime not in checkpoints.filters:
        checkpoints.addFilter(_not_checkpoint_mtime)
