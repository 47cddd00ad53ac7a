"""Preference pairs and KTO examples as a record shape of the cleaning driver (`clean.driver.Shape`): the driver's
steps (validation, normalisation, PII, rules, dedup, decontamination, accounting, output set, manifest) over them,
on the local engine and on Ray.

A batch of canonical examples (`workbench.preference_shapes`) becomes a polars frame: the prompt in the SFT columns
(`instruction` is the last user message, `system`, `history` the turns before it, `input` empty), plus `chosen`
and `rejected` for pairs, or `output` (the completion) and `label` for KTO. Then, per batch:

1. normalisation and PII over every text column (`pipeline.normalize_frame`, `pipeline.pii_frame`);
2. the profile's rules in order: a `pair` rule reads chosen and rejected together; an `answer` rule (the SFT rules
   among them) runs once per answer with `output` set to it, its reason naming the side; the first match drops.

After the last batch, over the records kept so far: `contradictory_pair` (the same prompt preferred both ways,
across the whole file), then decontamination and exact duplicates, then near duplicates, where for pairs `output`
holds chosen and rejected together, so dedup keys cover the prompt and both answers. Kept records are written in
TRL's conversational format (`preference_records.to_trl`), `read = kept + dropped + rejected` holds, and the stats carry
`preference` (kind, input shapes, label balance for KTO, and the length bias of the kept pairs).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import IO, Any, Literal

import orjson
import polars as pl

from workbench import preference_files, preference_records, preference_shapes, text
from workbench.clean import pipeline
from workbench.clean.driver import Finish, Shape, ShapeBatch
from workbench.clean.output import extra_config
from workbench.clean.pipeline import CleanedBatch
from workbench.clean.profile import Profile
from workbench.clean.rule_registry import RULES, Check, features
from workbench.errors import WbError
from workbench.frames import HISTORY_TYPE
from workbench.io.options import DuplicateKeys
from workbench.io.reader import RecordReader, Reject, raw_text
from workbench.preference_records import NoPreference
from workbench.preference_shapes import Canonical, PreferencePair
from workbench.records import EXTRA, RecordError, extra_json, with_extra

KindOpt = Literal["auto", "sft", "preference"]
PAIR_TEXT = ("instruction", "input", "system", "chosen", "rejected")
KTO_TEXT = ("instruction", "input", "output", "system")
TIED = "tied_scores"


def resolve_kind(path: Path, kind: KindOpt = "auto") -> Literal["sft", "preference"]:
    """What `wb clean` treats `path` as: `--kind` if given, else by content."""
    if kind != "auto":
        return kind
    return "preference" if preference_files.sniff_kind(path) is not None else "sft"


# --- frames ---------------------------------------------------------------------------------------------------


def examples_frame(
    lines: list[int], examples: list[Canonical], kind: preference_shapes.Kind, extras: list[str | None] | None = None
) -> pl.DataFrame:
    """The frame of a batch of canonical examples (see the module docstring for its columns); `extras`: each
    record's own other fields (`records.EXTRA`)."""
    cols: dict[str, list[Any]] = {c: [] for c in ("instruction", "system", "history", "a", "b")}
    for ex in examples:
        system, history, user = preference_records.split_prompt(ex.prompt_messages)
        cols["instruction"].append(user)
        cols["system"].append(system)
        cols["history"].append(history)
        if isinstance(ex, PreferencePair):
            cols["a"].append(ex.chosen)
            cols["b"].append(ex.rejected)
        else:
            cols["a"].append(ex.completion)
            cols["b"].append(ex.label)
    n = len(examples)
    data: dict[str, pl.Series] = {
        "_line": pl.Series("_line", lines, dtype=pl.Int64),
        "instruction": pl.Series("instruction", cols["instruction"], dtype=pl.String),
        "input": pl.Series("input", [""] * n, dtype=pl.String),
        "system": pl.Series("system", cols["system"], dtype=pl.String),
        "history": pl.Series("history", cols["history"], dtype=HISTORY_TYPE),
    }
    if kind == "pair":
        data["chosen"] = pl.Series("chosen", cols["a"], dtype=pl.String)
        data["rejected"] = pl.Series("rejected", cols["b"], dtype=pl.String)
        data["output"] = pl.Series("output", [""] * n, dtype=pl.String)
    else:
        data["output"] = pl.Series("output", cols["a"], dtype=pl.String)
        data["label"] = pl.Series("label", cols["b"], dtype=pl.Boolean)
    data[EXTRA] = pl.Series(EXTRA, extras if extras is not None else [None] * n, dtype=pl.String)
    return pl.DataFrame(data)


