"""Human verdicts on base-vs-tuned answers: the store (one file per reviewer), the blind A/B order, the statistics.

A verdict judges one item (set, id): which answer is better. In a blind review the two answers are shown as "A" and
"B" in an order drawn per item from a seed of run, reviewer and item (`blind_order`), so the same reviewer sees the
same order when coming back, and another reviewer a different one; the order is recorded with the verdict, and the
verdict is stored resolved to the system (`tuned`, `base`, `tie`, `both_bad`), never as a letter. The CSV route
(`wb eval --import-review`, `review.py`) writes through the same store, as reviewer "csv" unless its rows name one.

Each reviewer's verdicts live in one file of the eval folder (`EvalFolder.reviewer_path`), replaced atomically on
every save, so a crash leaves the previous file whole; reading merges every reviewer's file.

Statistics (`summarize`), all from the merged verdicts:
- **tuned preferred**: per item tuned = 1, base = 0, tie = 1/2 (ties counted half); `both_bad` items are left out of
  the rate and reported apart as their share of all verdicts. Pooled, an item several reviewers judged counts once,
  with the mean of their scores, so the 95% percentile-bootstrap interval (`compare.bootstrap_mean_ci`) resamples
  items, not verdicts.
- **Cohen's kappa** between each pair of reviewers on the items both judged, over the four verdicts. It is None,
  with a note saying why, when fewer than `MIN_KAPPA_ITEMS` items are shared or one reviewer gave the same verdict to
  every shared item: kappa then carries no information, and a number would mislead.
- **agreement with the local judge** (`--judge` verdicts in scores.jsonl), per reviewer and for all verdicts, with
  `both_bad` read as a tie (the judge has no "both bad").
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from workbench.errors import WbError
from workbench.evaluate import compare
from workbench.runfile.folder import EvalFolder
from workbench.runfile.summary import (
    PreferenceRate,
    ReviewAgreement,
    ReviewerSummary,
    ReviewNote,
    ReviewSummary,
)

VERDICTS = ("tuned", "base", "tie", "both_bad")
CHOICES = ("A", "B", "tie", "both_bad")
"""What a blind reviewer picks: answer A better, answer B better, a tie, or both bad."""
SYSTEMS = ("tuned", "base")
CSV_REVIEWER = "csv"
MIN_KAPPA_ITEMS = 10
SCORE = {"tuned": 1.0, "base": 0.0, "tie": 0.5}
JUDGE_CLASSES: dict[str, str] = {"tuned": "tuned", "base": "base", "tie": "tie", "both_bad": "tie"}
"""A reviewer's verdict as one of the judge's classes (the judge has no "both bad")."""
BOOTSTRAP_SEED = 0
_SAVING = threading.Lock()  # a save reads the reviewer's file, then replaces it: one at a time in this process

_REVIEWER = re.compile(r"[\w][\w.@+-]{0,63}")

System = Literal["tuned", "base"]


def check_reviewer(name: str) -> str:
    """`name` if it can name a reviewer's file: letters, digits, `_.@+-`, not starting with a dot, at most 64
    characters. A path separator, `..` or an empty name is refused with a WbError."""
    if not _REVIEWER.fullmatch(name) or ".." in name:
        raise WbError(
            f"reviewer {name!r}: use letters, digits and _.@+- only (no path separators, no '..'), "
            "at most 64 characters"
        )
    return name


def blind_order(run: str, reviewer: str, set_name: str, item_id: str) -> tuple[System, System]:
    """The systems shown as (A, B) for this item: drawn from a hash of run, reviewer and item, so it is the same
    every time that reviewer opens that item, and independent across items and reviewers."""
    key = "\x1f".join((run, reviewer, set_name, str(item_id))).encode("utf-8")
    return ("tuned", "base") if hashlib.sha256(key).digest()[0] & 1 else ("base", "tuned")


def resolve(choice: str, shown_a: str) -> str:
    """A blind choice (`CHOICES`) as the verdict it means, given the system shown as A."""
    if choice not in CHOICES:
        raise WbError(f"verdict {choice!r} is not one of {', '.join(CHOICES)}")
    if shown_a not in SYSTEMS:
        raise WbError(f"shown_a {shown_a!r} is not one of {', '.join(SYSTEMS)}")
    other = "base" if shown_a == "tuned" else "tuned"
    return {"A": shown_a, "B": other}.get(choice, choice)


@dataclass(frozen=True)
class Verdict:
    set: str
    id: str
    verdict: str  # one of VERDICTS
    reviewer: str
    time: str  # ISO 8601, UTC
    shown_a: str | None = None  # the system shown as A (blind review); None when not blind (the CSV)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "reviewer" and v not in (None, "")}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class VerdictStore:
    """The verdicts of one evaluation (`EvalFolder`): read merged, saved per reviewer as they are made."""

    def __init__(self, folder: EvalFolder, run: str = "") -> None:
        self.folder = folder
        self.run = run or folder.path.resolve().parent.name

    def order(self, reviewer: str, set_name: str, item_id: str) -> tuple[System, System]:
        return blind_order(self.run, check_reviewer(reviewer), set_name, str(item_id))

    def verdicts(self, reviewer: str | None = None) -> list[Verdict]:
        """Every reviewer's verdicts (or one reviewer's), in file order."""
        out = []
        for item in self.folder.reviewed_items():
            if reviewer is not None and item["reviewer"] != reviewer:
                continue
            if item["verdict"] not in VERDICTS:
                raise WbError(
                    f"{self.folder.reviewer_path(item['reviewer'])}: item {item['id']}: field verdict: "
                    f"{item['verdict']!r} is not one of {', '.join(VERDICTS)}"
                )
            out.append(
                Verdict(
                    set=str(item.get("set") or "task"),
                    id=str(item["id"]),
                    verdict=item["verdict"],
                    reviewer=item["reviewer"],
                    time=str(item.get("time") or ""),
                    shown_a=item.get("shown_a"),
                    note=str(item.get("note") or ""),
                )
            )
        return out

    def record_blind(self, reviewer: str, set_name: str, item_id: str, choice: str, note: str = "") -> Verdict:
        """Save a blind choice (A / B / tie / both_bad) on one item, resolved with the item's recorded order."""
        shown_a = self.order(reviewer, set_name, item_id)[0]
        verdict = Verdict(set_name, str(item_id), resolve(choice, shown_a), reviewer, _now(), shown_a, note)
        self.save(reviewer, [verdict])
        return verdict

    def save(self, reviewer: str, new: Iterable[Verdict], unreviewed: int | None = None) -> None:
        """Add or replace (by set and id) this reviewer's verdicts, and write the reviewer's file atomically. Saves
        in one process are serialised (a web app's threads); another process writing the same reviewer's file at
        once is not guarded here: commands hold the run folder's lock (`output.locked_run`)."""
        check_reviewer(reviewer)
        with _SAVING:
            self._save(reviewer, list(new), unreviewed)

    def _save(self, reviewer: str, new: list[Verdict], unreviewed: int | None) -> None:
        by_item = {(v.set, v.id): v for v in self.verdicts(reviewer)}
        for v in new:
            if v.verdict not in VERDICTS:
                raise WbError(f"verdict {v.verdict!r} is not one of {', '.join(VERDICTS)}")
            by_item[(v.set, v.id)] = v
        previous = self.folder.reviewer_files().get(reviewer, {})
        data: dict[str, Any] = {"reviewer": reviewer, "run": self.run, "seed": "sha256(run, reviewer, set, id)"}
        kept = previous.get("unreviewed", 0) if unreviewed is None else unreviewed
        if kept:
            data["unreviewed"] = kept
        data["verdicts"] = [v.to_json() for v in by_item.values()]
        self.folder.write_reviewer(reviewer, data)

    def unreviewed(self) -> int:
        return sum(int(d.get("unreviewed", 0)) for d in self.folder.reviewer_files().values() if isinstance(d, dict))


