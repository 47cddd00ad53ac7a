"""`wb stats` and `wb validate` as library functions: describe a data file, or check it against the schema."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from workbench import text
from workbench.errors import WbError
from workbench.frames import rows_to_frame
from workbench.io.options import DuplicateKeys
from workbench.io.reader import RecordReader, Reject, raw_text
from workbench.io.sniff import SourceInfo
from workbench.records import PROMPT_FIELDS, mapping_notes

QUANTILES = (0.5, 0.9, 0.99)


@dataclass
class Validation:
    source: SourceInfo
    mapping: dict[str, str]
    records: int = 0
    rejects: list[Reject] = field(default_factory=list)
    rejected_by_kind: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.rejected_by_kind


def validate(
    path: Path,
    overrides: dict[str, str] | None = None,
    keep: int = 50,
    duplicate_keys: DuplicateKeys = "reject",
    split: str | None = None,
) -> Validation:
    """Read every record of `path` as a training example; keep the first `keep` rejects in full. Preference data
    (recognised by its first record, unless `--map` maps SFT fields) is checked against the preference shapes."""
    from workbench.preference_files import sniff_kind

    if not overrides and sniff_kind(Path(path)) is not None:
        return _validate_preferences(Path(path), keep, duplicate_keys, split)
    reader = RecordReader(Path(path), overrides, duplicate_keys=duplicate_keys, split=split)
    result: Validation | None = None
    records = 0
    kinds: Counter[str] = Counter()
    rejects: list[Reject] = []
    for batch in reader:
        records += batch.size
        kinds.update(r.kind for r in batch.rejects)
        rejects.extend(batch.rejects[: max(0, keep - len(rejects))])
    result = Validation(reader.info, reader.mapping or {}, records, rejects, kinds)
    return result


def _validate_preferences(path: Path, keep: int, duplicate_keys: DuplicateKeys, split: str | None) -> Validation:
    from workbench import preference_records

    reader = RecordReader(path, duplicate_keys=duplicate_keys, split=split)
    result = Validation(reader.info, {})
    kind: str | None = None
    for items, _ in reader.iter_items():
        for n, obj, raw in items:
            result.records += 1
            try:
                if isinstance(obj, preference_records.RecordError):
                    raise obj
                ex = preference_records.to_canonical(obj)
            except preference_records.NoPreference:
                continue  # well-formed; wb clean drops it under tied_scores
            except preference_records.RecordError as e:
                reject = Reject(n, reader.info.unit, e.field, e.kind, str(e), raw_text(obj, raw))
            else:
                kind = kind or ex.kind
                if ex.kind == kind:
                    continue
                msg = f"a {ex.kind} record in a file of {kind} records"
                reject = Reject(n, reader.info.unit, "", "mixed_kinds", msg, raw_text(obj, raw))
            result.rejected_by_kind[reject.kind] += 1
            if len(result.rejects) < keep:
                result.rejects.append(reject)
    return result


def _describe_frame(df: pl.DataFrame) -> pl.DataFrame:
    hist = text.history_text()
    cols: list[pl.Expr] = []
    for name, expr in (
        ("instruction", pl.col("instruction")),
        ("input", pl.col("input")),
        ("output", pl.col("output")),
        ("system", pl.col("system")),
        ("history", hist),
    ):
        cols += [
            expr.str.len_chars().cast(pl.Int64).alias(f"{name}.chars"),
            text.token_count(expr).alias(f"{name}.tokens"),
        ]
    return df.select(
        *cols,
        text.cjk_count(pl.col("output")).alias("output.cjk_tokens"),
        text.script_expr(pl.col("output")).alias("output.script"),
        pl.col("history").list.len().cast(pl.Int64).alias("history.turns"),
        text.duplicate_text(PROMPT_FIELDS).alias("_prompt_key"),
        pl.col("instruction").alias("_prompt"),
    )


def describe(
    path: Path, overrides: dict[str, str] | None = None, top: int = 10, split: str | None = None
) -> dict[str, Any]:
    """Length distributions per field (characters and tokens), script mix, field usage, duplicate prompts."""
    reader = RecordReader(Path(path), overrides, split=split)
    parts: list[pl.DataFrame] = []
    rejected = 0
    for batch in reader:
        rejected += len(batch.rejects)
        parts.append(_describe_frame(rows_to_frame(batch.lines, batch.rows)))
    df = pl.concat(parts) if parts else _describe_frame(rows_to_frame([], []))
    n = df.height
    lengths: dict[str, dict[str, float | int | None]] = {}
    for c in df.columns:
        if c.startswith("_") or df[c].dtype != pl.Int64:
            continue
        s = df[c]
        lengths[c] = {
            "min": s.min() if n else None,  # type: ignore[dict-item]
            **{f"p{int(q * 100)}": (s.quantile(q, "nearest") if n else None) for q in QUANTILES},
            "max": s.max() if n else None,  # type: ignore[dict-item]
            "mean": round(float(s.mean()), 1) if n else None,  # type: ignore[arg-type]
        }
    usage = {
        "input": int((df["input.chars"] > 0).sum()),
        "system": int((df["system.chars"] > 0).sum()),
        "history": int((df["history.turns"] > 0).sum()),
    }
    scripts = dict(sorted(Counter(df["output.script"].to_list()).items()))
    out_tokens = int(df["output.tokens"].sum())
    cjk_tokens = int(df["output.cjk_tokens"].sum())
    dups = (
        df.filter(pl.col("_prompt_key").str.replace_all("\x1e", "", literal=True) != "")
        .group_by("_prompt_key")
        .agg(pl.len().alias("count"), pl.col("_prompt").first().alias("prompt"))
        .filter(pl.col("count") > 1)
        .sort(["count", "prompt"], descending=[True, False])
    )
    return {
        "path": str(path),
        "format": reader.info.format,
        "mapping": reader.mapping or {},
        "mapping_notes": mapping_notes(reader.mapping or {}),
        "records": n,
        "rejected": rejected,
        "field_usage": usage,
        "lengths": lengths,
        "output_script": scripts,
        "output_tokens_by_script": {"cjk": cjk_tokens, "other": out_tokens - cjk_tokens},
        "duplicate_prompts": {
            "groups": dups.height,
            "records_in_groups": int(dups["count"].sum()) if dups.height else 0,
            "top": dups.head(top).select("count", "prompt").to_dicts(),
        },
    }


def _quantiles(s: pl.Series) -> dict[str, float | int | None]:
    n = s.len()
    return {
        "min": s.min() if n else None,  # type: ignore[dict-item]
        **{f"p{int(q * 100)}": (s.quantile(q, "nearest") if n else None) for q in QUANTILES},
        "max": s.max() if n else None,  # type: ignore[dict-item]
        "mean": round(float(s.mean()), 1) if n else None,  # type: ignore[arg-type]
    }


def describe_preferences(path: Path, top: int = 10, split: str | None = None, max_share: float = 0.7) -> dict[str, Any]:
    """`describe` for preference data: input shapes, lengths of the prompt and each answer, the length bias of the
    pairs (or the label balance of KTO examples), prompts that carry several pairs. A record that is not valid
    preference data counts as malformed (`wb clean` lists each with its line); tied scored records are counted."""
    from workbench import preference_records, preference_shapes
    from workbench.clean.preference import LengthBiasTally, examples_frame

    reader = RecordReader(Path(path), split=split)
    shapes: Counter[str] = Counter()
    rejected = tied = 0
    kind: preference_shapes.Kind | None = None
    frames: list[pl.DataFrame] = []
    for items, _ in reader.iter_items():
        lines: list[int] = []
        examples: list[preference_shapes.Canonical] = []
        for n, obj, _ in items:
            try:
                if isinstance(obj, preference_records.RecordError):
                    raise obj
                ex = preference_records.to_canonical(obj)
            except preference_records.NoPreference:
                tied += 1
                continue
            except preference_records.RecordError:
                rejected += 1
                continue
            kind = kind or ex.kind
            if ex.kind != kind:
                rejected += 1
                continue
            shapes[preference_shapes.detect_shape(obj) or "?"] += 1
            lines.append(n)
            examples.append(ex)
        if examples and kind is not None:
            frames.append(examples_frame(lines, examples, kind))
    kind = kind or "pair"
    df = pl.concat(frames) if frames else examples_frame([], [], kind)
    prompt = text.joined_text(["system", "history", "instruction"])
    answers = ("chosen", "rejected") if kind == "pair" else ("output",)
    measures = {"prompt": prompt, **{a if a != "output" else "completion": pl.col(a) for a in answers}}
    lengths: dict[str, dict[str, float | int | None]] = {}
    for name, expr in measures.items():
        cols = df.select(
            expr.str.len_chars().cast(pl.Int64).alias("chars"),
            text.token_count(expr).alias("tokens"),
            expr.str.len_bytes().cast(pl.Int64).alias("bytes"),
        )
        for unit in cols.columns:
            lengths[f"{name}.{unit}"] = _quantiles(cols[unit])
    out: dict[str, Any] = {
        "path": str(path),
        "format": reader.info.format,
        "kind": "preference",
        "preference_kind": kind,
        "records": df.height,
        "rejected": rejected,
        "tied_scores": tied,
        "shapes": dict(sorted(shapes.items())),
        "lengths": lengths,
        "with_system": int((df["system"] != "").sum()),
        "with_history": int((df["history"].list.len() > 0).sum()),
    }
    if kind == "pair":
        bias = LengthBiasTally()
        bias.add(df)
        out["length_bias"], out["warnings"] = bias.report(max_share)
    else:
        out["labels"] = {"desirable": int(df["label"].sum()), "undesirable": int((~df["label"]).sum())}
        out["warnings"] = []
    groups = (
        df.with_columns(text.duplicate_text(["system", "history", "instruction"]).alias("_key"))
        .group_by("_key")
        .agg(pl.len().alias("count"), pl.col("instruction").first().alias("prompt"))
        .filter(pl.col("count") > 1)
        .sort(["count", "prompt"], descending=[True, False])
    )
    out["prompts_with_several_records"] = {
        "groups": groups.height,
        "records_in_groups": int(groups["count"].sum()) if groups.height else 0,
        "top": groups.head(top).select("count", "prompt").to_dicts(),
    }
    return out


def describe_file(
    path: Path,
    overrides: dict[str, str] | None = None,
    *,
    mapped: bool = False,
    top: int = 10,
    split: str | None = None,
    tokenizer: str | None = None,
    template: str = "auto",
    max_lengths: list[int] | None = None,
    scores: Path | None = None,
    html: Path | None = None,
) -> dict[str, Any]:
    """`wb stats`: `describe` SFT records, or `describe_preferences` preference data (told by the first record unless
    `mapped`); with `tokenizer`, lengths in its tokens after `template`; with `scores`, a `wb score` stats file shown
    beside them; with `html`, the page written there. The result says which (`preference_kind` for preferences)."""
    from workbench import stats_page
    from workbench.clean import dispatch

    if dispatch.resolve_kind(path, "auto", mapped) == "preference":
        if tokenizer is not None:
            raise WbError("--tokenizer measures SFT records; for preference data wb train reports the lengths it sees")
        d = describe_preferences(path, top=top, split=split)
    else:
        d = describe(path, overrides, top=top, split=split)
        if tokenizer is not None:
            from workbench import token_lengths
            from workbench.models.templates import check_template_spec

            try:
                check_template_spec(template)
            except ValueError as e:
                raise WbError(f"--template: {e}") from None
            limits = tuple(sorted(set(max_lengths))) if max_lengths else token_lengths.MAX_LENGTHS
            d["token_lengths"] = token_lengths.token_lengths(path, tokenizer, overrides, split, template, limits)
        if scores is not None:
            from workbench.score.summary import read_stats

            d["model_scores"] = read_stats(scores)
    if html is not None:
        stats_page.write(html, d)
    return d
