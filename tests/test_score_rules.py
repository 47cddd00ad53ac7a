"""Clean rules over model-based scores: drops carry the rule, a reason and the score that decided; fraction rules
keep exact counts; a run's sample_losses.jsonl feeds back through --scores; the accounting holds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import read_jsonl, write_jsonl

from workbench.clean import dispatch
from workbench.clean.profile import from_dict, load
from workbench.clean.rule_registry import RULES
from workbench.clean.score_rules import ScoreParams
from workbench.errors import WbError

REPO = Path(__file__).resolve().parent.parent


def scored(i: int, **scores: float | None) -> dict[str, Any]:
    rec = {"instruction": f"问题 {i}: explain item {i}", "input": "", "output": f"答案 {i}: item {i} is fine."}
    return {**rec, "scores": scores}


def profile(rules: dict[str, Any]) -> Any:
    return from_dict({"name": "t", "rules": rules, "dedup": {}})


def run(tmp_path: Path, rows: list[dict[str, Any]], rules: dict[str, Any], scores: Path | None = None) -> Any:
    data = write_jsonl(tmp_path / "scored.jsonl", rows)
    return dispatch.run(data, tmp_path / "clean.jsonl", profile(rules), scores=scores)


def dropped(tmp_path: Path) -> list[dict[str, Any]]:
    return read_jsonl(tmp_path / "clean.dropped.jsonl")


def test_ifd_max_drops_mismatched_pairs_with_the_score_that_decided(tmp_path: Path) -> None:
    rows = [scored(1, ifd=0.62), scored(2, ifd=1.31), scored(3, ifd=1.0), scored(4, ifd=None)]
    result = run(tmp_path, rows, {"ifd_max": 1.0})
    drops = dropped(tmp_path)
    assert [d["line"] for d in drops] == [2]
    assert drops[0]["rule"] == "ifd_max"
    assert drops[0]["score"] == {"name": "ifd", "value": 1.31}
    assert "ifd 1.31 > ifd_max 1.0" in drops[0]["reason"]
    assert drops[0]["record"]["instruction"] == "问题 2: explain item 2"
    kept = read_jsonl(tmp_path / "clean.jsonl")
    assert [k["instruction"][:4] for k in kept] == ["问题 1", "问题 3", "问题 4"]  # no score: kept
    s = result.summary
    assert (s["read"], s["kept"], s["dropped"], s["rejected"]) == (4, 3, 1, 0) and s["invariant_holds"]
    assert s["dropped_by_rule"]["ifd_max"] == 1
    assert s["scores"]["scores"] == {"ifd": 3}


def test_threshold_rules_take_a_bare_value_and_drop_in_profile_order(tmp_path: Path) -> None:
    rows = [
        scored(1, ppl_answer=12.0, reward=0.5, ifd=0.5),
        scored(2, ppl_answer=5000.0, reward=-2.0, ifd=0.5),  # both rules match: the first listed is credited
        scored(3, ppl_answer=30.0, reward=-0.7, ifd=0.5),
    ]
    run(tmp_path, rows, {"ppl_answer_max": 1000, "reward_min": {"min": -0.5}})
    drops = {d["line"]: d for d in dropped(tmp_path)}
    assert drops[2]["rule"] == "ppl_answer_max" and drops[2]["score"]["name"] == "ppl_answer"
    assert drops[3]["rule"] == "reward_min" and "reward -0.7 < reward_min -0.5" in drops[3]["reason"]
    assert 1 not in drops


def test_keep_top_fraction_keeps_an_exact_share_by_reward_across_batches(tmp_path: Path) -> None:
    rewards = [0.3, -1.0, 2.5, 0.3, 0.9, -0.2, 1.7, 0.0, 0.3, -3.0]
    rows = [scored(i, reward=r) for i, r in enumerate(rewards)]
    data = write_jsonl(tmp_path / "scored.jsonl", rows)
    prof = profile({"keep_top_fraction": {"score": "reward", "fraction": 0.4}})
    result = dispatch.run(data, tmp_path / "clean.jsonl", prof, batch_size=3)  # ranks span batches
    kept = [r["instruction"] for r in read_jsonl(tmp_path / "clean.jsonl")]
    # 2.5, 1.7, 0.9 and the first of three 0.3 (ties: the earlier line), in input order
    assert kept == [rows[i]["instruction"] for i in (0, 2, 4, 6)]
    assert result.summary["kept"] == 4 and result.summary["dropped"] == 6
    reasons = [d["reason"] for d in dropped(tmp_path)]
    assert any("reward -3.0 ranks 10 of 10: outside the highest 0.4" in r for r in reasons)


def test_keep_top_fraction_keeps_the_lowest_perplexities(tmp_path: Path) -> None:
    rows = [scored(i, ppl_answer=p) for i, p in enumerate([8.0, 300.0, 2.0, 40.0])]
    run(tmp_path, rows, {"keep_top_fraction": {"score": "ppl_answer", "fraction": 0.5}})
    assert [r["output"] for r in read_jsonl(tmp_path / "clean.jsonl")] == [rows[0]["output"], rows[2]["output"]]


def test_sample_losses_of_a_run_feed_back_with_loss_top_fraction(tmp_path: Path) -> None:
    data = write_jsonl(
        tmp_path / "train.jsonl", [{k: v for k, v in scored(i).items() if k != "scores"} for i in range(20)]
    )
    # As wb train writes it: sorted by loss, `line` is the line of the training data.
    losses = [{"line": n, "loss": round(0.1 * n, 5), "tokens": 7} for n in range(20, 0, -1)]
    write_jsonl(tmp_path / "sample_losses.jsonl", losses)
    result = dispatch.run(
        data, tmp_path / "clean.jsonl", profile({"loss_top_fraction": 0.1}), scores=tmp_path / "sample_losses.jsonl"
    )
    drops = dropped(tmp_path)
    assert sorted(d["line"] for d in drops) == [19, 20]
    assert all(d["rule"] == "loss_top_fraction" and d["score"]["name"] == "loss" for d in drops)
    assert "loss 2.0 is the 1th highest of 20" in next(d["reason"] for d in drops if d["line"] == 20)
    s = result.summary
    assert s["read"] == s["kept"] + s["dropped"] + s["rejected"] == 20
    assert s["scores"]["path"].endswith("sample_losses.jsonl")


def test_a_rule_whose_score_is_missing_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WbError, match=r"rule reward_min: needs the score 'reward'.*it has: ifd.*wb score"):
        run(tmp_path, [scored(1, ifd=0.5)], {"reward_min": 0.0})
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"instruction": "a", "output": "b"}])
    with pytest.raises(WbError, match="needs the score 'ifd'"):
        dispatch.run(plain, tmp_path / "c.jsonl", profile({"ifd_max": 1.0}))
    with pytest.raises(WbError, match="has no rule over scores"):
        dispatch.run(plain, tmp_path / "c.jsonl", profile({"empty_output": None}), scores=tmp_path / "scored.jsonl")


def test_a_non_numeric_score_names_file_line_and_score(tmp_path: Path) -> None:
    rows = [scored(1, ifd=0.5), {**scored(2), "scores": {"ifd": "high"}}]
    with pytest.raises(WbError, match=r"scored.jsonl:line 2: score 'ifd': expected a finite number"):
        run(tmp_path, rows, {"ifd_max": 1.0})


def test_cli_clean_with_scores_exits_2_on_a_missing_score(tmp_path: Path, wb: Callable[..., Any]) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [scored(1, ifd=0.4), scored(2, ifd=2.0)])
    res = wb("clean", data, "-o", tmp_path / "c.jsonl", "--profile", REPO / "pipelines" / "clean-scored.yaml", "-q")
    assert res.exit_code == 2 and "needs the score 'ppl_answer'" in res.stderr
    losses = write_jsonl(tmp_path / "l.jsonl", [{"line": 1, "loss": 0.1}, {"line": 2, "loss": 9.0}])
    prof = write_jsonl(tmp_path / "p.yaml", ["name: p", "rules:", "  loss_top_fraction: 0.5"])
    res = wb("clean", data, "-o", tmp_path / "c.jsonl", "--profile", prof, "--scores", losses)
    assert res.exit_code == 0, res.output
    assert "read 2 = kept 1 + dropped 1 + rejected 0" in res.stdout


def test_the_scored_profile_loads_and_every_score_rule_is_tested() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((REPO / "schemas" / "clean-profile.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(yaml.safe_load((REPO / "pipelines" / "clean-scored.yaml").read_text(encoding="utf-8")), schema)
    prof = load(REPO / "pipelines" / "clean-scored.yaml")
    assert {"ifd_max", "ppl_answer_max"} <= set(prof.rule_order)
    score_rules = {n for n, r in RULES.items() if issubclass(r.params, ScoreParams)}
    assert score_rules == {"ifd_max", "ppl_answer_max", "reward_min", "keep_top_fraction", "loss_top_fraction"}


def test_the_report_shows_the_scores_the_cleaning_read(tmp_path: Path) -> None:
    from report_fixtures import make_run

    from workbench.report.html import build_report
    from workbench.score.summary import summarise_all

    rows = [scored(i, ifd=0.5 + i / 10) for i in range(1, 11)]
    result = run(tmp_path, rows, {"ifd_max": 1.0})
    stats = {"scores": summarise_all([r["scores"] for r in rows], ["ifd"]), "ifd_definition": "loss ratio"}
    (tmp_path / "scored.stats.json").write_text(json.dumps(stats), encoding="utf-8")
    page = build_report([make_run(tmp_path / "w")], tmp_path / "r.html", clean_stats=result.paths.stats)
    html = page.html.read_text(encoding="utf-8")
    assert "Model-based scores the score rules read" in html
    assert '<td><code>ifd</code></td><td class="num">10</td>' in html
    assert 'aria-label="ifd histogram"' in html
    (tmp_path / "scored.stats.json").unlink()  # the scores' stats gone: the section is left out, not an error
    page = build_report([make_run(tmp_path / "w")], tmp_path / "r.html", clean_stats=result.paths.stats)
    assert "Model-based scores" not in page.html.read_text(encoding="utf-8")


def test_a_run_without_sample_losses_says_which_recipe_key_writes_them(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", [{k: v for k, v in scored(1).items() if k != "scores"}])
    missing = tmp_path / "runs" / "t" / "sample_losses.jsonl"  # a run trained with the default sample_losses: false
    with pytest.raises(WbError, match=r"sample_losses.jsonl: not found: .*sample_losses: true"):
        dispatch.run(data, tmp_path / "clean.jsonl", profile({"loss_top_fraction": 0.1}), scores=missing)
