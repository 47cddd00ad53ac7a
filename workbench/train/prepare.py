"""Training data for a run: read the records, template and tokenise them, hold out a validation split, and refuse
what cannot train (records with no trainable tokens after truncation)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WbError
from workbench.io.reader import read_records
from workbench.models import templates as tdata
from workbench.train import mixing, packing
from workbench.train.recipe import DataSource, EvalSource, Recipe

REPLAY = "replay"  # the replay source's name in a mixture (and in eval_replay_loss)


def replay_data() -> Path:
    """The shipped replay set: `data/replay/general.jsonl` in a source checkout, `workbench/_data/...` in a wheel."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_data", package.parent / "data"):
        if (candidate / "replay" / "general.jsonl").is_file():
            return candidate / "replay" / "general.jsonl"
    raise WbError("replay: the shipped replay set data/replay/general.jsonl is missing; set replay_data: FILE")


@dataclass
class Prepared:
    """Tokenised training and validation sets, and what the checks found. For a mixture, `val_sets` holds one
    validation set per source (`val` is their concatenation) and `sources` what the manifest records of each."""

    template: tdata.Template
    train: list[tdata.Example]
    val: list[tdata.Example]
    warnings: list[str] = field(default_factory=list)
    val_sets: dict[str, list[tdata.Example]] | None = None
    sources: dict[str, dict[str, Any]] | None = None
    val_records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (line, record) of each val example


def _encode_file(
    tokenizer: Any,
    template: tdata.Template,
    recipe: Recipe,
    path: Path,
    split: str | None,
    limit: int | None,
    skip_empty: bool = False,
) -> tuple[list[tuple[int, dict[str, Any]]], list[tdata.Example]]:
    """A file's records and their training examples (aligned); records with nothing left to train are refused,
    naming their lines (`skip_empty`: left out instead, for the shipped replay set, whose records the user did not
    write)."""
    records = read_records(path, split)[:limit]
    examples = [tdata.encode(tokenizer, r, template, recipe.max_length, recipe.train_on, line) for line, r in records]
    empty = [ex.line for ex in examples if ex.trained_tokens == 0]
    if empty and skip_empty:
        kept = [i for i, ex in enumerate(examples) if ex.trained_tokens]
        return [records[i] for i in kept], [examples[i] for i in kept]
    if empty:
        shown = ", ".join(str(n) for n in empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise WbError(
            f"{path}: {len(empty)} record(s) have no trainable tokens after truncation to max_length "
            f"{recipe.max_length} (lines {shown}); raise max_length or drop them"
        )
    return records, examples


def is_mixture(recipe: Recipe) -> bool:
    return isinstance(recipe.data, list) or isinstance(recipe.eval_data, list) or bool(recipe.replay)


def prepare(recipe: Recipe, tokenizer: Any, max_positions: int | None) -> Prepared:
    """Read, template, tokenise and check the data; refuse what cannot train."""
    if recipe.data is None:
        raise WbError("recipe: data: no training data given (set data: in the recipe or pass --data FILE)")
    if max_positions is not None and recipe.max_length > max_positions:
        raise WbError(f"max_length: {recipe.max_length} is more than the model supports ({max_positions} positions)")
    template = tdata.choose_template(tokenizer, recipe.template)
    if is_mixture(recipe):
        return _prepare_mixture(recipe, tokenizer, template)
    assert isinstance(recipe.data, Path)
    records, examples = _encode_file(tokenizer, template, recipe, recipe.data, recipe.data_split, recipe.max_samples)
    if recipe.eval_data is not None:
        assert isinstance(recipe.eval_data, Path)
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
    return Prepared(template, train, val, warnings, val_records=val_records)


def sources_of(recipe: Recipe) -> list[DataSource]:
    """The recipe's training sources, the replay set last when `replay` is set."""
    if isinstance(recipe.data, list):
        sources = list(recipe.data)
    else:
        assert recipe.data is not None
        sources = [DataSource(path=recipe.data, split=recipe.data_split, max_samples=recipe.max_samples)]
    if recipe.replay:
        path = recipe.replay_data or replay_data()
        if not path.exists():
            raise WbError(f"replay_data: {path} not found (the shipped replay set is data/replay/general.jsonl)")
        sources.append(DataSource(path=path, name=REPLAY))
    return sources


def _prepare_mixture(recipe: Recipe, tokenizer: Any, template: tdata.Template) -> Prepared:
    """Each source encoded, its validation share held out (when no eval_data), its examples for an epoch drawn."""
    sources = sources_of(recipe)
    read = {
        s.label: _encode_file(
            tokenizer,
            template,
            recipe,
            s.path,
            s.split,
            s.max_samples,
            skip_empty=s.label == REPLAY and bool(recipe.replay),
        )
        for s in sources
    }
    encoded = {label: examples for label, (_, examples) in read.items()}
    val_sets: dict[str, list[tdata.Example]] = {}
    val_records: list[tuple[int, dict[str, Any]]] = []
    pools: dict[str, list[tdata.Example]] = {}
    for s in sources:
        examples = encoded[s.label]
        held = (
            mixing.hold_out(len(examples), recipe.val_size, recipe.seed, s.label) if recipe.eval_data is None else set()
        )
        pools[s.label] = [ex for i, ex in enumerate(examples) if i not in held]
        if held:
            val_sets[s.label] = [ex for i, ex in enumerate(examples) if i in held]
            val_records += [rec for i, rec in enumerate(read[s.label][0]) if i in held]
    if recipe.eval_data is not None:
        evals = (
            recipe.eval_data if isinstance(recipe.eval_data, list) else [EvalSource(path=recipe.eval_data, name="eval")]
        )
        for e in evals:
            recs, val_sets[e.label] = _encode_file(tokenizer, template, recipe, e.path, e.split, e.max_samples)
            val_records += recs
    shares = [mixing.Share(s.label, len(pools[s.label]), s.weight, s.epochs) for s in sources]
    per_epoch = mixing.counts(shares, recipe.replay, REPLAY)
    train: list[tdata.Example] = []
    report: dict[str, dict[str, Any]] = {}
    total = sum(per_epoch.values())
    for s in sources:
        pool = pools[s.label]
        n = per_epoch[s.label]
        if n and not pool:
            raise WbError(f"{s.path}: source {s.label} has no records left to train on after the validation hold-out")
        picked = mixing.draw(len(pool), n, recipe.seed, s.label)
        train.extend(pool[i] for i in picked)
        report[s.label] = {
            "path": str(s.path),
            "records": len(encoded[s.label]),
            "train_records": len(pool),
            "val_records": len(val_sets.get(s.label, [])) if recipe.eval_data is None else 0,
            "per_epoch": n,
            "distinct_per_epoch": len(set(picked)),
            "share": round(n / total, 6) if total else 0.0,
            "passes_per_epoch": round(n / len(pool), 6) if pool else 0.0,
            "seen": round(n * recipe.epochs) if recipe.max_steps is None else None,
            **({"weight": s.weight} if s.weight is not None else {}),
            **({"epochs": s.epochs} if s.epochs is not None else {}),
        }
    if not train:
        raise WbError("data: the mixture draws no training examples (check the weights and epochs)")
    val = [ex for exs in val_sets.values() for ex in exs]
    warnings = check_examples(tokenizer, template, train, recipe)
    return Prepared(template, train, val, warnings, val_sets or None, report, val_records)


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
            for p in packing.pack(examples, recipe.max_length)
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
