"""`wb review` in a real browser: Debian's Chromium driven by playwright against the real server (uvicorn in a
thread on a free port), on a run with Chinese and English items and hostile answers. Skipped with the reason where
there is no chromium binary or no playwright (as the report's browser tests)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from report_fixtures import headless_chromium
from review_fixtures import ONERROR, SCRIPT, make_eval_run

from workbench.evaluate.verdicts import VerdictStore, summarize
from workbench.review import serve
from workbench.runfile.folder import EvalFolder

REGRESSIONS = 12  # 10 task items (i % 3 == 0 of 30) and 2 probe items


@contextlib.contextmanager
def running(run: Path, reviewer: str) -> Iterator[serve.ReviewServer]:
    server = serve.prepare([run], None, reviewer)
    thread, uvicorn_server = server.start_thread()
    try:
        yield server
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=30)


def judge(page: Any, store: VerdictStore, reviewer: str, want: str, keys: tuple[str, str] = ("1", "2")) -> str:
    """Press the key that gives the current item the verdict `want` (tuned / base / tie / both_bad) and wait for the
    next item; returns the item's id."""
    item_id = page.locator('input[name="id"]').get_attribute("value")
    set_name = page.locator('input[name="set"]').get_attribute("value")
    shown_a = store.order(reviewer, set_name, item_id)[0]
    key = {"tie": "t", "both_bad": "x"}.get(want) or (keys[0] if want == shown_a else keys[1])
    with page.expect_navigation():
        page.keyboard.press(key)
    return f"{set_name}/{item_id}"


def test_review_in_chromium_filter_judge_blind_by_keyboard_reload_and_gate(tmp_path: Path, wb: Any) -> None:
    run = make_eval_run(tmp_path, n_task=30)
    store = VerdictStore(EvalFolder(run / "eval"))
    with headless_chromium() as browser, running(run, "ann") as server:
        origin = server.url.split("/?")[0]
        page = browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(server.url)
        assert page.url == f"{origin}/browse"  # the token became a cookie and left the address

        listed = page.locator("#items").inner_text()
        assert SCRIPT in listed and ONERROR in listed and "长城是中国古代" in listed  # hostile markup shown as text
        assert page.locator("#items img").count() == 0 and page.locator("#items script").count() == 0

        page.select_option("#delta", "regressions")  # filter to regressions
        with page.expect_navigation():
            page.click("#apply")
        assert page.locator("[data-item]").count() == REGRESSIONS
        page.keyboard.press("j")
        page.keyboard.press("j")
        assert page.locator(".item.current").get_attribute("data-item") == "1"  # j/k move between items

        with page.expect_navigation():
            page.keyboard.press("r")  # review these blind
        assert f"0 of {REGRESSIONS} reviewed" in page.locator("#progress").inner_text()
        blind = page.locator("main").inner_text()
        assert "tuned" not in blind and "rouge" not in blind  # names and scores hidden
        judged = [judge(page, store, "ann", "tuned", keys) for keys in (("1", "2"), ("a", "b"), ("1", "2"))]
        assert judged == ["task/0", "task/3", "task/6"]

        page.reload()  # the verdicts persist, the queue resumes at the first unreviewed item, the counts follow
        assert f"3 of {REGRESSIONS} reviewed" in page.locator("#progress").inner_text()
        assert page.locator('input[name="id"]').get_attribute("value") == "9"
        assert page.locator("#mine").inner_text() == "3"
        assert [(v.id, v.verdict) for v in store.verdicts("ann")] == [("0", "tuned"), ("3", "tuned"), ("6", "tuned")]

        page.keyboard.press("n")  # a note by keyboard: n, type, Esc, then the verdict key
        page.keyboard.type("B 更好 <b>x</b>")
        page.keyboard.press("Escape")
        judge(page, store, "ann", "tie")
        assert store.verdicts("ann")[-1].note == "B 更好 <b>x</b>"
        for k in range(1, REGRESSIONS - 3):  # ann finishes the queue: tuned, with a tie every third item
            judge(page, store, "ann", "tie" if k % 3 == 0 else "tuned")
        assert page.locator("#done").count() == 1

        page.fill("#switch-reviewer", "bob")  # a second reviewer on the same queue
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.locator("#reviewer").inner_text() == "bob"
        with page.expect_navigation():
            page.click('button[value="tie"]')  # a verdict by click
        for k in range(1, REGRESSIONS):
            judge(page, store, "bob", "tie" if k % 3 == 0 else "base")

        refused = page.request.post(
            f"{origin}/verdict", form={"reviewer": "eve", "set": "task", "id": "0", "choice": "A"}
        )
        assert refused.status == 403  # the browser's cookie is not enough: the form must carry the token

        with page.expect_navigation():
            page.keyboard.press("s")
        expected = summarize(store.verdicts())
        kappa = expected.kappa[0]
        assert kappa.n == REGRESSIONS and kappa.kappa is not None
        row = page.locator("#agreement tr", has_text="ann vs bob").inner_text()
        assert f"{kappa.kappa:.3f}" in row
        assert re.search(rf"\b{REGRESSIONS}\b", page.locator("#stat-reviewed").inner_text())
        assert "B 更好 <b>x</b>" in page.locator("#notes").inner_text()  # the note, as text

        assert dialogs == []  # no payload ran
        assert all(url.startswith(origin) for url in requests), [u for u in requests if not u.startswith(origin)]

    # the gate reads the same verdicts: ann prefers tuned ((9 + 3/2) / 12), bob does not ((4 * 1/2) / 12)
    gate = tmp_path / "gate.yaml"
    gate.write_text(
        yaml.safe_dump({"checks": ["review.reviewed >= 12", "review.reviewers.ann.tuned_preferred.value >= 0.8"]})
    )
    assert wb("gate", run, "-t", gate).exit_code == 0
    gate.write_text(yaml.safe_dump({"checks": ["review.reviewers.bob.tuned_preferred.value >= 0.5"]}))
    failed = wb("gate", run, "-t", gate)
    assert failed.exit_code == 1 and "0.1667" in failed.stdout
