"""Which items a page shows: the filters of the browse view (set, language, delta, degenerate kind, reviewed or not,
free text), the sort by delta, pagination, and the queue of the blind review.

A query string is read once into `Filters` (an unknown value is a `WbError`, answered 400 by the app) and written
back by `Filters.query` for links, so a filtered view, its pages and its review queue share one URL grammar.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from urllib.parse import urlencode

from workbench.errors import WbError
from workbench.review.items import Item, Key, ReviewData

DELTAS = {"regressions": "regression", "gains": "gain", "ties": "tie", "none": "none"}
"""The delta filter's values and the item bucket each selects."""
SORTS = ("file", "delta", "-delta")  # file order, worst delta first, best delta first
REVIEWED = ("yes", "no")
ANY_FLAG = "any"
PER_PAGE = 50
MAX_PER_PAGE = 500
MAX_QUERY = 200  # characters of the free-text search


@dataclass(frozen=True)
class Filters:
    set: str = ""
    lang: str = ""
    delta: str = ""
    flag: str = ""
    reviewed: str = ""
    q: str = ""
    sort: str = "file"
    page: int = 1
    per: int = PER_PAGE

    def query(self, **changes: object) -> str:
        """This view as a query string (defaults left out), with `changes` applied."""
        changed = replace(self, **changes)  # type: ignore[arg-type]
        default = Filters()
        pairs = [(f.name, getattr(changed, f.name)) for f in fields(self)]
        return urlencode([(k, str(v)) for k, v in pairs if v != getattr(default, k)])

    @property
    def active(self) -> bool:
        """Any filter set (sort and paging aside)."""
        return any((self.set, self.lang, self.delta, self.flag, self.reviewed, self.q))


def _int(params: Mapping[str, str], name: str, default: int, high: int) -> int:
    raw = params.get(name, "")
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= high:
        raise WbError(f"query {name}={raw!r}: give a whole number from 1 to {high}")
    return int(raw)


def _choice(params: Mapping[str, str], name: str, allowed: Iterable[str]) -> str:
    value = params.get(name, "")
    allowed = list(allowed)
    if value and value not in allowed:
        raise WbError(f"query {name}={value!r}: not one of {', '.join(allowed) or '(none in this run)'}")
    return value


def parse(params: Mapping[str, str], data: ReviewData) -> Filters:
    """The filters of a query string; an unknown set, language, kind or value is a WbError."""
    q = params.get("q", "")
    if len(q) > MAX_QUERY:
        raise WbError(f"query q: at most {MAX_QUERY} characters")
    return Filters(
        set=_choice(params, "set", (name for name, _ in data.sets())),
        lang=_choice(params, "lang", data.languages()),
        delta=_choice(params, "delta", DELTAS),
        flag=_choice(params, "flag", [ANY_FLAG, *data.flag_kinds()]),
        reviewed=_choice(params, "reviewed", REVIEWED),
        q=q.strip(),
        sort=_choice(params, "sort", SORTS) or "file",
        page=_int(params, "page", 1, 1_000_000),
        per=_int(params, "per", PER_PAGE, MAX_PER_PAGE),
    )


def select(data: ReviewData, f: Filters, reviewed: set[Key]) -> list[Item]:
    """The items the filters keep (`reviewed`: the keys the current reviewer has judged), in the chosen order."""
    needle = f.q.lower()
    out = [
        it
        for it in data.items
        if (not f.set or it.set == f.set)
        and (not f.lang or it.language == f.lang)
        and (not f.delta or it.bucket == DELTAS[f.delta])
        and (not f.flag or (bool(it.flags) if f.flag == ANY_FLAG else f.flag in it.flags))
        and (not f.reviewed or (it.key in reviewed) == (f.reviewed == "yes"))
        and (not needle or needle in it.haystack)
    ]
    if f.sort != "file":
        sign = 1 if f.sort == "delta" else -1
        # items without a delta go last either way; ties keep file order
        out.sort(key=lambda it: (it.delta is None, sign * (it.delta or 0.0), it.index))
    return out


@dataclass(frozen=True)
class Page:
    items: list[Item]
    number: int
    pages: int
    total: int
    first: int  # 1-based position of the first item shown (0 when none)


def page(items: list[Item], f: Filters) -> Page:
    pages = max(1, -(-len(items) // f.per))
    number = min(f.page, pages)
    start = (number - 1) * f.per
    shown = items[start : start + f.per]
    return Page(shown, number, pages, len(items), start + 1 if shown else 0)


def queue(data: ReviewData, f: Filters | None, reviewed: set[Key]) -> list[Item]:
    """The blind review's queue: the stratified sample (no filters), or the filtered items; only items with both a
    base and a tuned answer."""
    items = [data.by_key[k] for k in data.sample] if f is None else select(data, f, reviewed)
    return [it for it in items if it.blind_ready]


def next_unreviewed(items: list[Item], reviewed: set[Key]) -> Item | None:
    return next((it for it in items if it.key not in reviewed), None)
