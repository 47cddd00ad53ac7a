"""Training data for a run: read the records, template and tokenise them, hold out a validation split, and refuse
what cannot train (records with no trainable tokens after truncation)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench import io
from workbench.errors import WbError
from workbench.records import FIELDS
from workbench.train import data as tdata
from workbench.train.recipe import Recipe


@dataclass
class Prepared:
    """Tokenised training and validation sets, and what the checks found."""

    template: tdata.Template
    train: list[tdata.Example]
    val: list[tdata.Example]
    warnings: list[str] = field(default_factory=list)
    val_records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (line, record) of each val example


def read_records(
    path: Path, split: str | None = None, prefer: tuple[str, ...] = ("train",)
) -> list[tuple[int, dict[str, Any]]]:
    """Every record of a file or of one split of a dataset folder; a malformed one is a WbError."""
    reader = io.RecordReader(Path(path), split=split, prefer=prefer)
    out: list[tuple[int, dict[str, Any]]] = []
    for batch in reader:
        if batch.rejects:
            r = batch.rejects[0]
            raise WbError(f"{path}:{r.unit} {r.line}: {r.error} (run `wb clean` first)")
        out.extend(
            (line, dict(zip(FIELDS, row, strict=True))) for line, row in zip(batch.lines, batch.rows, strict=True)
        )
        out.extend(batch.conversations)  # tool-calling conversations: {"messages", "tools"}
    out.sort(key=lambda item: item[0])
    if not out:
        raise WbError(f"{path}: no records to train on")
    return out


def prepare(recipe: Recipe, tokenizer: Any, max_positions: int | None) -> Prepared:
    """Read, template, tokenise and check the data; refuse what cannot train."""
    if recipe.data is None:
        raise WbError("recipe: data: no training data given (set data: in the recipe or pass --data FILE)")
    if max_positions is not None and recipe.max_length > max_positions:
        raise WbError(f"max_length: {recipe.max_length} is more than the model supports ({max_positions} positions)")
    template = tdata.choose_template(tokenizer, recipe.template)
    records = read_records(recipe.data, recipe.data_split)[: recipe.max_samples]
    examples = [tdata.encode(tokenizer, r, template, recipe.max_length, recipe.train_on, line) for line, r in records]
    empty = [ex.line for ex in examples if ex.trained_tokens == 0]
    if empty:
        shown = ", ".join(str(n) for n in empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise WbError(
            f"{recipe.data}: {len(empty)} record(s) have no trainable tokens after truncation to max_length "
            f"{recipe.max_length} (lines {shown}); raise max_length or drop them"
        )
    if recipe.eval_data is not None:
        val_records = read_records(recipe.eval_data)
        val = [
            tdata.encode(tokenizer, r, template, recipe.max_length, recipe.train_on, line) for line, r in val_records
        ]
        train = examples
    else:
        order = list(range(len(examples)))
        random.Random(recipe.seed).shuffle(order)
        n_val = round(len(examples) * recipe.val_size) if len(examples) >= 10 else 0
        held = set(order[:n_val])
        val = [ex for i, ex in enumerate(examples) if i in held]
        val_records = [rec for i, rec in enumerate(records) if i in held]
        train = [ex for i, ex in enumerate(examples) if i not in held]
    warnings = check_examples(tokenizer, template, train, recipe)
    return Prepared(template, train, val, warnings, val_records)


def check_examples(tokenizer: Any, template: str, examples: list[tdata.Example], recipe: Recipe) -> list[str]:
    """Warnings worth reading before a run: untrained end-of-turn tokens and a template mismatch."""
    warnings: list[str] = []
    eos = tokenizer.eos_token_id
    truncated = [ex for ex in examples if ex.truncated]
    if truncated:
        warnings.append(
            f"{len(truncated)} of {len(examples)} examples are longer than max_length {recipe.max_length} and were "
            "cut: their end-of-turn token is not trained"
        )
    whole = [ex for ex in examples if not ex.truncated]
    if eos is not None and whole and not any(eos in [t for t in ex.labels if t != tdata.IGNORE] for ex in whole):
        warnings.append(
            f"the end-of-turn token {tokenizer.eos_token!r} is never trained: the tuned model may not stop generating"
        )
    if template == "alpaca" and getattr(tokenizer, "chat_template", None):
        warnings.append(
            "training with the Alpaca template on a model with a chat template: `wb generate` and `wb eval` must "
            "use template alpaca too"
        )
    return warnings


def inspect(tokenizer: Any, examples: list[tdata.Example], n: int) -> list[list[tuple[str, bool]]]:
    """The first n examples as (text, trained) spans, merged where consecutive tokens agree."""
    out = []
    for ex in examples[:n]:
        spans: list[tuple[str, bool]] = []
        run: list[int] = []
        state: bool | None = None
        for tok, label in zip(ex.input_ids, ex.labels, strict=True):
            trained = label != tdata.IGNORE
            if state is not None and trained != state:
                spans.append((tokenizer.decode(run), state))
                run = []
            run.append(tok)
            state = trained
        if run and state is not None:
            spans.append((tokenizer.decode(run), state))
        out.append(spans)
    return out


def rows(examples: list[tdata.Example], recipe: Recipe) -> list[dict[str, Any]]:
    if recipe.packing:
        return [
            {"input_ids": p.input_ids, "labels": p.labels, "lengths": p.lengths}
            for p in tdata.pack(examples, recipe.max_length)
        ]
    return [{"input_ids": ex.input_ids, "labels": ex.labels, "length": len(ex.input_ids)} for ex in examples]


class ListDataset:
    """Rows for Trainer: a list with the length and indexing it asks of a dataset."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]
