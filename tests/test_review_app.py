"""`wb review`'s web app through Starlette's TestClient: the session token, escaping of hostile answers, the browse
filters, the blind review and its verdicts on disk, the statistics, and the command itself (a real server)."""

from __future__ import annotations

import html as htmllib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import REPO
from review_fixtures import make_eval_run, write_predictions
from starlette.testclient import TestClient

from workbench.errors import WbError
from workbench.evaluate.verdicts import VerdictStore, review_summary, summarize
from workbench.review import app as review_app
from workbench.review import items, serve
from workbench.runfile.folder import EvalFolder

N_TASK = 30  # items 0..29 of the task set: i % 3 == 0 regressions (10), 1 gains (10), 2 ties (10); 6 probe items


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_eval_run(tmp_path, n_task=N_TASK)


def client(run: Path, predictions: Path | None = None, reviewer: str = "ann") -> tuple[TestClient, Any]:
    session = review_app.Session(items.load([run], predictions), reviewer)
    c = TestClient(review_app.create_app(session))
    assert c.get(f"/browse?token={session.token}").status_code == 200  # the token becomes the session cookie
    return c, session


def shown(html: str) -> list[tuple[str, str]]:
    """(set, id) of each item card on a browse page."""
    return re.findall(r"<b>([^<]+) #([^<]+)</b>", html)


def form_of(page: str) -> dict[str, str]:
    """The hidden fields of the review page's verdict form, as a browser posts them (entities decoded)."""
    found = re.findall(r'name="(token|reviewer|set|id|back)" value="([^"]*)"', page)
    return {k: htmllib.unescape(v) for k, v in found}


