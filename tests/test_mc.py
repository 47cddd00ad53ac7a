"""Multiple-choice files and log-likelihood scoring: every file shape, bad rows named by line, option sums equal to
plain transformers, few-shot examples never scored, MC sets in metrics.json and as gate paths."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import read_jsonl, write_jsonl
from workbench.errors import WbError
from workbench.evaluate import mc
from workbench.runfile.evals import Continuation, EvalMetrics, McScores, ScoreRow
from workbench.runfile.gate_paths import gate_path_problem

DATA = Path(__file__).resolve().parent / "data"
NUTRITION = DATA / "mmlu" / "nutrition_test_head.csv"


# ---------------------------------------------------------------------------------------------------------------
# Reading files


def test_an_mmlu_csv_without_header_keeps_quoted_commas_and_newlines_and_numbers_items_by_their_first_line() -> None:
    got = mc.load_mc(NUTRITION)
    assert got.shape == "mmlu_csv" and got.name == "nutrition_test_head" and not got.rejects
    assert [it.reference for it in got.items] == ["C", "B", "A", "A", "C", "D", "B", "B"]
    second = got.items[1]
    assert second.instruction.startswith("In which one of the following circumstances will the prevalence")
    assert "all else being constant?" in second.instruction  # the comma inside the quoted field stayed
    assert second.options == {
        "A": "If the incidence rate of the disease falls.",
        "B": "If survival time with the disease increases.",
        "C": "If recovery of the disease is faster.",
        "D": "If the population in which the disease is measured increases.",
    }
    # The question spans two physical lines; an item is named by the line its record starts on.
    lines = NUTRITION.read_text(encoding="utf-8").splitlines()
    starts = [n for n, line in enumerate(lines, start=1) if line.lstrip('"').startswith("In which one of")]
    assert second.id == starts[0] and got.items[0].id == 1


def test_a_ceval_csv_with_bom_crlf_an_id_column_and_lowercase_header_is_read(tmp_path: Path) -> None:
    path = tmp_path / "ceval_val.csv"
    text = (
        "\ufeffid,question,A,B,C,D,answer,explanation\r\n"
        '0,"下列城市中，哪一座是中国的首都？",上海,北京,广州,"深圳,广东",B,首都是北京。\r\n'
        "1,水在标准大气压下的沸点是多少摄氏度？,90,100,110,120,B,\r\n"
    )
    path.write_bytes(text.encode("utf-8"))
    got = mc.load_mc(path)
    assert got.shape == "header_csv" and not got.rejects
    first, second = got.items
    assert first.id == 0 and first.instruction == "下列城市中，哪一座是中国的首都？"
    assert first.options == {"A": "上海", "B": "北京", "C": "广州", "D": "深圳,广东"} and first.reference == "B"
    assert second.id == 1 and second.options is not None and second.options["B"] == "100"


def test_a_cmmlu_csv_with_an_unnamed_index_column_is_read(tmp_path: Path) -> None:
    path = tmp_path / "cmmlu.csv"
    path.write_text(
        ",Question,A,B,C,D,Answer\n0,中秋节在农历的哪一天？,正月初一,五月初五,八月十五,九月初九,C\n", encoding="utf-8"
    )
    (item,) = mc.load_mc(path).items
    assert item.id == 0 and item.reference == "C" and item.options is not None and item.options["C"] == "八月十五"


def test_jsonl_choices_as_a_list_or_a_map_and_answers_as_a_letter_or_an_index(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "items.jsonl",
        [
            {"question": "Which is a fruit?", "choices": ["Carrot", "Apple", "Potato", "Onion"], "answer": 1},
            {"question": "Capital of Italy?", "choices": {"A": "Milan", "B": "Rome", "C": "Turin"}, "answer": "b"},
            {"id": "q3", "question": "2 + 2 = ?", "options": ["3", "4"], "answer": "B"},
        ],
    )
    got = mc.load_mc(path)
    assert got.shape == "jsonl" and not got.rejects
    assert [it.reference for it in got.items] == ["B", "B", "B"]
    assert [it.id for it in got.items] == [1, 2, "q3"]
    assert got.items[1].options == {"A": "Milan", "B": "Rome", "C": "Turin"}


def test_arc_jsonl_with_digit_labels_is_relabelled_to_letters(tmp_path: Path) -> None:
    arc = {
        "id": "Mercury_7175875",
        "question": {
            "stem": "Which gas do plants take in?",
            "choices": [
                {"label": "1", "text": "oxygen"},
                {"label": "2", "text": "carbon dioxide"},
                {"label": "3", "text": "helium"},
                {"label": "4", "text": "neon"},
            ],
        },
        "answerKey": "2",
    }
    (item,) = mc.load_mc(write_jsonl(tmp_path / "arc.jsonl", [arc])).items
    assert item.id == "Mercury_7175875" and item.reference == "B"
    assert item.options == {"A": "oxygen", "B": "carbon dioxide", "C": "helium", "D": "neon"}
    assert mc.load_mc(tmp_path / "arc.jsonl").shape == "arc_jsonl"


def test_bad_rows_are_rejected_with_their_line_and_field_and_good_rows_kept(tmp_path: Path) -> None:
    good = {"question": "Which is a fruit?", "choices": ["Carrot", "Apple"], "answer": "B"}
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            good,
            {"question": "Q?", "choices": ["x", "y"], "answer": "E"},
            '{"question": "broken',
            "",
            {"question": "Q?", "choices": ["x", "  "], "answer": "A"},
            {"question": "Q?", "choices": ["x", "y"], "answer": 5},
            good,
        ],
    )
    got = mc.load_mc(path)
    assert [it.id for it in got.items] == [1, 7]
    assert [(r.line, r.field) for r in got.rejects] == [(2, "answer"), (3, "(line)"), (5, "choices[1]"), (6, "answer")]
    assert got.rejects[0].describe(path) == f"{path}:line 2: field answer: 'E' is none of the choices A, B"

    csv_path = tmp_path / "mmlu.csv"
    csv_path.write_text("Q one?,a,b,c,d,A\nQ two?,a,b,c,d,Z\nQ three?,a,,c,d,C\nQ four?,a,b,c,d\n", encoding="utf-8")
    got = mc.load_mc(csv_path)
    assert [it.id for it in got.items] == [1]
    assert [(r.line, r.field) for r in got.rejects] == [(2, "answer"), (3, "B"), (4, "(row)")]


def test_a_file_that_cannot_be_a_multiple_choice_set_is_one_line(tmp_path: Path) -> None:
    two_columns = tmp_path / "pairs.csv"
    two_columns.write_text("question,answer\nhi,there\n", encoding="utf-8")
    with pytest.raises(WbError, match=r"pairs.csv: not a multiple-choice file"):
        mc.load_mc(two_columns)
    all_bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "Q?", "choices": ["x"], "answer": "A"}])
    with pytest.raises(WbError, match=r"no usable multiple-choice item in 1 rows \(first: .*line 1: field choices"):
        mc.load_mc(all_bad)
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("Caf\xe9?,a,b,c,d,A\n".encode("latin-1"))
    with pytest.raises(WbError, match="not UTF-8"):
        mc.load_mc(latin1)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Question,A,B,D,Answer", "the header has option columns A, B, D but no C; option columns must run A, B, C"),
        ("id,question,A,C,D,E,answer", "the header has option columns A, C, D, E but no B; option columns must run"),
        ("Question,A,B,B,Answer", "the header names column B twice; rename or remove one"),
    ],
)
def test_a_header_with_a_gap_or_a_repeat_in_its_option_columns_is_refused(
    tmp_path: Path, header: str, message: str
) -> None:
    path = tmp_path / "ceval.csv"
    width = header.count(",") + 1
    rows = ["7,中秋节在农历的哪一天？,正月初一,五月初五,八月十五,九月初九,C", "0,1+1=?,1,2,3,4,B"]
    cells = [r.split(",")[-width:] for r in rows]
    cells[1][-1] = "A"  # an answer every header names
    path.write_bytes(("\ufeff" + header + "\r\n" + "".join(",".join(c) + "\r\n" for c in cells)).encode("utf-8"))
    with pytest.raises(WbError) as err:
        mc.load_mc(path)
    assert str(err.value).startswith(f"{path}:line 1: {message}")


def test_an_unclosed_quote_costs_its_own_line_and_every_other_row_is_read(tmp_path: Path) -> None:
    path = tmp_path / "ceval_val.csv"
    rows = [
        '0,"下列城市中，哪一座是中国的首都？,上海,北京,广州,深圳,B,首都是北京。',  # the quote is never closed
        "1,水在标准大气压下的沸点是多少摄氏度？,90,100,110,120,B,",
        '2,"1+1 等于几？",1,2,3,4,B,"""二"" 是答案"',
        "3,中秋节在农历的哪一天？,正月初一,五月初五,八月十五,九月初九,C,",
    ]
    text = "\ufeffid,question,A,B,C,D,answer,explanation\r\n" + "".join(r + "\r\n" for r in rows)
    path.write_bytes(text.encode("utf-8"))
    got = mc.load_mc(path)
    assert [it.id for it in got.items] == [1, 2, 3]
    assert [it.instruction for it in got.items][1:] == ["1+1 等于几？", "中秋节在农历的哪一天？"]
    assert [r.describe(path) for r in got.rejects] == [
        f"{path}:line 2: field (row): not readable as CSV: ',' expected after '\"' (a quote left open?); "
        "reading goes on at line 3"
    ]
    assert len(got.items) + len(got.rejects) == len(rows)  # every physical line is an item or a reject

    mmlu = tmp_path / "mmlu.csv"  # no header; the quote runs to the end of the file
    mmlu.write_text('Q one?,a,b,c,d,A\n"Q two?,a,b,c,d,B\nQ three?,a,b,c,d,C\nQ four?,a,b,c,d,D\n', encoding="utf-8")
    got = mc.load_mc(mmlu)
    assert [(it.id, it.reference) for it in got.items] == [(1, "A"), (3, "C"), (4, "D")]
    assert [r.describe(mmlu) for r in got.rejects] == [
        f"{mmlu}:line 2: field (row): a quote opened on this line is never closed; reading goes on at line 3"
    ]


