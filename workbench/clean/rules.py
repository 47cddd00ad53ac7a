"""Filter rules. Each rule is data: a name, a description, a parameter model and a builder that turns the
parameters into two polars expressions over a batch of records: `drop` (true where the rule drops the record)
and `reason` (a sentence for each dropped record, stored in `<out>.dropped.jsonl`).

Adding a rule is adding one function decorated with `@rule` here and one line in a profile under `pipelines/`;
`make schemas` lists it in the rule table of docs/cleaning.md.

Thresholds follow common practice in public cleaning pipelines (Gopher/RefinedWeb-style repetition and
symbol filters as in datatrove, Alpaca-cleaned's checks for empty, echoing and context-dependent records);
where they differ, it is because instruction answers are short and often code (see each rule's comment).

Columns a rule can read: instruction, input, output, system, history (list of [user, assistant]) and the
features computed by `features()`: `_output_chars`, `_total_chars`, `_output_tokens`, `_total_tokens`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from workbench import text
from workbench.dedup.shingles import ngram_hash

# --- registry -------------------------------------------------------------------------------------------


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Check:
    """`drop` is true where the rule drops a record; `reason` says why (evaluated on dropped records only).

    `applies`, when given, is a cheap necessary condition for `drop`: the expensive `drop` expression then runs
    on the records that pass it only. `prepare`, when given, adds the columns `drop` and `reason` read to those
    records with frame operations (explode / group-by), which beat per-list expressions by an order of magnitude.
    """

    drop: pl.Expr
    reason: pl.Expr
    applies: pl.Expr | None = None
    prepare: Callable[[pl.DataFrame], pl.DataFrame] | None = None
    report_only: bool = False  # matches are counted and listed in the stats, the record is kept


DataKind = Literal["sft", "pair", "kto"]
ALL_KINDS: tuple[DataKind, ...] = ("sft", "pair", "kto")


@dataclass(frozen=True)
class Rule:
    """`kinds`: the data a rule applies to: `sft` records, preference `pair`s, `kto` examples. On preference data a
    rule over `output` (level `answer`) runs once per answer in `sides` (a pair's chosen and rejected; a KTO
    example's completion, `chosen` meaning a desirable one); a `pair` rule reads `chosen` and `rejected` together;
    a `file` rule compares records across the whole file (workbench/clean/preference.py resolves it)."""

    name: str
    description: str
    params: type[Params]
    build: Callable[[Any], Check]
    kinds: tuple[DataKind, ...] = ALL_KINDS
    level: Literal["answer", "pair", "file"] = "answer"
    sides: tuple[Literal["chosen", "rejected"], ...] = ("chosen", "rejected")


RULES: dict[str, Rule] = {}


def rule(
    name: str,
    description: str,
    params: type[Params],
    kinds: tuple[DataKind, ...] = ALL_KINDS,
    level: Literal["answer", "pair", "file"] = "answer",
    sides: tuple[Literal["chosen", "rejected"], ...] = ("chosen", "rejected"),
) -> Callable[[Callable[[Any], Check]], Any]:
    def register(build: Callable[[Any], Check]) -> Callable[[Any], Check]:
        RULES[name] = Rule(name, description, params, build, kinds, level, sides)
        return build

    return register


_KIND_NAMES = {"sft": "SFT", "pair": "pairs", "kto": "KTO"}
_LEVEL_NOTES = {"answer": "", "pair": " (both answers together)", "file": " (across the file)"}


def _param_doc(name: str, field: Any) -> str:
    if field.is_required():
        return f"`{name}` (required)"
    default = field.default
    if field.default_factory is not None or default is None:
        return f"`{name}`"
    shown = ("true" if default else "false") if isinstance(default, bool) else str(default)
    return f"`{name}: {shown}`"


def markdown_table() -> str:
    """The rule table of docs/cleaning.md, from the rules registered when called (importing `workbench.clean.profile`
    registers every shipped rule): what data each applies to, when it drops a record, its parameters and defaults."""
    lines = ["| rule | applies to | drops a record when | parameters |", "|---|---|---|---|"]
    for r in RULES.values():
        kinds = ", ".join(_KIND_NAMES[k] for k in r.kinds) + _LEVEL_NOTES[r.level]
        params = ", ".join(_param_doc(n, f) for n, f in r.params.model_fields.items())
        description = r.description.replace("|", "\\|").replace("<", "\\<")  # a table cell, not a tag
        lines.append(f"| `{r.name}` | {kinds} | {description} | {params} |")
    return "\n".join(lines)


# --- shared expressions ---------------------------------------------------------------------------------

INSTRUCTION, INPUT, OUTPUT = pl.col("instruction"), pl.col("input"), pl.col("output")


def features() -> list[pl.Expr]:
    """Per-record measures that several rules and the stats share."""
    texts = [INSTRUCTION, INPUT, OUTPUT, pl.col("system"), text.history_text()]
    return [
        OUTPUT.str.len_chars().cast(pl.Int64).alias("_output_chars"),
        pl.sum_horizontal([t.str.len_chars().cast(pl.Int64) for t in texts]).alias("_total_chars"),
        text.token_count(OUTPUT).alias("_output_tokens"),
        pl.sum_horizontal([text.token_count(t) for t in texts]).alias("_total_tokens"),
    ]


ECHO_PREFIX = 2048


def ratio(part: pl.Expr, whole: pl.Expr) -> pl.Expr:
    """part / whole, 0 where whole is 0."""
    return part / pl.when(whole > 0).then(whole).otherwise(1)


def percent(share: pl.Expr) -> pl.Expr:
    return (share * 100).round(0).cast(pl.Int64)


def quoted(expr: pl.Expr, limit: int = 60) -> pl.Expr:
    """A short quotation of a field for reasons."""
    return pl.when(expr.str.len_chars() > limit).then(expr.str.slice(0, limit) + "…").otherwise(expr)


def _never() -> Check:
    return Check(pl.lit(False), pl.lit(None, dtype=pl.String))


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
        return _never()
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
        return _never()
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
        return _never()
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


# --- rules over model-based scores (`wb score`, a run's sample_losses.jsonl) ---------------------------------------
# These read score columns the pipeline joins on each record's line (`workbench.clean.scores`): `_score_<name>` (the
# value), `_rank_<name>` (position in descending order over every scored line) and `_count_<name>`. A record without
# the score is kept (the comparison is null). Each takes its main parameter as a scalar too (`ifd_max: 1.0`).


class ScoreParams(Params):
    """Parameters of a rule over a score; `scores()` names the scores it reads, `scalar` the field a bare value sets."""

    scalar: ClassVar[str] = ""

    def scores(self) -> list[str]:
        return []  # each rule's parameters name theirs


def _value(name: str) -> pl.Expr:
    return pl.col(f"_score_{name}")


def _num(expr: pl.Expr) -> pl.Expr:
    return expr.round(4).cast(pl.String)


class IfdMaxParams(ScoreParams):
    scalar: ClassVar[str] = "max"
    # Cherry-LLM: IFD >= 1 means the answer is no more likely after the prompt than without it (a mismatched pair).
    max: float = Field(1.0, gt=0, description="Drop records whose IFD (loss with prompt / loss without) exceeds this.")

    def scores(self) -> list[str]:
        return ["ifd"]


@rule(
    "ifd_max",
    "Instruction-following difficulty above the limit: the prompt does not help predict the answer (mismatched pair).",
    IfdMaxParams,
    kinds=("sft",),  # scores are joined on SFT records
)
def ifd_max(p: IfdMaxParams) -> Check:
    v = _value("ifd")
    return Check(
        v > p.max,
        pl.format(f"ifd {{}} > ifd_max {p.max}: the prompt does not help the model predict the answer", _num(v)),
    )


class PplAnswerMaxParams(ScoreParams):
    scalar: ClassVar[str] = "max"
    max: float = Field(gt=1, description="Drop records whose answer perplexity (given the prompt) exceeds this.")

    def scores(self) -> list[str]:
        return ["ppl_answer"]


@rule(
    "ppl_answer_max",
    "Answer perplexity given the prompt above the limit (noisy or garbled answers).",
    PplAnswerMaxParams,
    kinds=("sft",),  # scores are joined on SFT records
)
def ppl_answer_max(p: PplAnswerMaxParams) -> Check:
    v = _value("ppl_answer")
    return Check(v > p.max, pl.format(f"ppl_answer {{}} > ppl_answer_max {p.max}", _num(v)))


class RewardMinParams(ScoreParams):
    scalar: ClassVar[str] = "min"
    min: float = Field(description="Drop records whose reward model score is below this.")

    def scores(self) -> list[str]:
        return ["reward"]


@rule("reward_min", "Reward model score below the limit.", RewardMinParams, kinds=("sft",))
def reward_min(p: RewardMinParams) -> Check:
    v = _value("reward")
    return Check(v < p.min, pl.format(f"reward {{}} < reward_min {p.min}", _num(v)))


# Scores where a lower value is better; keep_top_fraction keeps the lowest of these and the highest of the others.
LOWER_IS_BETTER = ("ppl_answer", "ppl_answer_alone", "ppl_prompt", "loss_answer", "loss_answer_alone", "loss")


def _keep_count(fraction: float, n: pl.Expr) -> pl.Expr:
    return (n.cast(pl.Float64) * fraction).round(0).cast(pl.Int64)


class KeepTopFractionParams(ScoreParams):
    score: str = Field(description="The score to rank by: reward, ifd, ppl_answer, loss (sample_losses), ...")
    fraction: float = Field(gt=0, le=1, description="Share of the scored records to keep, the best first.")
    higher_is_better: bool | None = Field(
        None,
        description="Which end is best; default: lower for perplexities and losses, higher otherwise (reward, ifd: "
        "Cherry-LLM keeps the records of highest IFD below 1; pair it with ifd_max).",
    )

    def scores(self) -> list[str]:
        return [self.score]


@rule("keep_top_fraction", "Keep only the best share of the records by a score.", KeepTopFractionParams, kinds=("sft",))
def keep_top_fraction(p: KeepTopFractionParams) -> Check:
    higher = p.higher_is_better if p.higher_is_better is not None else p.score not in LOWER_IS_BETTER
    rank, n = pl.col(f"_rank_{p.score}"), pl.col(f"_count_{p.score}")
    keep = _keep_count(p.fraction, n)
    position = rank if higher else n - 1 - rank  # 0 = best
    which = "highest" if higher else "lowest"
    return Check(
        position >= keep,
        pl.format(
            f"{p.score} {{}} ranks {{}} of {{}}: outside the {which} {p.fraction:g} kept by keep_top_fraction",
            _num(_value(p.score)),
            (position + 1).cast(pl.String),
            n.cast(pl.String),
        ),
    )


class LossTopFractionParams(ScoreParams):
    scalar: ClassVar[str] = "fraction"
    fraction: float = Field(gt=0, lt=1, description="Share of the records with the highest training loss to drop.")
    score: str = Field("loss", description="The per-example loss column (sample_losses.jsonl writes `loss`).")

    def scores(self) -> list[str]:
        return [self.score]


@rule(
    "loss_top_fraction",
    "The share of records the trained model fit worst (highest per-example training loss): often mislabelled or noise.",
    LossTopFractionParams,
    kinds=("sft",),  # scores are joined on SFT records
)
def loss_top_fraction(p: LossTopFractionParams) -> Check:
    rank, n = pl.col(f"_rank_{p.score}"), pl.col(f"_count_{p.score}")
    return Check(
        rank < _keep_count(p.fraction, n),
        pl.format(
            f"{p.score} {{}} is the {{}}th highest of {{}}: in the top {p.fraction:g} dropped by loss_top_fraction",
            _num(_value(p.score)),
            (rank + 1).cast(pl.String),
            n.cast(pl.String),
        ),
    )


def score_rules(enabled: list[tuple[str, Params]]) -> dict[str, list[str]]:
    """Rule name → the scores it reads, for the enabled rules that read scores."""
    return {name: p.scores() for name, p in enabled if isinstance(p, ScoreParams)}
