"""Filter rules. Each rule is data: a name, a description, a parameter model and a builder that turns the
parameters into two polars expressions over a batch of records: `drop` (true where the rule drops the record)
and `reason` (a sentence for each dropped record, stored in `<out>.dropped.jsonl`).

This module holds the rules over a record's own text (the SFT rules, which preference data runs per answer) and the
expressions they share; the registry they join is `workbench.clean.rule_registry`, the rules over model-based scores
are `workbench.clean.score_rules`, those over preference pairs `workbench.clean.preference_rules`. Adding a rule is
adding one function decorated with `@rule` here and one line in a profile under `pipelines/`; `make schemas` lists
it in the rule table of docs/cleaning.md.

Thresholds follow common practice in public cleaning pipelines (Gopher/RefinedWeb-style repetition and
symbol filters as in datatrove, Alpaca-cleaned's checks for empty, echoing and context-dependent records);
where they differ, it is because instruction answers are short and often code (see each rule's comment).

Columns a rule can read: instruction, input, output, system, history (list of [user, assistant]) and the
features computed by `rule_registry.features()`: `_output_chars`, `_total_chars`, `_output_tokens`, `_total_tokens`.
"""

from __future__ import annotations

from typing import Literal

import polars as pl
from pydantic import Field

from workbench import text
from workbench.clean.rule_registry import INPUT, INSTRUCTION, OUTPUT, Check, Params, never, rule
from workbench.dedup.shingles import ngram_hash

# --- shared expressions ---------------------------------------------------------------------------------

ECHO_PREFIX = 2048


def ratio(part: pl.Expr, whole: pl.Expr) -> pl.Expr:
    """part / whole, 0 where whole is 0."""
    return part / pl.when(whole > 0).then(whole).otherwise(1)


def percent(share: pl.Expr) -> pl.Expr:
    return (share * 100).round(0).cast(pl.Int64)


def quoted(expr: pl.Expr, limit: int = 60) -> pl.Expr:
    """A short quotation of a field for reasons."""
    return pl.when(expr.str.len_chars() > limit).then(expr.str.slice(0, limit) + "…").otherwise(expr)


# --- rules ----------------------------------------------------------------------------------------------

DEFAULT_PLACEHOLDERS = [
    "",
    "n/a",
    "na",
    "none",
    "null",
    "nan",
    "-",
    "<no output>",
    "<nooutput>",
    "no output",
    "<noinput>",
    "<no input>",
    "<empty>",
    "无",
    "无输出",
    "空",
]


class EmptyOutputParams(Params):
    placeholders: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PLACEHOLDERS),
        description="Outputs that count as empty, compared case-insensitively after trimming.",
    )


@rule("empty_output", "Output is empty or a placeholder such as N/A or <No Output>.", EmptyOutputParams)
def empty_output(p: EmptyOutputParams) -> Check:
    key = OUTPUT.str.strip_chars().str.to_lowercase()
    return Check(
        key.is_in([s.lower() for s in p.placeholders]),
        pl.when(OUTPUT.str.strip_chars() == "")
        .then(pl.lit("output is empty"))
        .otherwise(pl.format("output is the placeholder '{}'", quoted(OUTPUT))),
    )


class NoParams(Params):
    pass


@rule("empty_instruction", "Both instruction and input are empty: there is no task.", NoParams)
def empty_instruction(p: NoParams) -> Check:
    return Check(
        (INSTRUCTION.str.strip_chars() == "") & (INPUT.str.strip_chars() == ""),
        pl.lit("instruction and input are both empty"),
    )


