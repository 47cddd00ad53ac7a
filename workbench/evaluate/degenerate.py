"""Degenerate answers: per-item flags for answers that say nothing about what the model knows, however they score.

Light on purpose: the standard library and `workbench.text`; no torch, no transformers. Each check is a function of
one answer (and its prompt); `flags` runs them all, one per kind of `workbench.degenerate_kinds` (the kinds' names,
descriptions and warnings live there). Every check runs in time linear in the answer's length.

- `echo`: the answer is the prompt again (once or more, the last copy possibly cut short), or a prefix or suffix of
  the prompt, after `workbench.text.echo_key`'s normalisation (the clean rule `output_echoes_prompt` uses the same):
  NFKC, lowercase, all whitespace removed, punctuation (Unicode category P, and the wrapping symbols < > ` ~)
  stripped at both ends, so the prompt followed by only spaces or punctuation is an echo too. Other symbols stay:
  "68+11=" keeps its `=`, so "68+11=" echoes the prompt "68+11=" while "68+11=79" does not. A prefix or suffix
  counts when it holds at least half of the prompt's normalised characters or at least 32 of them (shorter pieces,
  such as "11" of "68+11=", are often the answer itself). An empty answer is not an echo: it is `empty`.
- `cut_off`: generation stopped because it reached `max_new_tokens` without an end token: `generated_tokens >=
  max_new_tokens` and `finished` is not True. `finished=None` (unknown) leaves the token count to decide; unknown
  token counts give False.
- `repetition`: a generation loop, by the same detector and thresholds as the clean rules `repeated_lines` and
  `repeated_ngrams` (`workbench.text.is_generation_loop`, defaults in `workbench.text`).
- `empty`: no letter, digit or CJK character (Unicode `isalnum`) in the answer.
- `wrong_language`: a Chinese question (`workbench.text.script_of` is `cjk`) answered without a single CJK character,
  or a Latin-script question answered mostly in Chinese (`script_of` of the answer is `cjk`). Answers with fewer than
  3 letters (digits, symbols, a choice letter "B", "是") are never wrong-language, nor are questions in other
  scripts. Known limit: a prompt that asks for a translation into the other language is answered "wrongly" by design.
- `broken_text`: U+FFFD (a character lost in decoding), a lone surrogate, or a control character (category Cc: C0,
  DEL, C1) other than tab, line feed and carriage return.

`strip_shared_prefix` scores completion-style items ("68+11=" → "68+11=79") on what follows the prompt
(`workbench.text.safe_decode_tail` drops the replacement characters a decode leaves where generation stopped inside a
multi-byte character, before an answer gets here).
"""

from __future__ import annotations

import re
import unicodedata

from workbench import degenerate_kinds
from workbench.text import count_cjk, echo_key, is_end_punctuation, is_generation_loop, script_of

ECHO_MIN_SHARE = 0.5
ECHO_MIN_CHARS = 32
WRONG_LANGUAGE_MIN_LETTERS = 3

_BROKEN_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd\ud800-\udfff]")


def _strip_punctuation(key: str) -> tuple[int, int]:
    """(start, end) of `key` without punctuation at its ends (what `echo_key` strips)."""
    start, end = 0, len(key)
    while start < end and is_end_punctuation(key[start]):
        start += 1
    while end > start and is_end_punctuation(key[end - 1]):
        end -= 1
    return start, end