def test_a_row_wider_than_the_header_is_rejected_not_cut(tmp_path: Path) -> None:
    path = tmp_path / "mc.csv"
    path.write_text("Question,A,B,C,D,Answer\nWhich, really?,x,y,z,w,B\nok?,1,2,3,4,A\n", encoding="utf-8")
    got = mc.load_mc(path)
    assert [it.id for it in got.items] == [3]
    assert [r.describe(path) for r in got.rejects] == [f"{path}:line 2: field (row): 7 columns, the header has 6"]


def test_the_shipped_probes_have_four_options_balanced_letters_and_distinct_choices() -> None:
    from workbench.evaluate.forgetting import probes_dir

    for name, minimum in (("mc_general_en", 200), ("mc_general_zh", 200)):
        got = mc.load_mc(probes_dir() / f"{name}.jsonl")
        assert len(got.items) >= minimum and not got.rejects
        counts = {letter: sum(it.reference == letter for it in got.items) for letter in "ABCD"}
        assert max(counts.values()) - min(counts.values()) <= 1, counts
        for it in got.items:
            assert it.options is not None and len(set(it.options.values())) == 4
        assert len({it.instruction + "|".join((it.options or {}).values()) for it in got.items}) == len(got.items)
    zh = mc.load_mc(probes_dir() / "mc_general_zh.jsonl")
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in it.instruction) for it in zh.items)