def output_rows(df: pl.DataFrame, kind: preference_shapes.Kind) -> list[dict[str, Any]]:
    """The records of a frame as `wb clean` writes them (kept and dropped files): TRL's conversational format,
    `preference_records.to_trl` of the canonical example, which TRL's trainers, `wb train` and
    `preference_files.read_preferences` read, followed by the record's own other fields (`records.with_extra`: one
    named like a TRL field becomes `original_<name>`)."""
    out: list[dict[str, Any]] = []
    answers = ("chosen", "rejected") if kind == "pair" else ("output", "label")
    extra = pl.col(EXTRA) if EXTRA in df.columns else pl.lit(None, dtype=pl.String)
    for system, history, user, a, b, own in df.select("system", "history", "instruction", *answers, extra).iter_rows():
        msgs = [{"role": "system", "content": system}] if system else []
        for u, asst in history or []:
            msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": asst}]
        msgs.append({"role": "user", "content": user})
        if kind == "pair":
            chosen, rejected = [{"role": "assistant", "content": a}], [{"role": "assistant", "content": b}]
            rec = {"prompt": msgs, "chosen": chosen, "rejected": rejected}
        else:
            rec = {"prompt": msgs, "completion": [{"role": "assistant", "content": a}], "label": b}
        out.append(with_extra(rec, own))
    return out


# --- rules ----------------------------------------------------------------------------------------------------


def applicable_rules(profile: Profile, kind: preference_shapes.Kind) -> tuple[list[tuple[str, Any]], list[str]]:
    """The profile's rules that apply to `kind` (in order), and those that do not (noted in the stats). An SFT-only
    rule (`refusal`) in a profile used on preference data is a WbError: it would judge rejected answers too."""
    use, skip = [], []
    for name, params in profile.enabled_rules():
        r = RULES[name]
        if kind in r.kinds:
            use.append((name, params))
        elif r.kinds == ("sft",):
            raise WbError(
                f"profile {profile.name}: rule {name} is for SFT records; on preference data use the preference "
                f"rules ({', '.join(n for n, x in RULES.items() if 'sft' not in x.kinds)})"
            )
        else:
            skip.append(name)
    return use, skip


def _side_view(df: pl.DataFrame, kind: preference_shapes.Kind, side: str) -> tuple[pl.DataFrame, str]:
    """`df` (its unflagged remaining records) with `output` set to one answer, and the name reasons give it."""
    if kind == "pair":
        return df.with_columns(pl.col(side).alias("output")), side
    label = side == "chosen"
    return df.filter(pl.col("label") == label), "completion"


def _named(reason: pl.Expr, label: str) -> pl.Expr:
    """An SFT rule's reason about `output`, about the side it ran on instead. Only the words before the first quote
    are rewritten: what a reason quotes from the record stays as written."""
    reason = reason.cast(pl.String)
    head = reason.str.extract(r"^([^']*)", 1)
    tail = reason.str.slice(head.str.len_chars())
    head = (
        head.str.replace_all(r"\bthe output's\b", f"the {label}'s")
        .str.replace_all(r"\b[Tt]he output\b", f"the {label}")
        .str.replace_all(r"\b[Oo]utput\b", label)
    )
    return pl.concat_str([head, tail])


def _hits(frame: pl.DataFrame, check: Check) -> pl.DataFrame:
    candidates = frame if check.applies is None else frame.lazy().filter(check.applies).collect()
    if candidates.height == 0:
        return candidates.select("_i").with_columns(pl.lit(None, dtype=pl.String).alias("_why"))
    if check.prepare is not None:
        candidates = check.prepare(candidates)
    hits = candidates.lazy().filter(check.drop).collect().rechunk()
    return hits.select("_i", check.reason.cast(pl.String).alias("_why"))