def unmarked(html: str) -> str:
    """A page without the word diff's spans (an answer is split into marked and unmarked runs)."""
    return re.sub(r"</?span[^>]*>", "", html)


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_every_request_needs_the_session_token_and_a_post_without_it_is_refused(run: Path) -> None:
    session = review_app.Session(items.load([run]), "ann")
    c = TestClient(review_app.create_app(session))
    assert c.get("/browse").status_code == 403
    assert c.get("/browse?token=wrong").status_code == 403
    assert c.get("/browse?token=令牌").status_code == 403  # any text is compared, not only ASCII
    assert c.get("/review").status_code == 403
    before = files_under(run.parent.parent)
    form = {"reviewer": "ann", "set": "task", "id": "0", "choice": "A", "note": "", "back": "queue=sample"}
    assert c.post("/verdict", data=form).status_code == 403
    assert c.post("/verdict", data=form | {"token": "x" * 43}).status_code == 403
    assert c.post("/verdict", data=form | {"token": "令牌"}).status_code == 403
    c.get(f"/browse?token={session.token}")  # a browser holding the cookie still needs the token in the form
    assert c.post("/verdict", data=form).status_code == 403
    assert files_under(run.parent.parent) == before  # nothing written
    first = c.get(f"/browse?token={session.token}&delta=regressions", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/browse?delta=regressions"  # token leaves the URL
    assert (
        "httponly" in first.headers["set-cookie"].lower() and "samesite=strict" in first.headers["set-cookie"].lower()
    )
    assert c.post("/verdict", data=form | {"token": session.token}, follow_redirects=False).status_code == 303
    assert VerdictStore(EvalFolder(run / "eval")).verdicts("ann")[0].id == "0"


def test_hostile_answers_and_notes_reach_the_page_as_text(run: Path) -> None:
    c, _session = client(run)
    VerdictStore(EvalFolder(run / "eval")).record_blind("ann", "task", "2", "A", '<img src=x onerror="alert(3)">')
    for page in ("/browse?per=500", "/item?set=task&id=2", "/stats", "/review?queue=filter&q=echo"):
        r = c.get(page)
        assert r.status_code == 200, page
        html = r.text
        assert "<img" not in html and 'onerror="alert' not in html, page
        assert html.count("<script") == 1, page  # only the app's own script, with this response's nonce
        nonce = re.search(r"<script nonce=\"([^\"]+)\">", html)
        assert nonce and f"'nonce-{nonce[1]}'" in r.headers["content-security-policy"]
        assert "unsafe-inline" not in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
    browse = c.get("/browse?per=500").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in unmarked(browse) and "&lt;img src=x onerror=" in unmarked(browse)
    assert "&lt;img src=x onerror=&#34;alert(3)&#34;&gt;" in c.get("/stats").text  # the note, escaped


def test_filters_sort_and_pages_select_the_items_a_user_asks_for(run: Path) -> None:
    c, _ = client(run)
    everything = shown(c.get("/browse?per=500").text)
    assert len(everything) == N_TASK + 6
    regressions = shown(c.get("/browse?set=task&delta=regressions&per=500").text)
    assert regressions == [("task", str(i)) for i in range(0, N_TASK, 3)]
    gains = shown(c.get("/browse?set=task&delta=gains&per=500").text)
    assert gains == [("task", str(i)) for i in range(1, N_TASK, 3)]
    assert len(shown(c.get("/browse?set=task&delta=ties&per=500").text)) == 10
    assert shown(c.get("/browse?flag=echo&per=500").text) == [("task", str(i)) for i in range(0, N_TASK, 7)]
    zh = shown(c.get("/browse?lang=zh&per=500").text)  # questions 0 and 3 of the five are Chinese, and the probes
    assert zh == [("task", str(i)) for i in range(N_TASK) if i % 5 in (0, 3)] + [
        ("general_zh", str(j)) for j in range(6)
    ]
    assert shown(c.get("/browse?q=长城&per=500").text) == [("task", str(i)) for i in range(N_TASK) if i % 5 == 3]
    worst_first = shown(c.get("/browse?set=task&sort=delta&per=500").text)
    assert worst_first[:10] == regressions and sorted(worst_first[10:20]) == sorted(
        shown(c.get("/browse?set=task&delta=ties&per=500").text)
    )
    page2 = c.get("/browse?set=task&per=10&page=2").text
    assert shown(page2) == [("task", str(i)) for i in range(10, 20)]
    assert "30 of 36 items, 11–20 shown" in page2 and "page 2 of 3" in page2
    for bad in ("delta=worse", "set=nope", "sort=up", "page=0", "per=100000", "flag=<b>"):
        r = c.get(f"/browse?{bad}")
        assert r.status_code == 400 and "<b>" not in r.text, bad


def test_reviewed_filter_and_counts_follow_the_verdicts(run: Path) -> None:
    c, _ = client(run)
    store = VerdictStore(EvalFolder(run / "eval"))
    for i in (3, 6):
        store.record_blind("ann", "task", str(i), "tie")
    store.record_blind("bob", "task", "9", "A")
    assert shown(c.get("/browse?reviewed=yes").text) == [("task", "3"), ("task", "6")]
    assert ("task", "3") not in shown(c.get("/browse?reviewed=no&per=500").text)
    html = c.get("/browse").text
    assert re.search(r'id="mine">2<', html) and re.search(r'id="anyone">3<', html)
    assert shown(c.get("/browse?reviewed=yes&reviewer=bob").text) == [("task", "9")]


def test_a_third_column_from_predictions_is_matched_by_set_and_id(run: Path, tmp_path: Path) -> None:
    c, session = client(run, write_predictions(tmp_path / "third.jsonl", N_TASK, skip=3))
    assert session.data.matches == [
        "third.jsonl: 27 of 36 items matched by set and id; 9 of lora's items and 1 of third.jsonl's have no partner"
    ]
    item0 = c.get("/item?set=task&id=0").text
    assert 'data-column="third.jsonl"><h4>third.jsonl</h4><span class="absent">(no answer)' in item0
    assert "third system 5 &lt;img" in unmarked(c.get("/item?set=task&id=5").text)
    other = make_eval_run(tmp_path / "second", name="full", n_task=N_TASK)
    both = items.load([run, other])
    assert both.columns == ["full"] and both.by_key[("task", "4")].extra == ["Bonjour"]


def test_blind_review_hides_names_and_scores_and_saves_each_verdict_resolved(run: Path) -> None:
    c, _session = client(run)
    store = VerdictStore(EvalFolder(run / "eval"))
    page = c.get("/review").text
    assert "0 of 30 reviewed" in page  # the stratified sample: all 30 task items (fewer than 50)
    section = page[page.index("<h1>") :]
    for hidden in ("tuned", "base", "rouge", "bleu", "Δ", "echo", "cut_off", "judge"):
        assert hidden not in section, hidden
    form = form_of(page)
    assert (form["set"], form["id"]) == ("task", "0")
    r = c.post("/verdict", data=form | {"choice": "B", "note": "B says 2+2=4, 对"})
    assert r.status_code == 200 and "1 of 30 reviewed" in r.text
    saved = store.verdicts("ann")
    assert [(v.id, v.verdict, v.shown_a, v.note) for v in saved] == [
        ("0", store.order("ann", "task", "0")[1], store.order("ann", "task", "0")[0], "B says 2+2=4, 对")
    ]
    again = c.get("/review").text  # a reload resumes at the first item without a verdict
    assert 'name="id" value="1"' in again and "1 of 30 reviewed" in again
    back = c.get("/review?at=task/0").text  # going back shows the verdict given
    assert re.search(r'value="B" class="chosen"', back) and "B says 2+2=4" in back
    for bad in ({"choice": "C"}, {"id": "999"}, {"reviewer": "../x"}, {"set": "general_zh", "id": "99"}):
        r = c.post("/verdict", data=form | {"choice": "A"} | bad)
        assert r.status_code == 400, bad
    assert [v.id for v in store.verdicts()] == ["0"]
    assert {p for p in files_under(run.parent.parent) if "reviews" in p} == {"runs/lora/eval/reviews/ann.json"}


def test_a_filter_can_be_reviewed_blind_and_the_queue_resumes(run: Path) -> None:
    c, _session = client(run)
    page = c.get("/review?queue=filter&delta=regressions&set=task").text
    assert "0 of 10 reviewed" in page
    for expected in ("0", "3", "6"):
        form = form_of(page)
        assert form["id"] == expected
        page = c.post("/verdict", data=form | {"choice": "tie"}).text
    assert "3 of 10 reviewed" in page and 'name="id" value="9"' in page
    assert "delta=regressions" in c.get("/review?queue=filter&delta=regressions&set=task").text
    assert 'id="empty-queue"' in c.get("/review?queue=filter&q=no-such-text").text
    assert c.get("/review?queue=everything").status_code == 400


def test_the_statistics_page_shows_the_preference_rate_a_kappa_for_two_reviewers_and_the_judge(run: Path) -> None:
    c, _ = client(run)
    assert "No verdict yet" in c.get("/stats").text
    store = VerdictStore(EvalFolder(run / "eval"))
    for i in range(12):
        store.record_blind("ann", "task", str(i), ["A", "B", "tie"][i % 3])
        store.record_blind("bob", "task", str(i), ["A", "B", "tie", "both_bad"][i % 4])
    expected = summarize(store.verdicts(), list(EvalFolder(run / "eval").scores()))
    assert expected.kappa[0].kappa is not None
    html = c.get("/stats").text
    assert re.search(r'id="stat-reviewed">12<', html)
    assert f"{expected.kappa[0].kappa:.3f}" in html and "ann vs bob" in html
    judged = next(a for a in expected.judge if a.raters == ["judge", "ann"])
    assert judged.n == 6 and re.search(rf"judge vs ann</td><td class=\"num\">{judged.n}<", html)
    assert "judge: tuned" in c.get("/browse?set=task&delta=gains").text  # shown when browsing, never when blind


def test_a_non_loopback_host_warns_and_a_port_in_use_is_one_line() -> None:
    assert serve.check_host(None) == ("127.0.0.1", None)
    assert serve.check_host("localhost") == ("localhost", None)
    assert serve.check_host("::1") == ("::1", None)
    host, warning = serve.check_host("0.0.0.0")
    assert host == "0.0.0.0" and warning and "not only this machine" in warning
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(WbError, match=r"cannot listen on 127.0.0.1:\d+"):
            serve.bind("127.0.0.1", taken.getsockname()[1])


def test_wb_review_serves_on_loopback_prints_the_address_and_no_server_log(run: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "review", str(run), "--port", "0", "--reviewer", "ann"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        printed = [proc.stdout.readline() for _ in range(4)]
        url = re.search(r"open (http://127\.0\.0\.1:\d+/\?token=\S+)", "".join(printed))
        assert url, printed
        assert printed[0].startswith("listening on 127.0.0.1 only")
        with httpx.Client(follow_redirects=True) as http:
            assert http.get(url[1].split("?")[0] + "browse").status_code == 403
            assert "<b>task #0</b>" in http.get(url[1]).text
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip().endswith("stopped") and err == ""
    assert "uvicorn" not in (out + err).lower() and "INFO" not in out + err
    bad = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "review", str(run), "--reviewer", "../etc"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and "reviewer '../etc'" in bad.stderr and "Traceback" not in bad.stderr


def test_wb_review_with_a_non_loopback_host_warns_and_columns_say_what_matched(
    run: Path, tmp_path: Path, wb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[str] = []
    monkeypatch.setattr(serve.ReviewServer, "run", lambda self: (served.append(self.url), self.sock.close()))
    predictions = write_predictions(tmp_path / "third.jsonl", N_TASK)
    result = wb("review", run, "--predictions", predictions, "--host", "0.0.0.0", "--reviewer", "ann")
    assert result.exit_code == 0, result.output
    assert "warning: serving on 0.0.0.0, not only this machine" in result.stderr
    assert "listening on" not in result.stdout
    assert "third.jsonl: 27 of 36 items matched by set and id" in result.stdout
    assert re.search(r"open http://0\.0\.0\.0:\d+/\?token=[\w-]{43}", result.stdout) and len(served) == 1
    bad = wb("review", run, "--predictions", tmp_path / "missing.jsonl")
    assert bad.exit_code == 2 and "missing.jsonl" in bad.stderr


# --- conversations: earlier turns and the system prompt ----------------------------------------------------------

SYSTEM = "你是一个助手。Answer briefly; never run <script>alert('sys')</script>"
TURNS = [
    ["我们用中文和英文聊天吧。", "好的，we can mix both languages."],
    ["What did I ask first? <img src=x onerror=\"alert('turn')\">", "你先问我们能不能用中文和英文聊天。"],
]


def with_conversations(run: Path) -> Path:
    """Item 0 gets the short conversation above (shown open), item 1 a long one (collapsed); the rest stay one-turn
    rows without the fields, as older scores.jsonl files are."""
    path = EvalFolder(run / "eval").scores_path
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    rows[0] |= {"system": SYSTEM, "history": TURNS}
    rows[1] |= {"history": [[f"第{i}轮 question {i} " * 30, f"answer {i} 回答 " * 30] for i in range(5)]}
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return run


def test_earlier_turns_and_the_system_prompt_show_as_text_collapsed_when_long(run: Path) -> None:
    c, session = client(with_conversations(run))
    assert session.data.by_key[("task", "0")].history == [tuple(t) for t in TURNS]
    assert session.data.by_key[("task", "2")].history == [] and session.data.by_key[("task", "2")].system == ""
    item0 = c.get("/item?set=task&id=0").text
    assert '<details class="conversation" open><summary>conversation before the instruction: 2 earlier turns' in item0
    assert "我们用中文和英文聊天吧。" in item0 and "好的，we can mix both languages." in item0
    assert "What did I ask first? &lt;img src=x onerror=&#34;alert(&#39;turn&#39;)&#34;&gt;" in item0
    assert "你是一个助手。Answer briefly; never run &lt;script&gt;" in item0 and "<img" not in item0
    assert item0.count("<script") == 1  # the app's own
    assert item0.index("好的，we can mix") < item0.index("<h4>instruction</h4>")  # the turns come first
    item1 = c.get("/item?set=task&id=1").text  # 5 long turns: collapsed, the summary says how much
    assert re.search(r'<details class="conversation"><summary>[^<]*5 earlier turns \([\d,]+ characters\)', item1)
    assert "<details" not in c.get("/item?set=task&id=2").text  # a one-turn item has none
    assert shown(c.get("/browse?q=what did i ask first").text) == [("task", "0")]  # the turns are searched
    browse = c.get("/browse?set=task&per=10").text
    assert browse.count('<details class="conversation"') == 2
    blind = c.get("/review?queue=filter&set=task&q=what did i ask first").text  # the blind view shows them too
    assert 'name="id" value="0"' in blind and "我们用中文和英文聊天吧。" in blind and "alert(&#39;turn&#39;)" in blind
    assert "<img" not in blind and blind.count("<script") == 1


# --- wb eval rewriting the run while wb review serves it ---------------------------------------------------------


def test_items_are_read_again_when_wb_eval_rewrites_the_run_and_verdicts_on_gone_items_count_apart(
    run: Path, tmp_path: Path
) -> None:
    c, _session = client(run)
    folder = EvalFolder(run / "eval")
    store = VerdictStore(folder)
    for i in (3, 25, 28):
        store.record_blind("ann", "task", str(i), "tie")
    store.record_blind("bob", "task", "29", "A")
    first = c.get("/browse").text
    assert "36 items" in first and re.search(r'id="mine">3<', first) and 'id="reloaded"' not in first

    make_eval_run(tmp_path, n_task=20)  # `wb eval` again, on 20 task items: 25, 28 and 29 are gone
    page = c.get("/browse?set=task&per=500").text
    assert shown(page) == [("task", str(i)) for i in range(20)] and "20 of 26 items" in page
    notice = re.search(r'<p class="notice small" id="reloaded">([^<]*)</p>', page)
    assert notice and "`wb eval` rewrote the evaluation; the items were read again (26 now)" in htmllib.unescape(
        notice[1]
    )
    assert re.search(r'id="mine">1<', page) and re.search(r'id="anyone">1<', page)  # only item 3 is still there
    assert re.search(r'id="stale">3 verdicts on items no longer in this run', page)
    assert c.get("/item?set=task&id=25").status_code == 400
    stats = c.get("/stats").text
    assert re.search(r'id="stat-reviewed">1<', stats) and re.search(r'id="stat-stale">3<', stats)
    # The verdicts stay in the reviewers' files; the run summary counts them apart too.
    assert sorted(v.id for v in store.verdicts()) == ["25", "28", "29", "3"]
    summary = review_summary(folder)
    assert summary is not None and summary.reviewed == 1 and summary.stale == 3
    assert summary.verdicts["tie"] == 1 and summary.verdicts["tuned"] + summary.verdicts["base"] == 0
    # A verdict on a gone item is refused; on a present one it is taken.
    form = form_of(c.get("/review?queue=filter&set=task").text)
    assert c.post("/verdict", data=form | {"id": "28", "choice": "A"}).status_code == 400
    assert c.post("/verdict", data=form | {"choice": "A"}).status_code == 200

    # Caught half written: the items read before stay, the page says so; once whole again, they are read again.
    folder.scores_path.write_text('{"set": "task", "id": 0, "tuned": {"prediction": "x"}}\n{"set": ', "utf-8")
    broken = c.get("/browse?set=task&per=500").text
    assert len(shown(broken)) == 20 and "the evaluation changed on disk but cannot be read" in htmllib.unescape(broken)
    make_eval_run(tmp_path, n_task=12)
    assert len(shown(c.get("/browse?set=task&per=500").text)) == 12


def test_an_old_scores_file_without_conversation_fields_loads_as_before(run: Path) -> None:
    rows = [json.loads(line) for line in EvalFolder(run / "eval").scores_path.read_text("utf-8").splitlines()]
    assert not any("history" in r or "system" in r for r in rows)  # the fixture writes rows as older wb did
    data = items.load([run])
    assert len(data.items) == N_TASK + 6 and all(it.history == [] and it.system == "" for it in data.items)
    assert "<details" not in client(run)[0].get("/browse?per=500").text
