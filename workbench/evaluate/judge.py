"""A local pairwise judge: a model reads the question, the reference (if any) and two answers, and says which is better.

`wb eval RUN --judge MODEL` (a local model folder, a run, or `embedded`). Every task item that has a base and a
tuned answer is judged twice, once with the tuned answer in position A and once in position B; the verdict counts
for a side only when both orders agree, otherwise it is a tie (judges favour a position; MT-Bench's "swap
positions" rule). The share of items whose verdict changed with the order is `position_flip_rate`: a judge that
always names the first answer flips on every item, and all its verdicts are ties. Judges also favour longer answers,
so the win rate is split by whether the tuned answer is the longer one.

Prompts come from `pipelines/judge-en.yaml` and `pipelines/judge-zh.yaml` (user-editable; `--judge-prompts DIR`
reads the two files from another folder); the language of an item is the dominant script of its question
(`workbench.text.script_of`: CJK -> zh). The placeholders `{question}`, `{reference}`, `{answer_a}`, `{answer_b}`
are replaced as plain text (no str.format: answers hold braces).

A reply is parsed by `parse_verdict`: `[[A]]` / `[[B]]` / `[[tie]]` (`[[C]]` is MT-Bench's tie), "Answer A is
better", "Verdict: B", a bare "A", Chinese "A更好" / "选B" / "平局". A reply that names neither is unparsed: it
counts as a tie for its item and is counted (`unparsed`), never dropped.

Cohen's kappa between the judge and human reviewers is computed by `verdicts.judge_agreement`, over the items both
judged, on the classes tuned / base / tie (a reviewer's `both_bad` is a tie: neither answer is preferred).

Light on purpose: rendering, parsing and statistics import no torch; `judge_pairs` takes a loaded model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from workbench.errors import WbError
from workbench.evaluate import compare
from workbench.runfile.evals import JudgeCall, JudgeSummary, JudgeVerdict
from workbench.text import script_of, tokenize
from workbench.yamlfile import first_error, read_yaml

Letter = Literal["A", "B", "tie"]
Side = Literal["tuned", "base", "tie"]
UNINFORMATIVE_FLIP_RATE = 0.5
"""Above this share of order-dependent verdicts the judge's verdicts say more about positions than answers."""
PLACEHOLDERS = ("{question}", "{reference}", "{answer_a}", "{answer_b}")


