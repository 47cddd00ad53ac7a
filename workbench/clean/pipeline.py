"""The cleaning steps on one frame of records: Unicode normalisation (`normalize_frame`), personal data
(`pii_frame`), the profile's rules (`apply_rules`: the first rule that drops a record, and why), and `clean_frame`,
which runs them on SFT records.

The steps are frame-in, frame-out functions, so every record shape (`clean.sft`, `clean.preference`) and every
engine (`clean.driver` locally, `clean.ray_engine` on Ray) runs the same ones; the driver writes and counts what
they drop.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import polars as pl

from workbench import text
from workbench.clean import pii
from workbench.clean.profile import NormalizeConfig, PiiConfig, Profile
from workbench.clean.rule_registry import RULES, features
from workbench.clean.score_rules import scores_read
from workbench.frames import HISTORY_TYPE

STRING_FIELDS = ("instruction", "input", "output", "system")  # the plain-text fields (history is a list)


def normalize_frame(
    df: pl.DataFrame, cfg: NormalizeConfig, fields: tuple[str, ...] = STRING_FIELDS
) -> tuple[pl.DataFrame, Counter[str]]:
    """Unicode/whitespace normalisation of every text field (`fields` and history), then placeholder inputs
    become empty."""

    opts = (cfg.unicode, cfg.strip_control, cfg.strip_zero_width, cfg.whitespace, cfg.keep_as_written)
    new = df.with_columns(
        *(text.normalize_series(df[c], *opts) for c in fields),
        pl.col("history").list.eval(pl.element().list.eval(text.normalize(pl.element(), *opts))),
    )
    changed = pl.any_horizontal([new[c] != df[c] for c in (*fields, "history")])
    bidi = pl.any_horizontal(
        [pl.col(c).str.contains(text.BIDI_CONTROL_PATTERN) for c in fields]
        + [text.history_text().str.contains(text.BIDI_CONTROL_PATTERN)]
    )
    converted = 0
    if cfg.chinese is not None:
        before = new
        conv = cfg.chinese
        new = new.with_columns(
            *(text.convert_chinese_series(new[c], conv) for c in fields),
            _convert_history(new["history"], conv),
        )
        converted = int(new.select(pl.any_horizontal([new[c] != before[c] for c in (*fields, "history")]).sum()).item())
        changed = pl.any_horizontal([new[c] != df[c] for c in (*fields, "history")])
    placeholders = [p.lower() for p in cfg.placeholder_inputs]
    is_placeholder = (pl.col("input") != "") & pl.col("input").str.to_lowercase().is_in(placeholders)
    counts = Counter(
        {
            "normalized": int(new.select(changed.sum()).item()),
            "placeholder_input": int(new.select(is_placeholder.sum()).item()),
            "bidi_controls_removed": int(df.select(bidi.sum()).item()) if cfg.strip_control else 0,
            "chinese_converted": converted,
        }
    )
    new = new.with_columns(pl.when(is_placeholder).then(pl.lit("")).otherwise(pl.col("input")).alias("input"))
    return new, counts


def _convert_history(history: pl.Series, conversion: text.ChineseConversion) -> pl.Series:
    """OpenCC over every turn of a history column (list of [user, assistant]); most records have no history."""
    rows = history.to_list()
    if not any(rows):
        return history
    conv = text.chinese_converter(conversion)
    out = [[[conv.convert(t) for t in turn] for turn in rec] if rec else rec for rec in rows]
    return pl.Series("history", out, dtype=history.dtype)


def pii_frame(
    df: pl.DataFrame, cfg: PiiConfig, fields: tuple[str, ...] = STRING_FIELDS
) -> tuple[pl.DataFrame, Counter[str]]:
    """Find personal data in `fields` and history; redact it in place or mark the record in `_pii` for dropping,
    per the profile.

    A vectorised candidate pattern picks the few records that may hold personal data; only those are
    checked exactly in Python.
    """
    counts: Counter[str] = Counter()
    df = df.with_columns(pl.lit(None, dtype=pl.String).alias("_pii"))
    if cfg.action == "keep" or not cfg.kinds or df.height == 0:
        return df, counts
    kinds = tuple(cfg.kinds)
    candidate = pl.any_horizontal(
        [pl.col(c).str.contains(pii.CANDIDATE_PATTERN) for c in fields]
        + [text.history_text().str.contains(pii.CANDIDATE_PATTERN)]
    )
    df = df.with_row_index("_i")
    cand = df.filter(candidate)
    if cand.height == 0:
        return df.drop("_i"), counts
    updates: dict[str, list[Any]] = {c: [] for c in (*fields, "history", "_pii")}
    for row in cand.select(*fields, "history").iter_rows(named=True):
        found: set[str] = set()
        for c in fields:
            new_text, hit = pii.redact(row[c], kinds)
            updates[c].append(new_text)
            found.update(hit)
        history = []
        for pair in row["history"] or []:
            new_pair = []
            for turn in pair:
                new_text, hit = pii.redact(turn, kinds)
                new_pair.append(new_text)
                found.update(hit)
            history.append(new_pair)
        updates["history"].append(history)
        ordered = [k for k in pii.ALL_KINDS if k in found]
        counts.update(f"found_{k}" for k in ordered)
        updates["_pii"].append(f"contains personal data: {', '.join(ordered)}" if ordered else None)
    redacted = sum(1 for r in updates["_pii"] if r)
    if cfg.action == "redact":
        counts["pii_redacted"] = redacted
        keep_cols = {c: updates[c] for c in (*fields, "history")}
        updates = {**keep_cols, "_pii": [None] * cand.height}
    patch = cand.with_columns(
        *(pl.Series(c, updates[c], dtype=pl.String) for c in (*fields, "_pii")),
        pl.Series("history", updates["history"], dtype=HISTORY_TYPE),
    )
    merged = pl.concat([df.filter(~candidate), patch]).sort("_i")
    return merged.drop("_i"), counts


def apply_rules(df: pl.DataFrame, profile: Profile) -> pl.DataFrame:
    """Add `_rule` and `_reason`: the first rule (in profile order) that drops each record, and why.

    Each rule sees only the records no earlier rule dropped and, where it declares one, that pass its cheap
    `applies` pre-condition; its reason is computed for the records it drops only.
    """
    df = df.lazy().with_columns(features()).collect().with_row_index("_i")
    rule_col = pl.Series("_rule", [None] * df.height, dtype=pl.String)
    reason_col = pl.Series("_reason", [None] * df.height, dtype=pl.String)
    flag_col = pl.Series("_flag", [None] * df.height, dtype=pl.String)
    flag_reason_col = pl.Series("_flag_reason", [None] * df.height, dtype=pl.String)
    remaining = df
    for name, params in profile.enabled_rules():
        check = RULES[name].build(params)
        if check.report_only:  # `action: report`: the first such rule that matches is noted; nothing is dropped
            unflagged = remaining.filter(flag_col.gather(remaining["_i"]).is_null())
            hits = unflagged.lazy().filter(check.drop).collect().rechunk()
            if hits.height:
                flag_col.scatter(hits["_i"], name)
                flag_reason_col.scatter(
                    hits["_i"], hits.lazy().select(check.reason.cast(pl.String)).collect().to_series()
                )
            continue
        # Lazy evaluation everywhere: polars then computes sub-expressions a rule repeats only once.
        candidates = remaining if check.applies is None else remaining.lazy().filter(check.applies).collect()
        if candidates.height == 0:
            continue
        if check.prepare is not None:
            candidates = check.prepare(candidates)
        # rechunk: polars 2.1 can return a leading empty chunk here, and `pl.format` over it panics.
        hits = candidates.lazy().filter(check.drop).collect().rechunk()
        if hits.height == 0:
            continue
        rule_col.scatter(hits["_i"], name)
        reason_col.scatter(hits["_i"], hits.lazy().select(check.reason.cast(pl.String)).collect().to_series())
        remaining = remaining.filter(~pl.col("_i").is_in(hits["_i"].implode()))
    pii_hits = remaining.filter(pl.col("_pii").is_not_null())
    if pii_hits.height:
        rule_col.scatter(pii_hits["_i"], "pii")
        reason_col.scatter(pii_hits["_i"], pii_hits["_pii"])
    return df.drop("_i").with_columns(rule_col, reason_col, flag_col, flag_reason_col)


@dataclass
class CleanedBatch:
    kept: pl.DataFrame
    dropped: pl.DataFrame
    counts: Counter[str]
    reported: pl.DataFrame  # `_line`, `_flag` (rule), `_flag_reason`, `_rule` (true when a later rule dropped it)


CLEAN_CHUNK = 8192  # records through the rules at once: their feature columns are the batch's largest transient


def clean_batch(df: pl.DataFrame, profile: Profile) -> CleanedBatch:
    """`clean_frame` on a batch, `CLEAN_CHUNK` records at a time (every step is per record, so the result is the
    same; peak memory is bounded by the chunk: 25,000 Chinese records of 1,000 characters took 450 MB at once)."""
    if df.height <= CLEAN_CHUNK:
        return clean_frame(df, profile)
    parts = [clean_frame(df.slice(start, CLEAN_CHUNK), profile) for start in range(0, df.height, CLEAN_CHUNK)]
    counts: Counter[str] = Counter()
    for part in parts:
        counts.update(part.counts)
    return CleanedBatch(
        kept=pl.concat([p.kept for p in parts]),
        dropped=pl.concat([p.dropped for p in parts]),
        counts=counts,
        reported=pl.concat([p.reported for p in parts]),
    )


def clean_frame(df: pl.DataFrame, profile: Profile) -> CleanedBatch:
    """All cleaning steps on one batch of canonical records."""
    df, counts = normalize_frame(df, profile.normalize)
    df, pii_counts = pii_frame(df, profile.pii)
    counts.update(pii_counts)
    df = apply_rules(df, profile)
    is_dropped = pl.col("_rule").is_not_null()
    deciding = scores_read(profile.enabled_rules())
    if deciding:  # the score that decided a score rule's drop, beside its reason
        name = pl.lit(None, dtype=pl.String)
        value = pl.lit(None, dtype=pl.Float64)
        for rule_name, (score, *_) in deciding.items():
            name = pl.when(pl.col("_rule") == rule_name).then(pl.lit(score)).otherwise(name)
            value = pl.when(pl.col("_rule") == rule_name).then(pl.col(f"_score_{score}")).otherwise(value)
        decided = pl.when(name.is_not_null()).then(pl.struct(name.alias("name"), value.alias("value")))
        df = df.with_columns(decided.alias("score"))
    reported = df.filter(pl.col("_flag").is_not_null()).select("_line", "_flag", "_flag_reason", is_dropped)
    return CleanedBatch(kept=df.filter(~is_dropped), dropped=df.filter(is_dropped), counts=counts, reported=reported)