@rule(
    "output_echoes_prompt",
    "Output is the instruction or the input again (prose: ignoring case, spaces and end punctuation).",
    NoParams,
)
def output_echoes_prompt(p: NoParams) -> Check:
    stripped = OUTPUT.str.strip_chars()
    out_chars = stripped.str.len_chars().cast(pl.Int64)

    def close(other: pl.Expr) -> pl.Expr:
        """Lengths within 10 %: a cheap necessary condition for both comparisons below."""
        return (out_chars - other.str.strip_chars().str.len_chars().cast(pl.Int64)).abs() <= out_chars // 10 + 2

    def same(other: pl.Expr) -> pl.Expr:
        exact = stripped == other.str.strip_chars()
        # Loose comparison for prose only: in code, case and spacing are the fix ("ForEach" → "forEach").
        # Keys cover the first ECHO_PREFIX characters; `close` has already matched the lengths.
        out_key = text.echo_key_expr(OUTPUT.str.slice(0, ECHO_PREFIX))
        loose = ~text.looks_like_code(OUTPUT) & ~text.looks_like_code(other)
        loose = loose & (out_key == text.echo_key_expr(other.str.slice(0, ECHO_PREFIX))) & (out_key != "")
        return close(other) & (exact | loose) & (stripped != "")

    same_ins, same_inp = same(INSTRUCTION), same(INPUT)
    return Check(
        same_ins | same_inp,
        pl.when(same_ins).then(pl.lit("output repeats the instruction")).otherwise(pl.lit("output repeats the input")),
        applies=close(INSTRUCTION) | close(INPUT),
    )


class LengthCharsParams(Params):
    min_output: int | None = Field(1, ge=0, description="Fewest characters in the output.")
    max_output: int | None = Field(None, ge=1, description="Most characters in the output.")
    max_total: int | None = Field(
        200_000, ge=1, description="Most characters in all text fields together (incl. system, history)."
    )


def _bounds(value: pl.Expr, what: str, lo: int | None, hi: int | None) -> list[tuple[pl.Expr, pl.Expr]]:
    out = []
    if lo is not None:
        out.append((value < lo, pl.format(f"{what} is {{}}, below the minimum {lo}", value)))
    if hi is not None:
        out.append((value > hi, pl.format(f"{what} is {{}}, above the maximum {hi}", value)))
    return out


def _first_of(checks: list[tuple[pl.Expr, pl.Expr]]) -> Check:
    if not checks:
        return never()
    drop = pl.any_horizontal([c for c, _ in checks])
    reason = pl.coalesce([pl.when(c).then(r) for c, r in checks])
    return Check(drop, reason)


@rule("length_chars", "Output or whole record outside the character bounds.", LengthCharsParams)
def length_chars(p: LengthCharsParams) -> Check:
    return _first_of(
        _bounds(pl.col("_output_chars"), "output length in characters", p.min_output, p.max_output)
        + _bounds(pl.col("_total_chars"), "record length in characters", None, p.max_total)
    )


class LengthTokensParams(Params):
    min_output: int | None = Field(1, ge=0, description="Fewest tokens in the output.")
    max_output: int | None = Field(None, ge=1, description="Most tokens in the output.")
    max_total: int | None = Field(16_384, ge=1, description="Most tokens in the whole record.")


@rule(
    "length_tokens",
    "Output or whole record outside the token bounds (a CJK character is one token, a word is one token).",
    LengthTokensParams,
)
def length_tokens(p: LengthTokensParams) -> Check:
    return _first_of(
        _bounds(pl.col("_output_tokens"), "output length in tokens", p.min_output, p.max_output)
        + _bounds(pl.col("_total_tokens"), "record length in tokens", None, p.max_total)
    )


class RepeatedLinesParams(Params):
    # Gopher drops web pages with > 30 % duplicate lines; answers with code repeat short lines
    # legitimately (closing braces, blank-ish lines), so lines without letters or digits are ignored
    # and the default is higher.
    # The defaults live in `workbench.text` (shared with the eval's `repetition` flag).
    max_fraction: float = Field(
        text.REPEATED_LINES_MAX_FRACTION, gt=0, le=1, description="Largest share of lines that repeat another."
    )
    min_lines: int = Field(
        text.REPEATED_LINES_MIN_LINES, ge=2, description="Only outputs with at least this many lines are checked."
    )