class JudgePrompt(BaseModel):
    """One language's judge prompt (`pipelines/judge-<lang>.yaml`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="A name for the prompt (shown in metrics.json).")
    system: str = Field("", description="System message of the judge's chat template (empty: none).")
    prompt: str = Field(
        description="The judge's instruction: {question}, {reference}, {answer_a} and {answer_b} are replaced."
    )
    reference: str = Field(
        "Reference answer:\n{reference}\n",
        description="What {reference} becomes when the item has a reference ({reference} inside it is the "
        "reference text); an item without one puts nothing there.",
    )
    max_new_tokens: int = Field(32, ge=1, le=2048, description="Tokens the judge may write.")

    def render(self, question: str, reference: str, answer_a: str, answer_b: str) -> str:
        ref = self.reference.replace("{reference}", reference) if reference.strip() else ""
        values = {"{question}": question, "{reference}": ref, "{answer_a}": answer_a, "{answer_b}": answer_b}
        pattern = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))
        return pattern.sub(lambda m: values[m.group(0)], self.prompt)


def load_prompt(path: Path) -> JudgePrompt:
    data = read_yaml(path, "judge prompt")
    if not isinstance(data, dict):
        raise WbError(f"{path}: a judge prompt must be a YAML mapping with `prompt`")
    try:
        prompt = JudgePrompt.model_validate(data)
    except ValidationError as err:
        loc, msg = first_error(err)
        raise WbError(f"{path}: field {loc}: {msg}") from None
    for needed in ("{question}", "{answer_a}", "{answer_b}"):
        if needed not in prompt.prompt:
            raise WbError(f"{path}: field prompt: must contain {needed}")
    return prompt


def load_judge_prompts(folder: Path | None = None) -> dict[str, JudgePrompt]:
    """The English and Chinese judge prompts: `judge-en.yaml` and `judge-zh.yaml` of `folder` (default: shipped)."""
    from workbench.evaluate.suite import pipelines_dir

    where = folder if folder is not None else pipelines_dir()
    return {lang: load_prompt(where / f"judge-{lang}.yaml") for lang in ("en", "zh")}


def language(question: str) -> str:
    return "zh" if script_of(question) == "cjk" else "en"


# --- parsing ----------------------------------------------------------------------------------------------------

_NOT_LATIN = r"(?<![A-Za-z])"
_END = r"(?![A-Za-z])"
_BRACKET = re.compile(r"\[\[\s*(A|B|C|(?i:tie)|平局|平手)\s*\]\]")
_PATTERNS: list[tuple[re.Pattern[str], Letter | None]] = [
    # English: "Answer A is better", "B is the better answer", "A wins"
    (
        re.compile(
            _NOT_LATIN + r"([AB])\)?" + _END + r"\s*(?i:is\s+(?:clearly\s+|slightly\s+|much\s+)?(?:the\s+)?"
            r"(?:better|best|superior|preferred|more\s+\w+)|wins|is\s+the\s+winner)"
        ),
        None,
    ),
    # "Verdict: A", "I prefer B", "Better answer: A", "The better answer is B", "Answer: A", "winner is A"
    (
        re.compile(
            r"(?i:verdict|prefer|preferred|choose|choice|pick|select|winner|better(?:\s+answer|\s+response)?"
            r"|final\s+answer|answer\s*[:：]|answer\s+is|decision)\s*[:：]?\s*(?i:is\s+)?"
            r"(?i:answer\s+|response\s+|assistant\s+|option\s+)?[(\[]?([AB])" + _END
        ),
        None,
    ),
    # Chinese: "A更好", "回答B较好", "选A", "答案B胜出"
    (re.compile(_NOT_LATIN + r"([AB])\s*(?:更好|较好|更佳|更优|胜出|胜|好一些|更准确|更合适)"), None),
    (re.compile(r"(?:选择?|选出|判定|结论[:：]?|更好的是(?:回答|答案)?)\s*(?:回答|答案)?\s*([AB])" + _END), None),
    # ties, in either language
    (
        re.compile(
            r"(?i:\btie\b|\bdraw\b|\bequally\s+(?:good|bad|helpful|correct|wrong)|\bboth\s+(?:are\s+)?equally"
            r"|\bneither\s+(?:is|answer)|\bno\s+(?:clear\s+)?winner|\bthe\s+same\s+quality)"
            r"|平局|平手|一样好|同样好|不相上下|难分高下|两者相当|都一样|旗鼓相当"
        ),
        "tie",
    ),
]
_BARE = re.compile(r"^\W*(?:(?i:answer|response|assistant|option)\s+|回答|答案)?([AB])\W*$")


def parse_verdict(text: str) -> Letter | None:
    """A, B or tie from a judge's reply; None when it names none of them."""
    text = text.strip()
    if not text:
        return None
    found = _BRACKET.search(text)
    if found:
        value = found.group(1)
        return "A" if value == "A" else "B" if value == "B" else "tie"
    first_line = text.splitlines()[0]
    bare = _BARE.match(first_line)
    if bare:
        return "A" if bare.group(1) == "A" else "B"
    best: tuple[int, Letter] | None = None
    for pattern, fixed in _PATTERNS:
        m = pattern.search(text)
        if m and (best is None or m.start() < best[0]):
            letter: Letter = fixed if fixed is not None else ("A" if m.group(1) == "A" else "B")
            best = (m.start(), letter)
    return best[1] if best is not None else None


# --- judging ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """One task item as the judge sees it."""

    question: str
    reference: str
    tuned: str
    base: str


def render_pair(prompts: dict[str, JudgePrompt], pair: Pair) -> list[tuple[str, str, str]]:
    """(language, tuned position, prompt text) of the two orders: tuned as A, then tuned as B."""
    lang = language(pair.question)
    p = prompts[lang]
    return [
        (lang, "A", p.render(pair.question, pair.reference, pair.tuned, pair.base)),
        (lang, "B", p.render(pair.question, pair.reference, pair.base, pair.tuned)),
    ]


def _preferred(parsed: Letter | None, tuned_position: str) -> Side | None:
    if parsed is None:
        return None
    if parsed == "tie":
        return "tie"
    return "tuned" if parsed == tuned_position else "base"


def verdict_of(pair: Pair, language_: str, replies: Sequence[tuple[str, str]]) -> JudgeVerdict:
    """The item's verdict from its two replies ((tuned position, raw text) of each order)."""
    calls = []
    for position, raw in replies:
        parsed = parse_verdict(raw)
        calls.append(
            JudgeCall(
                tuned_position=position,
                raw=raw,
                parsed=parsed,
                preferred=_preferred(parsed, position),
            )
        )
    prefs = [c.preferred for c in calls]
    both = all(p is not None for p in prefs)
    agreed = both and len(set(prefs)) == 1
    verdict: Side = prefs[0] if agreed and prefs[0] is not None else "tie"
    return JudgeVerdict(
        verdict=verdict,
        language=language_,
        flipped=both and not agreed,
        unparsed=sum(p is None for p in prefs),
        tuned_longer=len(tokenize(pair.tuned)) > len(tokenize(pair.base)),
        calls=calls,
    )