def echo(prediction: str, prompt: str) -> bool:
    """True when the answer is the prompt again, or a long enough prefix or suffix of it (module docstring)."""
    answer, asked = echo_key(prediction), echo_key(prompt)
    if not answer or not asked or empty(prediction):
        return False
    if len(answer) >= len(asked):
        # The prompt once or more, the last copy possibly cut off.
        return (asked * (len(answer) // len(asked) + 1)).startswith(answer)
    if len(answer) < min(ECHO_MIN_SHARE * len(asked), ECHO_MIN_CHARS):
        return False
    return asked.startswith(answer) or asked.endswith(answer)


def _char_key(ch: str) -> str:
    return "" if ch.isspace() else unicodedata.normalize("NFKC", ch).lower()


def _after_prompt(text: str, core: str, tail: str) -> int | None:
    """Where `text` continues after the prompt, or None when it does not begin with it. `core` is the prompt's key
    without end punctuation, `tail` the end punctuation; leading whitespace and punctuation of `text` are skipped,
    as the key skips them, then `core` must follow exactly, then as much of `tail` as is there, then whitespace."""
    i, n = 0, len(text)
    while i < n and (text[i].isspace() or is_end_punctuation(text[i])):
        i += 1
    pos = 0
    while pos < len(core):
        if i >= n:
            return None
        piece = _char_key(text[i])
        if piece and core[pos : pos + len(piece)] != piece:
            return None
        pos += len(piece)
        i += 1
    t = 0
    while i < n and (text[i].isspace() or (t < len(tail) and _char_key(text[i]) == tail[t])):
        t += not text[i].isspace()
        i += 1
    return i


def strip_shared_prefix(prediction: str, reference: str, prompt: str) -> tuple[str, str, bool]:
    """When the reference begins with the prompt (after `echo`'s normalisation, "68+11=79" for "68+11="), the parts of
    the prediction and the reference after it, and True; the prediction is cut only where it begins with the prompt
    too (so an echo becomes ""). Otherwise, or when nothing follows the prompt in the reference, the texts unchanged
    and False."""
    key = "".join(_char_key(ch) for ch in prompt)
    start, end = _strip_punctuation(key)
    core, tail = key[start:end], key[end:]
    if not core:
        return prediction, reference, False
    ref_at = _after_prompt(reference, core, tail)
    if ref_at is None or ref_at >= len(reference):
        return prediction, reference, False
    pred_at = _after_prompt(prediction, core, tail)
    return (prediction if pred_at is None else prediction[pred_at:]), reference[ref_at:], True


def cut_off(generated_tokens: int | None, max_new_tokens: int | None, finished: bool | None = None) -> bool:
    """True when generation reached `max_new_tokens` without an end token (module docstring)."""
    if generated_tokens is None or max_new_tokens is None or finished is True:
        return False
    return generated_tokens >= max_new_tokens


def repetition(prediction: str) -> bool:
    """True when the clean rules `repeated_lines` or `repeated_ngrams` (default thresholds) would drop the answer."""
    return is_generation_loop(prediction)


def empty(prediction: str) -> bool:
    """True when the answer has no letter, digit or CJK character."""
    return not any(ch.isalnum() for ch in prediction)


def wrong_language(prediction: str, prompt: str) -> bool:
    """True for a Chinese question answered without Chinese, or a Latin-script one answered in Chinese (module
    docstring)."""
    if sum(1 for ch in prediction if ch.isalpha()) < WRONG_LANGUAGE_MIN_LETTERS:
        return False
    asked = script_of(prompt)
    if asked == "cjk":
        return count_cjk(prediction) == 0
    if asked == "latin":
        return script_of(prediction) == "cjk"
    return False


def broken_text(prediction: str) -> bool:
    """True when the answer holds U+FFFD, a lone surrogate, or a control character other than tab, LF and CR."""
    return _BROKEN_RE.search(prediction) is not None


def flags(
    prediction: str,
    prompt: str,
    generated_tokens: int | None = None,
    max_new_tokens: int | None = None,
    finished: bool | None = None,
) -> dict[str, bool]:
    """Every kind of `workbench.degenerate_kinds`, in its order (`cut_off` is False when the token counts are
    unknown)."""
    out = {}
    for kind in degenerate_kinds.kinds():
        check = kind.check or _BUILT_IN.get(kind.name)
        if check is None:
            raise ValueError(f"degenerate kind {kind.name!r} was registered without a check")
        out[kind.name] = check(prediction, prompt, generated_tokens, max_new_tokens, finished)
    return out


_BUILT_IN: dict[str, degenerate_kinds.Check] = {
    "echo": lambda prediction, prompt, *_: echo(prediction, prompt),
    "cut_off": lambda _p, _q, generated_tokens, max_new_tokens, finished: cut_off(
        generated_tokens, max_new_tokens, finished
    ),
    "repetition": lambda prediction, *_: repetition(prediction),
    "empty": lambda prediction, *_: empty(prediction),
    "wrong_language": lambda prediction, prompt, *_: wrong_language(prediction, prompt),
    "broken_text": lambda prediction, *_: broken_text(prediction),
}
