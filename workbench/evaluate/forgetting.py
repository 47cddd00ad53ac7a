"""Forgetting probes: did tuning cost the model general knowledge or general language modelling?

Two kinds of probe set, told apart by their fields (see `probes/README.md`):
- `qa`: short-answer questions (`instruction`, optional `input`, `output`, optional `answers` list of acceptable
  answers); both models answer, `accuracy` says whether an acceptable answer occurs in the answer.
- `text`: held-out general text (`text`); the mean token loss of each text under both models.

The shipped sets live in `probes/` and are named by file stem (`general_en`, `general_zh`, `general_text_en`,
`general_text_zh`); users pass their own files with the same fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from workbench.errors import WbError
from workbench.evaluate.config import SHIPPED_MC, SHIPPED_PROBES
from workbench.io.reader import read_objects

SHIPPED = SHIPPED_PROBES

Kind = Literal["qa", "text"]


@dataclass
class Item:
    """One thing to evaluate: a task record or a probe."""

    id: str | int
    instruction: str = ""
    input: str = ""
    reference: str = ""
    answers: list[str] = field(default_factory=list)
    system: str = ""
    history: list[list[str]] = field(default_factory=list)
    answer_type: str | None = None  # the record's own answer type (else the suite's)
    options: dict[str, str] | None = None  # multiple choice: letter -> option text

    @property
    def prompt(self) -> str:
        """The question as the model saw it (without the template): instruction and input."""
        return "\n".join(part for part in (self.instruction, self.input) if part)

    @property
    def references(self) -> list[str]:
        return self.answers or [self.reference]

    def record(self) -> dict[str, Any]:
        """The record as the training template wants it (the reference as the answer)."""
        return {
            "instruction": self.instruction,
            "input": self.input,
            "output": self.reference,
            "system": self.system,
            "history": self.history,
        }


@dataclass
class ProbeSet:
    name: str
    kind: Kind
    items: list[Item]
    source: str


def probes_dir() -> Path:
    return Path(str(resources.files("workbench.evaluate") / "probes"))


def load_probe_set(spec: str | Path, limit: int | None = None) -> ProbeSet:
    """A shipped set by name, or a JSONL file of probes; `limit` keeps the first N items."""
    text = str(spec)
    if text in SHIPPED_MC:
        raise WbError(f"probes: {text} is a multiple-choice set; it is read by workbench.evaluate.mc (wb eval --mc)")
    path = probes_dir() / f"{text}.jsonl" if text in SHIPPED else Path(text)
    if not path.is_file():
        raise WbError(f"probes: {text}: no such file, and not a shipped set ({', '.join(SHIPPED)})")
    items: list[Item] = []
    kind: Kind | None = None
    for n, row in read_objects(path):
        row_kind: Kind = "text" if "text" in row else "qa"
        if kind is not None and row_kind != kind:
            raise WbError(f"{path}:line {n}: mixes `text` probes with question probes; keep one kind per file")
        kind = row_kind
        items.append(_probe_item(path, n, row, row_kind))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise WbError(f"{path}: no probes in the file")
    return ProbeSet(path.name.removesuffix(".jsonl"), kind or "qa", items, str(path))


def _probe_item(path: Path, n: int, row: dict[str, Any], kind: Kind) -> Item:
    ident = row.get("id", n)
    if kind == "text":
        if not isinstance(row["text"], str) or not row["text"].strip():
            raise WbError(f"{path}:line {n}: field text: must be a non-empty string")
        return Item(id=ident, reference=row["text"])
    for key in ("instruction", "output"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise WbError(f"{path}:line {n}: field {key}: a question probe needs a non-empty string")
    answers = row.get("answers") or [row["output"]]
    if not isinstance(answers, list) or not all(isinstance(a, str) and a.strip() for a in answers):
        raise WbError(f"{path}:line {n}: field answers: must be a list of non-empty strings")
    return Item(
        id=ident,
        instruction=row["instruction"],
        input=str(row.get("input") or ""),
        reference=row["output"],
        answers=answers,
    )
