"""Rules for preference data (pairs and KTO examples), in the same registry as the SFT rules
(`rule_registry.RULES`).

Columns they read, besides the prompt's `instruction`, `input`, `system` and `history`: `chosen` and `rejected`
(the two answers of a pair) for `pair`-level rules; `output` (one answer: a side of a pair, or a KTO completion)
for `answer`-level rules, which `workbench.clean.preference` runs once per side. The SFT rules that judge an
answer on its own (truncated, repeated, symbol garbage, lengths, placeholders) run per side the same way.

What each rule catches, and where it was seen breaking training:
- `identical_pair`: chosen and rejected the same text (after normalisation; by default also ignoring case and
  spacing): no preference, a zero DPO margin (OpenRLHF #1311 saw pairs become identical after truncation).
- `empty_response`: either answer empty or a placeholder (the SFT rule `empty_output`'s placeholders).
- `format_mismatch`: one answer wrapped in a code fence or quotes, starting with a role label or ending with a
  chat-template token that the other lacks: a DPO model learns the wrapping instead of the content (minimind #829).
- `refusal_chosen`: the preferred answer is refusal boilerplate (`rules.REFUSAL_PATTERNS`). Leave it out of the
  profile for safety data, where refusing is the preferred answer.
- `contradictory_pair`: the same prompt with A preferred to B in one record and B to A in another (for KTO: the
  same completion labelled both desirable and undesirable). Both are dropped, each naming the other's line.
"""

from __future__ import annotations

import polars as pl
from pydantic import Field

from workbench.clean import score_rules  # noqa: F401  (the score rules register before these: the docs table's order)
from workbench.clean.rule_registry import Check, Params, never, rule
from workbench.clean.rules import EmptyOutputParams, NoParams, RefusalParams, empty_output, refusal

CHOSEN, REJECTED = pl.col("chosen"), pl.col("rejected")


class IdenticalPairParams(Params):
    ignore_case_and_space: bool = Field(
        True, description="Also count answers that differ only in case and whitespace as identical."
    )


@rule(
    "identical_pair",
    "Chosen and rejected are the same text after normalisation: the pair states no preference.",
    IdenticalPairParams,
    kinds=("pair",),
    level="pair",
)
def identical_pair(p: IdenticalPairParams) -> Check:
    exact = CHOSEN == REJECTED
    if not p.ignore_case_and_space:
        return Check(exact, pl.lit("chosen and rejected are the same text"))

    def key(e: pl.Expr) -> pl.Expr:
        return e.str.to_lowercase().str.replace_all(r"\s+", "")

    return Check(
        exact | (key(CHOSEN) == key(REJECTED)),
        pl.when(exact)
        .then(pl.lit("chosen and rejected are the same text"))
        .otherwise(pl.lit("chosen and rejected differ only in case or whitespace")),
    )


@rule(
    "empty_response",
    "An answer (chosen, rejected or a KTO completion) is empty or a placeholder such as N/A.",
    EmptyOutputParams,
    kinds=("pair", "kto"),
)
def empty_response(p: EmptyOutputParams) -> Check:
    return empty_output(p)


@rule(
    "refusal_chosen",
    "The preferred answer (chosen, or a desirable KTO completion) is refusal boilerplate.",
    RefusalParams,
    kinds=("pair", "kto"),
    sides=("chosen",),
)
def refusal_chosen(p: RefusalParams) -> Check:
    return refusal(p)


# Chat-template tokens that leak into answers when data was exported from a rendered conversation.
TEMPLATE_TOKENS = [
    "<|im_end|>",
    "<|im_start|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end|>",
    "<|end_of_text|>",
    "</s>",
    "<eos>",
    "<end_of_turn>",
    "[/INST]",
    "<｜end▁of▁sentence｜>",
]
ROLE_PREFIXES = [
    r"assistant\s*[:：]",
    r"gpt\s*[:：]",
    r"bot\s*[:：]",
    r"#{2,}\s*response\s*[:：]?",
    r"助手\s*[:：]",
]  # not "答：" or "Answer:": ordinary ways to begin an answer in Chinese and English exercises


class FormatMismatchParams(Params):
    template_tokens: list[str] = Field(
        default_factory=lambda: list(TEMPLATE_TOKENS),
        description="Chat-template tokens that must not end (or start) one answer and not the other.",
    )
    role_prefixes: list[str] = Field(
        default_factory=lambda: list(ROLE_PREFIXES),
        description="Case-insensitive regular expressions of role labels an answer may wrongly start with.",
    )
    fences: bool = Field(True, description="Compare whether each answer is wholly wrapped in a ``` code fence.")
    quotes: bool = Field(
        True, description="Compare whether each answer is wholly wrapped in quotes (\"\", “”, 「」, '')."
    )
    markdown_wrap: bool = Field(
        True, description="Compare whether each answer is wholly bold (**...**) or a block quote (every line '> ')."
    )
    markdown_structure: bool = Field(
        False,
        description="Also compare whether each answer uses markdown structure (headings, bold, lists, tables). Off "
        "by default: better answers are often better formatted; turn it on when chosen answers come from a model "
        "that formats and rejected ones from one that does not.",
    )


