"""`wb plan --data`: advice from a data file, each line with the figure that triggered it, and a recommendation.

What is checked (thresholds from issue 18's decision guide, and why):

* records per method: LoRA and the other adapter methods want 500-5,000 good samples, full fine-tuning (full,
  GaLore) 10,000+; below that a model overfits the few answers and forgets more of what it knew.
* lengths: records longer than the model's context cannot be trained on whole; records longer than `--seq-len`
  are truncated (their answers' ends are lost). Measured in the model's own tokens after its chat template
  (`workbench.token_lengths`) when its tokenizer can be loaded, else estimated from word and CJK counts
  (`workbench.text.token_count` × 1.3, BPE's usual tokens per English word).
* changing facts: a large share of prompts that ask about dates, prices, "latest"/"current", today's anything, or
  a recent year (最新, 今天, 价格, ...) are lookups of facts that change; fine-tuning freezes them at training time
  and cannot cite a source, retrieval (RAG) keeps them current.
* languages: the share of records whose main script (`workbench.text.script_expr`) the base model was hardly
  trained on (the embedded SmolLM2 and Llama-2 are English-centric, Llama-3 covers eight languages without
  Chinese); a script is a proxy for a language, a coarse one (French and English are both Latin script).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from workbench import text
from workbench.frames import rows_to_frame
from workbench.io.reader import RecordReader
from workbench.methods import registry

LORA_MIN_RECORDS = 500
LORA_GOOD_RECORDS = 5_000
FULL_MIN_RECORDS = 10_000
CHANGING_FACTS_SHARE = 0.2
FOREIGN_SCRIPT_SHARE = 0.1
TRUNCATED_SHARE = 0.01
TOKENS_PER_WORD = 1.3

# Prompts asking about facts that change. English words on word boundaries; Chinese terms as they are; a year from
# 2000 on (a historical year is a fact that stays); dates; amounts of money.
CHANGING_FACTS_PATTERN = (
    r"(?i)\b(?:latest|current(?:ly)?|today|tonight|tomorrow|yesterday|right now|nowadays|this (?:week|month|year)|"
    r"as of|up-to-date|recent(?:ly)?|news|headlines?|prices?|pricing|how much (?:is|does|are)|stock|shares? price|"
    r"exchange rate|weather|forecast|score[sd]?|standings|who is the (?:current )?(?:president|ceo|prime minister|"
    r"champion))\b"
    r"|今天|今日|明天|昨天|最新|目前|现在|当前|近期|最近|价格|价钱|股价|汇率|天气|新闻|今年|本周|本月|多少钱|报价"
    r"|\b20[0-9]{2}\b|[0-9]{4}年|\b[0-9]{4}-[0-9]{2}-[0-9]{2}\b|\b[0-9]{1,2}/[0-9]{1,2}/[0-9]{2,4}\b"
    r"|[$€£¥]\s?[0-9]"
)

# What a base model was trained on, as scripts (`text.script_of`): (family, how its card describes it, scripts).
# Matched in order against the model's names (folder, `_name_or_path`, wb_source.json's origin) and model_type.
MODEL_LANGUAGES: tuple[tuple[str, str, str, frozenset[str]], ...] = (
    ("smollm", "SmolLM2", "trained mostly on English (its model card)", frozenset({"latin"})),
    ("llama-2", "Llama-2", "89.7% English pretraining data (Llama 2 paper, table 10)", frozenset({"latin"})),
    ("llama-3", "Llama-3", "8 languages: en, de, fr, it, pt, hi, es, th (no Chinese)", frozenset({"latin", "other"})),
    ("mistral", "Mistral", "English-centric", frozenset({"latin"})),
    ("qwen", "Qwen", "multilingual, Chinese and English first", frozenset({"latin", "cjk", "other"})),
    ("glm", "GLM", "Chinese and English", frozenset({"latin", "cjk"})),
    ("yi", "Yi", "Chinese and English", frozenset({"latin", "cjk"})),
    ("deepseek", "DeepSeek", "Chinese and English", frozenset({"latin", "cjk"})),
)
SCRIPT_NAMES = {"cjk": "CJK (Chinese/Japanese)", "latin": "Latin", "other": "other scripts"}


@dataclass(frozen=True)
class Advice:
    kind: str
    level: str  # warn or info
    message: str
    figure: float | int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "level": self.level, "message": self.message, "figure": self.figure}


def model_languages(names: list[str]) -> tuple[str, str, frozenset[str]] | None:
    """(family, description, scripts) of the first family whose key occurs in one of `names`, or None."""
    lowered = [n.lower().replace("_", "-") for n in names if n]
    for key, family, description, scripts in MODEL_LANGUAGES:
        if any(key in n for n in lowered):
            return family, description, scripts
    return None


def read_frame(
    path: Path, overrides: dict[str, str] | None = None, split: str | None = None
) -> tuple[pl.DataFrame, int]:
    """The records of `path` as a frame (its `_line` kept) and the number of malformed ones."""
    parts: list[pl.DataFrame] = []
    rejected = 0
    for batch in RecordReader(Path(path), overrides, split=split):
        rejected += len(batch.rejects)
        parts.append(rows_to_frame(batch.lines, batch.rows))
    return (pl.concat(parts) if parts else rows_to_frame([], [])), rejected


def data_facts(df: pl.DataFrame) -> dict[str, Any]:
    """Counts the advice rests on: records, scripts, changing-fact prompts (with examples), estimated lengths."""
    prompt = text.joined_text(["instruction", "input"])
    everything = text.joined_text(["system", "history", "instruction", "input", "output"])
    facts = df.select(
        pl.col("_line"),
        prompt.alias("_prompt"),
        prompt.str.contains(CHANGING_FACTS_PATTERN).alias("changing"),
        text.script_expr(text.joined_text(["instruction", "input", "output"])).alias("script"),
        (text.token_count(everything).cast(pl.Float64) * TOKENS_PER_WORD).ceil().cast(pl.Int64).alias("tokens"),
    )
    n = facts.height
    scripts = {k: int(v) for k, v in sorted(facts["script"].value_counts().iter_rows())} if n else {}
    changing = facts.filter(pl.col("changing"))
    examples = [
        {"line": int(line), "prompt": p[:80]} for line, p in changing.select("_line", "_prompt").head(3).iter_rows()
    ]
    lengths = sorted(facts["tokens"].to_list())
    return {
        "records": n,
        "scripts": scripts,
        "changing_facts": changing.height,
        "changing_examples": examples,
        "estimated_lengths": lengths,
    }


def advise(
    facts: dict[str, Any],
    methods: list[str],
    seq_len: int,
    context: int | None,
    model_names: list[str],
    token_lengths: dict[str, Any] | None = None,
    rejected: int = 0,
) -> list[Advice]:
    """Advice lines, each saying which figure triggered it."""
    from workbench.token_lengths import summarize

    out: list[Advice] = []
    n = facts["records"]
    if rejected:
        out.append(
            Advice("malformed", "warn", f"{rejected:,} malformed records were skipped: run wb clean first", rejected)
        )
    adapters = [m for m in methods if not _full(m)]
    if adapters and n < LORA_MIN_RECORDS:
        out.append(
            Advice(
                "too_few_records",
                "warn",
                f"{n:,} records: fewer than the {LORA_MIN_RECORDS:,} the guide gives as the least for LoRA and other "
                f"adapters ({LORA_MIN_RECORDS:,}-{LORA_GOOD_RECORDS:,} good samples); expect overfitting, or collect "
                "more",
                n,
            )
        )
    if any(_full(m) for m in methods) and n < FULL_MIN_RECORDS:
        out.append(
            Advice(
                "too_few_for_full",
                "warn",
                f"{n:,} records: full fine-tuning (full, galore) wants {FULL_MIN_RECORDS:,}+; on less it overfits and "
                "forgets more of what the base model knew: prefer LoRA",
                n,
            )
        )
    if n >= FULL_MIN_RECORDS:
        out.append(
            Advice(
                "enough_for_full",
                "info",
                f"{n:,} records: enough for full fine-tuning (the guide's {FULL_MIN_RECORDS:,}+), if it fits memory",
                n,
            )
        )
    if token_lengths is not None and token_lengths.get("records"):
        summary, how = token_lengths, f"tokens of {token_lengths.get('tokenizer')} after the chat template"
    else:
        summary, how = summarize(facts["estimated_lengths"], (seq_len,)), "tokens estimated from word counts"
    if summary.get("records"):
        lengths_over = _share_over(summary, facts, token_lengths, seq_len)
        if context is not None and summary["max"] > context:
            over_ctx = _share_over(summary, facts, token_lengths, context)
            out.append(
                Advice(
                    "beyond_context",
                    "warn",
                    f"{over_ctx:.1%} of records are longer than the model's context of {context:,} tokens (longest "
                    f"{summary['max']:,} {how}): split them or choose a model with a longer context",
                    round(over_ctx, 4),
                )
            )
        if lengths_over > TRUNCATED_SHARE:
            out.append(
                Advice(
                    "truncated",
                    "warn",
                    f"{lengths_over:.1%} of records are longer than --seq-len {seq_len:,} (p99 {summary['p99']:,} "
                    f"{how}) and would be truncated: a max_length of {summary['suggested_max_length']:,} covers 99% "
                    "(memory grows with it)",
                    round(lengths_over, 4),
                )
            )
    if n:
        share = facts["changing_facts"] / n
        if share >= CHANGING_FACTS_SHARE:
            example = facts["changing_examples"][0] if facts["changing_examples"] else None
            seen = f" (e.g. line {example['line']}: {example['prompt']!r})" if example else ""
            out.append(
                Advice(
                    "changing_facts",
                    "warn",
                    f"{share:.0%} of prompts ({facts['changing_facts']:,} of {n:,}) ask about facts that change: "
                    f"dates, prices, latest/current{seen}; retrieval (RAG) fits these better: fine-tuning freezes "
                    "the facts at training time and cannot cite a source",
                    round(share, 4),
                )
            )
        known = model_languages(model_names)
        if known is not None:
            family, description, covered = known
            foreign = {
                s: c for s, c in facts["scripts"].items() if s not in covered and s not in ("empty", "no_letters")
            }
            count = sum(foreign.values())
            if count / n >= FOREIGN_SCRIPT_SHARE:
                names = ", ".join(f"{SCRIPT_NAMES.get(s, s)} {c / n:.0%}" for s, c in sorted(foreign.items()))
                out.append(
                    Advice(
                        "language_mix",
                        "warn",
                        f"{count / n:.0%} of records are mainly in scripts {family} was hardly trained on ({names}); "
                        f"{family} is {description}: expect weak results, or choose a base model trained on them "
                        "(e.g. Qwen2.5 for Chinese)",
                        round(count / n, 4),
                    )
                )
    return out


def _share_over(
    summary: dict[str, Any], facts: dict[str, Any], token_lengths: dict[str, Any] | None, limit: int
) -> float:
    """Share of records longer than `limit`: from the tokenizer's CDF points when measured, else exact."""
    if token_lengths is None or not token_lengths.get("records"):
        values = facts["estimated_lengths"]
        return sum(1 for v in values if v > limit) / max(1, len(values))
    if str(limit) in summary.get("over", {}):
        return float(summary["over"][str(limit)])
    below = [share for value, share in summary.get("cdf", []) if value <= limit]
    return 1.0 - (below[-1] if below else 0.0)


