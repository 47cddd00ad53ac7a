"""The HTML of `wb review`, rendered on the server with the report's escaping and the report's cell formatting.

Templates (`templates/*.html.j2`) render with jinja2's autoescape on and nothing marked safe, so every field (model
answers and notes are untrusted) reaches the page as text. Answers are marked against the reference word by word
with the report's `formatting.word_diff`; numbers read as in the report (`fmt`, `signed`). The one inline script
and style carry a per-response nonce that the Content-Security-Policy (`csp`) names: nothing else runs, nothing is
fetched from anywhere (the policy forbids every source but the page's own forms).
"""

from __future__ import annotations

import secrets
from functools import cache
from pathlib import Path
from typing import Any

from workbench import __version__
from workbench.charts import fmt
from workbench.evaluate.verdicts import Verdict
from workbench.report.eval_views import review_view
from workbench.report.formatting import cap, html_templates, signed, word_diff
from workbench.review.items import Item, ReviewData
from workbench.runfile.summary import ReviewSummary

TEMPLATES = Path(__file__).resolve().parent / "templates"
LIST_TEXT = 4000  # characters of one field on the browse list (the item page shows all)
FULL_TEXT = 1_000_000
OPEN_CONVERSATION = 600  # characters of system prompt and earlier turns up to which they are shown open
OPEN_TURNS = 2  # earlier turns up to which they are shown open (longer conversations start collapsed)


def nonce() -> str:
    return secrets.token_urlsafe(18)


def csp(n: str) -> str:
    """The page's policy: its own nonce'd script and style, forms posting to itself, nothing loaded from anywhere."""
    return (
        f"default-src 'none'; script-src 'nonce-{n}'; style-src 'nonce-{n}'; img-src data:; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )


@cache
def _env() -> Any:
    return html_templates(TEMPLATES)


def render(template: str, **context: Any) -> str:
    return str(_env().get_template(template).render(version=__version__, **context))


def _marked(reference: str, answer: str | None, limit: int) -> list[tuple[str, str]] | None:
    """An answer as (class, text) segments against the reference (the report's word diff); None: no answer."""
    if answer is None:
        return None
    text = cap(answer, limit)
    return word_diff(reference, text) if reference else [("same", text)]


def conversation(it: Item, limit: int) -> dict[str, Any] | None:
    """The system prompt and the earlier turns before the instruction, each text capped at `limit`; `open` when the
    whole is short (else the page shows it collapsed, its summary saying how much it holds). None: a one-turn item."""
    if not it.system and not it.history:
        return None
    size = len(it.system) + sum(len(u) + len(a) for u, a in it.history)
    parts = [f"{len(it.history)} earlier turn{'s' * (len(it.history) != 1)}"] if it.history else []
    parts += ["system prompt"] if it.system else []
    return {
        "system": cap(it.system, limit),
        "turns": [(cap(u, limit), cap(a, limit)) for u, a in it.history],
        "open": size <= OPEN_CONVERSATION and len(it.history) <= OPEN_TURNS,
        "summary": f"{' and '.join(parts)} ({size:,} characters)",
    }


def _metric_rows(it: Item) -> list[tuple[str, str, str, str]]:
    """(metric, base, tuned, tuned - base) of each per-item value, as the report writes them."""
    rows = []
    for name, t in it.tuned_scores.items():
        b = it.base_scores.get(name)
        delta = signed(t - b) if t is not None and b is not None else "-"
        rows.append((name, fmt(b) if name in it.base_scores else "-", fmt(t), delta))
    return rows


def item_view(it: Item, data: ReviewData, verdicts: list[Verdict], limit: int = LIST_TEXT) -> dict[str, Any]:
    """One item for the browse list and the item page: question, reference, every answer marked, metrics, flags."""
    reference = cap(it.reference, limit)
    columns = [("base", it.base), ("tuned", it.tuned), *zip(data.columns, it.extra, strict=True)]
    return {
        "set": it.set,
        "id": it.id,
        "language": it.language,
        "bucket": it.bucket,
        "metric": it.metric or "-",
        "delta": signed(it.delta) if it.delta is not None else "-",
        "conversation": conversation(it, limit),
        "instruction": cap(it.instruction, limit),
        "input": cap(it.input, limit),
        "options": sorted((it.options or {}).items()),
        "reference": reference,
        "columns": [(name, _marked(it.reference, answer, limit)) for name, answer in columns],
        "metrics": _metric_rows(it),
        "flags": [("tuned", f) for f in it.tuned_flags] + [("base", f) for f in it.base_flags],
        "judge": it.judge,
        "verdicts": [{"reviewer": v.reviewer, "verdict": v.verdict, "note": cap(v.note, limit)} for v in verdicts],
    }


def blind_view(it: Item, order: tuple[str, str]) -> dict[str, Any]:
    """One item for the blind review: the answers as A and B in the recorded order; no names, no scores, no flags."""
    answers = {"tuned": it.tuned or "", "base": it.base or ""}
    return {
        "set": it.set,
        "id": it.id,
        "conversation": conversation(it, FULL_TEXT),
        "instruction": cap(it.instruction, FULL_TEXT),
        "input": cap(it.input, FULL_TEXT),
        "options": sorted((it.options or {}).items()),
        "reference": cap(it.reference, FULL_TEXT),
        "a": cap(answers[order[0]], FULL_TEXT),
        "b": cap(answers[order[1]], FULL_TEXT),
    }


def shown_choice(verdict: Verdict | None, order: tuple[str, str]) -> str | None:
    """A saved verdict as the button the reviewer pressed (A, B, tie, both_bad), for marking it when revisited."""
    if verdict is None:
        return None
    if verdict.verdict in ("tie", "both_bad"):
        return verdict.verdict
    return "A" if verdict.verdict == order[0] else "B"


def stats_view(summary: ReviewSummary | None) -> dict[str, Any] | None:
    """The review statistics as the report shows them (`report.eval_views.review_view`)."""
    if summary is None:
        return None
    return review_view(summary.model_dump(mode="json", exclude_none=True))