def per_record(df: pl.DataFrame, items: pl.Expr, value: pl.Expr, prefix: str) -> pl.DataFrame:
    """Explode a list per record (`items`), map each element to `value`, and add `{prefix}_n` (non-null values)
    and `{prefix}_unique` (distinct non-null values) per record. `value` reads the element as `pl.col("_item")`
    and may use `pl.col("_i")` (the record index) in window expressions."""
    exploded = df.select("_i", items.alias("_item")).explode("_item").select("_i", value.alias("_v"))
    counts = exploded.group_by("_i").agg(
        pl.col("_v").count().cast(pl.Int64).alias(f"{prefix}_n"),
        pl.col("_v").drop_nulls().n_unique().cast(pl.Int64).alias(f"{prefix}_unique"),
    )
    return df.join(counts, on="_i", how="left", maintain_order="left")


@rule("repeated_lines", "Output repeats the same lines over and over (a generation loop).", RepeatedLinesParams)
def repeated_lines(p: RepeatedLinesParams) -> Check:
    item = pl.col("_item").str.strip_chars()
    lines = pl.when(item.str.contains(r"[\p{L}\p{N}]")).then(item)  # lines with no letter or digit do not count

    def prepare(df: pl.DataFrame) -> pl.DataFrame:
        return per_record(df, OUTPUT.str.split("\n"), lines, "_lines")

    n = pl.col("_lines_n")
    dup = n - pl.col("_lines_unique")
    return Check(
        (n >= p.min_lines) & (dup > p.max_fraction * n),
        pl.format("{} of {} lines repeat an earlier line", dup, n),
        applies=OUTPUT.str.count_matches("\n", literal=True) >= p.min_lines - 1,
        prepare=prepare,
    )


class RepeatedNgramsParams(Params):
    # The defaults live in `workbench.text` (shared with the eval's `repetition` flag).
    n: int = Field(text.REPEATED_NGRAMS_N, ge=2, le=10, description="Length of the token n-grams compared.")
    # Natural text has well under 10 % duplicate 4-grams; code around 20-35 %; generation loops above 70 %.
    max_fraction: float = Field(
        text.REPEATED_NGRAMS_MAX_FRACTION, gt=0, le=1, description="Largest share of n-grams that repeat."
    )
    min_tokens: int = Field(
        text.REPEATED_NGRAMS_MIN_TOKENS, ge=1, description="Only outputs with at least this many tokens are checked."
    )


@rule(
    "repeated_ngrams",
    "Output repeats the same phrases (token n-grams; CJK counted per character).",
    RepeatedNgramsParams,
)
def repeated_ngrams(p: RepeatedNgramsParams) -> Check:
    def prepare(df: pl.DataFrame) -> pl.DataFrame:
        grams = ngram_hash(pl.col("_item").hash(0), pl.col("_i"), p.n)
        return per_record(df, OUTPUT.str.extract_all(text.TOKEN_PATTERN), grams, "_grams")

    total = pl.col("_grams_n")
    frac = ratio(total - pl.col("_grams_unique"), total)
    return Check(
        frac > p.max_fraction,
        pl.format(f"{{}}% of {p.n}-grams in the output repeat", percent(frac)),
        applies=pl.col("_output_tokens") >= p.min_tokens,
        prepare=prepare,
    )


class SymbolRatioParams(Params):
    # Code answers run at 20-40 % punctuation and symbols, short ones (a regex, a date format, a printed
    # Python list) up to 65 %; rows of symbols, ASCII art and broken characters run far higher.
    max_ratio: float = Field(0.75, gt=0, le=1, description="Largest share of non-space characters that are symbols.")
    min_chars: int = Field(20, ge=1, description="Only outputs with at least this many non-space characters.")


