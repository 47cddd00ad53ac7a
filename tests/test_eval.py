"""`wb eval`: predictions files without a model, a tiny tuned run against its base, the cache, review round trip."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import read_jsonl, write_jsonl

from workbench.evaluate.config import SHIPPED_MC
from workbench.evaluate.forgetting import SHIPPED, load_probe_set
from workbench.runfile.folder import EvalFolder

PREDICTIONS = [
    {"id": "a", "instruction": "2+2=", "reference": "4", "prediction": "4", "base_prediction": "5"},
    {"id": "b", "instruction": "中国的首都？", "reference": "北京", "prediction": "北京", "base_prediction": "上海"},
    {
        "id": "c",
        "instruction": "Say hi",
        "reference": "Hello there",
        "prediction": "Hi",
        "base_prediction": "Hello there",
    },
    {"id": "d", "instruction": "Echo", "reference": "<b>bold</b>", "prediction": "<b>bold</b>", "base_prediction": ""},
]


def test_a_predictions_file_is_scored_without_any_model(tmp_path: Path, wb: Any) -> None:
    preds = write_jsonl(tmp_path / "preds.jsonl", PREDICTIONS)
    result = wb("eval", "--predictions", preds, "-o", tmp_path / "ev", "-q")
    assert result.exit_code == 0, result.stderr
    rows = read_jsonl(tmp_path / "ev" / "scores.jsonl")
    assert [r["id"] for r in rows] == ["a", "b", "c", "d"]
    assert rows[1]["tuned"]["rouge_l"] == 1.0 and rows[1]["base"]["rouge_l"] == 0.0  # Chinese is not scored 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    rouge = metrics["task"]["metrics"]["rouge_l"]
    assert rouge["wins"] == 3 and rouge["losses"] == 1 and rouge["delta"] == pytest.approx(0.5, abs=0.01)
    assert rouge["delta_lower"] <= rouge["delta"] <= rouge["delta_upper"]
    assert "mcnemar_p" in metrics["task"]["metrics"]["exact_match"]
    # A mixed-language set: corpus BLEU per language, zh tokenizer for the Chinese item, 13a for the rest.
    corpus = metrics["task"]["corpus"]
    assert "tok:zh" in corpus["bleu_zh"]["signature"] and corpus["bleu_zh"]["n"] == 1
    assert "tok:13a" in corpus["bleu_latin"]["signature"] and corpus["bleu_latin"]["n"] == 3
    assert "bleu" not in corpus and 0 < corpus["bleu_latin"]["brevity_penalty"] <= 1
    assert metrics["task"]["regressions"] == ["c"]
    # The base's empty answer to "d" is flagged and counted.
    assert metrics["task"]["degenerate"]["empty"] == {"tuned": 0.0, "base": 0.25, "tuned_items": 0, "base_items": 1}
    assert rows[3]["base"]["flags"] == ["empty"] and rows[3]["tuned"]["flags"] == []
    assert any("only 4 items" in w for w in metrics["warnings"])
    sample = list(csv.DictReader((tmp_path / "ev" / "review_sample.csv").open(encoding="utf-8")))
    assert {r["bucket"] for r in sample} == {"regression", "improvement"} and len(sample) == 4


def test_a_single_item_prints_its_table_without_intervals_and_the_gate_does_not_pass(tmp_path: Path, wb: Any) -> None:
    """One item has no bootstrap interval: the table shows `-`, the warning says no verdict, the gate fails."""
    preds = write_jsonl(tmp_path / "preds.jsonl", [PREDICTIONS[1]])
    result = wb("eval", "--predictions", preds, "-o", tmp_path / "ev")
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr and "task (1 items)" in result.stdout
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert "lower" not in metrics["task"]["metrics"]["rouge_l"]
    assert any("only 1 item: no interval" in w for w in metrics["warnings"])
    gate = tmp_path / "gate.yaml"
    gate.write_text("checks:\n  - task.rouge_l.delta_lower >= 0.0\n", encoding="utf-8")
    assert wb("gate", tmp_path / "ev", "--thresholds", gate).exit_code == 1


def test_scoring_predictions_does_not_import_torch(tmp_path: Path) -> None:
    preds = write_jsonl(tmp_path / "preds.jsonl", PREDICTIONS)
    code = (
        "import sys; from workbench.cli import app; "
        f"sys.argv=['wb','eval','--predictions',{str(preds)!r},'-o',{str(tmp_path / 'ev')!r},'-q']\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'imported torch'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"prediction": "x"}', "line 2: field reference"),
        ("{not json", "line 2: not valid JSON"),
        ('{"prediction": 3, "reference": "x"}', "line 2: field prediction"),
    ],
)
def test_a_bad_predictions_file_is_one_line_naming_the_line(tmp_path: Path, wb: Any, line: str, expected: str) -> None:
    preds = write_jsonl(tmp_path / "preds.jsonl", [PREDICTIONS[0], line])
    result = wb("eval", "--predictions", preds, "-o", tmp_path / "ev")
    assert result.exit_code == 2 and expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_shipped_probe_sets_load_and_every_answer_scores_itself() -> None:
    from workbench.evaluate.metrics import score_items

    for name in SHIPPED:
        if name in SHIPPED_MC:
            continue  # multiple choice: tests/test_mc.py
        probe = load_probe_set(name)
        assert len(probe.items) >= (200 if probe.kind == "qa" else 60)
        if probe.kind == "qa":
            refs = [it.references for it in probe.items]
            scored = score_items([f"The answer is {it.reference}." for it in probe.items], refs)
            assert all(s["accuracy"] == 1 for s in scored.items), name


def test_a_user_probe_file_with_a_bad_field_is_refused(tmp_path: Path) -> None:
    from workbench.errors import WbError

    bad = write_jsonl(tmp_path / "mine.jsonl", [{"instruction": "Q?", "output": "A", "answers": "A"}])
    with pytest.raises(WbError, match=r"mine\.jsonl:line 1: field answers"):
        load_probe_set(bad)


# ---------------------------------------------------------------------------------------------------------------
# With a tiny trained run

torch_needed = pytest.mark.skipif(
    __import__("importlib").util.find_spec("peft") is None, reason="needs the training extra"
)

TRAIN = [
    {"instruction": f"What is {a}+{b}?", "input": "", "output": f"{a}+{b}={a + b}"}
    for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12)]
] + [{"instruction": "中国的首都是哪里？", "input": "", "output": "北京"}]
EVAL = [
    *TRAIN[:2],
    {"instruction": "What is 20+22?", "input": "", "output": "20+22=42"},
    {"instruction": "日本的首都是哪里？", "input": "", "output": "东京"},
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("peft")
    from workbench.models.base import tiny_model_dir
    from workbench.train.recipe import Recipe
    from workbench.train.trainer import train

    root = tmp_path_factory.mktemp("eval")
    tiny = tiny_model_dir(root / "tiny")
    recipe = Recipe.model_validate(
        {
            "name": "arith",
            "model": str(tiny),
            "data": write_jsonl(root / "train.jsonl", TRAIN),
            "output_dir": root / "runs",
            "val_size": 0,
            "max_length": 64,
            "max_steps": 4,
            "lr": 2e-2,
            "batch_size": 4,
        }
    )
    return train(recipe).run_dir


@torch_needed
def test_a_run_is_evaluated_against_its_base_with_probes_and_a_review_sample(
    run: Path, tmp_path: Path, wb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WB_CACHE", str(tmp_path / "cache"))
    data = write_jsonl(tmp_path / "eval.jsonl", EVAL)
    args = ["eval", run, "--data", data, "--probe-limit", "3", "--max-new-tokens", "8", "--batch-size", "3", "-q"]
    result = wb(*args)
    assert result.exit_code == 0, result.stderr
    folder = run / "eval"
    rows = read_jsonl(folder / "scores.jsonl")
    assert [r["set"] for r in rows] == ["task"] * 4 + [s for s in SHIPPED for _ in range(3)]
    task = rows[0]
    assert task["tuned"]["prediction"] is not None and task["tuned"]["loss"] > 0 and task["base"]["loss"] > 0
    assert task["tuned"]["loss"] < task["base"]["loss"]  # trained on exactly this record
    text_row = next(r for r in rows if r["set"] == "general_text_zh")
    assert text_row["tuned"]["perplexity"] > 1 and "prediction" not in text_row["tuned"]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics["task"]["metrics"]) >= {"rouge_l", "bleu", "chrf", "exact_match", "f1", "loss"}
    assert metrics["task"]["metrics"]["loss"]["delta"] < 0
    assert set(metrics["forgetting"]) == set(SHIPPED)
    assert metrics["forgetting"]["general_en"]["kind"] == "qa"
    assert "accuracy" in metrics["forgetting"]["general_en"]["metrics"]
    assert "perplexity" in metrics["forgetting"]["general_text_en"]["metrics"]
    # Two of the four task items are training records: the overlap is flagged, naming them by line.
    assert metrics["overlap"]["items"] == 2 and metrics["overlap"]["ids"] == [1, 2]
    assert any("share a long n-gram" in w for w in metrics["warnings"])
    gen = metrics["generation"]
    assert gen["batch_size"] == 3 and gen["adapter_sha256"] and gen["cache_misses"] > 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["command"] == "eval" and manifest["inputs"]["data"]["sha256"]

    # Again: every answer comes from the cache, and the scores are identical.
    again = wb(*args)
    assert again.exit_code == 0
    metrics2 = json.loads((folder / "metrics.json").read_text())
    assert metrics2["generation"]["cache_misses"] == 0 and metrics2["generation"]["cache_hits"] > 0
    assert read_jsonl(folder / "scores.jsonl") == rows

    # Review round trip.
    sample = list(csv.DictReader((folder / "review_sample.csv").open(encoding="utf-8")))
    assert len(sample) == 4 and all(r["verdict"] == "" for r in sample)
    for r, verdict in zip(sample, ["tuned", "base", "tie", ""], strict=True):
        r["verdict"] = verdict
    filled = tmp_path / "filled.csv"
    with filled.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(sample[0]))
        writer.writeheader()
        writer.writerows(sample)
    from workbench.output import locked_run

    with locked_run(run):  # another wb process writing into the run: the import is refused, nothing written
        busy = wb("eval", run, "--import-review", filled)
    assert busy.exit_code == 2 and "another wb process is writing this run folder now" in busy.stderr
    assert not EvalFolder(folder).review_path.exists()
    imported = wb("eval", run, "--import-review", filled)
    assert imported.exit_code == 0, imported.stderr
    review = json.loads(EvalFolder(folder).reviewer_path("csv").read_text())
    assert len(review["verdicts"]) == 3 and review["unreviewed"] == 1
    assert [v["verdict"] for v in review["verdicts"]].count("tuned") == 1
    sample[3]["verdict"] = "maybe"
    with filled.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(sample[0]))
        writer.writeheader()
        writer.writerows(sample)
    bad = wb("eval", run, "--import-review", filled)
    assert bad.exit_code == 2 and "line 5: field verdict" in bad.stderr


@torch_needed
def test_eval_input_errors_are_one_line(run: Path, tmp_path: Path, wb: Any) -> None:
    missing = wb("eval", run, "--data", tmp_path / "nope.jsonl", "--no-probes")
    assert missing.exit_code == 2 and "nope.jsonl" in missing.stderr
    probes = wb("eval", run, "--probes", "general_fr", "--no-base")
    assert probes.exit_code == 2 and "general_fr" in probes.stderr and "general_en" in probes.stderr
    nothing = wb("eval", run, "--no-probes")
    assert nothing.exit_code == 2 and "nothing to evaluate" in nothing.stderr


@torch_needed
def test_a_merged_model_is_compared_with_the_base_it_is_given(run: Path, tmp_path: Path, wb: Any) -> None:
    import yaml

    merged = tmp_path / "merged"
    assert wb("export", run, "--merge", "-o", merged, "-q").exit_code == 0
    data = write_jsonl(tmp_path / "eval.jsonl", EVAL)
    # fp32: merged weights equal base + adapter exactly only there (bf16 autocast rounds them differently).
    opts = ["--data", data, "--no-probes", "--max-new-tokens", "6", "--no-cache", "-q", "--precision", "fp32"]
    args = ["eval", merged, *opts]
    alone = wb(*args, "-o", tmp_path / "alone")
    assert alone.exit_code == 0 and "--base-model" in alone.stderr
    assert "base" not in read_jsonl(tmp_path / "alone" / "scores.jsonl")[0]
    base = yaml.safe_load((run / "recipe.yaml").read_text())["model"]
    paired = wb(*args, "-o", tmp_path / "paired", "--base-model", base)
    assert paired.exit_code == 0, paired.stderr
    merged_rows = read_jsonl(tmp_path / "paired" / "scores.jsonl")
    assert all("base" in r for r in merged_rows)
    assert wb("eval", run, *opts, "--no-base", "-o", tmp_path / "run").exit_code == 0
    run_rows = read_jsonl(tmp_path / "run" / "scores.jsonl")
    # The merged model answers like base + adapter.
    assert merged_rows[0]["tuned"]["loss"] == pytest.approx(run_rows[0]["tuned"]["loss"], abs=1e-3)


def test_an_edited_or_torn_evaluation_is_refused_by_report_and_gate(tmp_path: Path, wb: Any) -> None:
    preds = write_jsonl(tmp_path / "preds.jsonl", [{"prediction": "Paris", "reference": "Paris"}] * 3)
    ev = tmp_path / "run" / "eval"
    assert wb("eval", "--predictions", preds, "-o", ev, "-q").exit_code == 0
    manifest = json.loads((ev / "manifest.json").read_text(encoding="utf-8"))
    assert set(manifest["outputs"]) == {"scores", "metrics"}
    gate = tmp_path / "gate.yaml"
    gate.write_text("checks:\n  - {metric: task.n, min: 1}\n", encoding="utf-8")
    assert wb("gate", tmp_path / "run", "-t", gate).exit_code == 0

    doc = json.loads((ev / "metrics.json").read_text(encoding="utf-8"))
    doc["task"]["n"] = 3000  # a number edited by hand after wb eval wrote it
    (ev / "metrics.json").write_text(json.dumps(doc), encoding="utf-8")
    for args in (("gate", tmp_path / "run", "-t", gate), ("report", tmp_path / "run", "-o", tmp_path / "r.html")):
        result = wb(*args)
        assert result.exit_code == 2, result.output
        assert f"{ev / 'metrics.json'}: does not match {ev / 'manifest.json'}" in result.stderr
    (ev / "manifest.json").unlink()  # a kill between publishing steps: scores and metrics without their manifest
    result = wb("gate", tmp_path / "run", "-t", gate)
    assert result.exit_code == 2 and f"{ev / 'manifest.json'}: missing" in result.stderr
    assert not (tmp_path / "r.html").exists()


# ---------------------------------------------------------------------------------------------------------------
# A corrupt cache


def _caches(folder: Path) -> dict[str, Any]:
    from workbench.models.generate import GenerationCache
    from workbench.models.loglik import LoglikCache
    from workbench.score.cache import ScoreCache

    gen = GenerationCache(folder / "generations.sqlite")
    return {
        "generations": gen,
        "logliks": LoglikCache(folder / "logliks.sqlite", gen),
        "scores": ScoreCache(folder / "scores.sqlite"),
    }


def _fill(cache: Any, rows: int) -> None:
    from workbench.models.cache import write_json_rows
    from workbench.models.generate import Answer, GenerationCache

    if isinstance(cache, GenerationCache):
        cache.put_many({f"k{i}": Answer("答案" * 40, 80, True) for i in range(rows)})
    else:
        table = "logliks" if "logliks" in cache.path.name else "scores"
        write_json_rows(cache._connect, table, {f"k{i}": {"loglik": -1.5, "tokens": 3} for i in range(rows)})


def _foreign_database(path: Path) -> None:
    import sqlite3
    from contextlib import closing

    path.unlink()
    with closing(sqlite3.connect(path)) as db, db:  # a valid SQLite file whose tables are not wb's
        for table in ("answers", "logliks", "scores"):
            db.execute(f"CREATE TABLE {table} (id INTEGER, key TEXT, payload BLOB)")


CORRUPTIONS = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "random": lambda p: p.write_bytes(__import__("random").Random(7).randbytes(40_000)),
    "replaced_by_text": lambda p: p.write_text("不是数据库 not a database\n" * 200, encoding="utf-8"),
    "foreign_tables": _foreign_database,
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@pytest.mark.parametrize("name", ["generations", "logliks", "scores"])
def test_a_corrupt_cache_is_moved_aside_with_one_warning_and_rebuilt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, corruption: str
) -> None:
    _fill(_caches(tmp_path)[name], 2_000)
    path = tmp_path / f"{name}.sqlite"
    CORRUPTIONS[corruption](path)
    bad = path.read_bytes()
    capsys.readouterr()

    cache = _caches(tmp_path)[name]  # opening it neither raises nor reads the bad file

    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"warning: {path}: not a usable cache ("), lines
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(f"{name}.sqlite.corrupt-")]
    assert len(aside) == 1 and aside[0].name in lines[0] and aside[0].read_bytes() == bad  # kept for a look
    _fill(cache, 3)  # the rebuilt cache works, and holds nothing of the bad file
    assert set(cache.get_many(["k0", "k1", "k2", "k3"])) == {"k0", "k1", "k2"}
    _caches(tmp_path)
    assert capsys.readouterr().err == ""  # a healthy cache opens silently


@torch_needed
def test_wb_eval_on_a_corrupt_generation_cache_warns_once_and_evaluates(
    run: Path, tmp_path: Path, wb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("WB_CACHE", str(cache))
    cache.mkdir()
    (cache / "generations.sqlite").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 16)
    data = write_jsonl(tmp_path / "eval.jsonl", EVAL)
    args = ["eval", run, "--data", data, "--no-probes", "--max-new-tokens", "4", "-o", tmp_path / "ev", "-q"]
    result = wb(*args)
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    warned = [line for line in result.stderr.splitlines() if "generations.sqlite" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: ") and "moved aside" in warned[0], result.stderr
    assert len(list(cache.glob("generations.sqlite.corrupt-*"))) == 1
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["generation"]["cache_misses"] > 0
    again = wb(*args)  # the rebuilt cache serves the second run
    assert again.exit_code == 0 and "generations.sqlite" not in again.stderr
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["generation"]["cache_misses"] == 0 and metrics["generation"]["cache_hits"] > 0


SYSTEM = "你是一个助手。Answer briefly; never run <script>alert('sys')</script>"
TURNS = [
    ["我们用中文和英文聊天吧。", "好的，we can mix both languages."],
    ["What did I ask first? <img src=x onerror=\"alert('turn')\">", "你先问我们能不能用中文和英文聊天。"],
]


@torch_needed
def test_a_conversations_earlier_turns_reach_scores_jsonl_and_the_review_page(
    run: Path, tmp_path: Path, wb: Any
) -> None:
    """A multi-turn eval set (OpenAI messages, Chinese and English, a system prompt): scores.jsonl keeps the system
    prompt and the earlier turns, a one-turn record gets neither field (its row is as before), and `wb review` and
    the report's item line show them, as text."""
    from starlette.testclient import TestClient

    from workbench.report.eval_views import _item_view
    from workbench.review import app as review_app
    from workbench.review import items

    messages = [
        {"role": "system", "content": SYSTEM},
        *(
            {"role": role, "content": text}
            for turn in TURNS
            for role, text in zip(("user", "assistant"), turn, strict=True)
        ),
        {"role": "user", "content": "那最后一个问题：2+2=?"},
        {"role": "assistant", "content": "4"},
    ]
    one_turn = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    data = write_jsonl(tmp_path / "conversations.jsonl", [{"messages": messages}, {"messages": one_turn}])
    out = tmp_path / "ev"
    opts = ["--data", data, "--no-probes", "--max-new-tokens", "3", "--no-cache", "-q", "-o", out]
    result = wb("eval", run, *opts)
    assert result.exit_code == 0, result.stderr
    rows = read_jsonl(out / "scores.jsonl")
    assert rows[0]["system"] == SYSTEM and rows[0]["history"] == TURNS
    assert rows[0]["instruction"] == "那最后一个问题：2+2=?" and rows[0]["reference"] == "4"
    assert "history" not in rows[1] and "system" not in rows[1]
    assert _item_view(rows[0], "rouge_l")["instruction"] == "(after 2 earlier turns) 那最后一个问题：2+2=?"

    session = review_app.Session(items.load([out]), "ann")
    c = TestClient(review_app.create_app(session))
    item = c.get(f"/item?set=task&id={rows[0]['id']}&token={session.token}").text
    assert "好的，we can mix both languages." in item and "你先问我们能不能用中文和英文聊天。" in item
    assert "alert(&#39;turn&#39;)" in item and "<img" not in item and item.count("<script") == 1
    blind = c.get("/review?queue=filter&q=2%2B2").text  # base and tuned answers: the blind view shows the turns too
    assert "我们用中文和英文聊天吧。" in blind and "never run &lt;script&gt;" in blind
