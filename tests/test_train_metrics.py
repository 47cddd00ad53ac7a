"""Task metrics during training: recipe keys checked against the metric registry, eval_<metric> logged at every eval
from answers the model in training generates, the best checkpoint (and early stopping) following metric_for_best,
the curve in loss.svg and the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import read_jsonl, write_jsonl

from workbench.errors import WbError
from workbench.train import recipe as recipes

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from workbench.models.base import tiny_model_dir  # noqa: E402
from workbench.train.recipe import Recipe  # noqa: E402
from workbench.train.trainer import train  # noqa: E402

RECORDS = [
    {"instruction": f"What is the secret word number {i}?", "input": "", "output": word}
    for i, word in enumerate(["apple", "banana", "cherry", "梨子", "grape", "lemon", "mango", "桃子"])
]


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WB_CACHE", str(tmp_path / "wb-cache"))  # generations during training go to a cache


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny")


def recipe(tmp_path: Path, tiny: Path, **kw: Any) -> Recipe:
    data = write_jsonl(tmp_path / "train.jsonl", RECORDS)
    fields = {
        "name": "t",
        "model": str(tiny),
        "data": data,
        "eval_data": data,
        "output_dir": tmp_path / "runs",
        "max_length": 64,
        "max_steps": 12,
        "lr": 5e-3,
        "batch_size": 4,
        "logging_steps": 4,
        "warmup_ratio": 0,
        "scheduler": "constant",
        "eval_steps": 4,
        "save_steps": 4,
        "save_total_limit": 5,
        "eval_generate_limit": 3,
        "eval_max_new_tokens": 6,
        **kw,
    }
    return Recipe.model_validate(fields)


# ---------------------------------------------------------------------------------------------------------------
# The recipe keys


def test_eval_metrics_are_checked_against_the_registry_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("eval_metrics: [rouge_l, rouge_x]\n", encoding="utf-8")
    with pytest.raises(WbError) as e:
        recipes.load(path)
    assert "\n" not in str(e.value)
    assert str(e.value).startswith(f"{path}: eval_metrics: ") and "unknown metric 'rouge_x'" in str(e.value)
    assert "rouge_l" in str(e.value) and "numeric_match" in str(e.value)  # the names it could have used
    with pytest.raises(WbError, match="label_accuracy needs a suite's label set"):
        recipes.load(None, ["eval_metrics=[label_accuracy]"])
    with pytest.raises(WbError, match="loss is not computed from generated answers"):
        recipes.load(None, ["eval_metrics=[loss]"])
    with pytest.raises(WbError, match=r"metric_for_best: .*'bleu' is not eval_loss or one of eval_metrics"):
        recipes.load(None, ["eval_metrics=[rouge_l]", "metric_for_best=bleu"])


def test_metric_for_best_takes_the_name_with_or_without_eval_prefix() -> None:
    r = recipes.load(None, ["eval_metrics=[rouge_l, numeric_match]", "metric_for_best=eval_numeric_match"])
    assert r.metric_for_best == "numeric_match" and r.eval_generate_limit == 32
    assert recipes.load(None).metric_for_best == "eval_loss" and recipes.load(None).eval_metrics == []


def test_mean_scores_use_the_registry_metrics_on_chinese_and_numbers() -> None:
    from workbench.train.task_eval import mean_scores

    got = mean_scores(
        ["北京是首都", "The answer is 42.", ""], ["北京是首都", "42", "x"], ["exact_match", "numeric_match"]
    )
    assert got["exact_match"] == pytest.approx(1 / 3)
    assert got["numeric_match"] == 1.0  # only the item whose reference is a number counts, and 42 matches
    assert "numeric_match" not in mean_scores(["x"], ["北京"], ["numeric_match"])


# ---------------------------------------------------------------------------------------------------------------
# During training


def test_every_eval_logs_the_task_metrics_of_generated_answers(
    tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rouge_score.rouge_scorer import RougeScorer

    from workbench.evaluate.metrics import UnicodeTokenizer
    from workbench.models import generate
    from workbench.runfile.training import LogRow

    answered: list[tuple[list[str], list[str]]] = []  # (prompts, answers) of each eval
    real = generate.generate_answers

    def recording(loaded: Any, prompts: list[str], *args: Any, **kwargs: Any) -> Any:
        answers = real(loaded, prompts, *args, **kwargs)
        answered.append((list(prompts), [a.text for a in answers]))
        return answers

    monkeypatch.setattr(generate, "generate_answers", recording)
    # Answers that share a lead with the reference, so ROUGE-L is neither 0 nor 1 and the comparison below says much.
    records = [{**r, "output": f"The secret word is {r['output']}."} for r in RECORDS]
    data = write_jsonl(tmp_path / "words.jsonl", records)
    result = train(
        recipe(
            tmp_path, tiny, data=data, eval_data=data, eval_max_new_tokens=8,
            eval_metrics=["rouge_l", "exact_match"], metric_for_best="rouge_l",
        )
    )  # fmt: skip
    rows = read_jsonl(result.run_dir / "trainer_log.jsonl")
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in evals] == [4, 8, 12] and len(answered) == 3
    # Recomputed with rouge-score's own scorer (wb's ROUGE-L is its own LCS) over the answers each eval generated
    # for the first eval_generate_limit validation records.
    scorer = RougeScorer(["rougeL"], tokenizer=UnicodeTokenizer())
    refs = [r["output"] for r in records[:3]]
    for r, (prompts, answers) in zip(evals, answered, strict=True):
        LogRow.model_validate(r)
        assert all(rec["instruction"] in p for rec, p in zip(records, prompts, strict=False)) and len(prompts) == 3
        expected = sum(scorer.score(ref, a)["rougeL"].fmeasure for ref, a in zip(refs, answers, strict=True)) / 3
        assert r["eval_rouge_l"] == pytest.approx(expected, abs=1e-6), answers
        assert 0.0 <= r["eval_exact_match"] <= 1.0
    assert any(r["eval_rouge_l"] > 0 for r in evals)  # the model learnt the lead: not a comparison of zeros
    manifest = result.manifest
    assert manifest["metric_for_best"] == "eval_rouge_l"
    # The best checkpoint is the first eval with the highest rouge_l (Trainer keeps the first on ties).
    best = max(evals, key=lambda r: (r["eval_rouge_l"], -r["step"]))
    assert manifest["best_checkpoint"].endswith(f"checkpoint-{best['step']}")
    assert manifest["best_metric"] == pytest.approx(best["eval_rouge_l"])
    assert manifest["best_eval_loss"] == pytest.approx(min(r["eval_loss"] for r in evals))
    assert (tmp_path / "wb-cache" / "generations.sqlite").is_file()  # answers went through the generation cache
    svg = (result.run_dir / "loss.svg").read_text(encoding="utf-8")
    assert "eval_rouge_l" in svg and "eval_exact_match" in svg


def _scripted(monkeypatch: pytest.MonkeyPatch, values: list[float]) -> list[Any]:
    """TaskEval answers as usual, but reports the scripted rouge_l values in turn (so the best step is known)."""
    from workbench.train import task_eval

    seen: list[Any] = []
    real = task_eval.TaskEval.__call__

    def scripted(self: Any, model: Any) -> dict[str, float]:
        real(self, model)  # the generation path runs for real
        seen.append(model)
        return {"rouge_l": values[len(seen) - 1]}

    monkeypatch.setattr(task_eval.TaskEval, "__call__", scripted)
    return seen


def test_the_best_checkpoint_is_the_one_the_metric_selects_not_the_lowest_eval_loss(
    tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file

    seen = _scripted(monkeypatch, [0.2, 0.9, 0.5])
    result = train(recipe(tmp_path, tiny, eval_metrics=["rouge_l"], metric_for_best="rouge_l"))
    assert len(seen) == 3
    rows = read_jsonl(result.run_dir / "trainer_log.jsonl")
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["eval_rouge_l"] for r in evals] == [0.2, 0.9, 0.5]
    assert evals[-1]["eval_loss"] < evals[1]["eval_loss"]  # the loss would have picked step 12
    assert result.manifest["best_checkpoint"].endswith("checkpoint-8") and result.manifest["best_metric"] == 0.9
    # the published path, not the staging folder Trainer saved it in; so in what a resume reads, too
    best_path = str(result.run_dir / "checkpoints" / "checkpoint-8")
    state = json.loads((result.run_dir / "checkpoints" / "checkpoint-12" / "trainer_state.json").read_text())
    assert result.manifest["best_checkpoint"] == best_path and state["best_model_checkpoint"] == best_path
    # load_best_model_at_end: the saved adapter is checkpoint-8's
    final = load_file(result.run_dir / "adapter" / "adapter_model.safetensors")
    best = load_file(result.run_dir / "checkpoints" / "checkpoint-8" / "adapter_model.safetensors")
    last = load_file(result.run_dir / "checkpoints" / "checkpoint-12" / "adapter_model.safetensors")
    assert final.keys() == best.keys()
    assert all(torch.equal(final[k], best[k]) for k in final)
    assert not all(torch.equal(final[k], last[k]) for k in final)


def test_early_stopping_watches_metric_for_best(tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _scripted(monkeypatch, [0.9, 0.4, 0.3])
    result = train(
        recipe(tmp_path, tiny, eval_metrics=["rouge_l"], metric_for_best="rouge_l", early_stopping_patience=1)
    )
    # The loss falls at every eval, but rouge_l does not improve after step 4: stop at the next eval.
    assert result.manifest["global_step"] == 8
    assert result.manifest["best_checkpoint"].endswith("checkpoint-4")


def test_eval_metrics_without_validation_records_warn_instead_of_failing(tmp_path: Path, tiny: Path) -> None:
    r = recipe(
        tmp_path,
        tiny,
        eval_data=None,
        val_size=0,
        eval_metrics=["rouge_l"],
        max_steps=2,
        eval_steps=None,
        save_steps=None,
    )
    result = train(r)
    assert any("eval_metrics rouge_l: no validation records" in w for w in result.manifest["warnings"])


def test_generation_during_training_is_cached_by_the_current_weights(tmp_path: Path, tiny: Path) -> None:
    from workbench.models.base import load_model, load_tokenizer
    from workbench.models.generate import GenerationCache
    from workbench.train.task_eval import TaskEval, trainable_sha256

    model = load_model(str(tiny))
    for p in model.parameters():
        p.requires_grad_(False)
    head = model.lm_head.weight
    head.requires_grad_(True)
    cache = GenerationCache(tmp_path / "gen.sqlite")
    task = TaskEval(
        records=[{"instruction": r["instruction"], "output": r["output"]} for r in RECORDS[:3]],
        metrics=["rouge_l"],
        tokenizer=load_tokenizer(str(tiny)),
        template="chat",
        base=str(tiny),
        precision="fp32",
        max_new_tokens=4,
        batch_size=4,
        cache=cache,
    )
    first = task(model)
    assert cache.misses == 3 and cache.hits == 0 and model.training is False
    assert task(model) == first and cache.hits == 3  # same weights: from the cache
    before = trainable_sha256(model)
    with torch.no_grad():
        head.add_(0.01)
    assert trainable_sha256(model) != before
    task(model)
    assert cache.misses == 6  # new weights: generated again


def test_the_report_shows_the_task_metric_curve(tmp_path: Path, tiny: Path, wb: Any) -> None:
    result = train(recipe(tmp_path, tiny, eval_metrics=["chrf"], metric_for_best="chrf", max_steps=8))
    html_path = tmp_path / "r.html"
    assert wb("report", result.run_dir, "-o", html_path).exit_code == 0
    page = html_path.read_text(encoding="utf-8")
    assert "Task metrics during training" in page and "eval chrf" in page
    assert "best checkpoint chosen by" in page and "eval_chrf" in page
    summary = json.loads(html_path.with_suffix(".json").read_text(encoding="utf-8"))
    assert summary["runs"][0]["summary"]["train"]["metric_for_best"] == "eval_chrf"
