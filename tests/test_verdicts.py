"""Human verdicts (evaluate/verdicts.py): the per-reviewer store, the blind A/B order, the statistics, and their way
into the run summary, `wb gate` and `wb report`. No model: the eval folder comes from `wb eval --predictions`."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_jsonl
from workbench.errors import WbError
from workbench.evaluate import verdicts
from workbench.evaluate.verdicts import Verdict, VerdictStore, blind_order, check_reviewer, resolve, summarize
from workbench.report.summary import load_run
from workbench.runfile.folder import EvalFolder

QUESTIONS = [
    ("What is the capital of France?", "Paris", "Paris is the capital of France.", "Lyon"),
    ("中国的首都是哪座城市？", "北京", "北京是中国的首都。", "上海"),
    ("2+2=", "4", "4", "five"),
    ("水的化学式是什么？", "H2O", "H2O", "水"),
    ("Name a primary colour.", "red", "Red", "Blue and green"),
    ("太阳从哪边升起？", "东方", "太阳从东方升起。", "西边"),
]


@pytest.fixture
def ev(tmp_path: Path, wb: Any) -> Path:
    rows = [
        {"id": i, "instruction": q, "reference": ref, "prediction": tuned, "base_prediction": base}
        for i, (q, ref, tuned, base) in enumerate(QUESTIONS, start=1)
    ]
    preds = write_jsonl(tmp_path / "preds.jsonl", rows)
    out = tmp_path / "ev"
    result = wb("eval", "--predictions", preds, "-o", out)
    assert result.exit_code == 0, result.output
    return out


def _v(reviewer: str, item: int, verdict: str, note: str = "") -> Verdict:
    return Verdict("task", str(item), verdict, reviewer, "2026-01-01T00:00:00+00:00", note=note)


# --- the store ---------------------------------------------------------------------------------------------------


def test_the_blind_order_is_reproducible_by_seed_and_recorded_with_the_verdict(ev: Path) -> None:
    store = VerdictStore(EvalFolder(ev), run="r1")
    assert store.order("ann", "task", "1") == blind_order("r1", "ann", "task", "1") == store.order("ann", "task", "1")
    orders = {blind_order("r1", "ann", "task", str(i))[0] for i in range(40)}
    assert orders == {"tuned", "base"}  # drawn per item, not one order for all
    assert {blind_order("r1", name, "task", "1") for name in ("ann", "bo", "cy", "di", "ed", "fay")} != {
        blind_order("r1", "ann", "task", "1")
    }  # and per reviewer
    shown_a = store.order("ann", "task", "2")[0]
    saved = store.record_blind("ann", "task", "2", "A", note="A is right")
    assert saved.verdict == shown_a and saved.shown_a == shown_a  # stored as the system, never as a letter
    written = json.loads(EvalFolder(ev).reviewer_path("ann").read_text(encoding="utf-8"))
    assert written["verdicts"] == [
        {"set": "task", "id": "2", "verdict": shown_a, "time": saved.time, "shown_a": shown_a, "note": "A is right"}
    ]
    assert resolve("B", "tuned") == "base" and resolve("B", "base") == "tuned" and resolve("tie", "base") == "tie"
    assert resolve("both_bad", "tuned") == "both_bad"
    with pytest.raises(WbError, match="is not one of A, B, tie, both_bad"):
        resolve("C", "tuned")


def test_a_new_verdict_on_an_item_replaces_the_old_one_and_the_reviewer_files_are_merged(ev: Path) -> None:
    store = VerdictStore(EvalFolder(ev))
    store.save("ann", [_v("ann", 1, "tuned"), _v("ann", 2, "base")])
    store.save("ann", [_v("ann", 2, "tie")])
    store.save("博", [_v("博", 2, "tuned"), _v("博", 3, "both_bad")])  # a Chinese reviewer name is a name
    assert sorted(EvalFolder(ev).reviewer_files()) == ["ann", "博"]
    got = {(v.reviewer, v.id): v.verdict for v in store.verdicts()}
    assert got == {("ann", "1"): "tuned", ("ann", "2"): "tie", ("博", "2"): "tuned", ("博", "3"): "both_bad"}
    summary = summarize(store.verdicts())
    assert summary.reviewed == 3  # items, whoever judged them
    assert summary.verdicts == {"tuned": 2, "base": 0, "tie": 1, "both_bad": 1}
    assert summary.reviewers["ann"].reviewed == 2 and summary.reviewers["博"].reviewed == 2


@pytest.mark.parametrize("name", ["../evil", "a/b", "a\\b", "..", ".hidden", "", "x" * 65, "a b"])
def test_a_reviewer_name_that_could_leave_the_folder_is_refused(name: str) -> None:
    with pytest.raises(WbError, match="no path separators"):
        check_reviewer(name)


def test_a_path_in_the_reviewer_column_ends_in_one_line_and_writes_nothing(ev: Path, tmp_path: Path, wb: Any) -> None:
    filled = tmp_path / "filled.csv"
    with filled.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["set", "id", "bucket", "verdict", "reviewer"])
        w.writerow(["task", 1, "tie", "tuned", "../../evil"])
    result = wb("eval", "-o", ev, "--import-review", filled)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "'../../evil'" in result.stderr
    assert not EvalFolder(ev).review_path.exists() and not (tmp_path / "evil.json").exists()


def test_a_failed_save_leaves_the_previous_file_whole(ev: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = VerdictStore(EvalFolder(ev))
    store.save("ann", [_v("ann", 1, "tuned")])
    path = EvalFolder(ev).reviewer_path("ann")
    before = path.read_bytes()

    def broken(obj: Any) -> bytes:
        raise OSError("disk full")

    monkeypatch.setattr("workbench.io.jsontext.dumps_json", broken)
    with pytest.raises(OSError, match="disk full"):
        store.save("ann", [_v("ann", 2, "base")])
    assert path.read_bytes() == before
    assert [p.name for p in EvalFolder(ev).review_path.iterdir()] == ["ann.json"]  # no partial or staged file


# --- statistics --------------------------------------------------------------------------------------------------

ANN = ["tuned", "tuned", "tuned", "tuned", "base", "base", "base", "tie", "tie", "both_bad"]
BO = ["tuned", "tuned", "tuned", "base", "base", "base", "tie", "tie", "tie", "both_bad"]


def test_two_reviewers_give_the_hand_computed_kappa() -> None:
    # observed: items 1-3, 5-6, 8-9, 10 agree: 8/10
    # marginals ann T4 B3 tie2 bb1, bo T3 B3 tie3 bb1: expected (12 + 9 + 6 + 1) / 100 = 0.28
    # kappa (0.8 - 0.28) / 0.72 = 13/18
    given = [_v("ann", i, v) for i, v in enumerate(ANN)] + [_v("bo", i, v) for i, v in enumerate(BO)]
    (pair,) = summarize(given).kappa
    assert pair.raters == ["ann", "bo"] and pair.n == 10 and pair.note is None
    assert pair.kappa == pytest.approx(13 / 18, abs=1e-6) and pair.agreement == pytest.approx(0.8)


def test_kappa_is_withheld_with_a_note_when_it_carries_no_information() -> None:
    constant = [_v("ann", i, v) for i, v in enumerate(ANN)] + [_v("bo", i, "tuned") for i in range(10)]
    (pair,) = summarize(constant).kappa
    assert pair.kappa is None and pair.n == 10 and "bo gave one verdict to every shared item" in (pair.note or "")
    assert "carries no information" in (pair.note or "")
    few = [_v("ann", i, v) for i, v in enumerate(ANN[:3])] + [_v("bo", i, v) for i, v in enumerate(BO[:3])]
    (pair,) = summarize(few).kappa
    assert pair.kappa is None and pair.n == 3 and "only 3 shared items" in (pair.note or "")


def test_the_preference_rate_counts_a_tie_half_and_leaves_both_bad_out() -> None:
    summary = summarize([_v("ann", i, v) for i, v in enumerate(ANN)])
    rate = summary.tuned_preferred
    assert rate.n == 9 and rate.value == pytest.approx((4 + 2 * 0.5) / 9, abs=1e-6)
    assert rate.lower is not None and rate.upper is not None and rate.lower <= rate.value <= rate.upper
    assert summary.both_bad == pytest.approx(0.1)
    # Pooled, an item two reviewers judged counts once, with the mean of their scores.
    pooled = summarize([_v("ann", 1, "tuned"), _v("bo", 1, "base"), _v("ann", 2, "tuned")]).tuned_preferred
    assert pooled.n == 2 and pooled.value == pytest.approx(0.75)
    assert summarize([_v("ann", i, v) for i, v in enumerate(ANN)]).reviewers["ann"].tuned_preferred == rate


def test_agreement_with_the_judge_reads_both_bad_as_a_tie() -> None:
    rows = [{"set": "task", "id": i, "judge": {"verdict": v}} for i, v in enumerate(ANN)]
    rows[9]["judge"]["verdict"] = "tie"
    summary = summarize([_v("ann", i, v) for i, v in enumerate(ANN)], rows)
    (judged,) = summary.judge
    assert judged.raters == ["judge", "ann"] and judged.n == 10 and judged.kappa == 1.0
    assert verdicts.judge_agreement(rows, [{"id": 9, "verdict": "both_bad"}])["agreement"] == 1.0


# --- through the run summary, the gate and the report ----------------------------------------------------------


def _gate(tmp_path: Path, wb: Any, ev: Path, checks: list[str]) -> Any:
    path = tmp_path / "checks.yaml"
    path.write_text("checks:\n" + "".join(f'  - "{c}"\n' for c in checks), encoding="utf-8")
    return wb("gate", ev, "-t", path)


def test_the_gate_checks_review_paths_as_the_verdicts_say(ev: Path, tmp_path: Path, wb: Any) -> None:
    checks = ["review.reviewed >= 3", "review.tuned_preferred.lower >= 0.4"]
    assert _gate(tmp_path, wb, ev, checks).exit_code == 1  # no review yet: not passed
    store = VerdictStore(EvalFolder(ev))
    store.save("ann", [_v("ann", 1, "base"), _v("ann", 2, "base")])
    assert _gate(tmp_path, wb, ev, checks).exit_code == 1
    for i in range(1, 7):  # blind, by letter: always pick the tuned answer
        store.record_blind("bo", "task", str(i), "A" if store.order("bo", "task", str(i))[0] == "tuned" else "B")
    store.save("ann", [_v("ann", i, "tuned") for i in range(1, 7)])
    passed = _gate(tmp_path, wb, ev, checks)
    assert passed.exit_code == 0, passed.output
    review = load_run(ev).summary["review"]
    assert review["reviewed"] == 6 and review["tuned_preferred"]["value"] == 1.0
    (pair,) = review["kappa"]
    assert pair["raters"] == ["ann", "bo"] and pair.get("kappa") is None and "only 6 shared items" in pair["note"]


def test_the_report_shows_the_review_and_a_hostile_note_as_text(ev: Path, tmp_path: Path, wb: Any) -> None:
    store = VerdictStore(EvalFolder(ev))
    store.save(
        "ann", [_v("ann", 1, "tuned", note='<script>alert(1)</script><img src=x onerror="x()">'), _v("ann", 2, "tie")]
    )
    html_path = tmp_path / "r.html"
    result = wb("report", ev, "-o", html_path)
    assert result.exit_code == 0, result.output
    page = html_path.read_text(encoding="utf-8")
    assert 'data-part="review"' in page and "Human review of 2 items" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert "<img src=x" not in page


def test_the_csv_import_writes_through_the_store_and_gives_the_same_numbers(ev: Path, tmp_path: Path, wb: Any) -> None:
    sample = list(csv.DictReader(EvalFolder(ev).review_sample_path.open(encoding="utf-8")))
    assert len(sample) == len(QUESTIONS)
    chosen = ["tuned", "tuned", "base", "tie", "both_bad", ""]
    for row, verdict in zip(sample, chosen, strict=True):
        row["verdict"] = verdict
    sample[0]["notes"] = "短而对"
    filled = tmp_path / "filled.csv"
    with filled.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(sample[0]))
        writer.writeheader()
        writer.writerows(sample)
    result = wb("eval", "-o", ev, "--import-review", filled)
    assert result.exit_code == 0, result.output
    assert "review: 5 verdicts (1 rows left empty)" in result.stdout
    review = load_run(ev).summary["review"]
    assert list(review["reviewers"]) == ["csv"] and review["unreviewed"] == 1 and review["reviewed"] == 5
    by_hand = summarize([_v("csv", int(r["id"]), v) for r, v in zip(sample, chosen, strict=True) if v]).model_dump(
        mode="json"
    )
    assert review["tuned_preferred"] == by_hand["tuned_preferred"] and review["verdicts"] == by_hand["verdicts"]
    assert review["notes"][0]["note"] == "短而对" and review["notes"][0]["reviewer"] == "csv"
