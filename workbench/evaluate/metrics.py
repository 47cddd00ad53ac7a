"""Text-overlap metrics for `wb eval`: ROUGE-1/2/L, BLEU, chrF, exact match, token F1 and short-answer accuracy.

Light on purpose: no torch, no transformers. Every per-item score is in [0, 1].

Tokens. rouge-score's default tokenizer keeps only `[a-z0-9]`, so Chinese scores 0 there. Here every metric that
needs words uses `workbench.text`'s CJK-aware notion of a token (each Han/kana/bopomofo character is a token, a run of
other word characters is a token), after NFKC normalisation (full-width letters and digits become ASCII) and
lowercasing. Punctuation and symbols (emoji included) are not ROUGE tokens.

ROUGE. F-measures exactly as rouge-score computes them (`rouge1`, `rouge2`, `rougeL`, no stemming: stemming is
English-only), on the tokens above. The bulk path counts n-grams itself and finds the longest common subsequence with
a bit-parallel algorithm: rouge-score's LCS is an O(n·m) Python table (about 180 pairs/s on 2 cores for answers of a
few hundred characters) and importing its scorer pulls in nltk and scipy (over a second). `rouge_scorer()` returns
rouge-score's own `RougeScorer` with the same tokenizer; the tests check that both give the same numbers. One
departure: when neither text has a bigram (one-token answers such as "42"), rouge-score's ROUGE-2 is 0 even for the
right answer; here it is ROUGE-1 then.

Empty references. A reference that has no token (empty, only punctuation, only emoji) cannot be scored by overlap.
The item is counted in `ScoreResult.empty_references` and named in a warning, never a silent 0; its ROUGE and F1
follow SQuAD's convention: 1 when the prediction has no token either, else 0.

BLEU and chrF (sacrebleu). One tokenizer per corpus, chosen from the references only (so a base and a tuned model
scored on the same set always share it): `zh` when any reference contains a CJK character, else `13a`. sacrebleu's
`zh` splits Han characters and treats the rest like `13a`, so the few English items of a mostly-Chinese set (or the
reverse) lose almost nothing, while `13a` on Chinese would make each sentence one giant "word" and score it near 0.
Corpus BLEU is the standard one (exp smoothing, no effective order); per-item BLEU is sacrebleu's `sentence_bleu`:
exponential smoothing (NIST, mteval-v13a's method 3) with effective order, so short answers are not zeroed by missing
4-grams. chrF is sacrebleu's default (character 6-grams, beta 2). Segment statistics are extracted once and reused
for the per-item and the corpus scores, which equal sacrebleu's `sentence_bleu`/`sentence_chrf`/`corpus_bleu`/
`corpus_chrf` (checked in the tests).

Exact match and F1: SQuAD's normalisation (lowercase, drop punctuation, drop the articles a/an/the, collapse
whitespace), extended: NFKC first, every Unicode punctuation character (full-width and CJK marks like `，。、《》“”`)
counts, and spaces between two CJK characters are dropped. F1 tokens: each CJK character, and each whitespace-separated
run of other characters. When dropping articles would leave a reference empty (a multiple-choice answer "A"), both
sides keep their articles.

Accuracy (short-answer probes): 1 when the normalised reference's tokens occur as a contiguous run in the normalised
prediction's tokens, so "Paris" is found in "The capital is Paris.", "北京" in "中国的首都是北京。", but "4" is not
found in "14". A list of acceptable references scores 1 when any of them is found. EM, F1 and ROUGE take the best
reference too; BLEU and chrF use sacrebleu's multi-reference statistics.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import sacrebleu
from rouge_score.scoring import fmeasure

from workbench.text import CJK_CHARS, CJK_CLASS, count_cjk, tokenize

if TYPE_CHECKING:
    from rouge_score.rouge_scorer import RougeScorer

METRIC_KEYS = ("rouge1", "rouge2", "rouge_l", "bleu", "chrf", "exact_match", "f1", "accuracy")
"""The registered metrics `score_items` computes together (one pass of sacrebleu statistics); their metadata
(0/1, higher is better, answer types) lives in `workbench.metric_specs`."""

References = str | Sequence[str]
"""One reference, or a list of acceptable references (any may match)."""

_DECIMALS = 6


# --- tokens -------------------------------------------------------------------------------------------------------


def metric_tokens(text: str) -> list[str]:
    """ROUGE tokens: `workbench.text.tokenize` after NFKC and lowercasing. "Hello, 世界!" -> hello, 世, 界."""
    return tokenize(unicodedata.normalize("NFKC", text).lower())


class UnicodeTokenizer:
    """A rouge-score tokenizer (anything with `tokenize(text)`) that keeps CJK and other non-ASCII words."""

    def tokenize(self, text: str) -> list[str]:
        return metric_tokens(text)


def rouge_scorer() -> RougeScorer:
    """rouge-score's own scorer for rouge1/rouge2/rougeL with the Unicode tokenizer (imports nltk: about a second)."""
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=UnicodeTokenizer())