def side_views(df: pl.DataFrame, kind: preference_shapes.Kind) -> dict[str, tuple[pl.DataFrame, str]]:
    """For each side, `df` with `output` set to that answer and the rule features computed, once per batch."""
    views = {}
    for side in ("chosen", "rejected"):
        view, label = _side_view(df, kind, side)
        views[side] = (view.lazy().with_columns(features()).collect(), label)
    return views


def rule_hits(
    df: pl.DataFrame,
    name: str,
    params: Any,
    kind: preference_shapes.Kind,
    views: dict[str, tuple[pl.DataFrame, str]] | None = None,
) -> pl.DataFrame:
    """`_i` and `_why` of the records of `df` (with `_i`) that rule `name` matches, on every side it judges.
    `views`: `side_views` of a frame holding `df`'s records (computed here when not given)."""
    r = RULES[name]
    check = r.build(params)
    if r.level == "file":
        return df.select("_i").clear().with_columns(pl.lit(None, dtype=pl.String).alias("_why"))
    if r.level == "pair":
        return _hits(df, check)
    views = views if views is not None else side_views(df, kind)
    parts, seen = [], pl.Series("_i", [], dtype=pl.UInt32)
    for side in r.sides:
        view, label = views[side]
        wanted = df["_i"].filter(~df["_i"].is_in(seen.implode()))
        hit = _hits(view.filter(pl.col("_i").is_in(wanted.implode())), check)
        parts.append(hit.with_columns(_named(pl.col("_why"), label).alias("_why")))
        seen = pl.concat([seen, hit["_i"]])
    return pl.concat(parts)


def apply_preference_rules(
    df: pl.DataFrame, rules: list[tuple[str, Any]], kind: preference_shapes.Kind
) -> pl.DataFrame:
    """`pipeline.apply_rules` for preference frames: `_rule`/`_reason` (the first rule that drops a record),
    `_flag`/`_flag_reason` (the first `action: report` rule that matches), PII drops last."""
    df = df.with_row_index("_i")
    rule_col = pl.Series("_rule", [None] * df.height, dtype=pl.String)
    reason_col = pl.Series("_reason", [None] * df.height, dtype=pl.String)
    flag_col = pl.Series("_flag", [None] * df.height, dtype=pl.String)
    flag_reason_col = pl.Series("_flag_reason", [None] * df.height, dtype=pl.String)
    remaining = df
    views = side_views(df, kind) if any(RULES[name].level == "answer" for name, _ in rules) else None
    for name, params in rules:
        if remaining.height == 0:
            break
        report_only = RULES[name].build(params).report_only
        target = remaining.filter(flag_col.gather(remaining["_i"]).is_null()) if report_only else remaining
        hits = rule_hits(target, name, params, kind, views)
        if hits.height == 0:
            continue
        if report_only:
            flag_col.scatter(hits["_i"], name)
            flag_reason_col.scatter(hits["_i"], hits["_why"])
            continue
        rule_col.scatter(hits["_i"], name)
        reason_col.scatter(hits["_i"], hits["_why"])
        remaining = remaining.filter(~pl.col("_i").is_in(hits["_i"].implode()))
    pii_hits = remaining.filter(pl.col("_pii").is_not_null())
    if pii_hits.height:
        rule_col.scatter(pii_hits["_i"], "pii")
        reason_col.scatter(pii_hits["_i"], pii_hits["_pii"])
    return df.drop("_i").with_columns(rule_col, reason_col, flag_col, flag_reason_col)


# --- contradictions -------------------------------------------------------------------------------------------

_PROMPT = ["system", "history", "instruction", "input"]


def contradiction_keys(df: pl.DataFrame, kind: preference_shapes.Kind) -> pl.DataFrame:
    """`_line`, `fwd`, `rev`: for a pair, hashes of (prompt, chosen, rejected) and of (prompt, rejected, chosen),
    so a record whose `fwd` is another's `rev` states the opposite preference; for KTO, of (prompt, completion)
    with the label, and with the opposite label. "The same text" is `text.duplicate_text`'s."""
    if kind == "pair":
        fwd = text.duplicate_key([*_PROMPT, "chosen", "rejected"])
        rev = text.duplicate_key([*_PROMPT, "rejected", "chosen"])
    else:
        base = text.duplicate_text([*_PROMPT, "output"])
        fwd = pl.concat_str([base, pl.col("label").cast(pl.String)]).hash(7)
        rev = pl.concat_str([base, (~pl.col("label")).cast(pl.String)]).hash(7)
    return df.select("_line", fwd.alias("fwd"), rev.alias("rev"))


