"""Reading the YAML files users write (gate thresholds, eval suites, recipes): one line naming the file, the line and
the problem when one cannot be read, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from workbench.errors import WbError


def read_yaml(path: Path, what: str) -> Any:
    """The parsed YAML document at `path`; a WbError naming `what` ("threshold file") for a missing file, a folder,
    text that is not UTF-8, or YAML that does not parse (with its line)."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WbError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise WbError(f"{path}: is a folder, expected a YAML {what}") from None
    except UnicodeDecodeError:
        raise WbError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise WbError(f"{path}: {where}not valid YAML ({getattr(err, 'problem', err)})") from None


def first_error(err: ValidationError, skip: tuple[str, ...] = ()) -> tuple[str, str]:
    """(dotted location, message) of a validation error's first problem, for a one-line report."""
    e = err.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in e["loc"] if p not in skip)
    return loc, str(e["msg"]).removeprefix("Value error, ")