# --- statistics --------------------------------------------------------------------------------------------------


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters' labels of the same items; None when undefined (no items, or both raters give
    one and the same label to every item: chance agreement is then 1)."""
    if len(a) != len(b):
        raise ValueError(f"kappa needs the same items: {len(a)} and {len(b)} labels")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    labels = set(a) | set(b)
    expected = sum((list(a).count(c) / n) * (list(b).count(c) / n) for c in labels)
    if expected >= 1:
        return None
    return round((observed - expected) / (1 - expected), 6)


def _rate(k: int, n: int) -> float | None:
    return round(k / n, 6) if n else None


def informative_kappa(raters: list[str], a: Sequence[str], b: Sequence[str]) -> ReviewAgreement:
    """Kappa of two raters' labels of their shared items, or None and why when it would carry no information."""
    n = len(a)
    agreement = _rate(sum(x == y for x, y in zip(a, b, strict=True)), n)
    note = None
    if n < MIN_KAPPA_ITEMS:
        note = f"only {n} shared items (kappa needs at least {MIN_KAPPA_ITEMS}): no kappa"
    else:
        constant = [r for r, labels in zip(raters, (a, b), strict=True) if len(set(labels)) == 1]
        if constant:
            note = f"{constant[0]} gave one verdict to every shared item: kappa carries no information"
    kappa = None if note else cohen_kappa(a, b)
    if note is None and kappa is None:
        note = "kappa undefined"
    return ReviewAgreement(raters=raters, n=n, kappa=kappa, agreement=agreement, note=note)