# --- ROUGE --------------------------------------------------------------------------------------------------------


def _ngram_f(reference: Counter[Any], prediction: Counter[Any]) -> float:
    """rouge-score's `_score_ngrams` F-measure."""
    overlap = sum((reference & prediction).values())
    precision = overlap / max(sum(prediction.values()), 1)
    recall = overlap / max(sum(reference.values()), 1)
    return float(fmeasure(precision, recall))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists.

    Bit-parallel (Allison-Dix / Hyyrö 2004): one big-integer step per token of `a` instead of a len(a)·len(b) table.
    Bit j of `v` is 0 where a common subsequence may end at b[j]; the LCS length is the number of zero bits.
    """
    if not a or not b:
        return 0
    positions: dict[str, int] = {}
    for j, token in enumerate(b):
        positions[token] = positions.get(token, 0) | (1 << j)
    full = (1 << len(b)) - 1
    v = full
    for token in a:
        match = positions.get(token)
        if match:
            u = v & match
            v = ((v + u) | (v - u)) & full
    return len(b) - v.bit_count()


def _rouge_from_tokens(ref: list[str], pred: list[str]) -> tuple[float, float, float]:
    if not ref:
        same = 0.0 if pred else 1.0
        return same, same, same
    rouge1 = _ngram_f(Counter(ref), Counter(pred))
    # Neither text has a bigram (one-token answers): rouge-score says 0; take ROUGE-1 so "42" vs "42" scores 1.
    both_short = len(ref) < 2 and len(pred) < 2
    rouge2 = rouge1 if both_short else _ngram_f(Counter(pairwise(ref)), Counter(pairwise(pred)))
    lcs = lcs_length(ref, pred)
    rouge_l = float(fmeasure(lcs / len(pred), lcs / len(ref))) if pred else 0.0
    return rouge1, rouge2, rouge_l


def rouge(prediction: str, references: References) -> dict[str, float]:
    """ROUGE-1/2/L F-measures of one prediction, best over the references (keys rouge1, rouge2, rouge_l)."""
    pred = metric_tokens(prediction)
    best = (0.0, 0.0, 0.0)
    for ref in _as_list(references):
        scores = _rouge_from_tokens(metric_tokens(ref), pred)
        best = (max(best[0], scores[0]), max(best[1], scores[1]), max(best[2], scores[2]))
    return {"rouge1": best[0], "rouge2": best[1], "rouge_l": best[2]}


# --- exact match, F1, accuracy ------------------------------------------------------------------------------------

_ARTICLES_RE = re.compile(r"\b(?:a|an|the)\b")
_CJK_SPACE_RE = re.compile(f"(?<={CJK_CLASS})\\s+(?={CJK_CLASS})")
_ANSWER_TOKEN_RE = re.compile(f"{CJK_CLASS}|[^\\s{CJK_CHARS}]+")


@cache
def _punctuation_table() -> dict[int, None]:
    """Every Unicode punctuation character (categories P*), plus ASCII's symbols that SQuAD drops ($+<=>^`|~)."""
    table: dict[int, None] = dict.fromkeys(map(ord, string.punctuation))
    # Planes 0 and 1 hold all punctuation; planes 2-3 are ideographs only.
    for cp in range(0x20000):
        if unicodedata.category(chr(cp)).startswith("P"):
            table[cp] = None
    return table


def _normalize(text: str, articles: bool) -> str:
    text = unicodedata.normalize("NFKC", text).lower().translate(_punctuation_table())
    if articles:
        text = _ARTICLES_RE.sub(" ", text)
    text = _CJK_SPACE_RE.sub("", text)
    return " ".join(text.split())


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation extended to Chinese (see the module docstring). "The Eiffel Tower!" -> "eiffel
    tower"; "北京 大学。" -> "北京大学"; "ＡＢＣ，" -> "abc"."""
    return _normalize(text, articles=True)