def contradictions(keys: pl.DataFrame, kind: preference_shapes.Kind, listed: int = 5) -> pl.DataFrame:
    """`_line`, `_reason` of every record that some other record contradicts; the reason names those lines."""
    pairs = keys.join(keys.select(pl.col("_line").alias("other"), pl.col("fwd").alias("rev")), on="rev", how="inner")
    pairs = pairs.filter(pl.col("other") != pl.col("_line"))  # answers the same as dedup compares them: not itself
    if pairs.height == 0:
        return pl.DataFrame(schema={"_line": pl.Int64, "_reason": pl.String, "contradicts": pl.List(pl.Int64)})
    grouped = pairs.group_by("_line").agg(pl.col("other").sort().alias("contradicts")).sort("_line")
    one, many = (
        ("states the opposite preference", "state the opposite preference")
        if kind == "pair"
        else ("labels the same completion the other way", "label the same completion the other way")
    )
    count = pl.col("contradicts").list.len().cast(pl.Int64)
    shown = pl.col("contradicts").list.head(listed).cast(pl.List(pl.String)).list.join(", ")
    tail = pl.when(count > listed).then(pl.format(" and {} more", count - listed)).otherwise(pl.lit(""))
    reason = (
        pl.when(count == 1)
        .then(pl.format(f"same prompt; line {{}} {one}", shown))
        .otherwise(pl.format(f"same prompt; lines {{}}{{}} {many}", shown, tail))
    )
    return grouped.with_columns(reason.alias("_reason"))


# --- length bias ----------------------------------------------------------------------------------------------


class LengthBiasTally:
    """Running counts over kept pairs of which answer is longer, in UTF-8 bytes (a tokenizer-free stand-in for tokens of
    byte-level BPE vocabularies: a CJK character is 3 bytes and 1-3 tokens, an ASCII character 1 byte)."""

    def __init__(self) -> None:
        self.pairs = self.chosen_longer = self.rejected_longer = 0
        self.ratio_sum = 0.0

    def add(self, df: pl.DataFrame) -> None:
        if df.height == 0:
            return
        c = df["chosen"].str.len_bytes().cast(pl.Int64)
        r = df["rejected"].str.len_bytes().cast(pl.Int64)
        self.pairs += df.height
        self.chosen_longer += int((c > r).sum())
        self.rejected_longer += int((r > c).sum())
        self.ratio_sum += float((c / r.clip(lower_bound=1)).sum())

    def report(self, max_share: float) -> tuple[dict[str, Any], list[str]]:
        share = self.chosen_longer / self.pairs if self.pairs else None
        ratio = self.ratio_sum / self.pairs if self.pairs else None
        # Either answer longer in more than max_share of the pairs; equal-length pairs teach no length either way.
        biased = self.pairs > 0 and max(self.chosen_longer, self.rejected_longer) / self.pairs > max_share
        equal = self.pairs - self.chosen_longer - self.rejected_longer
        out = {
            "measure": "utf8_bytes",
            "pairs": self.pairs,
            "chosen_longer": self.chosen_longer,
            "rejected_longer": self.rejected_longer,
            "equal": equal,
            "chosen_longer_share": round(share, 4) if share is not None else None,
            "mean_length_ratio": round(ratio, 4) if ratio is not None else None,
            "max_share": max_share,
            "biased": biased,
        }
        warnings = []
        if biased and share is not None and ratio is not None:
            longer = "longer" if share > max_share else "shorter"
            part = share if share > max_share else self.rejected_longer / self.pairs
            warnings.append(
                f"length bias: chosen is the {longer} answer in {100 * part:.0f}% of the {self.pairs} kept pairs"
                + (f", {equal} of equal length" if equal else "")
                + f" (mean chosen/rejected length ratio {ratio:.2f}; warning above {100 * max_share:.0f}%): "
                "a DPO model trained on them can learn length instead of the preference"
            )
        return out, warnings


