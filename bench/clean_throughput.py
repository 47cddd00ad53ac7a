"""Throughput and memory of `wb clean` (profile `default`) against a plain-Python implementation of the same steps.

What is compared
----------------
* **wb**: `workbench.clean.dispatch.run(input, output, workbench.clean.profile.load("default"))`: orjson reading, then
  polars expressions over batches of 50,000 records (normalisation, PII candidates, every rule), then NDJSON writing.
* **baseline**: what one would write without polars: read the file line by line with `json.loads`, and per record
  apply the same steps with `re`, `unicodedata` and loops: NFKC, control/zero-width removal, CRLF→LF, whitespace
  trimming for prose, placeholder inputs → "", PII candidates (a `re` version of `pii.CANDIDATE_PATTERN`) then
  `pii.redact`, and the rules of `pipelines/clean-default.yaml` in order with the same thresholds, first match
  drops. Python's `re` has no `\\p{..}`, so letter/number and symbol classes use `str.isalnum` and
  `unicodedata.category` (per distinct character). The baseline never imports polars: `pii.py` is
  loaded on its own, and the patterns it shares with wb are copies, checked against wb's before each run.

Each implementation runs in a fresh child process; its peak RSS and CPU time come from `os.wait4` (the rusage of
that child alone) and its time is measured around the cleaning call inside the child (imports excluded; the
child's whole wall time is reported too). The input is generated, deterministic for a seed: English prose
answers, code answers recombined from GPTeacher records, Chinese Q&A from the alpaca_chinese_dataset files in
`../shared/data`, with defects planted at a few percent.

Run from the repository root: `.venv/bin/python bench/clean_throughput.py` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from random import Random
from types import ModuleType
from typing import Any

from benchlib import ROOT, git_state, self_peak_rss_mb, table, versions, write_report

DEFAULT_OUT = ROOT / "bench" / "out"
DEFAULT_DATA = ROOT.parent / "shared" / "data"
DEMO_DATA = ROOT / "data" / "demo" / "raw.jsonl"

TARGET_SPEEDUP = 5.0
TARGET_RSS_MB = 2048.0
IMPLEMENTATIONS = ("wb", "baseline")

# =====================================================================================================
# Input generation
# =====================================================================================================

TOPICS = [
    "regular exercise", "time management", "renewable energy", "version control", "a balanced diet",
    "remote work", "unit testing", "public transport", "personal budgeting", "learning a second language",
    "photosynthesis", "climate change", "machine learning", "the water cycle", "cloud computing",
    "mindfulness meditation", "urban gardening", "electric vehicles", "open-source software", "good sleep habits",
    "code review", "recycling", "volcanic eruptions", "the stock market", "data privacy", "compound interest",
    "team communication", "public speaking", "composting", "solar panels", "vaccination", "the French Revolution",
    "plate tectonics", "password managers", "containerisation", "index funds", "critical thinking",
    "biodiversity", "first aid", "bread baking",
]  # fmt: skip
ADJECTIVES = [
    "practical", "surprisingly simple", "widely misunderstood", "essential", "cost-effective", "sustainable",
    "rewarding", "demanding at first", "well documented", "easy to overlook", "flexible", "reliable",
]  # fmt: skip
EFFECTS = [
    "reduces stress over time", "saves money in the long run", "makes daily routines more predictable",
    "lowers the risk of costly mistakes", "builds confidence gradually", "improves long-term health",
    "helps teams work in parallel", "creates measurable results within weeks", "depends on a few simple habits",
    "rewards steady effort more than intensity", "shapes how communities plan for the future",
    "changes the way people make everyday decisions",
]  # fmt: skip
AUDIENCES = [
    "beginners", "small teams", "students", "busy parents", "older adults", "first-time managers",
    "software developers", "small businesses", "city residents", "people on a tight budget", "teachers", "nurses",
]  # fmt: skip
ADVICE = [
    "start with a small, specific goal", "keep a simple written log", "set aside fifteen minutes a day",
    "ask someone experienced for feedback", "measure progress every week", "read the official guidelines first",
    "automate the repetitive parts", "compare at least two options before deciding",
    "review what worked at the end of each month", "focus on consistency rather than speed",
    "write down the reasons behind each decision", "share your plan with a friend",
]  # fmt: skip
MISTAKES = [
    "try to change everything at once", "skip the basics", "rely on a single source of information",
    "ignore the early warning signs", "copy someone else's plan without adapting it",
    "give up after the first setback", "chase every new trend",
]  # fmt: skip
ANALOGIES = [
    "a habit that compounds like interest", "a map rather than a fixed route", "a muscle that grows with use",
    "a safety net for the future", "a set of building blocks", "a conversation rather than a lecture",
    "a garden that needs regular care",
]  # fmt: skip
SENTENCES = [
    "{T} is {adj} because it {effect}.",
    "Many {audience} underestimate how much {t} {effect}.",
    "One helpful way to think about {t} is as {analogy}.",
    "In practice, {t} {effect}, which makes it {adj} for {audience}.",
    "Studies over the past {n} years suggest that {t} {effect}.",
    "A common mistake is to {mistake}; a better approach is to {advice}.",
    "For {audience}, the first step is usually to {advice}.",
    "It also helps to {advice}, especially when {t} feels {adj}.",
    "The key idea is simple: {t} {effect}.",
    "Experts generally recommend that you {advice} and avoid the urge to {mistake}.",
    "Over time, {t} becomes less {adj} and more like {analogy}.",
    "There is no single right answer, but most {audience} find that {t} {effect}.",
    "If you only remember one thing, {advice}.",
    "Cost matters too: {t} {effect}, so it is worth planning ahead.",
    "People who {advice} tend to see results sooner than those who {mistake}.",
    "Another point worth mentioning is that {t} {effect}.",
    "Finally, remember that {t} is {adj}; patience pays off.",
    "According to a survey of {n}00 {audience}, {t} {effect}.",
    "Because {t} {effect}, it has become popular with {audience}.",
    "Think of {t} as {analogy}: it works best when you {advice}.",
    "Local libraries and community centres often run free sessions on {t} for {audience}.",
    "The details differ from country to country, yet the principle behind {t} stays the same.",
]
PROSE_INSTRUCTIONS = [
    "Explain {t} in simple terms.",
    "What are the main benefits of {t}?",
    "Give me some practical tips about {t}.",
    "Write a short paragraph about {t} for a school newsletter.",
    "How would you describe {t} to a beginner?",
    "List some common misconceptions about {t}.",
    "Why should {audience} care about {t}?",
    "Compare {t} and {t2}.",
    "What should I know before getting started with {t}?",
    "Write a brief introduction to {t} for {audience}.",
]
INSTRUCTION_SUFFIXES = ["", "", "", " Keep it concise.", " Use plain language.", " Be specific.", " Thanks!"]
CODE_INTROS = [
    "Here is a {lang} solution:",
    "Sure! The following {lang} code does this:",
    "You can do it like this in {lang}:",
    "Below is one way to implement it in {lang}.",
    "This {lang} snippet solves the task:",
]
CODE_NOTES = [
    "The code is written to be easy to read; variable names describe what they hold.",
    "It runs in linear time, so it scales well to large inputs.",
    "Edge cases such as an empty input are handled before the main logic runs.",
    "You can adapt the example by changing the input values at the bottom.",
    "Error handling is kept minimal to keep the example short.",
    "For production use, add tests that cover the boundary cases.",
    "The same approach works in other languages with only small syntax changes.",
    "If performance matters, profile the function with realistic data first.",
    "Example usage is included so you can run the snippet directly.",
    "Only the standard library is needed; there are no third-party dependencies.",
    "Each step is commented so that the control flow is easy to follow.",
    "Returning early keeps the nesting shallow and the intent clear.",
]
# (word in the instruction, fence tag, name in prose); the first that occurs wins.
LANGUAGES = [
    ("python", "python", "Python"), ("javascript", "javascript", "JavaScript"),
    ("typescript", "typescript", "TypeScript"), ("java", "java", "Java"), ("c++", "cpp", "C++"),
    ("c#", "csharp", "C#"), ("php", "php", "PHP"), ("ruby", "ruby", "Ruby"), ("bash", "bash", "Bash"),
    ("shell", "sh", "shell"), ("sql", "sql", "SQL"), ("rust", "rust", "Rust"), ("swift", "swift", "Swift"),
]  # fmt: skip
EN_REFUSALS = [
    "As an AI language model, I cannot browse the internet or access real-time information.",
    "As an AI language model, I don't have personal opinions, but here are some general points to consider.",
    "I'm sorry, but I cannot help with that request.",
    "I'm sorry, but I cannot provide assistance with this.",
    "As a language model, I am not able to make phone calls or send emails on your behalf.",
    "I don't have access to real-time data, so I can't tell you today's prices.",
]
ZH_REFUSALS = [
    "作为一个AI语言模型，我无法提供实时信息。",
    "作为一个人工智能，我没有个人观点，但可以提供一些参考。",
    "抱歉，我无法回答这个问题。",
    "对不起，我不能提供这方面的帮助。",
    "我只是一个语言模型，无法访问互联网。",
]
NAMES = ["alice.smith", "bob_jones", "chen.wei", "li.na88", "maria.garcia", "j.doe", "wang_fang", "tom.baker"]
DOMAINS = ["gmail.com", "outlook.com", "qq.com", "163.com", "yahoo.co.uk", "acme-corp.org"]
PLACEHOLDER_OUTPUTS = ["", "N/A", "<No Output>", "none", "无", "   ", "-", "null"]
PLACEHOLDER_INPUTS = ["<noinput>", "<No Input>", "N/A", "none", "无", "<empty>", "noinput"]
SYMBOL_CHARS = "!@#$%^&*()_+-=[]{}|;':\",./<>?~`★■◆●…"

# Shares of records that get one dropping (or rejecting) defect; they exclude each other.
DROP_DEFECTS: dict[str, float] = {
    "empty_output": 0.010,
    "echo": 0.006,
    "refusal": 0.010,
    "loop_lines": 0.006,
    "loop_phrase": 0.004,
    "missing_context": 0.004,
    "merged": 0.003,
    "truncated": 0.004,
    "symbols": 0.002,
    "broken_json": 0.001,
    "wrong_type": 0.001,
    "missing_instruction": 0.0005,
}
# Shares of records that get a cosmetic defect (fixed by normalisation or redaction); independent, they stack.
TEXT_DEFECTS: dict[str, float] = {
    "pii": 0.02,
    "noinput": 0.02,
    "zero_width": 0.02,
    "crlf": 0.02,
    "fullwidth": 0.01,
    "spaces": 0.02,
    "control": 0.005,
}
BLANK_LINE_RATE = 0.0005
KIND_WEIGHTS = {"prose": 0.40, "code": 0.35, "zh": 0.25}


Rec = dict[str, Any]


@dataclass
class Sources:
    """Real records the generator recombines: code tasks (instruction/input/output) and Chinese Q&A by file."""

    code: list[Rec]
    zh_terms: list[Rec]
    zh_poetry: list[Rec]
    zh_arith: list[Rec]


def _read_array(path: Path, answer: str = "output") -> list[Rec]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [{"instruction": r["instruction"], "input": r.get("input") or "", "output": r[answer]} for r in rows]


def load_sources(data_dir: Path) -> Sources:
    """The MIT-licensed files in ../shared/data; without them, the valid records of data/demo/raw.jsonl."""
    if (data_dir / "en_codegen_instruct.json").is_file():
        return Sources(
            code=_read_array(data_dir / "en_codegen_instruct.json", answer="response"),
            zh_terms=_read_array(data_dir / "zh_term_explanations.json"),
            zh_poetry=_read_array(data_dir / "zh_poetry_culture.json"),
            zh_arith=_read_array(data_dir / "zh_integer_arithmetic.json"),
        )
    print(f"note: {data_dir} not found; recombining the records of {DEMO_DATA} instead", file=sys.stderr)
    code: list[Rec] = []
    zh: list[Rec] = []
    for line in DEMO_DATA.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and all(isinstance(rec.get(k), str) for k in ("instruction", "input", "output")):
            (zh if re.search(r"[\u4e00-\u9fff]", rec["instruction"]) else code).append(rec)
    long_zh = [r for r in zh if len(r["output"]) > 100] or zh
    short_zh = [r for r in zh if len(r["output"]) <= 100] or zh
    return Sources(code=code, zh_terms=long_zh, zh_poetry=short_zh, zh_arith=short_zh)


def _fill(template: str, rng: Random, topic: str) -> str:
    return template.format(
        T=topic[0].upper() + topic[1:],
        t=topic,
        t2=rng.choice(TOPICS),
        adj=rng.choice(ADJECTIVES),
        effect=rng.choice(EFFECTS),
        audience=rng.choice(AUDIENCES),
        advice=rng.choice(ADVICE),
        mistake=rng.choice(MISTAKES),
        analogy=rng.choice(ANALOGIES),
        n=rng.randint(2, 40),
    )


def prose_answer(rng: Random, topic: str) -> str:
    """Two to four paragraphs, or an intro, a numbered list and a conclusion (about 500-1300 characters)."""
    templates = rng.sample(SENTENCES, k=len(SENTENCES))
    if rng.random() < 0.35:
        items = [
            f"{i}. **{a[0].upper()}{a[1:]}.** {_fill(templates[i], rng, topic)}"
            for i, a in enumerate(rng.sample(ADVICE, k=rng.randint(3, 6)), 1)
        ]
        return "\n\n".join([_fill(templates[0], rng, topic), "\n".join(items), _fill(templates[-1], rng, topic)])
    paragraphs, pos = [], 0
    for _ in range(rng.randint(2, 4)):
        k = rng.randint(2, 4)
        paragraphs.append(" ".join(_fill(s, rng, topic) for s in templates[pos : pos + k]))
        pos += k
    return "\n\n".join(paragraphs)


def make_prose(rng: Random) -> Rec:
    topic = rng.choice(TOPICS)
    if rng.random() < 0.2:  # a task about a given text
        passage = " ".join(_fill(s, rng, topic) for s in rng.sample(SENTENCES, k=rng.randint(3, 6)))
        instruction = rng.choice(
            [
                "Summarize the following text in two sentences.",
                "Rewrite this paragraph for a younger audience.",
                "Identify the main claim of the passage and explain it.",
            ]
        )
        output = " ".join(_fill(s, rng, topic) for s in rng.sample(SENTENCES, k=rng.randint(2, 4)))
        return {"instruction": instruction, "input": passage, "output": output}
    instruction = _fill(rng.choice(PROSE_INSTRUCTIONS), rng, topic) + rng.choice(INSTRUCTION_SUFFIXES)
    return {"instruction": instruction, "input": "", "output": prose_answer(rng, topic)}


def _language(instruction: str) -> tuple[str, str]:
    low = instruction.lower()
    for key, tag, name in LANGUAGES:
        if key in low:
            return tag, name
    return "", "the requested language"


def make_code(rng: Random, src: Sources) -> Rec:
    base = rng.choice(src.code)
    rec = {"instruction": base["instruction"] + rng.choice(INSTRUCTION_SUFFIXES), "input": base["input"]}
    code = base["output"]
    if rng.random() < 0.45 or "```" in code:  # as in the source: bare code
        rec["output"] = code
        return rec
    tag, lang = _language(base["instruction"])
    notes = " ".join(rng.sample(CODE_NOTES, k=rng.randint(2, 5)))
    intro = rng.choice(CODE_INTROS).format(lang=lang)
    rec["output"] = f"{intro}\n\n```{tag}\n{code}\n```\n\n{notes}"
    return rec


def make_zh(rng: Random, src: Sources) -> Rec:
    u = rng.random()
    pool = src.zh_terms if u < 0.7 else src.zh_poetry if u < 0.85 else src.zh_arith
    rec = dict(rng.choice(pool))
    if pool is src.zh_terms and rng.random() < 0.3:  # recombine: a follow-up explanation from another term
        other = rng.choice(src.zh_terms)
        rec["output"] = rec["output"] + "\n\n另外，" + other["output"]
    return rec


def _is_zh(rec: Rec) -> bool:
    return bool(re.search(r"[\u4e00-\u9fff]", rec["instruction"]))


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "I hope this helps.")


def _email(rng: Random) -> str:
    return f"{rng.choice(NAMES)}{rng.randint(1, 99) if rng.random() < 0.4 else ''}@{rng.choice(DOMAINS)}"


def _pii_sentence(rng: Random, zh: bool) -> str:
    mobile = f"1{rng.choice('3589')}{rng.randint(0, 9)}{rng.randint(10_000_000, 99_999_999)}"
    us_phone = f"({rng.randint(201, 989)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}"
    if zh:
        return f"如有疑问，请联系张老师，电话{mobile}，邮箱{_email(rng)}。"
    return rng.choice(
        [
            f"For details, email {_email(rng)} or call {us_phone}.",
            f"You can reach our support team at {_email(rng)} or on {mobile}.",
            f"The old server ran at 93.184.{rng.randint(1, 254)}.{rng.randint(1, 254)}; contact {_email(rng)}.",
            "Send questions to help@example.com (a reserved example address).",
        ]
    )


def _insert(text: str, rng: Random, piece: str, times: int) -> str:
    for _ in range(times):
        pos = rng.randint(0, len(text))
        text = text[:pos] + piece + text[pos:]
    return text


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" and c.isalnum() else c for c in text)


def plant_drop_defect(rec: Rec, kind: str, rng: Random) -> Rec:
    """A defect the default profile should drop the record for."""
    zh = _is_zh(rec)
    out = rec["output"]
    if kind == "empty_output":
        rec["output"] = rng.choice(PLACEHOLDER_OUTPUTS)
    elif kind == "echo":
        rec["output"] = rec["input"] if rec["input"] else rec["instruction"].lower().rstrip(".?!。？") + " "
    elif kind == "refusal":
        rec["output"] = rng.choice(ZH_REFUSALS if zh else EN_REFUSALS) + ("" if rng.random() < 0.5 else " " + out)
    elif kind == "loop_lines":
        line = _first_line(out)[:120]
        rec["output"] = "\n".join([line] * rng.randint(6, 30))
    elif kind == "loop_phrase":
        words = "我 觉得 这个 问题 很 重要" if zh else "and then the model says the same thing"
        rec["output"] = (words + " ") * rng.randint(12, 40)
    elif kind == "missing_context":
        rec.update(
            rng.choice(
                [
                    {"instruction": "Summarize the following article in three sentences.", "input": ""},
                    {"instruction": "请总结以下文章的主要内容。", "input": ""},
                    {"instruction": "Describe what you see.", "input": "<Picture Attached>"},
                    {
                        "instruction": "What is this page about?",
                        "input": f"https://news.example.org/{rng.randint(1, 9999)}",
                    },
                ]
            )
        )
    elif kind == "merged":
        rec["output"] = out + rng.choice(
            ["\n\n### Instruction:\nWrite a poem about the sea.", "\n\n##\n18. Instruction: Name three rivers."]
        )
    elif kind == "truncated":
        cut = out[: max(1, len(out) // 2)]
        if rng.random() < 0.5:  # an odd number of ``` fences
            rec["output"] = cut if cut.count("```") % 2 else f"```python\n{cut}"
        else:
            rec["output"] = cut.rstrip(" ,.。，") + ","
    elif kind == "symbols":
        rec["output"] = "".join(rng.choice(SYMBOL_CHARS) for _ in range(rng.randint(40, 200)))
    elif kind == "wrong_type":
        rec["output"] = rng.choice([rng.randint(0, 10_000), 3.14, True])
    elif kind == "missing_instruction":
        del rec["instruction"]
    return rec


def plant_text_defect(rec: Rec, kind: str, rng: Random) -> Rec:
    """A cosmetic defect that normalisation or redaction should repair (the record stays)."""
    if not isinstance(rec.get("output"), str) or "instruction" not in rec:
        return rec
    if kind == "pii":
        rec["output"] = rec["output"] + ("\n\n" if rng.random() < 0.5 else " ") + _pii_sentence(rng, _is_zh(rec))
    elif kind == "noinput":
        rec["input"] = rng.choice(PLACEHOLDER_INPUTS)
    elif kind == "zero_width":
        rec["output"] = _insert(rec["output"], rng, rng.choice(["\u200b", "\ufeff", "\u00ad", "\u2060"]), 3)
        rec["instruction"] = "\u200b" + rec["instruction"]
    elif kind == "crlf":
        rec["output"] = rec["output"].replace("\n", "\r\n")
        rec["instruction"] += "\r\n"
    elif kind == "fullwidth":
        rec["instruction"] = _fullwidth(rec["instruction"])
    elif kind == "spaces":
        rec["output"] = "\n  \n" + rec["output"].replace(". ", ".   ").replace("\n", "  \n") + "  \t"
    elif kind == "control":
        rec["output"] = _insert(rec["output"], rng, rng.choice(["\x07", "\x1b", "\x00"]), 2)
    return rec


def _pick(rng: Random, weights: dict[str, float]) -> str | None:
    u = rng.random()
    for name, share in weights.items():
        if u < share:
            return name
        u -= share
    return None


def make_line(rng: Random, src: Sources) -> tuple[str, int]:
    """One JSON Lines line (a realistic record, possibly with defects; a few lines are not valid JSON) and the
    number of characters in its text fields."""
    kind = rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()))[0]
    rec = make_prose(rng) if kind == "prose" else make_code(rng, src) if kind == "code" else make_zh(rng, src)
    defect = _pick(rng, DROP_DEFECTS)
    if defect is not None and defect != "broken_json":
        rec = plant_drop_defect(rec, defect, rng)
    for name, share in TEXT_DEFECTS.items():
        if rng.random() < share:
            rec = plant_text_defect(rec, name, rng)
    line = json.dumps(rec, ensure_ascii=rng.random() < 0.1)
    if defect == "broken_json":
        line = line[: rng.randint(len(line) // 3, len(line) - 2)]
    return line, sum(len(v) for v in rec.values() if isinstance(v, str))


@dataclass
class Dataset:
    path: Path
    records: int
    lines: int
    bytes: int
    avg_chars: float


def generate(path: Path, n: int, seed: int, data_dir: Path) -> Dataset:
    """Write `n` records (plus a few blank lines) to `path`; the same seed gives the same bytes."""
    rng = Random(seed)
    src = load_sources(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    chars = lines = 0
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for _ in range(n):
            if rng.random() < BLANK_LINE_RATE:
                f.write("\n")
                lines += 1
            line, n_chars = make_line(rng, src)
            chars += n_chars
            f.write(line + "\n")
            lines += 1
    return Dataset(path=path, records=n, lines=lines, bytes=path.stat().st_size, avg_chars=chars / max(n, 1))


# =====================================================================================================
# Baseline: the default profile in plain Python (no polars; run in its own process)
# =====================================================================================================

# Copies of wb's patterns and defaults (workbench/text.py, clean/rules.py, clean/profile.py); a plain-Python
# implementation would have its own. `check_baseline_in_sync` compares them with wb's before each run.
CJK_CHARS = (
    "\u2e80-\u2fdf\u3005\u3007\u3021-\u3029\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
)
TOKEN_PATTERN = f"[{CJK_CHARS}]|[^\\W{CJK_CHARS}]+"
CONTROL_PATTERN = r"[\x00-\x08\x0b-\x1f\x7f-\x9f]"
ZERO_WIDTH_PATTERN = "[\u200b\u2060\ufeff\u00ad]"
CODE_HINT_PATTERN = r"```|~~~|\n(?:    |\t)"
CODE_LIKE_PATTERN = (
    r"(?m)^#!|[;{}][ \t]*$|^[ \t]*(?:def|class|import|from|return|if|for|while|echo|fi|done|function|const|let|"
    r"var|public|print|#include|SELECT|puts)(?-u:\b)|\$\(|=>|==|\)[ \t]*$"
)
# Rust-regex syntax in wb's patterns and its Python `re` spelling.
RUST_TO_PYTHON = {"(?-u:\\b)": "(?a:\\b)"}
OUTPUT_PLACEHOLDERS = [
    "", "n/a", "na", "none", "null", "nan", "-", "<no output>", "<nooutput>", "no output", "<noinput>",
    "<no input>", "<empty>", "无", "无输出", "空",
]  # fmt: skip
INPUT_PLACEHOLDERS = [
    "<noinput>", "<no input>", "no input", "noinput", "<none>", "none", "null", "n/a", "na", "nan", "-",
    "<empty>", "empty", "无", "无输入", "空",
]  # fmt: skip
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
ATTACHMENT = (
    r"(?i)^\s*[<\[(]?\s*(?:picture|image|photo|img|video|audio|file|attachment|screenshot|图片|图像|照片|附件)s?"
    r"(?:\s*(?:attached|here|below|附上))?\s*[>\])]?\s*$"
)
URL_ONLY = r"(?i)^\s*(?:https?://|www\.)\S+\s*$"
URL_IS_DATA = (
    r"(?i)\b(?:url|uri|link|api|endpoint|http|https|request|fetch|download|code|function|program|script|regex|"
    r"parse|domain|query string|curl)s?\b|网址|链接|代码|函数|程序|接口"
)
REFERS_EN = (
    r"(?i)\b(?:the|this|these)\s+(?:following|given|below|above|attached|provided)\s+"
    r"(?:news\s+)?(?:article|passage|text|paragraph|story|essay|document|email|e-mail|poem|code|snippet|"
    r"sentence|table|data|dataset|list|image|picture|photo|link|url|chart|graph|video|audio|file|report)s?\b"
)
REFERS_ZH = (
    r"(?:以下|下面|下列|如下|给定|所给|上述|附件)的?"
    r"(?:文章|段落|文本|短文|句子|诗歌?|代码|表格|内容|材料|新闻|邮件|图片|链接|数据)"
)
EMBEDDED = r"[:：]\s*\S|\n\s*\S|[\"“「『][^\"”」』]{10,}"
MERGED = (
    r"(?i)(?:^|\n)[\s#]*\d+\s*[.)]\s*(?:instruction|input|output)\s*[:：]"
    r"|(?:^|\n)\s*#{2,}\s*(?:instruction|input|output|response)\s*[:：]"
)
ECHO_PREFIX = 2048
END_PUNCTUATION = ".,;:!?'\"()[]{}<>-_*#`~…。，；：！？、（）【】《》「」『』“”‘’"
DANGLING_END = r"[,:，、：(\[{（【《\\]\s*$"
DANGLING_END_CHARS = frozenset(",:，、：([{（【《\\")  # the class above: the last non-space character

# Thresholds of pipelines/clean-default.yaml (checked against the loaded profile before each run).
THRESHOLDS: dict[str, dict[str, Any]] = {
    "length_chars": {"min_output": 1, "max_output": None, "max_total": 200_000},
    "length_tokens": {"min_output": 1, "max_output": None, "max_total": 16_384},
    "repeated_lines": {"max_fraction": 0.5, "min_lines": 4},
    "repeated_ngrams": {"n": 4, "max_fraction": 0.6, "min_tokens": 40},
    "symbol_ratio": {"max_ratio": 0.75, "min_chars": 20},
    "truncated_output": {"prose_min_tokens": None},
}
RULE_ORDER = [
    "empty_instruction", "empty_output", "output_echoes_prompt", "missing_context", "merged_instructions",
    "refusal", "truncated_output", "length_chars", "length_tokens", "repeated_lines", "repeated_ngrams",
    "symbol_ratio",
]  # fmt: skip
TEXT_FIELDS = ("instruction", "input", "output", "system")


def python_re(pattern: str) -> str:
    for rust, python in RUST_TO_PYTHON.items():
        pattern = pattern.replace(rust, python)
    return pattern


def load_pii_module() -> ModuleType:
    """workbench/clean/pii.py on its own: importing `workbench.clean` would import polars."""
    spec = importlib.util.spec_from_file_location("wb_pii_standalone", ROOT / "workbench" / "clean" / "pii.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@functools.cache
def is_non_text(ch: str) -> bool:
    """`[^\\p{L}\\p{M}\\p{N}\\s]` for a non-space character, without the `regex` module."""
    return unicodedata.category(ch)[0] not in "LMN"


@dataclass
class Record:
    instruction: str
    input: str
    output: str
    system: str
    history: list[list[str]]

    def history_text(self) -> str:
        return "\n".join("\n".join(pair) for pair in self.history)

    def to_json(self) -> dict[str, Any]:
        return {
            "instruction": self.instruction,
            "input": self.input,
            "output": self.output,
            "system": self.system,
            "history": self.history,
        }


class RejectError(ValueError):
    def __init__(self, kind: str, field: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.field = kind, field


def to_record(obj: Any) -> Record:
    """The canonical record, or RejectError (as wb: not an object, missing field, wrong type)."""
    if not isinstance(obj, dict):
        raise RejectError("not_an_object", "", f"expected a JSON object, found {type(obj).__name__}")
    values: dict[str, str] = {}
    for name in TEXT_FIELDS:
        value = obj.get(name)
        if value is None and name in ("input", "system"):
            value = ""
        if value is None:
            raise RejectError("missing_field", name, f"{name}: Field required")
        if not isinstance(value, str):
            raise RejectError("wrong_type", name, f"{name}: Input should be a valid string")
        values[name] = value
    history = obj.get("history") or []
    if not isinstance(history, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(t, str) for t in p) for p in history
    ):
        raise RejectError("wrong_type", "history", "history: expected a list of [user, assistant] pairs")
    return Record(history=[list(p) for p in history], **values)


class PlainCleaner:
    """The default profile, one record at a time, with `re`, `unicodedata` and loops."""

    def __init__(self) -> None:
        self.pii = load_pii_module()
        self.kinds = tuple(self.pii.ALL_KINDS)
        self.candidate = re.compile(self.pii.CANDIDATE_PATTERN)
        self.token = re.compile(TOKEN_PATTERN)
        self.crlf = re.compile("\r\n?")
        self.control = re.compile(CONTROL_PATTERN)
        self.zero_width = re.compile(ZERO_WIDTH_PATTERN)
        self.trailing_ws = re.compile(r"[ \t\f\v]+\n")
        self.leading_blank = re.compile(r"^(?:[ \t]*\n)+")
        self.space_runs = re.compile("[ \t\f\v\u00a0\u3000]{2,}")
        self.blank_runs = re.compile(r"\n{3,}")
        self.code_hint = re.compile(CODE_HINT_PATTERN)
        self.code_like = re.compile(python_re(CODE_LIKE_PATTERN))
        self.refusal = re.compile("(?i)" + "|".join(f"(?:{p})" for p in REFUSAL_PATTERNS))
        self.attachment = re.compile(ATTACHMENT)
        self.url_only = re.compile(URL_ONLY)
        self.url_is_data = re.compile(URL_IS_DATA)
        self.refers_en = re.compile(REFERS_EN)
        self.refers_zh = re.compile(REFERS_ZH)
        self.embedded = re.compile(EMBEDDED)
        self.merged = re.compile(MERGED)
        self.output_placeholders = frozenset(OUTPUT_PLACEHOLDERS)
        self.input_placeholders = frozenset(INPUT_PLACEHOLDERS)
        self.rules: list[tuple[str, Callable[[Record, dict[str, int]], str | None]]] = [
            (name, getattr(self, f"rule_{name}")) for name in RULE_ORDER
        ]
        self.counts: Counter[str] = Counter()

    # --- normalisation and PII -----------------------------------------------------------------------

    def normalize(self, text: str) -> str:
        """As `workbench.text.normalize` with the default settings."""
        text = unicodedata.normalize("NFKC", text)
        text = self.crlf.sub("\n", text)
        text = self.control.sub("", text)
        text = self.zero_width.sub("", text)
        text = self.leading_blank.sub("", self.trailing_ws.sub("\n", text)).rstrip()
        if self.code_hint.search(text):
            return text
        return self.blank_runs.sub("\n\n", self.space_runs.sub(" ", text)).strip()

    def normalize_record(self, rec: Record) -> Record:
        new = Record(
            instruction=self.normalize(rec.instruction),
            input=self.normalize(rec.input),
            output=self.normalize(rec.output),
            system=self.normalize(rec.system),
            history=[[self.normalize(t) for t in pair] for pair in rec.history],
        )
        if new != rec:
            self.counts["normalized"] += 1
        if new.input and new.input.lower() in self.input_placeholders:
            self.counts["placeholder_input"] += 1
            new.input = ""
        return new

    def redact(self, rec: Record) -> Record:
        texts = [rec.instruction, rec.input, rec.output, rec.system, rec.history_text()]
        if not any(self.candidate.search(t) for t in texts):
            return rec
        found: list[str] = []

        def red(text: str) -> str:
            new, kinds = self.pii.redact(text, self.kinds)
            found.extend(kinds)
            return str(new)

        new = Record(
            instruction=red(rec.instruction),
            input=red(rec.input),
            output=red(rec.output),
            system=red(rec.system),
            history=[[red(t) for t in pair] for pair in rec.history],
        )
        if found:
            self.counts["pii_redacted"] += 1
            self.counts.update(f"found_{k}" for k in set(found))
        return new

    # --- rules (the same order, parameters and first-match-drops as the default profile) --------------

    def features(self, rec: Record) -> dict[str, int]:
        texts = [rec.instruction, rec.input, rec.output, rec.system, rec.history_text()]
        tokens = [len(self.token.findall(t)) for t in texts]
        return {
            "output_chars": len(rec.output),
            "total_chars": sum(len(t) for t in texts),
            "output_tokens": tokens[2],
            "total_tokens": sum(tokens),
        }

    def looks_like_code(self, text: str) -> bool:
        return bool(self.code_hint.search(text) or self.code_like.search(text))

    def compare_key(self, text: str) -> str:
        return "".join(text.lower().split()).strip(END_PUNCTUATION)

    def rule_empty_instruction(self, r: Record, f: dict[str, int]) -> str | None:
        empty = not r.instruction.strip() and not r.input.strip()
        return "instruction and input are both empty" if empty else None

    def rule_empty_output(self, r: Record, f: dict[str, int]) -> str | None:
        key = r.output.strip().lower()
        if key not in self.output_placeholders:
            return None
        return "output is empty" if not key else f"output is the placeholder '{r.output[:60]}'"

    def _same(self, out: str, other: str) -> bool:
        stripped, other_stripped = out.strip(), other.strip()
        if not stripped:
            return False
        if stripped == other_stripped:
            return True
        # Loose comparison for prose of about the same length; keys cover the first ECHO_PREFIX characters.
        if abs(len(stripped) - len(other_stripped)) > len(stripped) // 10 + 2:
            return False
        if self.looks_like_code(out) or self.looks_like_code(other):
            return False
        key = self.compare_key(out[:ECHO_PREFIX])
        return key != "" and key == self.compare_key(other[:ECHO_PREFIX])

    def rule_output_echoes_prompt(self, r: Record, f: dict[str, int]) -> str | None:
        if self._same(r.output, r.instruction):
            return "output repeats the instruction"
        if self._same(r.output, r.input):
            return "output repeats the input"
        return None

    def rule_missing_context(self, r: Record, f: dict[str, int]) -> str | None:
        if self.url_only.search(r.input) and not self.url_is_data.search(r.instruction):
            return "input is only a link; the content is not in the record"
        if self.attachment.search(r.input) or self.attachment.search(r.instruction):
            return "prompt points to an attachment that the record does not contain"
        refers = self.refers_en.search(r.instruction) or self.refers_zh.search(r.instruction)
        if refers and not r.input.strip() and not self.embedded.search(r.instruction):
            return f"instruction refers to '{refers.group(0)}' but the record holds no such content"
        return None

    def rule_merged_instructions(self, r: Record, f: dict[str, int]) -> str | None:
        for name, text in (("instruction", r.instruction), ("input", r.input), ("output", r.output)):
            m = self.merged.search(text)
            if m:
                return f"{name} holds another instruction's marker '{m.group(0).strip()}'"
        return None

    def rule_refusal(self, r: Record, f: dict[str, int]) -> str | None:
        m = self.refusal.search(r.output)
        return f"output contains refusal boilerplate: '{m.group(0)}'" if m else None

    def rule_truncated_output(self, r: Record, f: dict[str, int]) -> str | None:
        if r.output.count("```") % 2 == 1:
            return "output ends inside an unclosed ``` code block"
        last = r.output.rstrip()[-1:]
        if last and last in DANGLING_END_CHARS:
            return f"output ends on '{last}', mid-sentence"
        return None  # prose_min_tokens is null in the default profile

    def _bounds(self, value: int, what: str, lo: int | None, hi: int | None) -> str | None:
        if lo is not None and value < lo:
            return f"{what} is {value}, below the minimum {lo}"
        if hi is not None and value > hi:
            return f"{what} is {value}, above the maximum {hi}"
        return None

    def _length(self, f: dict[str, int], unit: str, params: dict[str, Any]) -> str | None:
        return self._bounds(
            f[f"output_{unit}"], f"output length in {unit}", params["min_output"], params["max_output"]
        ) or self._bounds(f[f"total_{unit}"], f"record length in {unit}", None, params["max_total"])

    def rule_length_chars(self, r: Record, f: dict[str, int]) -> str | None:
        return self._length(f, "chars", THRESHOLDS["length_chars"])

    def rule_length_tokens(self, r: Record, f: dict[str, int]) -> str | None:
        return self._length(f, "tokens", THRESHOLDS["length_tokens"])

    def rule_repeated_lines(self, r: Record, f: dict[str, int]) -> str | None:
        p = THRESHOLDS["repeated_lines"]
        lines = [s for s in (ln.strip() for ln in r.output.split("\n")) if any(c.isalnum() for c in s)]
        n = len(lines)
        dup = n - len(set(lines))
        if n >= p["min_lines"] and dup / n > p["max_fraction"]:
            return f"{dup} of {n} lines repeat an earlier line"
        return None

    def rule_repeated_ngrams(self, r: Record, f: dict[str, int]) -> str | None:
        p = THRESHOLDS["repeated_ngrams"]
        if f["output_tokens"] < p["min_tokens"]:
            return None
        toks = self.token.findall(r.output)
        total = max(0, len(toks) - p["n"] + 1)
        if total == 0:
            return None
        frac = (total - len(set(zip(*(toks[k:] for k in range(p["n"])), strict=False)))) / total
        return f"{round(frac * 100)}% of {p['n']}-grams in the output repeat" if frac > p["max_fraction"] else None

    def rule_symbol_ratio(self, r: Record, f: dict[str, int]) -> str | None:
        p = THRESHOLDS["symbol_ratio"]
        nonspace = symbols = 0
        for ch, n in Counter(r.output).items():  # per distinct character
            if not ch.isspace():
                nonspace += n
                if is_non_text(ch):
                    symbols += n
        ratio = symbols / nonspace if nonspace else 0.0
        if nonspace >= p["min_chars"] and ratio > p["max_ratio"]:
            return f"{round(ratio * 100)}% of the output's characters are symbols or punctuation"
        return None

    def first_rule(self, rec: Record) -> tuple[str, str] | None:
        feats = self.features(rec)
        for name, check in self.rules:
            reason = check(rec, feats)
            if reason is not None:
                return name, reason
        return None

    # --- the file loop -------------------------------------------------------------------------------

    def run(self, src: Path, dst: Path) -> dict[str, Any]:
        dst.parent.mkdir(parents=True, exist_ok=True)
        stem = dst.name.removesuffix(".jsonl")
        stats: Counter[str] = Counter()
        dropped_by_rule: Counter[str] = Counter({name: 0 for name in RULE_ORDER})
        rejected_by_kind: Counter[str] = Counter()
        with (
            src.open("rb") as fin,
            dst.open("w", encoding="utf-8") as kept,
            dst.with_name(f"{stem}.dropped.jsonl").open("w", encoding="utf-8") as dropped,
            dst.with_name(f"{stem}.rejects.jsonl").open("w", encoding="utf-8") as rejects,
        ):
            for line_no, raw in enumerate(fin, 1):
                line = raw.removeprefix(b"\xef\xbb\xbf") if line_no == 1 else raw
                if not line.strip():
                    stats["blank_lines"] += 1
                    continue
                stats["read"] += 1
                try:
                    rec = to_record(json.loads(line))
                except RejectError as err:
                    rejected_by_kind[err.kind] += 1
                    rejects.write(_reject_line(line_no, err.kind, err.field, str(err), line))
                    continue
                except ValueError as err:  # JSONDecodeError, or bytes that are not UTF-8
                    rejected_by_kind["bad_json"] += 1
                    rejects.write(_reject_line(line_no, "bad_json", "", f"bad JSON: {err}", line))
                    continue
                rec = self.redact(self.normalize_record(rec))
                hit = self.first_rule(rec)
                if hit is None:
                    stats["kept"] += 1
                    kept.write(json.dumps(rec.to_json(), ensure_ascii=False) + "\n")
                else:
                    dropped_by_rule[hit[0]] += 1
                    row = {"line": line_no, "rule": hit[0], "reason": hit[1], "record": rec.to_json()}
                    dropped.write(json.dumps(row, ensure_ascii=False) + "\n")
        return {
            "read": stats["read"],
            "kept": stats["kept"],
            "dropped": sum(dropped_by_rule.values()),
            "rejected": sum(rejected_by_kind.values()),
            "blank_lines": stats["blank_lines"],
            "dropped_by_rule": dict(dropped_by_rule),
            "rejected_by_kind": dict(sorted(rejected_by_kind.items())),
            "modified": {k: self.counts[k] for k in ("normalized", "placeholder_input", "pii_redacted")},
        }


def _reject_line(line_no: int, kind: str, field: str, error: str, raw: bytes) -> str:
    row = {"line": line_no, "unit": "line", "field": field, "kind": kind, "error": error}
    row["raw"] = raw.rstrip(b"\r\n").decode("utf-8", errors="replace")
    return json.dumps(row, ensure_ascii=False) + "\n"


def check_baseline_in_sync() -> list[str]:
    """Where the baseline's copied patterns or thresholds differ from wb's (empty when in sync)."""
    sys.path.insert(0, str(ROOT))
    from workbench import text
    from workbench.clean import pii, rules
    from workbench.clean.profile import DEFAULT_PLACEHOLDER_INPUTS, load

    pairs = {
        "TOKEN_PATTERN": (TOKEN_PATTERN, text.TOKEN_PATTERN),
        "CONTROL_PATTERN": (CONTROL_PATTERN, text.CONTROL_PATTERN),
        "ZERO_WIDTH_PATTERN": (ZERO_WIDTH_PATTERN, text.ZERO_WIDTH_PATTERN),
        "CODE_HINT_PATTERN": (CODE_HINT_PATTERN, text.CODE_HINT_PATTERN),
        "CODE_LIKE_PATTERN": (CODE_LIKE_PATTERN, text.CODE_LIKE_PATTERN),
        "DEFAULT_PLACEHOLDERS": (OUTPUT_PLACEHOLDERS, rules.DEFAULT_PLACEHOLDERS),
        "DEFAULT_PLACEHOLDER_INPUTS": (INPUT_PLACEHOLDERS, DEFAULT_PLACEHOLDER_INPUTS),
        "REFUSAL_PATTERNS": (REFUSAL_PATTERNS, rules.REFUSAL_PATTERNS),
        "_ATTACHMENT": (ATTACHMENT, rules._ATTACHMENT),
        "_URL_ONLY": (URL_ONLY, rules._URL_ONLY),
        "_URL_IS_DATA": (URL_IS_DATA, rules._URL_IS_DATA),
        "_REFERS_EN": (REFERS_EN, rules._REFERS_EN),
        "_REFERS_ZH": (REFERS_ZH, rules._REFERS_ZH),
        "_EMBEDDED": (EMBEDDED, rules._EMBEDDED),
        "_MERGED": (MERGED, rules._MERGED),
        "_DANGLING_END": (DANGLING_END, rules._DANGLING_END),
        "ECHO_PREFIX": (ECHO_PREFIX, rules.ECHO_PREFIX),
        "END_PUNCTUATION": (END_PUNCTUATION, rules.END_PUNCTUATION),
    }
    drift = [name for name, (ours, theirs) in pairs.items() if ours != theirs]
    profile = load("default").as_dict()
    if [r["rule"] for r in profile["rules"]] != RULE_ORDER:
        drift.append("rule order")
    for r in profile["rules"]:
        expected = THRESHOLDS.get(r["rule"])
        params = {k: v for k, v in r.items() if k != "rule"}
        if expected is not None and params != expected:
            drift.append(f"{r['rule']} parameters {params}")
    if profile["normalize"] != {
        "unicode": "NFKC",
        "strip_control": True,
        "strip_zero_width": True,
        "whitespace": True,
        "placeholder_inputs": INPUT_PLACEHOLDERS,
    }:
        drift.append("normalize settings")
    if profile["pii"] != {"action": "redact", "kinds": list(pii.ALL_KINDS)}:
        drift.append("pii settings")
    return drift


# =====================================================================================================
# Workers: what runs inside each measured child process
# =====================================================================================================


def like_for_like(profile: Any) -> tuple[Any, list[str]]:
    """The profile with the stages the baseline does not implement switched off (dedup), and their names."""
    dedup = getattr(profile, "dedup", None)
    stages = [name for name in type(dedup).model_fields if getattr(dedup, name) is not None] if dedup else []
    if not stages:
        return profile, []
    return profile.model_copy(update={"dedup": type(dedup)()}), [f"dedup.{name}" for name in stages]


def load_wb_profile(full_profile: bool) -> tuple[Any, list[str]]:
    sys.path.insert(0, str(ROOT))
    import workbench.clean.dispatch
    import workbench.clean.profile

    profile = workbench.clean.profile.load("default")
    return (profile, []) if full_profile else like_for_like(profile)


def worker_wb(src: Path, dst: Path, full_profile: bool) -> dict[str, Any]:
    started = time.perf_counter()
    profile, switched_off = load_wb_profile(full_profile)
    import workbench.clean.dispatch
    import workbench.clean.profile

    imported = time.perf_counter()
    result = workbench.clean.dispatch.run(src, dst, profile)
    seconds = time.perf_counter() - imported
    s = result.summary
    return {
        "seconds": seconds,
        "import_seconds": imported - started,
        **{k: s[k] for k in ("read", "kept", "dropped", "rejected", "blank_lines", "dropped_by_rule")},
        "rejected_by_kind": s["rejected_by_kind"],
        "modified": s["modified"],
        "switched_off": switched_off,
    }


def worker_baseline(src: Path, dst: Path, full_profile: bool) -> dict[str, Any]:
    started = time.perf_counter()
    cleaner = PlainCleaner()
    imported = time.perf_counter()
    summary = cleaner.run(src, dst)
    seconds = time.perf_counter() - imported
    if "polars" in sys.modules:
        raise AssertionError("the baseline imported polars")
    return {"seconds": seconds, "import_seconds": imported - started, **summary}


NO_RULE = "(features and bookkeeping, no rule)"


class Laps:
    """Seconds spent per named step, summed over batches."""

    def __init__(self) -> None:
        self.totals: Counter[str] = Counter()
        self.t = time.perf_counter()

    def start(self) -> None:
        self.t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.totals[name] += now - self.t
        self.t = now


def worker_wb_steps(src: Path, dst: Path, full_profile: bool) -> dict[str, Any]:
    """`workbench.clean.dispatch.run`'s loop with a timer on each step; then, per batch, `apply_rules` with a profile of
    one rule at a time (less the time it takes with no rule: features and bookkeeping)."""
    sys.path.insert(0, str(ROOT))
    import polars as pl

    from workbench.clean.pipeline import apply_rules, normalize_frame, pii_frame
    from workbench.frames import rows_to_frame
    from workbench.io.reader import RecordReader
    from workbench.records import FIELDS

    profile, _ = load_wb_profile(full_profile=False)  # the cleaning steps; dedup stages are not timed here

    def only(names: list[str]) -> Any:
        return profile.model_copy(update={"rule_order": names})

    steps, per_rule = Laps(), Laps()
    batches = iter(RecordReader(src, batch_size=50_000))
    dst.parent.mkdir(parents=True, exist_ok=True)
    with dst.open("wb") as sink:
        while True:
            steps.start()
            batch = next(batches, None)
            steps.lap("read + parse (RecordReader)")
            if batch is None:
                break
            df = rows_to_frame(batch.lines, batch.rows)
            steps.lap("rows_to_frame")
            df = normalize_frame(df, profile.normalize)[0]
            steps.lap("normalize_frame")
            df = before_rules = pii_frame(df, profile.pii)[0]
            steps.lap("pii_frame")
            df = apply_rules(df, profile)
            steps.lap("apply_rules")
            df.filter(pl.col("_rule").is_null()).select(FIELDS).write_ndjson(sink)
            steps.lap("write kept")
            per_rule.start()
            apply_rules(before_rules, only([]))
            per_rule.lap(NO_RULE)
            for name in profile.rule_order:
                apply_rules(before_rules, only([name]))
                per_rule.lap(name)
    base = per_rule.totals[NO_RULE]
    rules = {k: max(0.0, v - base) if k != NO_RULE else v for k, v in per_rule.totals.items()}
    return {"steps": dict(steps.totals), "per_rule": rules}


WORKERS: dict[str, Callable[[Path, Path, bool], dict[str, Any]]] = {
    "wb": worker_wb,
    "baseline": worker_baseline,
    "wb-steps": worker_wb_steps,
}


# =====================================================================================================
# Measurement, comparison, report
# =====================================================================================================


class WorkerError(RuntimeError):
    pass


@dataclass
class Measurement:
    implementation: str
    records: int
    seconds: float
    wall_seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    kept: int
    dropped: int
    rejected: int
    dropped_by_rule: dict[str, int]
    rejected_by_kind: dict[str, int]
    modified: dict[str, int]
    self_reported_rss_mb: float = 0.0
    import_seconds: float = 0.0
    switched_off: list[str] = field(default_factory=list)

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def run_child(
    impl: str, src: Path, dst: Path, result: Path, full_profile: bool = False
) -> tuple[dict[str, Any], float, Any]:
    """Run one worker in a fresh interpreter; return its result, wall time and rusage (that child alone)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", impl]
    cmd += ["--input", str(src), "--output", str(dst), "--result", str(result)]
    cmd += ["--full-profile"] if full_profile else []
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise WorkerError(f"{impl} worker failed with exit status {proc.returncode}")
    return json.loads(result.read_text(encoding="utf-8")), wall, usage