@rule(
    "symbol_ratio",
    "Output is mostly punctuation, symbols or broken characters rather than text.",
    SymbolRatioParams,
)
def symbol_ratio(p: SymbolRatioParams) -> Check:
    nonspace = pl.col("_output_chars") - OUTPUT.str.count_matches(r"\s").cast(pl.Int64)
    non_text = OUTPUT.str.count_matches(r"[^\p{L}\p{M}\p{N}\s]").cast(pl.Int64)
    share = ratio(non_text, nonspace)
    return Check(
        (nonspace >= p.min_chars) & (share > p.max_ratio),
        pl.format("{}% of the output's characters are symbols or punctuation", percent(share)),
        applies=pl.col("_output_chars") >= p.min_chars,
    )


REFUSAL_PATTERNS = [
    r"\bas an ai(?: language)? model\b",
    r"\bas a (?:large )?language model\b",
    r"\bas an ai(?: assistant)?,? i (?:do not|don't|cannot|can't|am not able)",
    r"\bi(?:'m| am) (?:sorry|afraid),? (?:but )?i (?:cannot|can't|am unable|am not able|won't)",
    r"\bi (?:cannot|can't|am unable to|am not able to) (?:fulfill|comply|assist with|help with) (?:that|this|your)",
    r"\bi (?:do not|don't) have (?:personal (?:opinions|feelings|experiences)|access to real-time)",
    r"\bmy (?:knowledge|training data) (?:cutoff|cut-off)\b",
    r"\bopenai(?:'s)? (?:content|use case|usage) polic",
    r"作为一?个?(?:ai|人工智能|语言模型|AI语言模型|人工智能语言模型)",
    r"我只是一?个(?:ai|人工智能|语言模型)",
    r"(?:抱歉|对不起)[，,]?\s*我(?:无法|不能|没有办法)",
    r"我(?:无法|不能)(?:回答|提供|满足|完成)(?:这个|您|你)的?(?:问题|请求|要求)",
]


class RefusalParams(Params):
    patterns: list[str] = Field(
        default_factory=lambda: list(REFUSAL_PATTERNS),
        description="Case-insensitive regular expressions (Rust regex syntax) searched in the output.",
    )


@rule(
    "refusal",
    "Output is a refusal or 'As an AI language model' boilerplate (English and Chinese).",
    RefusalParams,
    kinds=("sft",),  # in preference data a refused rejected answer is often the point: see refusal_chosen
)
def refusal(p: RefusalParams) -> Check:
    if not p.patterns:
        return never()
    pattern = "(?i)" + "|".join(f"(?:{x})" for x in p.patterns)
    return Check(
        OUTPUT.str.contains(pattern),
        pl.format("output contains refusal boilerplate: '{}'", OUTPUT.str.extract(f"({pattern})", 1)),
    )


_ATTACHMENT = (
    r"(?i)^\s*[<\[(]?\s*(?:picture|image|photo|img|video|audio|file|attachment|screenshot|图片|图像|照片|附件)s?"
    r"(?:\s*(?:attached|here|below|附上))?\s*[>\])]?\s*$"
)
_URL_ONLY = r"(?i)^\s*(?:https?://|www\.)\S+\s*$"
# A URL is the data itself when the task is about URLs, requests or code ("fetch JSON from the given URL").
_URL_IS_DATA = (
    r"(?i)\b(?:url|uri|link|api|endpoint|http|https|request|fetch|download|code|function|program|script|regex|"
    r"parse|domain|query string|curl)s?\b|网址|链接|代码|函数|程序|接口"
)
_REFERS_EN = (
    r"(?i)\b(?:the|this|these)\s+(?:following|given|below|above|attached|provided)\s+"
    r"(?:news\s+)?(?:article|passage|text|paragraph|story|essay|document|email|e-mail|poem|code|snippet|"
    r"sentence|table|data|dataset|list|image|picture|photo|link|url|chart|graph|video|audio|file|report)s?\b"
)
_REFERS_ZH = (
    r"(?:以下|下面|下列|如下|给定|所给|上述|附件)的?"
    r"(?:文章|段落|文本|短文|句子|诗歌?|代码|表格|内容|材料|新闻|邮件|图片|链接|数据)"
)
_EMBEDDED = r"[:：]\s*\S|\n\s*\S|[\"“「『][^\"”」』]{10,}"


