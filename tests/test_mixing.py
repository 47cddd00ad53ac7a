"""Mixing training sources and replay: exact shares of the weights, the same draw for the same seed, per-source
eval loss in the log and the manifest, the shipped replay set."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import read_jsonl, write_jsonl

from workbench.errors import WbError
from workbench.runfile.training import LogRow, TrainManifest
from workbench.text import script_of
from workbench.train import mixing
from workbench.train.recipe import load

REPO = Path(__file__).resolve().parent.parent


def key(text: str) -> str:
    return " ".join(text.lower().split())


def records(tag: str, n: int) -> list[dict[str, Any]]:
    return [{"instruction": f"{tag} 问题 {i}", "input": "", "output": f"{tag} answer {i} 答"} for i in range(n)]


def test_weights_become_exact_shares_and_replay_its_share() -> None:
    shares = [mixing.Share("code", 300, weight=3.0), mixing.Share("chat", 100, weight=1.0)]
    assert mixing.counts(shares) == {"code": 300, "chat": 100}
    shares = [mixing.Share("code", 300, weight=1.0), mixing.Share("chat", 100, weight=1.0)]
    assert mixing.counts(shares) == {"code": 200, "chat": 200}  # chat upsampled twice over, code subsampled
    with_replay = [*shares, mixing.Share("replay", 136)]
    got = mixing.counts(with_replay, replay=0.1)
    assert got["replay"] == round(0.1 / 0.9 * 400) == 44
    assert got["replay"] / sum(got.values()) == pytest.approx(0.1, abs=0.002)
    assert mixing.counts([mixing.Share("a", 10, epochs=2.5), mixing.Share("b", 7)]) == {"a": 25, "b": 7}
    assert sum(mixing.largest_remainder(10, [1, 1, 1])) == 10


def test_draw_is_whole_passes_plus_a_seeded_sample() -> None:
    picked = mixing.draw(4, 10, seed=1, name="a")
    assert picked[:8] == [0, 1, 2, 3, 0, 1, 2, 3] and sorted(Counter(picked).values()) == [2, 2, 3, 3]
    assert mixing.draw(100, 30, 1, "a") == mixing.draw(100, 30, 1, "a")
    assert mixing.draw(100, 30, 1, "a") != mixing.draw(100, 30, 2, "a")
    assert mixing.draw(100, 30, 1, "a") != mixing.draw(100, 30, 1, "b")
    assert len(set(mixing.draw(100, 30, 1, "a"))) == 30


def test_recipe_sources_are_validated_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(WbError, match=r"data\.0: Value error, give a source weight or epochs, not both"):
        load(None, data=[{"path": "a.jsonl", "weight": 1, "epochs": 2}])
    with pytest.raises(WbError, match="the source name 'a' is used twice"):
        load(None, data=["x/a.jsonl", "y/a.jsonl"])
    with pytest.raises(WbError, match="'replay' is used twice"):
        load(None, data=[{"path": "a.jsonl", "name": "replay"}], replay=0.1)
    with pytest.raises(WbError, match="replay"):
        load(None, data="a.jsonl", replay=1.5)
    r = load(None, data=["a.jsonl", {"path": "b.jsonl", "weight": 2, "name": "zh"}])
    assert isinstance(r.data, list) and [s.label for s in r.data] == ["a", "zh"]


# Only the tests that prepare or train with a tiny model need torch; the others run everywhere.
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs the training extra (torch)")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workbench.models.base import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny")


def _prepare(tiny: Path, **fields: Any) -> Any:
    from workbench.models.base import load_tokenizer
    from workbench.train.prepare import prepare

    return prepare(load(None, model=str(tiny), max_length=64, **fields), load_tokenizer(tiny), None)


@needs_torch
def test_shares_follow_the_weights_and_the_same_seed_draws_the_same_records(tmp_path: Path, tiny: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", records("en", 60))
    b = write_jsonl(tmp_path / "b.jsonl", records("zh", 20))
    data = [{"path": a, "weight": 1}, {"path": b, "weight": 1}]
    p1 = _prepare(tiny, data=data, val_size=0.1, seed=3)
    p2 = _prepare(tiny, data=data, val_size=0.1, seed=3)
    p3 = _prepare(tiny, data=data, val_size=0.1, seed=4)
    s = p1.sources
    assert (s["a"]["train_records"], s["b"]["train_records"]) == (54, 18)
    assert s["a"]["per_epoch"] == s["b"]["per_epoch"] == 36  # equal weights: half each of the 72 examples
    assert s["a"]["share"] == s["b"]["share"] == 0.5
    assert s["b"]["passes_per_epoch"] == 2.0 and s["a"]["distinct_per_epoch"] == 36
    assert set(p1.val_sets) == {"a", "b"} and (len(p1.val_sets["a"]), len(p1.val_sets["b"])) == (6, 2)
    assert [ex.line for ex in p1.train] == [ex.line for ex in p2.train]
    assert [ex.line for ex in p1.train] != [ex.line for ex in p3.train]
    assert Counter(ex.input_ids[0] for ex in p1.train) == Counter(ex.input_ids[0] for ex in p2.train)


@needs_torch
def test_replay_mixes_the_shipped_set_in_at_its_share(tmp_path: Path, tiny: Path) -> None:
    a = write_jsonl(tmp_path / "task.jsonl", records("task", 90))
    p = _prepare(tiny, data=a, replay=0.1, val_size=0)
    assert p.sources["task"]["per_epoch"] == 90 and p.sources["replay"]["per_epoch"] == 10
    assert p.sources["replay"]["path"].endswith("general.jsonl")
    assert p.sources["replay"]["share"] == pytest.approx(0.1)


def test_the_replay_set_is_en_and_zh_and_shares_no_question_with_the_probes() -> None:
    replay = read_jsonl(REPO / "data" / "replay" / "general.jsonl")
    assert len(replay) >= 100
    scripts = Counter(script_of(r["output"]) for r in replay)
    assert scripts["cjk"] >= 40 and scripts["latin"] >= 40
    probes = REPO / "workbench" / "evaluate" / "probes"
    asked = {key(r["instruction"]) for f in probes.glob("*.jsonl") for r in read_jsonl(f) if "instruction" in r}
    assert len(asked) > 500
    assert not [r["instruction"] for r in replay if key(r["instruction"]) in asked]


@needs_torch
def test_a_mixed_run_logs_eval_loss_per_source_and_counts_each_source(tmp_path: Path, tiny: Path) -> None:
    from workbench.train.trainer import train

    a = write_jsonl(tmp_path / "en.jsonl", records("en", 30))
    b = write_jsonl(tmp_path / "zh.jsonl", records("zh", 10))
    recipe = load(
        None,
        name="mix",
        model=str(tiny),
        data=[{"path": a, "weight": 3}, {"path": b, "weight": 1, "name": "chinese"}],
        replay=0.2,
        val_size=0.2,
        max_length=64,
        epochs=1,
        batch_size=4,
        logging_steps=1,
        output_dir=tmp_path / "runs",
    )
    result = train(recipe)
    manifest = TrainManifest.model_validate(result.manifest)
    assert manifest.sources is not None and set(manifest.sources) == {"en", "chinese", "replay"}
    en, zh, rp = (manifest.sources[n] for n in ("en", "chinese", "replay"))
    assert (en.per_epoch, zh.per_epoch) == (24, 8)  # 3:1 of the 32 records left after the hold-out
    assert rp.per_epoch == 8 and en.seen == 24 and rp.epochs_run == pytest.approx(1.0)
    assert set(result.manifest["inputs"]) == {"data[en]", "data[chinese]", "data[replay]"}
    rows = [
        LogRow.model_validate(json.loads(x)) for x in (recipe.run_dir / "trainer_log.jsonl").read_text().splitlines()
    ]
    per_source = [r.source_eval_losses() for r in rows if r.source_eval_losses()]
    assert {k for d in per_source for k in d} == {"en", "chinese", "replay"}
    assert any(r.eval_loss is not None for r in rows)  # the pooled eval loss, which picks the best checkpoint
    assert manifest.eval_losses is not None and set(manifest.eval_losses) == {"en", "chinese", "replay"}
    with pytest.raises(ValueError, match="eval_en_loss: expected a finite number"):
        LogRow.model_validate({"step": 1, "eval_en_loss": "low"})


def test_the_report_of_a_mixture_says_which_cleaning_stats_it_cannot_pick(tmp_path: Path) -> None:
    from report_fixtures import make_run

    from workbench.report.summary import load_run

    run_dir = make_run(tmp_path / "w")
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    data = manifest["inputs"].pop("data")
    manifest["inputs"].update({"data[code_en]": data, "data[replay]": data})
    (run_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    summary = load_run(run_dir).summary
    assert "a mixture of 2 sources (code_en, replay): pass --clean-stats" in summary["missing"]["clean"]