def measure(impl: str, src: Path, out_dir: Path, full_profile: bool) -> Measurement:
    dst = out_dir / impl / "clean.jsonl"
    shutil.rmtree(dst.parent, ignore_errors=True)
    res, wall, usage = run_child(impl, src, dst, out_dir / f"{impl}.result.json", full_profile)
    rss_kb = usage.ru_maxrss / 1024 if sys.platform == "darwin" else usage.ru_maxrss
    return Measurement(
        implementation=impl,
        records=res["read"],
        seconds=res["seconds"],
        wall_seconds=wall,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=rss_kb / 1024,
        kept=res["kept"],
        dropped=res["dropped"],
        rejected=res["rejected"],
        dropped_by_rule=res["dropped_by_rule"],
        rejected_by_kind=res["rejected_by_kind"],
        modified=res["modified"],
        self_reported_rss_mb=res.get("peak_rss_mb", 0.0),
        import_seconds=res["import_seconds"],
        switched_off=res.get("switched_off", []),
    )


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def record_lines(path: Path) -> list[int]:
    """Line numbers of the records (non-blank lines), as both implementations count them."""
    with path.open("rb") as f:
        return [i for i, line in enumerate(f, 1) if line.removeprefix(b"\xef\xbb\xbf").strip()]


@dataclass
class Decisions:
    """Per source line: `kept`, `rejected:<kind>` or the dropping rule; and the kept records in line order."""

    by_line: dict[int, str]
    kept_path: Path

    @classmethod
    def read(cls, out: Path, lines: list[int]) -> Decisions:
        by_line = dict.fromkeys(lines, "kept")
        for row in _jsonl(out.with_name("clean.dropped.jsonl")):
            by_line[row["line"]] = row["rule"]
        for row in _jsonl(out.with_name("clean.rejects.jsonl")):
            by_line[row["line"]] = f"rejected:{row['kind']}"
        return cls(by_line, out)

    def kept_records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        kept_lines = (line for line, d in self.by_line.items() if d == "kept")
        yield from zip(kept_lines, _jsonl(self.kept_path), strict=True)