_MARKDOWN = r"(?m)^#{1,6}\s+\S|\*\*[^*\n]+\*\*|^\s*(?:[-*+]|\d+\.)\s+\S|^\s*\|?\s*:?-{3,}"


def _markdown_wrapped(e: pl.Expr) -> pl.Expr:
    s = e.str.strip_chars()
    bold = (
        s.str.starts_with("**") & s.str.ends_with("**") & (s.str.len_chars() >= 5) & (s.str.count_matches(r"\*\*") == 2)
    )
    quote = s.str.contains(r"^>") & ~s.str.contains(r"(?m)^[^>\n]")
    return bold | quote


def _fenced(e: pl.Expr) -> pl.Expr:
    s = e.str.strip_chars()
    return s.str.starts_with("```") & s.str.ends_with("```") & (s.str.len_chars() >= 6)


_QUOTE_PAIRS = [('"', '"'), ("'", "'"), ("“", "”"), ("「", "」"), ("『", "』"), ("«", "»")]


def _quoted(e: pl.Expr) -> pl.Expr:
    s = e.str.strip_chars()
    # One quotation around the whole answer: the opening quote appears once, at the start.
    wrapped = [
        s.str.starts_with(a)
        & s.str.ends_with(b)
        & (s.str.len_chars() >= 3)
        & (s.str.count_matches(a, literal=True) <= (1 if a != b else 2))
        for a, b in _QUOTE_PAIRS
    ]
    return pl.any_horizontal(wrapped)


@rule(
    "format_mismatch",
    "One answer is wrapped in a code fence or quotes, starts with a role label or ends with a chat-template token "
    "(<|im_end|>, </s>, ...) that the other lacks: the model would learn the wrapping, not the content.",
    FormatMismatchParams,
    kinds=("pair",),
    level="pair",
)
def format_mismatch(p: FormatMismatchParams) -> Check:
    checks: list[tuple[pl.Expr, pl.Expr]] = []

    def compare(feature_c: pl.Expr, feature_r: pl.Expr, what: str) -> None:
        checks.append((feature_c & ~feature_r, pl.lit(f"chosen {what} and rejected does not")))
        checks.append((feature_r & ~feature_c, pl.lit(f"rejected {what} and chosen does not")))

    if p.template_tokens:
        for side, other in (("chosen", "rejected"), ("rejected", "chosen")):
            s, o = pl.col(side).str.strip_chars(), pl.col(other).str.strip_chars()
            for tok in p.template_tokens:
                has = s.str.ends_with(tok) | s.str.starts_with(tok)
                lacks = ~(o.str.ends_with(tok) | o.str.starts_with(tok))
                checks.append((has & lacks, pl.lit(f"{side} carries the template token '{tok}' and {other} does not")))
    if p.role_prefixes:
        pattern = "(?i)^\\s*(?:" + "|".join(f"(?:{x})" for x in p.role_prefixes) + ")"
        for side, other in (("chosen", "rejected"), ("rejected", "chosen")):
            has = pl.col(side).str.contains(pattern) & ~pl.col(other).str.contains(pattern)
            label = pl.col(side).str.extract(f"({pattern[4:]})", 1).str.strip_chars()
            checks.append((has, pl.format(f"{side} starts with the role label '{{}}' and {other} does not", label)))
    if p.fences:
        compare(_fenced(CHOSEN), _fenced(REJECTED), "is wrapped in a ``` code fence")
    if p.quotes:
        compare(_quoted(CHOSEN), _quoted(REJECTED), "is wrapped in quotes")
    if p.markdown_wrap:
        compare(_markdown_wrapped(CHOSEN), _markdown_wrapped(REJECTED), "is wholly bold or a block quote")
    if p.markdown_structure:
        compare(CHOSEN.str.contains(_MARKDOWN), REJECTED.str.contains(_MARKDOWN), "uses markdown formatting")
    if not checks:
        return never()
    drop = pl.any_horizontal([c for c, _ in checks])
    reason = pl.coalesce([pl.when(c).then(r) for c, r in checks])
    return Check(drop, reason)


@rule(
    "contradictory_pair",
    "The same prompt with A preferred to B in one record and B to A in another (KTO: one completion labelled both "
    "ways); all such records are dropped, each naming the others' lines.",
    NoParams,
    kinds=("pair", "kto"),
    level="file",
)
def contradictory_pair(p: NoParams) -> Check:
    return never()  # decided across the whole file: workbench.clean.preference.contradictions