def answer_tokens(normalized: str) -> list[str]:
    """F1 tokens of a normalised answer: each CJK character, and each whitespace-separated run of other characters."""
    return _ANSWER_TOKEN_RE.findall(normalized)


def _normalize_pair(prediction: str, reference: str) -> tuple[str, str]:
    ref = _normalize(reference, articles=True)
    if not ref:
        bare = _normalize(reference, articles=False)
        if bare:  # the reference is an article ("A" in a multiple-choice probe): keep articles on both sides
            return _normalize(prediction, articles=False), bare
    return _normalize(prediction, articles=True), ref


def _f1(pred: list[str], ref: list[str]) -> float:
    if not pred or not ref:
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def _contains(pred: list[str], ref: list[str]) -> bool:
    if not ref:
        return not pred
    # Tokens never contain a space, so a space-joined substring test is a token-boundary test.
    return f" {' '.join(ref)} " in f" {' '.join(pred)} "


def exact_match(prediction: str, references: References) -> int:
    """1 when the normalised prediction equals a normalised reference, else 0."""
    return int(any(p == r for p, r in (_normalize_pair(prediction, ref) for ref in _as_list(references))))


def token_f1(prediction: str, references: References) -> float:
    """SQuAD token F1 on normalised answers (CJK characters are tokens), best over the references."""
    best = 0.0
    for ref in _as_list(references):
        p, r = _normalize_pair(prediction, ref)
        best = max(best, _f1(answer_tokens(p), answer_tokens(r)))
    return best


def accuracy(prediction: str, references: References) -> int:
    """Short-answer accuracy: 1 when a normalised reference occurs, as whole tokens, in the normalised prediction."""
    for ref in _as_list(references):
        p, r = _normalize_pair(prediction, ref)
        if _contains(answer_tokens(p), answer_tokens(r)):
            return 1
    return 0


# --- BLEU and chrF ------------------------------------------------------------------------------------------------


def bleu_tokenize_for(references: Iterable[References]) -> str:
    """sacrebleu tokenizer for a corpus: `zh` when any reference contains a CJK character, else `13a`."""
    return "zh" if any(count_cjk(ref) for refs in references for ref in _as_list(refs)) else "13a"


@dataclass(frozen=True)
class SacrebleuScore:
    """One model's corpus-level sacrebleu score (0-100, sacrebleu's scale) and its signature
    (`runfile.evals.CorpusScore` is what metrics.json keeps of it, tuned and base side by side); for BLEU also the
    brevity penalty and the length ratio (answer tokens / reference tokens), which explain a low corpus BLEU when
    answers are short or cut at the token limit."""

    score: float
    signature: str
    brevity_penalty: float | None = None
    length_ratio: float | None = None


@dataclass
class _SacreScores:
    bleu: list[float]
    chrf: list[float]
    corpus: dict[str, SacrebleuScore]
    sentence_bleu_signature: str


def _sacre_scores(predictions: Sequence[str], references: list[list[str]], tokenize: str) -> _SacreScores:
    # sacrebleu wants one stream per reference position; items with fewer references get None there.
    depth = max(len(refs) for refs in references)
    streams: Any = [[refs[k] if k < len(refs) else None for refs in references] for k in range(depth)]

    # The segment statistics do not depend on smoothing or effective order, so one extraction serves the standard
    # corpus BLEU and sacrebleu's sentence BLEU (exp smoothing, effective order), as `sentence_bleu` computes it.
    corpus_bleu = sacrebleu.BLEU(tokenize=tokenize)
    sentence_bleu = sacrebleu.BLEU(tokenize=tokenize, effective_order=True)
    stats = corpus_bleu._extract_corpus_statistics(predictions, streams)
    sentence_bleu.num_refs = corpus_bleu.num_refs
    bleu = [_unit(sentence_bleu._compute_score_from_stats(s).score / 100) for s in stats]

    chrf_metric = sacrebleu.CHRF()
    chrf_stats = chrf_metric._extract_corpus_statistics(predictions, streams)
    chrf = [_unit(chrf_metric._compute_score_from_stats(s).score / 100) for s in chrf_stats]

    whole = corpus_bleu._aggregate_and_compute(stats)
    corpus = {
        "bleu": SacrebleuScore(
            round(float(whole.score), _DECIMALS),
            corpus_bleu.get_signature().format(),
            round(float(whole.bp), _DECIMALS),
            round(float(whole.ratio), _DECIMALS),
        ),
        "chrf": SacrebleuScore(
            round(float(chrf_metric._aggregate_and_compute(chrf_stats).score), _DECIMALS),
            chrf_metric.get_signature().format(),
        ),
    }
    return _SacreScores(bleu, chrf, corpus, sentence_bleu.get_signature().format())


