"""How fast `wb review`'s browse list is with 10,000 items, measured in the browser the tests use (Debian's
Chromium through playwright), and the screenshots of docs/images/ (`--screenshots`).

The run is the tests' fixture (tests/review_fixtures.py) at 10,000 task items: English and Chinese questions,
hostile answers, degenerate flags, judge verdicts, and two reviewers' verdicts on the first `--verdicts` items. The
real server (uvicorn, in a thread) serves it; each view is opened `--repeat` times and the median of the browser's
own navigation timing is reported: `server` (request start to response end: filter, sort, page and render on the
server) and `load` (navigation start to the load event: the page shown). Not asserted anywhere: a figure for
docs/review.md. Writes bench/out/review_browse.json.

    .venv/bin/python bench/review_browse.py                 # 10,000 items, 5 repeats
    .venv/bin/python bench/review_browse.py --screenshots   # also docs/images/review-browse.png, review-blind.png
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from benchlib import git_state, table, versions  # noqa: E402
from report_fixtures import CHROMIUM_ARGS, chromium  # noqa: E402
from review_fixtures import make_eval_run, write_predictions  # noqa: E402

from workbench.evaluate.verdicts import VerdictStore  # noqa: E402
from workbench.review import serve  # noqa: E402
from workbench.runfile.folder import EvalFolder  # noqa: E402

VIEWS = [
    ("first page (50 items)", "/browse"),
    ("regressions, worst first", "/browse?delta=regressions&sort=delta"),
    ("search 长城", "/browse?q=%E9%95%BF%E5%9F%8E"),
    ("last page", "/browse?page=200"),
    ("500 items on one page", "/browse?per=500"),
    ("blind review, next item", "/review"),
    ("statistics", "/stats"),
]
TIMING = "JSON.stringify(performance.getEntriesByType('navigation')[0])"


def measure(page: Any, origin: str, repeat: int) -> list[dict[str, Any]]:
    out = []
    for label, path in VIEWS:
        server, load = [], []
        for _ in range(repeat):
            page.goto(origin + path)
            nav = json.loads(page.evaluate(TIMING))
            server.append(nav["responseEnd"] - nav["requestStart"])
            load.append(nav["loadEventEnd"] - nav["startTime"])
        server_ms, load_ms = statistics.median(server), statistics.median(load)
        out.append({"view": label, "path": path, "server_ms": server_ms, "load_ms": load_ms})
    return out


def screenshots(browser: Any, work: Path) -> None:
    """The two views of docs/review.md, on a small run with a third column and a few verdicts."""
    run = make_eval_run(work / "shots", n_task=30)
    predictions = write_predictions(work / "shots" / "other-model.jsonl", 30)
    store = VerdictStore(EvalFolder(run / "eval"))
    for i, choice in ((0, "A"), (3, "tie"), (6, "B")):
        store.record_blind("ann", "task", str(i), choice, "shorter and right" if i == 3 else "")
    server = serve.prepare([run], predictions, "ann")
    thread, uv = server.start_thread()
    try:
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.goto(server.url)
        page.goto(server.url.split("/?")[0] + "/browse?delta=regressions&sort=delta&per=10")
        images = ROOT / "docs" / "images"
        images.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(images / "review-browse.png"))
        page.goto(server.url.split("/?")[0] + "/review?queue=filter&delta=regressions")
        page.screenshot(path=str(images / "review-blind.png"))
        print(f"wrote {images / 'review-browse.png'}, {images / 'review-blind.png'}")
    finally:
        uv.should_exit = True
        thread.join(timeout=30)


def cpu() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--verdicts", type=int, default=300, help="items both reviewers have judged already")
    parser.add_argument("--screenshots", action="store_true")
    args = parser.parse_args()
    binary = chromium()
    if binary is None:
        sys.exit("no chromium binary: install Debian's chromium (the Makefile's chromium target)")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        work = Path(tmp)
        run = make_eval_run(work, n_task=args.items, n_probe=0)
        store = VerdictStore(EvalFolder(run / "eval"))
        for i in range(min(args.verdicts, args.items)):  # two reviewers part-way through
            store.record_blind("bench", "task", str(i), ("A", "B", "tie")[i % 3])
            store.record_blind("other", "task", str(i), ("A", "B", "both_bad", "tie")[i % 4])
        started = time.perf_counter()
        server = serve.prepare([run], None, "bench")
        load_s = time.perf_counter() - started
        thread, uv = server.start_thread()
        browser = p.chromium.launch(executable_path=binary, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server.url)
            rows = measure(page, server.url.split("/?")[0], args.repeat)
            if args.screenshots:
                screenshots(browser, work)
        finally:
            browser.close()
            uv.should_exit = True
            thread.join(timeout=30)
    print(f"{args.verdicts:,} items with verdicts from 2 reviewers")
    print(f"{args.items:,} items loaded (scores.jsonl read and checked, items built) in {load_s:.2f} s")
    cells = [[r["view"], f"{r['server_ms']:.0f}", f"{r['load_ms']:.0f}"] for r in rows]
    print(table(["view", "server ms", "page loaded ms"], cells))
    result = {
        "items": args.items,
        "repeat": args.repeat,
        "verdicts": args.verdicts,
        "load_seconds": round(load_s, 3),
        "views": rows,
        "cpu": cpu(),
        "load_average": os.getloadavg(),
        "git": git_state(),
        "versions": versions(["starlette", "uvicorn", "playwright"]),
    }
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "review_browse.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