def compare(src: Path, out_dir: Path, examples: int = 3) -> dict[str, Any]:
    """How often wb and the baseline decide alike, and whether the records both keep are identical."""
    lines = record_lines(src)
    wb = Decisions.read(out_dir / "wb" / "clean.jsonl", lines)
    base = Decisions.read(out_dir / "baseline" / "clean.jsonl", lines)
    same_keep = sum((wb.by_line[n] == "kept") == (base.by_line[n] == "kept") for n in lines)
    same_exact = sum(wb.by_line[n] == base.by_line[n] for n in lines)
    pairs = Counter((wb.by_line[n], base.by_line[n]) for n in lines if wb.by_line[n] != base.by_line[n])
    where: dict[tuple[str, str], list[int]] = {}
    for n in lines:
        key = (wb.by_line[n], base.by_line[n])
        if key[0] != key[1] and len(where.setdefault(key, [])) < examples:
            where[key].append(n)
    both_kept = same_text = 0
    text_diff_lines: list[int] = []
    base_kept = base.kept_records()
    other = next(base_kept, None)
    for line, rec in wb.kept_records():  # both in line order: walk them side by side
        while other is not None and other[0] < line:
            other = next(base_kept, None)
        if other is None or other[0] != line:
            continue
        both_kept += 1
        if rec == other[1]:
            same_text += 1
        elif len(text_diff_lines) < examples:
            text_diff_lines.append(line)
    total = max(len(lines), 1)
    return {
        "records": len(lines),
        "keep_drop_agreement": same_keep / total,
        "decision_agreement": same_exact / total,
        "both_kept": both_kept,
        "identical_kept_records": same_text / max(both_kept, 1),
        "kept_text_differs_lines": text_diff_lines,
        "disagreements": [
            {"wb": a, "baseline": b, "records": n, "lines": where[(a, b)]} for (a, b), n in pairs.most_common(10)
        ],
    }