# --- the shape ------------------------------------------------------------------------------------------------


class PreferenceShape(Shape):
    """Preference pairs or KTO examples as a record shape of the cleaning driver (see the module docstring); the
    kind is the first record's, a record of the other kind is rejected (`mixed_kinds`). `extra_fields`: keep each
    record's fields the conversion does not read (`preference_records.own_fields`)."""

    kind = "preference"
    stage_all = True  # `contradictory_pair` compares every pair of the file before the dedup stages

    def __init__(self, profile: Profile, extra_fields: bool = True) -> None:
        self.profile = profile
        self.extra_fields = extra_fields
        self.first_kind: preference_shapes.Kind | None = None  # pairs or KTO examples: the first record's kind
        self.first_line = 0
        self.rules: list[tuple[str, Any]] = []
        self.skipped: list[str] = []
        self.shapes: Counter[str] = Counter()
        self.bias = LengthBiasTally()
        self.labels: Counter[bool] = Counter()

    @property
    def example_kind(self) -> preference_shapes.Kind:
        """The kind of records cleaned (pairs when no record was valid)."""
        return self.first_kind or "pair"

    def open(self, path: Path, batch_size: int, duplicate_keys: DuplicateKeys, split: str | None) -> RecordReader:
        return RecordReader(path, batch_size=batch_size, duplicate_keys=duplicate_keys, split=split)

    def batches(self, reader: RecordReader) -> Iterator[ShapeBatch]:
        unit = reader.info.unit
        for items, nbytes in reader.iter_items():
            lines: list[int] = []
            examples: list[Canonical] = []
            extras: list[str | None] = []
            rejects: list[Reject] = []
            tied: list[tuple[bytes, str]] = []
            for n, obj, raw in items:
                shape = preference_shapes.detect_shape(obj)
                if shape is not None:
                    self.shapes[shape] += 1
                try:
                    if isinstance(obj, RecordError):
                        raise obj
                    ex = preference_records.to_canonical(obj)
                except NoPreference as e:
                    row = {"line": n, "rule": TIED, "reason": e.message, "record": obj}
                    tied.append((orjson.dumps(row, default=str) + b"\n", TIED))
                    continue
                except RecordError as e:
                    rejects.append(Reject(n, unit, e.field, e.kind, str(e), raw_text(obj, raw)))
                    continue
                if self.first_kind is None:
                    self.first_kind, self.first_line = ex.kind, n
                    self.rules, self.skipped = applicable_rules(self.profile, ex.kind)
                if ex.kind != self.first_kind:
                    msg = f"a {ex.kind} record in a file of {self.first_kind} records (from {unit} {self.first_line})"
                    rejects.append(Reject(n, unit, "", "mixed_kinds", msg, raw_text(obj, raw)))
                    continue
                lines.append(n)
                examples.append(ex)
                assert shape is not None and isinstance(obj, dict)  # to_canonical read it
                extras.append(extra_json(preference_records.own_fields(obj, shape)) if self.extra_fields else None)
            frame = examples_frame(lines, examples, self.example_kind, extras)
            yield ShapeBatch(
                size=len(items),
                nbytes=nbytes,
                records=len(examples),
                frame=partial(_slice, frame),
                rejects=rejects,
                dropped=tied,
            )
            del items, frame

    def clean(self, frame: pl.DataFrame) -> CleanedBatch:
        kind = self.example_kind
        fields = PAIR_TEXT if kind == "pair" else KTO_TEXT
        df, counts = pipeline.normalize_frame(frame, self.profile.normalize, fields)
        df, pii_counts = pipeline.pii_frame(df, self.profile.pii, fields)
        counts.update(pii_counts)
        counts.pop("placeholder_input", None)
        df = apply_preference_rules(df, self.rules, kind)
        is_dropped = pl.col("_rule").is_not_null()
        reported = df.filter(pl.col("_flag").is_not_null()).select("_line", "_flag", "_flag_reason", is_dropped)
        kept = df.filter(~is_dropped).drop("_rule", "_reason", "_flag", "_flag_reason", "_pii")
        return CleanedBatch(kept=kept, dropped=df.filter(is_dropped), counts=counts, reported=reported)

    def write_dropped(self, f: IO[bytes], dropped: pl.DataFrame) -> None:
        if dropped.height == 0:
            return
        extra = [c for c in ("duplicate_of", "similarity", "eval_item", "contradicts") if c in dropped.columns]
        meta = dropped.select("_line", "_rule", "_reason", *extra).to_dicts()
        for m, rec in zip(meta, output_rows(dropped, self.example_kind), strict=True):
            row = {"line": m["_line"], "rule": m["_rule"], "reason": m["_reason"]}
            row.update({c: m[c] for c in extra if m[c] is not None})
            row["record"] = rec
            f.write(orjson.dumps(row) + b"\n")

    def kept_lines(self, kept: pl.DataFrame) -> list[bytes]:
        return [orjson.dumps(rec) + b"\n" for rec in output_rows(kept, self.example_kind)]

    @property
    def stage_columns(self) -> list[str]:
        answers = ["chosen", "rejected", "output"] if self.example_kind == "pair" else ["output", "label"]
        return ["_line", "instruction", "input", "system", "history", *answers, EXTRA]

    def file_keys(self, kept: pl.DataFrame) -> pl.DataFrame | None:
        return contradiction_keys(kept, self.example_kind)

    def file_drops(self, keys: list[pl.DataFrame]) -> pl.DataFrame | None:
        if keys and any(name == "contradictory_pair" for name, _ in self.rules):
            return contradictions(pl.concat(keys), self.example_kind)
        return None

    def before_dedup(self, df: pl.DataFrame, drops: pl.DataFrame | None) -> tuple[pl.DataFrame, pl.DataFrame]:
        """For pairs, `output` becomes chosen and rejected together (what dedup and decontamination compare);
        contradicted records leave; `_output_tokens` counts the chosen answer's (or the completion's) tokens."""
        kind = self.example_kind
        if kind == "pair":
            df = df.with_columns(pl.concat_str([pl.col("chosen"), pl.col("rejected")], separator="\n").alias("output"))
        dropped = df.clear()
        if drops is not None and drops.height:
            marked = df.join(drops, on="_line", how="left", maintain_order="left")
            dropped = marked.filter(pl.col("_reason").is_not_null()).with_columns(
                pl.lit("contradictory_pair").alias("_rule")
            )
            df = marked.filter(pl.col("_reason").is_null()).drop("_reason", "contradicts")
        token_col = "chosen" if kind == "pair" else "output"
        return df.with_columns(text.token_count(pl.col(token_col)).alias("_output_tokens")), dropped

    def add_kept(self, kept: pl.DataFrame) -> None:
        if self.example_kind == "pair":
            self.bias.add(kept)
        else:
            self.labels.update(kept["label"].to_list())

    def finish(self, profile: Profile) -> Finish:
        pref, warnings = _preference_section(
            profile, self.example_kind, self.shapes, self.skipped, self.bias, self.labels
        )
        return Finish(
            first_drops=[TIED],
            sections={"kind": "preference", "preference": pref},
            warnings=warnings,
            config={"kind": self.example_kind, **extra_config(self.extra_fields)},
        )


def _preference_section(
    profile: Profile,
    kind: preference_shapes.Kind,
    shapes: Counter[str],
    skipped: list[str],
    bias: LengthBiasTally,
    labels: Counter[bool],
) -> tuple[dict[str, Any], list[str]]:
    """The stats' `preference` section (kind, shapes seen, rules that do not apply, length bias or label balance)
    and the warnings it raises."""
    pref: dict[str, Any] = {
        "kind": kind,
        "shapes": dict(sorted(shapes.items())),
        "rules_not_applicable": skipped,
    }
    warnings: list[str] = []
    if kind == "pair":
        pref["length_bias"], warnings = bias.report(profile.preference.length_bias_max_share)
    else:
        pref["labels"] = {"desirable": labels.get(True, 0), "undesirable": labels.get(False, 0)}
    return pref, warnings


def _slice(frame: pl.DataFrame, start: int, end: int) -> pl.DataFrame:
    return frame.slice(start, end - start)