GenerateFn = Callable[[list[str], JudgePrompt], list[str]]
"""(judge instruction texts, the prompt they were rendered from) -> the judge's replies, in order."""


def judge_pairs(pairs: Sequence[Pair], prompts: dict[str, JudgePrompt], generate: GenerateFn) -> list[JudgeVerdict]:
    """Both orders of every pair judged (one generate call per language, so each prompt keeps its token limit)."""
    rendered = [render_pair(prompts, p) for p in pairs]
    replies: dict[tuple[int, int], str] = {}
    for lang, prompt in prompts.items():
        todo = [(i, k) for i, two in enumerate(rendered) for k, (lg, _, _) in enumerate(two) if lg == lang]
        if todo:
            texts = generate([rendered[i][k][2] for i, k in todo], prompt)
            replies.update(zip(todo, texts, strict=True))
    out = []
    for i, (pair, two) in enumerate(zip(pairs, rendered, strict=True)):
        out.append(verdict_of(pair, two[0][0], [(pos, replies[(i, k)]) for k, (_, pos, _) in enumerate(two)]))
    return out


def model_generate(loaded: Any, settings: Any, cache: Any, progress: Any) -> GenerateFn:
    """A GenerateFn over a loaded judge model: its own template, greedy, the generation cache (`generate.py`)."""
    from workbench.models.generate import generate_answers, prompt_for

    def run(texts: list[str], prompt: JudgePrompt) -> list[str]:
        rendered = [prompt_for(loaded, {"system": prompt.system, "instruction": t}) for t in texts]
        greedy = settings.model_copy(update={"max_new_tokens": prompt.max_new_tokens, "do_sample": False})
        return [a.text for a in generate_answers(loaded, rendered, greedy, cache, progress)]

    return run


# --- the summary ------------------------------------------------------------------------------------------------


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def summarise(verdicts: Sequence[JudgeVerdict], seed: int, settings: dict[str, Any] | None = None) -> JudgeSummary:
    """Win / tie / loss rates, the paired bootstrap interval of win - loss, flips, unparsed replies, length split."""
    n = len(verdicts)
    wins = [int(v.verdict == "tuned") for v in verdicts]
    losses = [int(v.verdict == "base") for v in verdicts]
    delta, lo, hi = compare.paired_bootstrap(wins, losses, seed) if n else (float("nan"),) * 3
    both_parsed = [v for v in verdicts if v.unparsed == 0]
    longer = [v for v in verdicts if v.tuned_longer]
    shorter = [v for v in verdicts if not v.tuned_longer]
    flip = _rate(sum(v.flipped for v in both_parsed), len(both_parsed))
    return JudgeSummary(
        n=n,
        win_rate=_rate(sum(wins), n),
        tie_rate=_rate(n - sum(wins) - sum(losses), n),
        loss_rate=_rate(sum(losses), n),
        win_minus_loss=compare._num(delta),
        win_minus_loss_lower=compare._num(lo),
        win_minus_loss_upper=compare._num(hi),
        wins=sum(wins),
        ties=n - sum(wins) - sum(losses),
        losses=sum(losses),
        position_flip_rate=flip,
        flipped=sum(v.flipped for v in verdicts),
        unparsed=sum(v.unparsed for v in verdicts),
        replies=sum(len(v.calls) for v in verdicts),
        tuned_longer=len(longer),
        win_rate_tuned_longer=_rate(sum(v.verdict == "tuned" for v in longer), len(longer)),
        win_rate_tuned_not_longer=_rate(sum(v.verdict == "tuned" for v in shorter), len(shorter)),
        informative=flip is not None and flip <= UNINFORMATIVE_FLIP_RATE,
        settings=settings or {},
    )


def notes(summary: JudgeSummary) -> list[str]:
    """What a reader must know before trusting the judge's numbers."""
    out = []
    if summary.position_flip_rate is not None and summary.position_flip_rate > UNINFORMATIVE_FLIP_RATE:
        out.append(
            f"judge: {summary.position_flip_rate:.0%} of its verdicts changed when the answers swapped places: "
            "the judge's verdicts depend on answer order: not informative (use a stronger judge model)"
        )
    if summary.unparsed:
        out.append(
            f"judge: {summary.unparsed} of {summary.replies} judge replies named no verdict (counted as ties); "
            "see task rows' judge.calls[].raw in scores.jsonl"
        )
    w_long, w_short = summary.win_rate_tuned_longer, summary.win_rate_tuned_not_longer
    if w_long is not None and w_short is not None and w_long - w_short > 0.3:
        out.append(
            f"judge: the tuned answer wins {w_long:.0%} of items where it is longer and {w_short:.0%} where it is "
            "not: the judge may be rewarding length"
        )
    return out
