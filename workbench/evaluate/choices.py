"""Choice answers: the option letter a model answered (`extract_choice`) and whether it is the reference's
(`choice_accuracy`), for generated answers to multiple-choice items (`evaluate.mc` scores the options by
log-likelihood instead); `evaluate.answers` says what every answer scorer shares.

Choices (`extract_choice`, `choice_accuracy`). Letters are those of `letters` (default ABCD), or the keys of `options`
when options are given. Precedence, highest first; the first level that names a letter decides, and when that level
names two different letters the answer is ambiguous (None):

1. explicit marker: `答案是B`, `答案为B`, `答案：B`, `选B`, `故选B`, `选择B`, `the answer is (C)`, `answer: D`,
   `final answer: B`, `the correct option is B`, `best choice: B` (the letter may be bracketed, quoted or in
   `**bold**`); "选项A" and "option A" merely mention an option and are no markers;
2. leading letter: the answer starts with a letter followed by `.`, `)`, `]`, `:`, `、`, `,`, a line end or the end
   of the answer, or with a bracketed letter: `B. Paris`, `(B) Paris`, `B)`, `B`, `B\n\nExplanation: ...`, `(b)`;
3. lone letter token: a capital letter not touching another ASCII letter or digit ("I pick C because", "我认为是C");
   a capital `A` that starts a sentence and is followed by a lowercase word other than a verb such as `is` is the
   English article ("A cat is ..."), not a choice ("A is right" and "I think A fits" are);
4. option text: when `options` maps letters to texts, the option whose text (NFKC, casefolded, spaces collapsed,
   end punctuation stripped) is the whole answer, else the only option whose text appears in the answer as a whole
   word or phrase (an option contained in another found option, e.g. "Paris" in "Paris, Texas", does not count).

Lowercase letters count only bracketed (`(b)`), never bare, so "answer: a dog" is not the choice A.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

from workbench.evaluate.answers import find_phrases, nfkc, only_one, phrase_key, strip_punctuation

# --- choices ------------------------------------------------------------------------------------------------------

# "选项A" and "option A" only mention an option ("选项A错误，答案是C"): they are no markers.
_MARKER = (
    r"(?:答案\s*+(?:是|为|為|應為|应为|选|選)?|[选選](?:择|擇)?(?![项項]))"
    r"|(?:\b(?:the\s+)?(?:final\s+|correct\s+|right\s+|best\s+)?answer(?:\s+(?:is|would\s+be|should\s+be))?)"
    r"|(?:\b(?:correct|right|best)\s+(?:option|choice)(?:\s+(?:is|would\s+be|should\s+be))?)"
)
# Possessive quantifiers (`*+`) throughout: a run of spaces or quotes is read once, never re-split by backtracking.
_QUOTES = "\"'*“‘「【"
_CLOSE = ")]}\"'*”’」】"


@lru_cache(maxsize=64)
def _choice_patterns(letters: str) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    upper = re.escape(letters.upper())
    both = re.escape(letters.upper() + letters.lower())
    quotes = re.escape(_QUOTES)
    closer = re.escape(_CLOSE)
    letter = rf"[{quotes}]*+\s*+(?:[({{\[]\s*+(?P<b>[{both}])\s*+[)}}\]]|(?P<l>[{upper}]))(?![A-Za-z0-9])"
    marker = re.compile(rf"(?i:{_MARKER})\s*+:?\s*+(?:是|为)?\s*+{letter}")
    ends = rf"[.)\]:、,，\n{closer}]|$"
    leading = re.compile(
        rf"\s*+[{quotes}]*+\s*+(?:[(\[]\s*+(?P<b>[{both}])\s*+[)\]]|(?P<l>[{upper}])(?=[ \t]*+(?:{ends})))"
    )
    lone = re.compile(rf"(?<![A-Za-z0-9])(?P<l>[{upper}])(?![A-Za-z0-9])")
    return marker, leading, lone


# After a capital A at the start of a sentence, a lowercase word other than these makes it the article.
_A_VERBS = frozenset(
    ["is", "was", "seems", "appears", "looks", "would", "should", "must", "fits", "matches", "and", "or"]
)
_NEXT_WORD_RE = re.compile(r"[ \t]+([a-z]+)")


def _is_article(text: str, start: int, end: int) -> bool:
    """The capital `A` at text[start:end] starts a sentence and is followed by a lowercase word (not a verb)."""
    word = _NEXT_WORD_RE.match(text, end, min(len(text), end + 40))
    if word is None or word[1] in _A_VERBS:
        return False
    i = start - 1
    while i >= 0 and text[i] in " \t":
        i -= 1
    return i < 0 or text[i] in ".!?。！？\n:\"'“‘(["


def extract_choice(text: str, options: Mapping[str, str] | None = None, letters: str = "ABCD") -> str | None:
    """The option letter the answer chooses (uppercase), or None when it names none or is ambiguous. Precedence:
    explicit marker > leading letter > lone letter token > option text (module docstring)."""
    if options is not None:
        letters = "".join(k.strip().upper() for k in options)
    text = nfkc(text)
    marker, leading, lone = _choice_patterns(letters)
    named = {(m["b"] or m["l"]).upper() for m in marker.finditer(text)}
    if named:
        return only_one(named)
    head = leading.match(text)
    if head is not None:
        return (head["b"] or head["l"]).upper()
    tokens = {m["l"] for m in lone.finditer(text) if not (m["l"] == "A" and _is_article(text, m.start(), m.end()))}
    if tokens:
        return only_one(tokens)
    if options:
        keys = {k.strip().upper(): phrase_key(v) for k, v in options.items()}
        whole, found, _ = find_phrases(phrase_key(text), keys)
        return whole if whole is not None else only_one(found)
    return None


def choice_accuracy(
    prediction: str, reference_letter: str, options: Mapping[str, str] | None = None, letters: str = "ABCD"
) -> int:
    """1 when the chosen letter equals the reference letter (read like a leading letter: "B", "(B)", "B."), else 0.
    Raises ValueError when the reference is not one of the letters."""
    valid = "".join(k.strip().upper() for k in options) if options is not None else letters.upper()
    ref = strip_punctuation(nfkc(reference_letter)).upper()
    if len(ref) != 1 or ref not in valid:
        raise ValueError(f"the reference {reference_letter!r} is not one of the option letters {valid}")
    return int(extract_choice(prediction, options, letters) == ref)