def print_table(results: list[Measurement], ratio: float) -> None:
    head = ["implementation", "records", "seconds", "records/s", "peak RSS MB", "CPU s", "wall s", "kept"]
    rows = [
        [
            m.implementation,
            f"{m.records:,}",
            f"{m.seconds:.2f}",
            f"{m.records_per_s:,.0f}",
            f"{m.peak_rss_mb:,.0f}",
            f"{m.cpu_seconds:.1f}",
            f"{m.wall_seconds:.1f}",
            f"{m.kept:,}",
        ]
        for m in results
    ]
    print(table(head, rows))
    print(f"\nthroughput ratio wb/baseline: {ratio:.2f}x")


def print_comparison(results: list[Measurement], agreement: dict[str, Any]) -> None:
    wb, base = results
    names = dict.fromkeys([*RULE_ORDER, *wb.dropped_by_rule, *base.dropped_by_rule])
    print("\nrecords per decision (wb / baseline):")
    print(f"  {'kept':<28} {wb.kept:>8,} / {base.kept:,}")
    for name in names:
        print(f"  {name:<28} {wb.dropped_by_rule.get(name, 0):>8,} / {base.dropped_by_rule.get(name, 0):,}")
    print(f"  {'rejected':<28} {wb.rejected:>8,} / {base.rejected:,}")
    for key in ("normalized", "placeholder_input", "pii_redacted"):
        print(f"  {'modified: ' + key:<28} {wb.modified.get(key, 0):>8,} / {base.modified.get(key, 0):,}")
    print(
        f"\nagreement: keep/drop {agreement['keep_drop_agreement']:.4%}, "
        f"same rule {agreement['decision_agreement']:.4%}; "
        f"records both kept that are identical: {agreement['identical_kept_records']:.4%}"
        f" of {agreement['both_kept']:,}"
    )
    for d in agreement["disagreements"][:5]:
        print(f"  wb {d['wb']!r} vs baseline {d['baseline']!r}: {d['records']:,} records (lines {d['lines']})")
    if agreement["kept_text_differs_lines"]:
        print(f"  kept by both, texts differ: e.g. lines {agreement['kept_text_differs_lines']}")