def judge_agreement(rows: Sequence[dict[str, Any]], reviewed: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Judge vs reviewers on the task items both judged: {"kappa", "n", "agreement"} (share of equal verdicts).

    `rows`: scores.jsonl rows (their `judge.verdict`); `reviewed`: the review's items ({"set", "id", "verdict"})."""
    a, b = _judge_pairs(rows, reviewed)
    same = sum(x == y for x, y in zip(a, b, strict=True))
    return {"kappa": cohen_kappa(a, b), "n": len(a), "agreement": _rate(same, len(a))}


def _judge_pairs(rows: Sequence[dict[str, Any]], reviewed: Sequence[dict[str, Any]]) -> tuple[list[str], list[str]]:
    judged = {
        (str(r.get("set", "task")), str(r["id"])): r["judge"]["verdict"]
        for r in rows
        if isinstance(r.get("judge"), dict)
    }
    pairs = [
        (judged[key], JUDGE_CLASSES[v["verdict"]])
        for v in reviewed
        if (key := (str(v.get("set") or "task"), str(v["id"]))) in judged and v.get("verdict") in JUDGE_CLASSES
    ]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def preference_rate(per_item: Iterable[list[str]]) -> PreferenceRate:
    """The tuned-preferred rate over items (each a list of verdicts, one per reviewer) and its 95% bootstrap
    interval: tuned 1, base 0, tie 1/2, an item's score the mean of its verdicts; both_bad verdicts left out."""
    scores = []
    for verdicts in per_item:
        counted = [SCORE[v] for v in verdicts if v in SCORE]
        if counted:
            scores.append(sum(counted) / len(counted))
    if not scores:
        return PreferenceRate()
    value, lower, upper = compare.bootstrap_mean_ci(scores, BOOTSTRAP_SEED)

    def num(x: float) -> float | None:
        return None if math.isnan(x) else round(min(1.0, max(0.0, x)), 6)

    return PreferenceRate(value=num(value), lower=num(lower), upper=num(upper), n=len(scores))


def _by_item(verdicts: Iterable[Verdict]) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    for v in verdicts:
        out[(v.set, v.id)].append(v.verdict)
    return out


def summarize(
    verdicts: Sequence[Verdict],
    rows: Sequence[dict[str, Any]] = (),
    unreviewed: int = 0,
    present: set[tuple[str, str]] | None = None,
) -> ReviewSummary:
    """The run summary's `review` section from the merged verdicts (and scores.jsonl's rows, for the judge).
    `present`: the (set, id) of the evaluation's items; verdicts on other items (the evaluation was rerun on other
    items since) are counted apart as `stale` and left out of every other figure."""
    kept = [v for v in verdicts if present is None or (v.set, v.id) in present]
    stale = len(verdicts) - len(kept)
    verdicts = kept
    counts = Counter(v.verdict for v in verdicts)
    reviewers: dict[str, list[Verdict]] = defaultdict(list)
    for v in verdicts:
        reviewers[v.reviewer].append(v)
    per_reviewer = {
        name: ReviewerSummary(
            reviewed=len(_by_item(own)),
            verdicts={k: sum(v.verdict == k for v in own) for k in VERDICTS},
            tuned_preferred=preference_rate(_by_item(own).values()),
            both_bad=_rate(sum(v.verdict == "both_bad" for v in own), len(own)),
        )
        for name, own in sorted(reviewers.items())
    }
    kappas = []
    for first, second in itertools.combinations(sorted(reviewers), 2):
        mine = {(v.set, v.id): v.verdict for v in reviewers[first]}
        theirs = {(v.set, v.id): v.verdict for v in reviewers[second]}
        shared = [k for k in mine if k in theirs]
        kappas.append(informative_kappa([first, second], [mine[k] for k in shared], [theirs[k] for k in shared]))
    judge = []
    if any(isinstance(r.get("judge"), dict) for r in rows):
        groups = [(name, own) for name, own in sorted(reviewers.items())]
        if len(reviewers) > 1:
            groups.append(("all reviewers", list(verdicts)))
        for name, own in groups:
            a, b = _judge_pairs(rows, [{"set": v.set, "id": v.id, "verdict": v.verdict} for v in own])
            judge.append(informative_kappa(["judge", name], a, b))
    return ReviewSummary(
        reviewed=len(_by_item(verdicts)),
        unreviewed=unreviewed,
        stale=stale,
        tuned_preferred=preference_rate(_by_item(verdicts).values()),
        both_bad=_rate(counts["both_bad"], len(verdicts)),
        verdicts={k: counts.get(k, 0) for k in VERDICTS},
        reviewers=per_reviewer,
        kappa=kappas,
        judge=judge,
        notes=[
            ReviewNote(reviewer=v.reviewer, set=v.set, id=v.id, verdict=v.verdict, note=v.note)
            for v in verdicts
            if v.note
        ],
    )


def review_summary(folder: EvalFolder) -> ReviewSummary | None:
    """The `review` section of a run summary from an eval folder's verdicts; None before any verdict."""
    store = VerdictStore(folder)
    verdicts = store.verdicts()
    if not verdicts and not store.unreviewed():
        return None
    if not folder.scores_path.is_file():
        return summarize(verdicts, [], store.unreviewed())
    rows = list(folder.scores())
    present = {(str(r.get("set") or "task"), str(r["id"])) for r in rows}
    return summarize(verdicts, rows, store.unreviewed(), present)