@rule(
    "missing_context",
    "Prompt depends on content the record does not contain (a URL or attachment as the whole input, "
    "'the following article' with no article).",
    NoParams,
)
def missing_context(p: NoParams) -> Check:
    url_only = INPUT.str.contains(_URL_ONLY) & ~INSTRUCTION.str.contains(_URL_IS_DATA)
    attachment = INPUT.str.contains(_ATTACHMENT) | INSTRUCTION.str.contains(_ATTACHMENT)
    refers = INSTRUCTION.str.contains(_REFERS_EN) | INSTRUCTION.str.contains(_REFERS_ZH)
    dangling = refers & (INPUT.str.strip_chars() == "") & ~INSTRUCTION.str.contains(_EMBEDDED)
    return Check(
        url_only | attachment | dangling,
        pl.when(url_only)
        .then(pl.format("input is only a link ({}); the content is not in the record", quoted(INPUT)))
        .when(attachment)
        .then(pl.lit("prompt points to an attachment that the record does not contain"))
        .otherwise(
            pl.format(
                "instruction refers to '{}' but the record holds no such content",
                pl.coalesce(
                    INSTRUCTION.str.extract(f"({_REFERS_EN})", 1),
                    INSTRUCTION.str.extract(f"({_REFERS_ZH})", 1),
                ),
            )
        ),
    )


_MERGED = (
    r"(?i)(?:^|\n)[\s#]*\d+\s*[.)]\s*(?:instruction|input|output)\s*[:：]"
    r"|(?:^|\n)\s*#{2,}\s*(?:instruction|input|output|response)\s*[:：]"
)


@rule(
    "merged_instructions",
    "Several instructions merged into one record (leftover '##\\n18. Instruction:' or '### Response:' markers).",
    NoParams,
)
def merged_instructions(p: NoParams) -> Check:
    hits = [(c, name) for c, name in ((INSTRUCTION, "instruction"), (INPUT, "input"), (OUTPUT, "output"))]
    checks = [
        (
            c.str.contains(_MERGED),
            pl.format(
                f"{name} holds another instruction's marker '{{}}'",
                c.str.extract(f"({_MERGED})", 1).str.strip_chars(),
            ),
        )
        for c, name in hits
    ]
    return _first_of(checks)


class TruncatedParams(Params):
    # Off by default: on real data (GPTeacher code answers, Chinese Q&A) a missing final full stop was far
    # more often a code line or a list than a cut answer. The strict profile turns it on.
    prose_min_tokens: int | None = Field(
        None,
        ge=1,
        description="Prose outputs at least this long must end a sentence; null disables this check.",
    )


# `;` is left out: statements end with it. An opening bracket or a trailing comma/colon means more was coming.
_DANGLING_END = r"[,:，、：(\[{（【《\\]\s*$"
_SENTENCE_END = r"[\p{L}]\s*$"
_LIST_LAST_LINE = r"(?:^|\n)\s*(?:[-*+#|>•]|\d+[.)、])[^\n]*$"


@rule(
    "truncated_output",
    "Output stops mid-code-block, on a dangling comma/colon/bracket, or mid-sentence.",
    TruncatedParams,
)
def truncated_output(p: TruncatedParams) -> Check:
    checks = [
        (
            (OUTPUT.str.count_matches("```") % 2) == 1,
            pl.lit("output ends inside an unclosed ``` code block"),
        ),
        (
            OUTPUT.str.contains(_DANGLING_END),
            pl.format("output ends on '{}', mid-sentence", OUTPUT.str.strip_chars_end().str.slice(-1, 1)),
        ),
    ]
    if p.prose_min_tokens is not None:
        prose_cut = (
            ~text.looks_like_code(OUTPUT)
            & (pl.col("_output_tokens") >= p.prose_min_tokens)
            & OUTPUT.str.contains(_SENTENCE_END)
            & ~OUTPUT.str.contains(_LIST_LAST_LINE)
        )
        checks.append(
            (
                prose_cut,
                pl.format("output ends mid-sentence: '…{}'", OUTPUT.str.strip_chars_end().str.slice(-20, 20)),
            )
        )
    return _first_of(checks)