# --- bulk ---------------------------------------------------------------------------------------------------------


@dataclass
class ScoreResult:
    """Scores of a list of predictions against their references.

    `items[i]` has the keys of `METRIC_KEYS` (floats in [0, 1], rounded to 6 decimals; exact_match and accuracy are 0
    or 1). `corpus` holds corpus BLEU and chrF ("bleu", "chrf"; empty when there are no items). `empty_references`
    lists the indices of items with a reference that has no token; `warnings` says so in words.
    """

    items: list[dict[str, float | int]]
    corpus: dict[str, SacrebleuScore]
    bleu_tokenize: str
    sentence_bleu_signature: str
    empty_references: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def score_items(
    predictions: Sequence[str],
    references: Sequence[References],
    bleu_tokenize: str | None = None,
) -> ScoreResult:
    """Score each prediction against its reference(s) on every metric of `METRIC_KEYS`, plus corpus BLEU/chrF.

    `bleu_tokenize` overrides the corpus rule (`bleu_tokenize_for`). Speed: about 500 pairs a second for answers of
    ~170 characters, half English and half Chinese, on a busy 2-core machine; sacrebleu's statistics take three
    quarters of that time (they are extracted once for both the per-item and the corpus scores).
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    refs = [_as_list(r) or [""] for r in references]
    tokenize = bleu_tokenize or bleu_tokenize_for(refs)
    if not predictions:
        return ScoreResult([], {}, tokenize, "", warnings=["no items to score"])

    sacre = _sacre_scores(predictions, refs, tokenize)
    items: list[dict[str, float | int]] = []
    empty: list[int] = []
    for i, (prediction, item_refs) in enumerate(zip(predictions, refs, strict=True)):
        pred_tokens = metric_tokens(prediction)
        rouge_best = [0.0, 0.0, 0.0]
        em, f1, acc = 0, 0.0, 0
        has_empty = False
        for ref in item_refs:
            ref_tokens = metric_tokens(ref)
            has_empty = has_empty or not ref_tokens
            for k, value in enumerate(_rouge_from_tokens(ref_tokens, pred_tokens)):
                rouge_best[k] = max(rouge_best[k], value)
            p, r = _normalize_pair(prediction, ref)
            p_tokens, r_tokens = answer_tokens(p), answer_tokens(r)
            em = max(em, int(p == r))
            f1 = max(f1, _f1(p_tokens, r_tokens))
            acc = max(acc, int(_contains(p_tokens, r_tokens)))
        if has_empty:
            empty.append(i)
        items.append(
            {
                "rouge1": _round(rouge_best[0]),
                "rouge2": _round(rouge_best[1]),
                "rouge_l": _round(rouge_best[2]),
                "bleu": _round(sacre.bleu[i]),
                "chrf": _round(sacre.chrf[i]),
                "exact_match": em,
                "f1": _round(f1),
                "accuracy": acc,
            }
        )

    warnings: list[str] = []
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        warnings.append(
            f"{len(empty)} of {len(predictions)} references have no word to compare (empty, or only punctuation or "
            f"symbols; items {shown}): ROUGE and F1 score them 1 only for an empty prediction"
        )
    return ScoreResult(items, sacre.corpus, tokenize, sacre.sentence_bleu_signature, empty, warnings)


# --- helpers ------------------------------------------------------------------------------------------------------


def _as_list(references: References) -> list[str]:
    return [references] if isinstance(references, str) else list(references)


def _unit(value: float) -> float:
    """Clamp to [0, 1]: sacrebleu's 100 can come out as 100.00000000000004."""
    return min(1.0, max(0.0, value))


def _round(value: float) -> float:
    return round(value, _DECIMALS) if math.isfinite(value) else value