def _full(method: str) -> bool:
    """Full fine-tuning: every weight trains (its spec's trainable parameters; full, galore)."""
    return registry.get(method).params == "full"


def recommend(estimates: list[Any], records: int | None, memory_known: bool) -> dict[str, Any]:
    """The method to start with and why: full when the data is large and it fits, else LoRA, else LoRA with gradient
    checkpointing, else QLoRA; nothing when none fits."""
    by = {e.method: e for e in estimates}
    order: list[tuple[str, bool]] = []
    if records is not None and records >= FULL_MIN_RECORDS:
        order += [("full", False), ("full", True)]
    order += [("lora", False), ("lora", True), ("qlora", False), ("qlora", True), ("freeze", False)]
    if not memory_known:
        pick = "full" if records is not None and records >= FULL_MIN_RECORDS and "full" in by else "lora"
        return {"method": pick, "gradient_checkpointing": False, "reason": "no memory size known: judged by data only"}
    for method, ckpt in order:
        est = by.get(method)
        if est is None:
            continue
        fits = est.fits_checkpointed if ckpt else est.fits
        if fits:
            data = f"{records:,} records" if records is not None else "no data given"
            peak = est.peak_checkpointed if ckpt else est.peak
            how = " with gradient_checkpointing: true" if ckpt else ""
            return {
                "method": method,
                "gradient_checkpointing": ckpt,
                "reason": f"{method}{how} fits ({(peak + est.runtime) / 2**30:.1f} GiB with the runtime); {data}",
            }
    return {
        "method": None,
        "gradient_checkpointing": True,
        "reason": "no method fits: lower --seq-len or --batch, or choose a smaller model",
    }
