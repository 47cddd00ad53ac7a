"""Run `wb ARGS...` (as `python -m workbench.cli` does) recording every file this process opens for writing, makes
or renames under a folder: `torchrun ... tests/record_writes.py FOLDER LOG_PREFIX train RECIPE` leaves
`LOG_PREFIX<rank>.txt` with one path a line, so a test can tell which process wrote what.

An audit hook sees Python-level opens (open, os.open, torch.save), mkdir and rename/replace; writes done inside
native extensions (safetensors' Rust writer) are not seen.
"""

from __future__ import annotations

import os
import sys
from typing import Any

folder, prefix = os.path.realpath(sys.argv[1]), sys.argv[2]
seen: list[str] = []
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND


def hook(event: str, args: tuple[Any, ...]) -> None:
    if event == "open":
        path, mode, flags = args
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITE_FLAGS)
        paths = [path] if writing else []
    elif event in ("os.mkdir", "os.rename", "os.replace", "os.remove", "os.unlink"):
        paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
    else:
        return
    for p in paths:
        if isinstance(p, (str, os.PathLike)) and os.path.realpath(os.fspath(p)).startswith(folder):
            seen.append(os.fspath(p))


sys.addaudithook(hook)
sys.argv = ["wb", *sys.argv[3:]]
try:
    from workbench.cli import main

    main()
finally:
    with open(f"{prefix}{os.environ.get('RANK', '0')}.txt", "w", encoding="utf-8") as f:
        f.write("".join(f"{p}\n" for p in seen))