# ---------------------------------------------------------------------------------------------------------------
# Scoring with a tiny model

torch_needed = pytest.mark.skipif(
    __import__("importlib").util.find_spec("torch") is None, reason="needs the training extra"
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from workbench.models.base import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("mc") / "tiny")


@pytest.fixture(scope="module")
def loaded(tiny: Path) -> Any:
    from workbench.models.targets import Target, load

    return load([Target(str(tiny), str(tiny))])


@functools.cache
def _plain_model(tiny: Path) -> tuple[Any, Any]:
    """The tiny model and its tokenizer loaded by plain transformers, once per folder (loading them for each of the
    dozens of sums below was most of these tests' time; the model is only read, in eval mode)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    return tok, AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()


def _plain_sum(tiny: Path, context: str, continuation: str) -> tuple[float, int]:
    """The recipe McScores documents, with plain transformers: no wb code involved."""
    import torch

    tok, model = _plain_model(tiny)
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    n_ctx = len(tok(context, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0]
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    total = sum(float(logprobs[i - 1, whole[i]]) for i in range(n_ctx, len(whole)))
    return total, len(whole) - n_ctx


ITEMS = [
    {"question": "What is the capital of France?", "choices": ["Paris", "Berlin", "Madrid", "Rome"], "answer": "A"},
    {"question": "水在多少摄氏度沸腾？", "choices": ["100摄氏度", "50摄氏度", "0摄氏度", "1000摄氏度"], "answer": "A"},
    {"question": "Which is a mammal?", "choices": ["A trout", "A whale, the largest one", "A frog"], "answer": "B"},
]


@torch_needed
@pytest.mark.parametrize("mode", ["template", "plain"])
def test_option_log_likelihoods_equal_plain_transformers_sums_and_pick_the_same_argmax(
    tiny: Path, loaded: Any, tmp_path: Path, mode: str
) -> None:
    from workbench.evaluate.loglik import score_items

    items = mc.load_mc(write_jsonl(tmp_path / "items.jsonl", ITEMS)).items
    scored = score_items(loaded, items[1:], items[:1], mode=mode, batch_size=3, precision="fp32", letters=True)
    for item, s in zip(items[1:], scored, strict=True):
        assert items[0].instruction in s.context  # the few-shot example is in the context
        sums = []
        for c in s.choices:
            expected, tokens = _plain_sum(tiny, s.context, c.continuation)
            assert c.tokens == tokens and c.loglik == pytest.approx(expected, abs=1e-4)
            sums.append(expected)
        texts = list((item.options or {}).values())
        assert [c.continuation.strip() for c in s.choices] == texts
        letters = "ABCD"
        assert s.predicted == letters[max(range(len(sums)), key=lambda i: sums[i])]
        norm = [v / len(t) for v, t in zip(sums, texts, strict=True)]
        assert s.predicted_norm == letters[max(range(len(norm)), key=lambda i: norm[i])]
        assert s.letter_context is not None and s.letters is not None
        letter_sums = [_plain_sum(tiny, s.letter_context, c.continuation)[0] for c in s.letters]
        assert [c.loglik for c in s.letters] == pytest.approx(letter_sums, abs=1e-4)
        assert s.predicted_letter == letters[max(range(len(letter_sums)), key=lambda i: letter_sums[i])]
        if mode == "plain":
            assert s.context.endswith("Answer:") and all(c.continuation.startswith(" ") for c in s.choices)
        else:
            assert s.context.endswith("assistant") and s.choices[0].continuation.startswith("\n")


@torch_needed
def test_batching_and_the_cache_do_not_change_a_log_likelihood(
    loaded: Any, tmp_path: Path, auto_precision: str
) -> None:
    from workbench.evaluate.loglik import score_items
    from workbench.models.generate import GenerationCache
    from workbench.models.loglik import LoglikCache

    items = mc.load_mc(write_jsonl(tmp_path / "items.jsonl", ITEMS)).items
    one = score_items(loaded, items, [], batch_size=1, precision="auto")
    many = score_items(loaded, items, [], batch_size=16, precision="auto")
    tolerance = {"fp32": 1e-4, "bf16": 5e-2}[auto_precision]  # bf16: padding moves the rounding (measured 0.011)
    for a, b in zip(one, many, strict=True):
        assert [c.loglik for c in a.choices] == pytest.approx([c.loglik for c in b.choices], abs=tolerance)
    cache = LoglikCache(tmp_path / "ll.sqlite", GenerationCache(tmp_path / "gen.sqlite"))
    first = score_items(loaded, items, [], cache=cache)
    assert cache.misses > 0 and cache.hits == 0
    again = score_items(loaded, items, [], cache=cache)
    assert cache.hits == cache.misses and again == first


@torch_needed
def test_log_likelihoods_run_under_the_precision_asked_for_and_the_cache_keeps_bf16_apart_from_fp32(
    tiny: Path, loaded: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from workbench.evaluate.loglik import score_items
    from workbench.models.generate import GenerationCache
    from workbench.models.loglik import LoglikCache

    items = mc.load_mc(write_jsonl(tmp_path / "items.jsonl", ITEMS)).items
    seen: list[bool] = []
    forward = loaded.model.forward

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(torch.is_autocast_enabled("cpu"))
        return forward(*args, **kwargs)

    monkeypatch.setattr(loaded.model, "forward", recording)
    cache = LoglikCache(tmp_path / "ll.sqlite", GenerationCache(tmp_path / "gen.sqlite"))
    fp32 = score_items(loaded, items, [], cache=cache, precision="fp32")
    assert seen and not any(seen)  # fp32: no autocast
    seen.clear()
    misses = cache.misses
    bf16 = score_items(loaded, items, [], cache=cache, precision="bf16")
    assert seen and all(seen)  # bf16: every forward pass under autocast
    assert cache.misses == 2 * misses and cache.hits == 0  # bf16 sums are not served from fp32 entries
    first = fp32[1].choices[0]
    expected, _ = _plain_sum(tiny, fp32[1].context, first.continuation)
    assert first.loglik == pytest.approx(expected, abs=1e-4)
    got = [c.loglik for s in bf16 for c in s.choices]
    want = [c.loglik for s in fp32 for c in s.choices]
    # bf16 rounding, not another model: on an AVX2 EPYC (bf16 emulated) the sums (-21 to -131) move by at most 0.074,
    # 6.4e-4 relative; the same tiny model built with seed 1 or 2 differs from these fp32 sums by at least 5.5e-3
    # relative on every option. 2e-3 sits between the two.
    assert got != want and got == pytest.approx(want, rel=2e-3, abs=0)
    assert score_items(loaded, items, [], cache=cache, precision="bf16") == bf16 and cache.hits == misses


@torch_needed
def test_wb_eval_on_a_model_alone_scores_mc_sets_with_fewshot_items_left_out(
    tiny: Path, tmp_path: Path, wb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workbench.evaluate.loglik import SCORING
    from workbench.models.base import tiny_model_dir

    monkeypatch.setenv("WB_CACHE", str(tmp_path / "cache"))
    other = tiny_model_dir(tmp_path / "other", seed=1)
    jsonl = write_jsonl(tmp_path / "mc_small.jsonl", [{**row, "id": f"q{i}"} for i, row in enumerate(ITEMS * 3)])
    out = tmp_path / "eval"
    args = [
        "eval",
        "--model",
        tiny,
        "--base-model",
        other,
        "--no-probes",
        "--mc",
        jsonl,
        "--mc",
        NUTRITION,
        "--mc-letters",
    ]
    result = wb(*args, "--fewshot", "2", "-o", out, "-q")
    assert result.exit_code == 0, result.stderr
    metrics = EvalMetrics.model_validate(json.loads((out / "metrics.json").read_text()))
    small, nutrition = metrics.forgetting["mc_small"], metrics.forgetting["nutrition_test_head"]
    assert small.kind == "mc" and small.n == 7 and nutrition.n == 6
    assert small.settings["fewshot_ids"] == ["q0", "q1"] and nutrition.settings["shape"] == "mmlu_csv"
    assert small.settings["scoring"] == SCORING[True] and metrics.generation["mc_letters"] is True
    for name in ("mc_accuracy", "mc_accuracy_norm", "mc_letter_accuracy"):
        stat = small.metrics[name]
        assert stat.tuned is not None and 0 <= stat.tuned <= 1 and stat.mcnemar_p is not None
        assert stat.wins is not None and stat.ties is not None and stat.losses is not None
        assert stat.wins + stat.ties + stat.losses == 7
    rows = [ScoreRow.model_validate(r) for r in read_jsonl(out / "scores.jsonl")]
    small_rows = [r for r in rows if r.set == "mc_small"]
    assert [r.id for r in small_rows] == [f"q{i}" for i in range(2, 9)]  # the two examples are not scored
    first = small_rows[0]
    assert first.options == {"A": "A trout", "B": "A whale, the largest one", "C": "A frog"}
    assert first.tuned.mc is not None and first.base is not None and first.base.mc is not None
    assert ITEMS[0]["question"] in first.tuned.mc.context and ITEMS[1]["question"] in first.tuned.mc.context
    assert first.tuned.mc.context == first.base.mc.context
    assert first.tuned.mc.choices[0].loglik != first.base.mc.choices[0].loglik  # two different models
    value = (first.tuned.model_extra or {})["mc_accuracy"]
    assert value == int(first.tuned.mc.predicted == first.reference)
    # The accuracy is the mean of the items' 0/1 scores.
    mean = sum((r.tuned.model_extra or {})["mc_accuracy"] for r in small_rows) / 7
    assert small.metrics["mc_accuracy"].tuned == pytest.approx(mean)
    assert metrics.generation["loglik_cache_misses"] > 0

    # Gate paths from the schema and the registry: no gate change needed.
    gate = tmp_path / "gate.yaml"
    gate.write_text(
        "checks:\n  - metric: forgetting.mc_small.mc_accuracy.delta_lower\n    min: -1\n"
        "  - metric: forgetting.nutrition_test_head.mc_letter_accuracy.tuned\n    min: 0\n",
        encoding="utf-8",
    )
    passed = wb("gate", out, "-t", gate)
    assert passed.exit_code == 0, passed.stdout + passed.stderr
    assert gate_path_problem("forgetting.mc_general_zh.mc_accuracy.delta_lower") is None
    assert "unknown metric" in (gate_path_problem("forgetting.mc_general_zh.mc_acc.tuned") or "")

    # The report shows the MC sets as forgetting rows.
    report = wb("report", out, "-o", tmp_path / "report.html")
    assert report.exit_code == 0, report.stderr
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "mc_small" in page and "mc_letter_accuracy" in page

    # Again: every log-likelihood comes from the cache and the scores are the same.
    again = wb(*args, "--fewshot", "2", "-o", out, "-q")
    assert again.exit_code == 0
    metrics2 = json.loads((out / "metrics.json").read_text())
    assert metrics2["generation"]["loglik_cache_misses"] == 0
    assert read_jsonl(out / "scores.jsonl") == [r.model_dump(mode="json", exclude_none=True) for r in rows]


@torch_needed
def test_mc_input_errors_are_one_line_with_exit_2(tiny: Path, tmp_path: Path, wb: Any) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("only,two\n", encoding="utf-8")
    result = wb("eval", "--model", tiny, "--no-probes", "--mc", bad, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "bad.csv: not a multiple-choice file" in result.stderr
    few = write_jsonl(tmp_path / "few.jsonl", ITEMS[:2])
    result = wb("eval", "--model", tiny, "--no-probes", "--mc", few, "--fewshot", "2", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "--fewshot 2 leaves no item to score" in result.stderr
    result = wb("eval", "--model", tiny, "--no-probes", "--mc", few)
    assert result.exit_code == 2 and "-o DIR" in result.stderr


def test_rejected_rows_are_counted_named_and_warned_about(tmp_path: Path) -> None:
    from workbench.evaluate import scoring, sets
    from workbench.evaluate.suite import DEFAULT

    path = write_jsonl(tmp_path / "some_bad.jsonl", [ITEMS[0], {"question": "Q?", "choices": ["x"], "answer": "A"}])
    s = sets.mc_set(path, 0, None)
    assert s.settings["rejected"] == 1 and s.settings["rejects"] == [
        f"{path}:line 2: field choices: needs at least 2 choices, got 1"
    ]
    s.mc["tuned"] = [
        McScores(
            context="c",
            choices=[Continuation(continuation=f" {t}", loglik=-float(i), tokens=1) for i, t in enumerate("wxyz")],
            letter_context="l",
            letters=[Continuation(continuation=f" {t}", loglik=-1.0, tokens=1) for t in "ABCD"],
            predicted="A",
            predicted_norm="A",
            predicted_letter="A",
        )
    ]
    _, summary, warnings = scoring.score_set(s, DEFAULT, 0)
    assert summary.kind == "mc" and summary.metrics["mc_accuracy"].tuned == 1
    assert summary.settings["rejected"] == 1
    assert any("1 rows of" in w and "line 2: field choices" in w for w in warnings)


@torch_needed
def test_without_mc_letters_only_the_options_are_scored_and_the_output_says_so(
    tiny: Path, tmp_path: Path, wb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workbench.evaluate.loglik import SCORING

    monkeypatch.setenv("WB_CACHE", str(tmp_path / "cache"))
    jsonl = write_jsonl(tmp_path / "mc_small.jsonl", [{**row, "id": f"q{i}"} for i, row in enumerate(ITEMS)])
    out = tmp_path / "eval"
    result = wb("eval", "--model", tiny, "--no-base", "--no-probes", "--mc", jsonl, "--mc-prompt", "plain", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert "mc_small: scored options (mc_accuracy, mc_accuracy_norm); letters not scored (--mc-letters" in " ".join(
        result.stdout.split()
    )
    metrics = EvalMetrics.model_validate(json.loads((out / "metrics.json").read_text()))
    small = metrics.forgetting["mc_small"]
    assert set(small.metrics) == {"mc_accuracy", "mc_accuracy_norm"} and small.settings["scoring"] == SCORING[False]
    assert metrics.generation["mc_letters"] is False
    # Only the options' log-likelihoods were computed: one per option, none for a letter prompt.
    assert metrics.generation["loglik_cache_misses"] == sum(len(row["choices"]) for row in ITEMS)
    for row in read_jsonl(out / "scores.jsonl"):
        mc_scores = row["tuned"]["mc"]
        assert "letters" not in mc_scores and "letter_context" not in mc_scores and "predicted_letter" not in mc_scores
        assert "mc_letter_accuracy" not in row["tuned"] and len(mc_scores["choices"]) == len(row["options"])


@torch_needed
def test_letters_of_one_item_share_one_forward_pass(
    loaded: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workbench.evaluate.loglik import score_items

    items = mc.load_mc(write_jsonl(tmp_path / "items.jsonl", ITEMS)).items
    rows: list[int] = []
    forward = loaded.model.forward

    def counting(*args: Any, **kwargs: Any) -> Any:
        rows.append(int(kwargs["input_ids"].shape[0]))
        return forward(*args, **kwargs)

    monkeypatch.setattr(loaded.model, "forward", counting)
    scored = score_items(loaded, items, [], batch_size=1, letters=True)
    requests = [(s.context, c.continuation) for s in scored for c in s.choices] + [
        (s.letter_context or "", c.continuation) for s in scored for c in s.letters or []
    ]
    tok = loaded.tokenizer
    distinct = {tuple(tok(a + b, add_special_tokens=False)["input_ids"][:-1]) for a, b in requests}
    contexts = {a for a, _ in requests}
    # Each context runs once, as one row with its continuations after it: the letters of an item (one token each
    # after the same context) share one row, and so do its options (prefix reuse), so the rows are fewer than the
    # distinct full rows (what ran before prefix reuse), which are fewer than the requests.
    assert sum(rows) == len(contexts) == 2 * len(items) < len(distinct) <= 11 + len(items) < len(requests)
