"""The pairwise judge: verdicts read from the replies judges write, both answer orders, flips and ties, length split,
unparsed replies counted, Cohen's kappa against reviewers, the judge section in metrics.json, scores.jsonl, the
report and the gate."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import read_jsonl, write_jsonl
from workbench.errors import WbError
from workbench.evaluate import judge, judging, verdicts
from workbench.evaluate.config import EvalConfig
from workbench.runfile.evals import ScoreRow
from workbench.runfile.gate_paths import gate_path_problem, gate_paths_help

# ---------------------------------------------------------------------------------------------------------------
# Reading a reply


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("A", "A"),
        ("B.", "B"),
        ("[[A]]", "A"),
        ("My verdict: [[B]]", "B"),
        ("[[C]]", "tie"),
        ("[[tie]]", "tie"),
        ("Answer A is better", "A"),
        ("Answer B is better because it names the capital.", "B"),
        ("B is clearly the better answer.", "B"),
        ("Verdict: A", "A"),
        ("I prefer answer B.", "B"),
        ("Answer: B", "B"),
        ("The better answer is A.", "A"),
        ("The winner is B", "B"),
        ("Answer A: Paris. Answer B: Lyon.", None),  # restating the answers is no verdict
        ("It's a tie: both answers are wrong.", "tie"),
        ("Both are equally good.", "tie"),
        ("A更好", "A"),
        ("回答B更好，因为它更准确。", "B"),
        ("我选B", "B"),
        ("平局", "tie"),
        ("[[平局]]", "tie"),
        ("两个回答不相上下。", "tie"),
        ("A good answer would name the capital.", None),  # the English article is no verdict
        ("I cannot tell.", None),
        ("", None),
        ("   \n", None),
        ("DATA更好", None),  # a letter inside a Latin word is no verdict
    ],
)
def test_verdicts_are_read_from_the_replies_judges_write(reply: str, expected: str | None) -> None:
    assert judge.parse_verdict(reply) == expected


def test_the_first_stated_verdict_wins_over_later_mentions() -> None:
    assert judge.parse_verdict("Answer B is better than answer A, which is wrong.") == "B"
    assert judge.parse_verdict("[[A]]\nAnswer B is better in style, but A is correct.") == "A"


# ---------------------------------------------------------------------------------------------------------------
# Prompts


def test_shipped_prompts_render_each_language_with_and_without_a_reference_and_keep_braces() -> None:
    prompts = judge.load_judge_prompts()
    en = judge.render_pair(prompts, judge.Pair("What is {x}?", "", 'json: {"a": 1}', "{answer_b}"))
    assert [lang for lang, _, _ in en] == ["en", "en"] and [p for _, p, _ in en] == ["A", "B"]
    first, second = en[0][2], en[1][2]
    assert "What is {x}?" in first and "Reference answer" not in first  # no reference: no block
    # Answers are inserted as text: braces stay, and an answer that looks like a placeholder is not expanded.
    assert first.index('json: {"a": 1}') < first.index("{answer_b}")
    assert second.index("{answer_b}") < second.index('json: {"a": 1}')
    zh = judge.render_pair(prompts, judge.Pair("中国的首都是哪座城市？", "北京", "北京。", "上海"))
    assert zh[0][0] == "zh" and "参考答案" in zh[0][2] and "北京" in zh[0][2] and "问题" in zh[0][2]


def test_a_judge_prompt_without_its_answer_placeholders_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "judge-en.yaml").write_text("name: mine\nprompt: 'Which is better? {question}'\n", encoding="utf-8")
    (tmp_path / "judge-zh.yaml").write_text("name: zh\nprompt: '{question} {answer_a} {answer_b}'\n", encoding="utf-8")
    with pytest.raises(WbError, match=r"judge-en.yaml: field prompt: must contain \{answer_a\}"):
        judge.load_judge_prompts(tmp_path)
    (tmp_path / "judge-en.yaml").write_text("name: x\nprompt: '{question}{answer_a}{answer_b}'\nmax_new_tokens: 0\n")
    with pytest.raises(WbError, match=r"judge-en\.yaml: field max_new_tokens"):
        judge.load_judge_prompts(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# Fake judges over real-shaped items

PAIRS = [
    judge.Pair("What is the capital of France?", "Paris", "Paris is the capital of France.", "Lyon"),
    judge.Pair("2+2=", "4", "4", "The answer is five, as everyone knows."),
    judge.Pair("中国的首都是哪座城市？", "北京", "北京是中国的首都。", "上海"),
    judge.Pair("Name a primary colour.", "", "Red 🔴", "Blue, green and also more colours that are not primary"),
    judge.Pair("水的化学式是什么？", "H2O", "H2O", "水"),
]


def always(letter: str) -> judge.GenerateFn:
    return lambda texts, prompt: [letter for _ in texts]


def _tuned_first_judge(side: str) -> judge.GenerateFn:
    """Names the position of the `side` answer: position A holds whichever answer comes first in the prompt."""

    def run(texts: list[str], prompt: judge.JudgePrompt) -> list[str]:
        out = []
        for text in texts:
            pair = next(p for p in PAIRS if p.tuned in text and p.base in text)
            wanted, other = (pair.tuned, pair.base) if side == "tuned" else (pair.base, pair.tuned)
            # the question and reference come before both answers; find the answers after the question
            start = text.index(pair.question) + len(pair.question)
            ref_end = text.find(pair.reference, start) + len(pair.reference) if pair.reference else start
            out.append("Answer A is better" if text.index(wanted, ref_end) < text.index(other, ref_end) else "B更好")
        return out

    return run


def test_a_judge_that_always_names_position_a_ends_with_all_ties_and_a_flip_rate_of_one() -> None:
    verdicts = judge.judge_pairs(PAIRS, judge.load_judge_prompts(), always("A"))
    assert [v.verdict for v in verdicts] == ["tie"] * len(PAIRS)
    assert all(v.flipped for v in verdicts)
    summary = judge.summarise(verdicts, seed=0)
    assert summary.position_flip_rate == 1.0 and summary.tie_rate == 1.0
    assert summary.win_rate == 0.0 and summary.loss_rate == 0.0 and summary.win_minus_loss == 0.0
    assert summary.unparsed == 0 and summary.replies == 2 * len(PAIRS) and not summary.informative
    assert any("depend on answer order: not informative" in n for n in judge.notes(summary))


def test_a_judge_that_always_prefers_the_tuned_answer_gives_a_win_rate_of_one_in_both_orders() -> None:
    verdicts = judge.judge_pairs(PAIRS, judge.load_judge_prompts(), _tuned_first_judge("tuned"))
    assert [v.verdict for v in verdicts] == ["tuned"] * len(PAIRS)
    assert [[c.parsed for c in v.calls] for v in verdicts] == [["A", "B"]] * len(PAIRS)  # it named both positions
    assert [v.language for v in verdicts] == ["en", "en", "zh", "en", "zh"]
    summary = judge.summarise(verdicts, seed=0)
    assert summary.win_rate == 1.0 and summary.loss_rate == 0.0 and summary.position_flip_rate == 0.0
    assert summary.win_minus_loss == 1.0 and summary.informative
    # Length next to the verdicts: tuned is longer on items 1 and 3 (CJK-aware tokens), not on 2, 4 and 5.
    assert [v.tuned_longer for v in verdicts] == [True, False, True, False, False]
    assert summary.tuned_longer == 2 and summary.win_rate_tuned_longer == 1.0
    assert summary.win_rate_tuned_not_longer == 1.0


def test_a_judge_preferring_base_loses_every_item_and_the_interval_of_win_minus_loss_is_paired() -> None:
    verdicts = judge.judge_pairs(PAIRS, judge.load_judge_prompts(), _tuned_first_judge("base"))
    summary = judge.summarise(verdicts, seed=0)
    assert summary.loss_rate == 1.0 and summary.win_minus_loss == -1.0
    assert summary.win_minus_loss_lower == -1.0 and summary.win_minus_loss_upper == -1.0


def test_unparseable_replies_count_as_ties_and_are_counted_never_dropped() -> None:
    good = _tuned_first_judge("tuned")

    def sometimes_rambles(texts: list[str], prompt: judge.JudgePrompt) -> list[str]:
        replies = good(texts, prompt)
        # The France item's second order says nothing readable.
        return [
            "I think both have merits." if "France" in t and i % 2 else r
            for i, (t, r) in enumerate(zip(texts, replies, strict=True))
        ]

    verdicts = judge.judge_pairs(PAIRS, judge.load_judge_prompts(), sometimes_rambles)
    summary = judge.summarise(verdicts, seed=0)
    assert verdicts[0].verdict == "tie" and verdicts[0].unparsed == 1 and not verdicts[0].flipped
    assert verdicts[0].calls[1].raw == "I think both have merits." and verdicts[0].calls[1].parsed is None
    assert summary.unparsed == 1 and summary.n == len(PAIRS) and summary.wins == len(PAIRS) - 1 and summary.ties == 1
    assert summary.position_flip_rate == 0.0  # flips are counted over items whose two replies were both read
    assert any("1 of 10 judge replies named no verdict" in n for n in judge.notes(summary))


# ---------------------------------------------------------------------------------------------------------------
# Agreement with reviewers


def test_cohen_kappa_matches_the_hand_computed_value() -> None:
    # judge:    T T B tie T B      reviewer: T B B tie tie B
    # observed 4/6; judge marginals T 3, B 2, tie 1; reviewer T 1, B 3, tie 2 (of 6)
    # expected (3*1 + 2*3 + 1*2) / 36 = 11/36; kappa = (24/36 - 11/36) / (25/36) = 13/25
    a = ["tuned", "tuned", "base", "tie", "tuned", "base"]
    b = ["tuned", "base", "base", "tie", "tie", "base"]
    assert verdicts.cohen_kappa(a, b) == pytest.approx(13 / 25)
    assert verdicts.cohen_kappa(a, a) == 1.0
    assert verdicts.cohen_kappa(["tie"] * 3, ["tie"] * 3) is None  # chance agreement 1: undefined
    assert verdicts.cohen_kappa([], []) is None


def test_agreement_matches_items_by_set_and_id_and_reads_both_bad_as_a_tie() -> None:
    rows = [
        {"set": "task", "id": 1, "judge": {"verdict": "tuned"}},
        {"set": "task", "id": 2, "judge": {"verdict": "tie"}},
        {"set": "task", "id": 3, "judge": {"verdict": "base"}},
        {"set": "task", "id": 4},  # not judged
    ]
    reviewed = [
        {"set": "task", "id": "1", "verdict": "tuned"},
        {"set": "task", "id": "2", "verdict": "both_bad"},
        {"set": "task", "id": "3", "verdict": "tuned"},
        {"set": "task", "id": "4", "verdict": "tuned"},
    ]
    got = verdicts.judge_agreement(rows, reviewed)
    assert got["n"] == 3 and got["agreement"] == pytest.approx(2 / 3)
    # judge T, tie, B; reviewers T, tie, T: po 2/3, pe (1*2 + 1*1 + 1*0)/9 = 1/3, kappa (2/3-1/3)/(2/3) = 0.5
    assert got["kappa"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------------------------
# Through wb eval: metrics.json, scores.jsonl, review import, report, gate


def _predictions(tmp_path: Path) -> Path:
    rows = [
        {"id": i, "instruction": p.question, "reference": p.reference, "prediction": p.tuned, "base_prediction": p.base}
        for i, p in enumerate(PAIRS, start=1)
    ]
    return write_jsonl(tmp_path / "preds.jsonl", rows)


def _fake_judge(monkeypatch: pytest.MonkeyPatch, generate: judge.GenerateFn) -> list[str]:
    seen: list[str] = []

    def fake(spec: str, config: Any, cache: Any, on_status: Any, on_progress: Any) -> Any:
        seen.append(spec)
        return generate, {"template": "chat", "precision": "fp32"}

    monkeypatch.setattr(judging, "judge_generator", fake)
    return seen


def test_wb_eval_with_a_judge_writes_verdicts_with_raw_text_and_the_judge_summary(
    tmp_path: Path, wb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _fake_judge(monkeypatch, always("A"))
    result = wb("eval", "--predictions", _predictions(tmp_path), "-o", tmp_path / "ev", "--judge", "embedded")
    assert result.exit_code == 0, result.output
    assert seen == ["embedded"]
    assert "position flips 1.000" in result.stdout
    assert "depend on answer order: not informative" in result.stderr
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text(encoding="utf-8"))
    j = metrics["task"]["judge"]
    assert j["tie_rate"] == 1.0 and j["position_flip_rate"] == 1.0 and j["informative"] is False
    assert j["settings"]["model"] == "embedded" and j["settings"]["languages"] == {"en": 3, "zh": 2}
    rows = read_jsonl(tmp_path / "ev" / "scores.jsonl")
    for row in rows:
        ScoreRow.model_validate(row)
        assert row["judge"]["verdict"] == "tie" and [c["raw"] for c in row["judge"]["calls"]] == ["A", "A"]
        assert [c["tuned_position"] for c in row["judge"]["calls"]] == ["A", "B"]


def test_judge_verdicts_are_gate_paths_and_an_order_dependent_judge_is_inconclusive(
    tmp_path: Path, wb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workbench.report.gate import load

    assert gate_path_problem("task.judge.win_rate") is None
    assert gate_path_problem("task.judge.position_flip_rate") is None
    assert "judge has no 'winrate'" in (gate_path_problem("task.judge.winrate") or "")
    assert "task.judge.<" in gate_paths_help()
    gate_file = tmp_path / "gate.yaml"
    gate_file.write_text("checks:\n  - task.judge.win_rate >= 0.0\n  - task.judge.unparsed <= 0\n", encoding="utf-8")
    load(gate_file)

    _fake_judge(monkeypatch, always("B"))
    assert wb("eval", "--predictions", _predictions(tmp_path), "-o", tmp_path / "ev", "--judge", "x").exit_code == 0
    result = wb("gate", tmp_path / "ev", "-t", gate_file)
    assert result.exit_code == 1
    assert "inconclusive" in result.output and "depend on answer order" in result.output

    _fake_judge(monkeypatch, _tuned_first_judge("tuned"))
    assert wb("eval", "--predictions", _predictions(tmp_path), "-o", tmp_path / "ev", "--judge", "x").exit_code == 0
    assert wb("gate", tmp_path / "ev", "-t", gate_file).exit_code == 0
    gate_file.write_text("checks:\n  - task.judge.loss_rate >= 0.5\n", encoding="utf-8")
    assert wb("gate", tmp_path / "ev", "-t", gate_file).exit_code == 1


def test_imported_reviews_give_the_judges_kappa_in_metrics_json(
    tmp_path: Path, wb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_judge(monkeypatch, _tuned_first_judge("tuned"))
    out = tmp_path / "ev"
    assert wb("eval", "--predictions", _predictions(tmp_path), "-o", out, "--judge", "x").exit_code == 0
    review = tmp_path / "filled.csv"
    with review.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["set", "id", "bucket", "verdict"])
        # judge: tuned on all five; reviewers: tuned, tuned, base, tie (both_bad), and one left empty
        for i, verdict in [(1, "tuned"), (2, "tuned"), (3, "base"), (4, "both_bad"), (5, "")]:
            w.writerow(["task", i, "tie", verdict])
    result = wb("eval", "-o", out, "--import-review", review)
    assert result.exit_code == 0, result.output
    # judge T T T T vs reviewers T T B tie: po 2/4; pe = 1 * 2/4 = 1/2 -> kappa 0
    assert "Cohen's kappa 0.000 on 4 items" in result.stdout
    j = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["task"]["judge"]
    assert j["kappa"] == 0.0 and j["kappa_n"] == 4 and j["review_agreement"] == 0.5
    # A later eval in the same folder folds the review in again.
    _fake_judge(monkeypatch, _tuned_first_judge("base"))
    assert wb("eval", "--predictions", _predictions(tmp_path), "-o", out, "--judge", "x").exit_code == 0
    j = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["task"]["judge"]
    # judge B B B B vs T T B tie: po 1/4, pe = 1 * 1/4 -> kappa 0 again, agreement 0.25
    assert j["kappa_n"] == 4 and j["review_agreement"] == 0.25


def test_the_report_shows_the_judge_and_says_plainly_when_its_verdicts_follow_positions(
    tmp_path: Path, wb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_judge(monkeypatch, lambda texts, prompt: ["[[A]] <b>A</b> & more" for _ in texts])
    assert wb("eval", "--predictions", _predictions(tmp_path), "-o", tmp_path / "ev", "--judge", "x").exit_code == 0
    html_path = tmp_path / "r.html"
    assert wb("report", tmp_path / "ev", "-o", html_path).exit_code == 0
    page = html_path.read_text(encoding="utf-8")
    assert 'data-part="judge-uninformative"' in page
    assert "The judge's verdicts depend on answer order: not informative. 100% of its verdicts changed" in page
    assert "&lt;b&gt;A&lt;/b&gt; &amp; more" in page and "<b>A</b> & more" not in page  # the reply is escaped
    md = html_path.with_suffix(".md").read_text(encoding="utf-8")
    assert "Pairwise judge (5 items, both orders)" in md and "not informative" in md

    _fake_judge(monkeypatch, _tuned_first_judge("tuned"))
    assert wb("eval", "--predictions", _predictions(tmp_path), "-o", tmp_path / "ev", "--judge", "x").exit_code == 0
    assert wb("report", tmp_path / "ev", "-o", html_path).exit_code == 0
    page = html_path.read_text(encoding="utf-8")
    assert 'data-part="judge"' in page and 'data-part="judge-uninformative"' not in page


def test_judging_needs_base_answers(tmp_path: Path, wb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_judge(monkeypatch, always("A"))
    preds = write_jsonl(tmp_path / "p.jsonl", [{"prediction": "x", "reference": "y"}])
    result = wb("eval", "--predictions", preds, "-o", tmp_path / "ev", "--judge", "x")
    assert result.exit_code == 2 and "--judge compares base and tuned task answers" in result.output


# ---------------------------------------------------------------------------------------------------------------
# A real (tiny) judge model: generation and its cache


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from workbench.models.base import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("tiny"))


def test_a_local_judge_model_generates_greedily_through_the_generation_cache(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workbench.models.generate import GenerationCache

    monkeypatch.setenv("WB_CACHE", str(tmp_path / "cache"))
    config = EvalConfig(judge=str(tiny), probes=[])
    cache = GenerationCache(tmp_path / "gen.sqlite")
    generate, about = judging.judge_generator(str(tiny), config, cache, None, None)
    verdicts = judge.judge_pairs(PAIRS[:3], judge.load_judge_prompts(), generate)
    assert cache.misses == 6 and cache.hits == 0 and about["precision"] in ("bf16", "fp32")
    replies = [c.raw for v in verdicts for c in v.calls]
    again = judge.judge_pairs(PAIRS[:3], judge.load_judge_prompts(), generate)
    assert cache.hits == 6 and [c.raw for v in again for c in v.calls] == replies
    summary = judge.summarise(verdicts, 0)
    assert summary.unparsed + sum(c.parsed is not None for v in verdicts for c in v.calls) == 6