def targets(ratio: float, wb: Measurement) -> dict[str, dict[str, Any]]:
    return {
        "throughput_ratio": {"target": f">= {TARGET_SPEEDUP}x", "value": ratio, "met": ratio >= TARGET_SPEEDUP},
        "wb_peak_rss_mb": {
            "target": f"< {TARGET_RSS_MB:.0f}",
            "value": wb.peak_rss_mb,
            "met": wb.peak_rss_mb < TARGET_RSS_MB,
        },
    }


def print_breakdown(steps: dict[str, Any]) -> None:
    total = sum(steps["steps"].values())
    print("\nwb step breakdown (one process, run() loop re-timed step by step):")
    for name, sec in sorted(steps["steps"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:<40} {sec:7.2f} s  {sec / total:6.1%}")
    print("  apply_rules with one rule at a time, on all records (seconds beyond the no-rule run):")
    for name, sec in sorted(steps["per_rule"].items(), key=lambda kv: -kv[1]):
        print(f"    {name:<38} {sec:7.2f} s")


@dataclass
class Options:
    records: int
    seed: int
    keep: bool
    repeat: int
    breakdown: bool
    out_dir: Path
    data_dir: Path
    full_profile: bool


def best_of(runs: list[Measurement]) -> Measurement:
    """Fastest run; peak RSS is the largest seen over all runs."""
    best = min(runs, key=lambda m: m.seconds)
    best.peak_rss_mb = max(m.peak_rss_mb for m in runs)
    return best


def main_bench(opts: Options) -> int:
    drift = check_baseline_in_sync()
    if drift:
        print(f"WARNING: the baseline's copies differ from wb's: {', '.join(drift)}", file=sys.stderr)
    polars_env = {k: v for k, v in os.environ.items() if k.startswith("POLARS_")}
    if polars_env:
        print(f"note: polars settings from the environment apply to both runs: {polars_env}")
    data = opts.out_dir / f"records-{opts.records}-seed{opts.seed}.jsonl"
    started = time.perf_counter()
    ds = generate(data, opts.records, opts.seed, opts.data_dir)
    print(
        f"generated {ds.records:,} records ({ds.bytes / 1e6:.1f} MB, {ds.avg_chars:.0f} text characters a record) "
        f"in {time.perf_counter() - started:.1f} s: {data}"
    )
    runs: dict[str, list[Measurement]] = {impl: [] for impl in IMPLEMENTATIONS}
    for i in range(opts.repeat):
        for impl in IMPLEMENTATIONS if i % 2 == 0 else reversed(IMPLEMENTATIONS):
            m = measure(impl, data, opts.out_dir, opts.full_profile)
            runs[impl].append(m)
            print(f"  {impl}: {m.seconds:.2f} s, {m.records_per_s:,.0f} records/s, peak RSS {m.peak_rss_mb:,.0f} MB")
    results = [best_of(runs[impl]) for impl in IMPLEMENTATIONS]
    wb, base = results
    if wb.switched_off:
        print(
            f"  (wb ran the default profile without {', '.join(wb.switched_off)}, which the baseline does not "
            "implement; --full-profile runs them)"
        )
    ratio = wb.records_per_s / base.records_per_s if base.records_per_s else float("inf")
    agreement = compare(data, opts.out_dir)
    print()
    print_table(results, ratio)
    print_comparison(results, agreement)
    goals = targets(ratio, wb)
    print("\ntargets:")
    for name, t in goals.items():
        print(f"  {name:<18} {t['target']:<9} {t['value']:>10.2f}  {'met' if t['met'] else 'NOT met'}")
    report: dict[str, Any] = {
        "records": opts.records,
        "seed": opts.seed,
        "repeat": opts.repeat,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            **versions(("polars", "orjson")),
            "env": {k: v for k, v in os.environ.items() if k.startswith("POLARS_")},
        },
        "wb_source": git_state(),
        "input": {"path": str(data), "bytes": ds.bytes, "lines": ds.lines, "avg_text_chars": ds.avg_chars},
        "results": [{**asdict(m), "records_per_s": m.records_per_s} for m in results],
        "all_runs": {impl: [asdict(m) for m in ms] for impl, ms in runs.items()},
        "throughput_ratio": ratio,
        "targets": goals,
        "agreement": agreement,
        "baseline_drift": drift,
        "wb_profile": {"name": "default", "full_profile": opts.full_profile, "switched_off": wb.switched_off},
    }
    if opts.breakdown:
        steps_out = opts.out_dir / "wb-steps" / "clean.jsonl"
        try:
            steps, _, _ = run_child("wb-steps", data, steps_out, opts.out_dir / "wb-steps.result.json")
        except WorkerError as err:  # the breakdown reaches into wb's internals, which may have moved
            print(f"\nbreakdown skipped: {err}", file=sys.stderr)
        else:
            print_breakdown(steps)
            report["wb_breakdown"] = steps
    result_path = opts.out_dir / "clean_throughput.json"
    write_report(result_path, report)
    print(f"\nresults: {result_path}")
    if not opts.keep:
        data.unlink(missing_ok=True)
        for name in (*IMPLEMENTATIONS, "wb-steps"):
            shutil.rmtree(opts.out_dir / name, ignore_errors=True)
        for name in ("wb.result.json", "baseline.result.json", "wb-steps.result.json"):
            (opts.out_dir / name).unlink(missing_ok=True)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--records", type=int, default=200_000, help="records to generate (default 200000)")
    p.add_argument("--seed", type=int, default=20240611, help="seed of the generator (default 20240611)")
    p.add_argument("--keep", action="store_true", help="keep the generated input and both outputs in --out-dir")
    p.add_argument("--repeat", type=int, default=1, help="runs of each implementation; the fastest is reported")
    p.add_argument("--breakdown", action="store_true", help="also time wb's steps and rules one by one")
    p.add_argument(
        "--full-profile",
        action="store_true",
        help="run wb's default profile as it is, dedup stages included (by default they are switched off:\n"
        "the baseline implements the cleaning steps only)",
    )
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT.relative_to(ROOT)}")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="real records to recombine (../shared/data)")
    p.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.records < 1 or args.repeat < 1:
        p.error("--records and --repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        result = WORKERS[args.worker](args.input, args.output, args.full_profile)
        result["peak_rss_mb"] = self_peak_rss_mb()
        args.result.write_text(json.dumps(result), encoding="utf-8")
        return 0
    opts = Options(
        args.records, args.seed, args.keep, args.repeat, args.breakdown, args.out_dir, args.data_dir, args.full_profile
    )
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return main_bench(opts)
    except WorkerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
