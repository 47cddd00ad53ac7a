"""The `wb review` web app (Starlette): browse and filter every item, judge pairs blind, see the statistics.

Safety, since model answers are untrusted and the server listens on a port other local pages can reach:
- Every request needs the session's random token: the address `wb review` prints carries it once (`?token=`), the
  app answers with a cookie (HttpOnly, SameSite=Strict) and a redirect to the same page without it. A state-changing
  request (a POST) must also carry the token in its form; without it, or with a wrong one, it is refused (403), so
  another page in the browser cannot post verdicts.
- A verdict is checked before it is written: the reviewer's name (`verdicts.check_reviewer`), an item of this run
  with both answers, one of `verdicts.CHOICES`, a note of at most `MAX_NOTE` characters. It is saved at once through
  `VerdictStore.record_blind` (atomic, into the run's eval folder: nothing is written anywhere else).
- Pages are rendered by `pages` (everything escaped) with a Content-Security-Policy and `nosniff`, `no-referrer`,
  `no-store` headers.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from workbench.errors import WbError
from workbench.evaluate.verdicts import CHOICES, Verdict, VerdictStore, check_reviewer, summarize
from workbench.review import pages, queries
from workbench.review.items import Key, ReviewData
from workbench.runfile.folder import Stamp

COOKIE = "wb_review"
REVIEWER_COOKIE = "wb_reviewer"
MAX_NOTE = 4000  # characters of a reviewer's note
MAX_FORM = 64 * 1024  # bytes of a posted form
SAMPLE = "sample"


@dataclass
class Session:
    data: ReviewData
    reviewer: str
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    notice: str | None = None  # one line on every page once the items were read again (or could not be)

    def __post_init__(self) -> None:
        check_reviewer(self.reviewer)
        self.store = VerdictStore(self.data.folder)
        self._failed: Stamp | None = None

    def refresh(self) -> None:
        """Read the items again when `wb eval` rewrote the evaluation since they were read (checked on every request
        by two stats). A set caught half written (or broken) keeps the items shown so far, says so, and is tried
        again once its files change again (the manifest is published last)."""
        if not self.data.changed():
            return
        stamp = self.data.folder.stamp()
        if stamp == self._failed:
            return
        at = datetime.now(UTC).strftime("%H:%M:%S UTC")
        try:
            self.data = self.data.reload()
        except WbError as e:
            self._failed = stamp
            self.notice = f"{at}: the evaluation changed on disk but cannot be read ({e}); the items read before stay"
            return
        self._failed = None
        self.notice = (
            f"{at}: `wb eval` rewrote the evaluation; the items were read again ({len(self.data.items):,} now)"
        )


def _page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    n = pages.nonce()
    html = pages.render(template, nonce=n, **context)
    return HTMLResponse(html, status, headers=_headers(n))


def _headers(n: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": pages.csp(n),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
    }


def _same(given: str, token: str) -> bool:
    """A constant-time comparison that any text can be given to (compare_digest refuses non-ASCII str)."""
    return secrets.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode("utf-8"))


def _refused(status: int, message: str) -> HTMLResponse:
    return _page("message.html.j2", status, title="refused" if status == 403 else "error", message=message)


@dataclass
class Seen:
    """The verdicts as one request sees them (the reviewers' files read once): everyone's, and the current
    reviewer's by item."""

    reviewer: str
    stored: list[Verdict]  # every verdict in the reviewers' files
    everyone: list[Verdict]  # those on items of this run (scores.jsonl rewritten: the others are kept, not counted)
    own: dict[Key, Verdict]

    @property
    def stale(self) -> int:
        return len(self.stored) - len(self.everyone)

    @property
    def reviewed(self) -> set[Key]:
        return set(self.own)


def create_app(session: Session) -> Starlette:
    """The app for one session (one run, one token)."""

    def seen(request: Request) -> Seen:
        name = request.query_params.get("reviewer") or request.cookies.get(REVIEWER_COOKIE) or session.reviewer
        reviewer = check_reviewer(name)
        stored = session.store.verdicts()
        everyone = [v for v in stored if (v.set, v.id) in session.data.by_key]
        own = {(v.set, v.id): v for v in everyone if v.reviewer == reviewer}
        return Seen(reviewer, stored, everyone, own)

    def common(request: Request, now: Seen) -> dict[str, Any]:
        data = session.data
        return {
            "run": data.run,
            "reviewer": now.reviewer,
            "total": len(data.items),
            "reviewed_by_you": len(now.own),
            "reviewed_by_all": len({(v.set, v.id) for v in now.everyone}),
            "matches": data.matches,
            "path": request.url.path,
            "stale": now.stale,
            "notice": session.notice,
        }

    async def guarded(request: Request) -> Response:
        """Token and errors around every page: a valid ?token= becomes a cookie; a missing one is refused."""
        given = request.query_params.get("token")
        if given is not None:
            if not _same(given, session.token):
                return _refused(403, "wrong session token: open the address `wb review` printed")
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            redirect = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), 303)
            redirect.set_cookie(COOKIE, session.token, httponly=True, samesite="strict")
            return redirect
        if not _same(request.cookies.get(COOKIE, ""), session.token):
            return _refused(403, "no session token: open the address `wb review` printed (it holds the token)")
        handler = ROUTES[request.url.path]
        try:
            session.refresh()
            response = await handler(request)
        except WbError as e:
            return _refused(400, str(e))
        name = request.query_params.get("reviewer")
        if name:  # a reviewer chosen in the address stays chosen
            response.set_cookie(REVIEWER_COOKIE, check_reviewer(name), httponly=True, samesite="strict")
        return response

    async def index(request: Request) -> Response:
        return RedirectResponse("/browse", 303)

    async def browse(request: Request) -> Response:
        now = seen(request)
        f = queries.parse(request.query_params, session.data)
        shown = queries.page(queries.select(session.data, f, now.reviewed), f)
        by_item: dict[Key, list[Verdict]] = {}
        for v in now.everyone:
            by_item.setdefault((v.set, v.id), []).append(v)
        views = [pages.item_view(it, session.data, by_item.get(it.key, [])) for it in shown.items]
        return _page(
            "browse.html.j2",
            **common(request, now),
            f=f,
            page=shown,
            items=views,
            sets=session.data.sets(),
            languages=session.data.languages(),
            flags=session.data.flag_kinds(),
            deltas=list(queries.DELTAS),
            columns=["base", "tuned", *session.data.columns],
        )

    async def item(request: Request) -> Response:
        now = seen(request)
        key = (request.query_params.get("set", ""), request.query_params.get("id", ""))
        found = session.data.by_key.get(key)
        if found is None:
            raise WbError(f"no item with set {key[0]!r} and id {key[1]!r} in this run")
        verdicts = [v for v in now.everyone if (v.set, v.id) == key]
        view = pages.item_view(found, session.data, verdicts, pages.FULL_TEXT)
        return _page("item.html.j2", **common(request, now), item=view)

    def review_queue(params: dict[str, str], reviewed: set[Key]) -> tuple[str, queries.Filters | None, list[Any]]:
        mode = params.get("queue", SAMPLE)
        if mode not in (SAMPLE, "filter"):
            raise WbError(f"query queue={mode!r}: not one of {SAMPLE}, filter")
        f = None if mode == SAMPLE else queries.parse(params, session.data)
        return mode, f, queries.queue(session.data, f, reviewed)

    async def review(request: Request) -> Response:
        now = seen(request)
        params = dict(request.query_params)
        mode, f, items = review_queue(params, now.reviewed)
        at = params.get("at")
        current = next((it for it in items if f"{it.set}/{it.id}" == at), None) if at else None
        current = current or queries.next_unreviewed(items, now.reviewed)
        back_params = [("queue", mode), *(parse_qsl(f.query(page=1)) if f else [])]
        back = urlencode(back_params)
        context: dict[str, Any] = {
            **common(request, now),
            "queue": mode,
            "filters": f,
            "back": back,
            "back_params": back_params,
            "queue_total": len(items),
            "queue_done": sum(it.key in now.own for it in items),
            "item": None,
            "token": session.token,
            "choices": CHOICES,
            "previous": None,
        }
        if current is not None:
            order = session.store.order(now.reviewer, current.set, current.id)
            saved = now.own.get(current.key)
            position = items.index(current)
            context |= {
                "item": pages.blind_view(current, order),
                "position": position + 1,
                "chosen": pages.shown_choice(saved, order),
                "note": saved.note if saved else "",
                "previous": f"{items[position - 1].set}/{items[position - 1].id}" if position else None,
            }
        return _page("review.html.j2", **context)

    async def verdict(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            return _refused(415, "send the verdict form (application/x-www-form-urlencoded)")
        body = await request.body()
        if len(body) > MAX_FORM:
            return _refused(413, f"the form is over {MAX_FORM} bytes")
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if not _same(form.get("token", ""), session.token):
            return _refused(403, "missing or wrong session token: verdicts are taken from the review page only")
        try:
            session.refresh()
            reviewer = check_reviewer(form.get("reviewer", ""))
            key = (form.get("set", ""), form.get("id", ""))
            found = session.data.by_key.get(key)
            if found is None or not found.blind_ready:
                raise WbError(f"no item with set {key[0]!r} and id {key[1]!r} and both answers in this run")
            choice = form.get("choice", "")
            if choice not in CHOICES:
                raise WbError(f"verdict {choice!r} is not one of {', '.join(CHOICES)}")
            note = form.get("note", "").strip()
            if len(note) > MAX_NOTE:
                raise WbError(f"a note holds at most {MAX_NOTE} characters")
            back = dict(parse_qsl(form.get("back", "")))
            mode, f, _ = review_queue(back, set())  # checks the queue before anything is written
            session.store.record_blind(reviewer, found.set, found.id, choice, note)
        except WbError as e:
            return _refused(400, str(e))
        query = urlencode([("queue", mode), *(parse_qsl(f.query(page=1)) if f else [])])
        return RedirectResponse(f"/review?{query}", 303)

    async def stats(request: Request) -> Response:
        now = seen(request)
        unreviewed = session.store.unreviewed()  # CSV rows left empty
        present = set(session.data.by_key)
        summary = summarize(now.stored, session.data.judged, unreviewed, present) if now.stored or unreviewed else None
        return _page("stats.html.j2", **common(request, now), review=pages.stats_view(summary))

    async def no_icon(request: Request) -> Response:
        return Response(status_code=204)

    ROUTES = {"/": index, "/browse": browse, "/item": item, "/review": review, "/stats": stats}
    routes = [Route(path, guarded, methods=["GET"]) for path in ROUTES]
    routes += [Route("/verdict", verdict, methods=["POST"]), Route("/favicon.ico", no_icon, methods=["GET"])]

    async def not_found(request: Request, exc: Exception) -> Response:
        return _refused(404, f"no page {request.url.path}")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return _refused(405, f"{request.method} is not taken at {request.url.path}")

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})