# Template variables left in text that was generated from a template (LLaMA-Factory's identity.json ships
# `{{name}}` and `{{author}}` to be filled in). Rust regex syntax. Records any of whose fields looks like code are
# not searched (code keeps its `{x}`, `<T>`, `$HOME` and `{{ value }}`), unless `in_code` is on.
PLACEHOLDER_PATTERNS = [
    r"\{\{\s*[^{}\s][^{}\n]{0,40}?\s*\}\}",  # {{name}}, {{ author }}, {{名字}}
    r"\{[A-Za-z_][A-Za-z0-9_]{0,40}\}",  # {name}, {user_name}
    r"<[A-Z][A-Z0-9]*(?:[_ ][A-Z0-9]+)+>|<(?:NAME|AUTHOR|USER|COMPANY|DATE|PLACEHOLDER|INSERT|TODO|TBD)>",  # <NAME>
    r"(?i)\[(?:insert|your|enter|add|fill in|placeholder)\b[^\]\n]{0,40}\]",  # [INSERT NAME], [Your Name]
    r"\[(?:NAME|AUTHOR|COMPANY|DATE|PLACEHOLDER|TODO|TBD|[A-Z]+_[A-Z_]+)\]",  # [NAME], [COMPANY_NAME]
    r"[【\[](?:填写|插入|输入|此处填|请填写)[^】\]\n]{0,20}[】\]]",  # 【填写姓名】
    r"\$\{?[A-Z][A-Z0-9]*_[A-Z0-9_]+\}?",  # $USER_NAME, ${COMPANY_NAME}
]
# Tokens wb's own PII redaction writes: filled on purpose, never a placeholder.
PLACEHOLDER_IGNORE = ["<EMAIL>", "<PHONE>", "<IP>", "<ID>"]


class PlaceholderParams(Params):
    patterns: list[str] = Field(
        default_factory=lambda: list(PLACEHOLDER_PATTERNS),
        description="Regular expressions (Rust regex syntax) of template variables left unfilled.",
    )
    ignore: list[str] = Field(
        default_factory=lambda: list(PLACEHOLDER_IGNORE),
        description="Literal strings that never count (the PII redaction tokens by default).",
    )
    in_code: bool = Field(False, description="Also search fields that look like code.")
    action: Literal["drop", "report"] = Field(
        "drop", description="drop: drop the record; report: keep it and list it in the stats."
    )


@rule(
    "unfilled_placeholder",
    "A template variable left unfilled ({{name}}, {name}, <NAME>, [INSERT ...], $VAR) in any text field.",
    PlaceholderParams,
)
def unfilled_placeholder(p: PlaceholderParams) -> Check:
    if not p.patterns:
        return never()
    pattern = "|".join(f"(?:{x})" for x in p.patterns)
    fields = [(INSTRUCTION, "instruction"), (INPUT, "input"), (OUTPUT, "output"), (pl.col("system"), "system")]
    fields.append((text.history_text(), "history"))
    checks = []
    for expr, name in fields:
        searched = expr.str.replace_many(p.ignore, [""] * len(p.ignore)) if p.ignore else expr
        found = searched.str.extract(f"({pattern})", 1)
        reason = pl.format(f"{name} holds the unfilled placeholder '{{}}'", found)
        checks.append((searched.str.contains(pattern), reason))
    first = _first_of(checks)
    if p.in_code:
        return Check(first.drop, first.reason, report_only=p.action == "report")
    # A record about code (`f'Hello, {name}!'`, `${TOKEN}`, a URL template) uses braces and `$` as code does.
    code = pl.any_horizontal([text.looks_like_code(expr) for expr, _ in fields])
    return Check(first.drop & ~code, first.reason, report_only=p.action == "report")
