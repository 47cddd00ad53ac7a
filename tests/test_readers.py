"""One reader per file format: multiple-choice files, preference files, predictions, probes and eval sets are read by
`workbench.io` whatever their compression (gzip, zstd) and format (JSON Lines, JSON, Parquet, CSV), told apart by
content, with the same one-line errors naming the file, the line (item, row) and the field; conversations go
through one role map (`records.message_role`)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import zstandard
from conftest import write_jsonl

from workbench import pairs as pdata
from workbench.errors import WbError
from workbench.evaluate import mc, sets
from workbench.evaluate.forgetting import load_probe_set
from workbench.io.reader import RecordReader, read_objects
from workbench.preference_files import read_preferences

DATA = Path(__file__).resolve().parent / "data"
NUTRITION = DATA / "mmlu" / "nutrition_test_head.csv"

MC_ROWS = [
    {"question": "Which is a fruit?", "choices": ["Carrot", "Apple", "Leek"], "answer": 1},
    {"question": "中国的首都是哪里？", "choices": {"A": "上海", "B": "北京"}, "answer": "B"},
]
PAIRS = [
    {"prompt": "用一句话介绍长城。", "chosen": "长城是中国古代的防御工程。", "rejected": "不知道"},
    {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
]


def _compressed(path: Path, how: str) -> Path:
    data = path.read_bytes()
    if how == "gzip":
        out = path.with_name(path.name + ".gz")
        out.write_bytes(gzip.compress(data))
    else:
        out = path.with_name(path.name + ".zst")
        out.write_bytes(zstandard.ZstdCompressor().compress(data))
    return out


def _items(got: mc.McFile) -> list[tuple[Any, str, dict[str, str] | None, str]]:
    return [(it.id, it.instruction, it.options, it.reference) for it in got.items]


# --- multiple choice --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["gzip", "zstd"])
def test_a_compressed_mmlu_csv_reads_as_the_plain_one(tmp_path: Path, how: str) -> None:
    plain = tmp_path / "nutrition.csv"
    plain.write_bytes(NUTRITION.read_bytes())
    packed = _compressed(plain, how)
    got, want = mc.load_mc(packed), mc.load_mc(plain)
    assert (got.name, got.shape) == ("nutrition", "mmlu_csv")
    assert _items(got) == _items(want) and len(got.items) > 3


@pytest.mark.parametrize("how", ["gzip", "zstd"])
def test_a_compressed_jsonl_mc_file_reads_as_the_plain_one(tmp_path: Path, how: str) -> None:
    plain = write_jsonl(tmp_path / "items.jsonl", MC_ROWS)
    got = mc.load_mc(_compressed(plain, how))
    assert got.shape == "jsonl" and _items(got) == _items(mc.load_mc(plain))
    assert got.items[0].options == {"A": "Carrot", "B": "Apple", "C": "Leek"} and got.items[0].reference == "B"


def test_parquet_mc_files_in_the_hugging_face_and_ceval_shapes(tmp_path: Path) -> None:
    mmlu = tmp_path / "mmlu.parquet"  # MMLU on the Hub: question, choices (a list), answer (an index)
    pl.DataFrame(
        {"question": ["1+1=?"], "subject": ["math"], "choices": [["1", "2", "3", "4"]], "answer": [1]}
    ).write_parquet(mmlu)
    got = mc.load_mc(mmlu)
    assert got.shape == "parquet" and _items(got) == [(1, "1+1=?", {"A": "1", "B": "2", "C": "3", "D": "4"}, "B")]

    arc = tmp_path / "arc.parquet"  # ARC on the Hub: choices {text: [...], label: [...]}, answerKey
    pl.DataFrame(
        {
            "id": ["Mercury_1"],
            "question": ["Which is a gas at room temperature?"],
            "choices": [{"text": ["iron", "oxygen", "salt"], "label": ["1", "2", "3"]}],
            "answerKey": ["2"],
        }
    ).write_parquet(arc)
    (item,) = mc.load_mc(arc).items
    assert (item.id, item.options, item.reference) == ("Mercury_1", {"A": "iron", "B": "oxygen", "C": "salt"}, "B")

    ceval = tmp_path / "ceval_val.parquet"  # C-Eval's columns: id, question, A..D, answer, explanation
    pl.DataFrame(
        {
            "id": [0, 1],
            "question": ["中秋节在农历的哪一天？", "水的沸点是多少摄氏度？"],
            "A": ["正月初一", "90"],
            "B": ["五月初五", "100"],
            "C": ["八月十五", "110"],
            "D": ["九月初九", "120"],
            "answer": ["C", "Z"],
            "explanation": ["", ""],
        }
    ).write_parquet(ceval)
    got = mc.load_mc(ceval)
    assert got.shape == "header_parquet" and [(it.id, it.reference) for it in got.items] == [(0, "C")]
    assert [r.describe(ceval) for r in got.rejects] == [
        f"{ceval}:row 2: field answer: 'Z' is none of the choices A, B, C, D"
    ]
    assert mc.looks_like_mc(ceval) and mc.looks_like_mc(mmlu)


def test_a_json_array_mc_file_numbers_its_items(tmp_path: Path) -> None:
    path = tmp_path / "items.json"
    path.write_text(json.dumps([MC_ROWS[0], {"question": "Q?", "choices": ["x"], "answer": "A"}]), encoding="utf-8")
    got = mc.load_mc(path)
    assert got.shape == "json" and [it.id for it in got.items] == [1]
    assert [r.describe(path) for r in got.rejects] == [f"{path}:item 2: field choices: needs at least 2 choices, got 1"]


@pytest.mark.parametrize(
    ("header", "column"),
    [("question,A,,B,answer", 3), ("question,A,B,answer,", 5), ("id,question,A,B,answer,,explanation", 6)],
)
def test_a_mc_csv_header_with_an_unnamed_column_is_one_line_naming_it(tmp_path: Path, header: str, column: int) -> None:
    path = tmp_path / "gap.csv"
    width = header.count(",") + 1
    path.write_text(header + "\n" + ",".join(["x"] * (width - 2) + ["A", "y"]) + "\n", encoding="utf-8")
    with pytest.raises(WbError) as err:
        mc.load_mc(path)
    message = str(err.value)
    assert message.startswith(f"{path}:line 1: column {column} of the header has no name") and "\n" not in message


def test_an_unnamed_first_column_is_still_the_index_of_a_cmmlu_csv(tmp_path: Path) -> None:
    path = tmp_path / "cmmlu.csv"
    path.write_text(",Question,A,B,Answer\n7,1+1=?,1,2,B\n", encoding="utf-8")
    (item,) = mc.load_mc(path).items
    assert (item.id, item.reference) == (7, "B")


def test_a_record_csv_header_with_an_unnamed_column_is_one_line_with_exit_2(tmp_path: Path, wb: Any) -> None:
    path = tmp_path / "gap.csv"
    path.write_text("instruction,,output\nhi,lost,there\n", encoding="utf-8")
    with pytest.raises(WbError, match=r"gap\.csv:line 1: column 2 of the header has no name \(after 'instruction'\)"):
        list(RecordReader(path))
    result = wb("clean", path, "-o", tmp_path / "out.jsonl")
    assert result.exit_code == 2 and "column 2 of the header has no name" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- preference files -------------------------------------------------------------------------------------------


def _pair_tuples(pairs: list[pdata.Pair]) -> list[tuple[Any, ...]]:
    return [(p.line, p.prompt, p.chosen, p.rejected) for p in pairs]


@pytest.mark.parametrize("how", ["gzip", "zstd", "parquet"])
def test_preference_files_read_the_same_compressed_or_as_parquet(tmp_path: Path, how: str) -> None:
    plain = write_jsonl(tmp_path / "prefs.jsonl", PAIRS)
    if how == "parquet":
        other = tmp_path / "prefs.parquet"
        pl.DataFrame(PAIRS).write_parquet(other)
    else:
        other = _compressed(plain, how)
    assert _pair_tuples(pdata.load_pairs(other)) == _pair_tuples(pdata.load_pairs(plain))
    assert [ex for _, ex in read_preferences(other)] == [ex for _, ex in read_preferences(plain)]
    assert [k.label for k in pdata.load_unpaired(other)] == [True, False, True, False]


def test_a_json_array_preference_file_named_txt_is_read_by_its_content(tmp_path: Path) -> None:
    path = tmp_path / "prefs.txt"
    path.write_text(json.dumps(PAIRS, ensure_ascii=False), encoding="utf-8")
    assert [(p.line, p.chosen) for p in pdata.load_pairs(path)] == [(1, "长城是中国古代的防御工程。"), (2, "4")]
    sft = tmp_path / "sft.txt"  # GRPO's prompts from SFT records: read by content too
    sft.write_text(json.dumps([{"instruction": "Say hi", "output": "Hi"}]), encoding="utf-8")
    (prompt,) = pdata.load_prompts(sft)
    assert (prompt.line, prompt.prompt, prompt.reference) == (1, ({"role": "user", "content": "Say hi"},), "Hi")


def test_chatgpt_and_bard_speakers_are_assistants_in_preference_files(tmp_path: Path) -> None:
    rows = [
        {
            "conversations": [{"from": "human", "value": "2+2?"}],
            "chosen": {"from": "chatgpt", "value": "4"},
            "rejected": {"from": "bard", "value": "5"},
        }
    ]
    (pair,) = pdata.load_pairs(write_jsonl(tmp_path / "p.jsonl", rows))
    assert (pair.prompt, pair.chosen, pair.rejected) == (({"role": "user", "content": "2+2?"},), "4", "5")
    sft = [
        {
            "conversations": [
                {"from": "system", "value": "Be brief."},
                {"from": "human", "value": "Hi"},
                {"from": "bing", "value": "Hello"},
                {"from": "human", "value": "Bye"},
            ]
        },
        {"messages": [{"role": "developer", "content": "Terse."}, {"role": "user", "content": "Go"}]},
    ]
    first, second = pdata.load_prompts(write_jsonl(tmp_path / "sft.jsonl", sft))
    assert first.prompt[0] == {"role": "system", "content": "Be brief."}
    assert first.prompt[2] == {"role": "assistant", "content": "Hello"}
    assert second.prompt[0] == {"role": "system", "content": "Terse."}


# --- eval sets, predictions, probes -----------------------------------------------------------------------------

EVAL_ROWS = [
    {
        "instruction": "Pick one: A) 3 B) 4. 2+2=?",
        "output": "B",
        "answer_type": "choice",
        "options": {"A": "3", "B": "4"},
    },
    {"instruction": "2+3=", "output": "5", "answer_type": "number"},
]


@pytest.mark.parametrize("fmt", ["json", "parquet", "jsonl.gz"])
def test_eval_set_records_carry_their_answer_type_and_options_in_every_format(tmp_path: Path, fmt: str) -> None:
    if fmt == "json":
        path = tmp_path / "eval.json"
        path.write_text(json.dumps(EVAL_ROWS), encoding="utf-8")
    elif fmt == "parquet":
        path = tmp_path / "eval.parquet"
        pl.DataFrame([EVAL_ROWS[0], {**EVAL_ROWS[1], "options": None}]).write_parquet(path)
    else:
        path = _compressed(write_jsonl(tmp_path / "eval.jsonl", EVAL_ROWS), "gzip")
    items = sets.task_items(path, None)
    assert [(it.answer_type, it.options) for it in items] == [("choice", {"A": "3", "B": "4"}), ("number", None)]


def test_a_bad_answer_type_in_a_json_eval_set_names_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "eval.json"
    path.write_text(json.dumps([{**EVAL_ROWS[1], "answer_type": "vibes"}]), encoding="utf-8")
    with pytest.raises(WbError, match=r"eval\.json:\w+ 1: field answer_type: 'vibes' is not one of"):
        sets.task_items(path, None)


def test_predictions_and_probes_are_read_compressed_or_as_json(tmp_path: Path, wb: Any) -> None:
    preds = [{"id": "a", "instruction": "2+2=", "reference": "4", "prediction": "4"}]
    packed = _compressed(write_jsonl(tmp_path / "preds.jsonl", preds), "zstd")
    result = wb("eval", "--predictions", packed, "-o", tmp_path / "ev", "-q")
    assert result.exit_code == 0, result.stderr
    probes = tmp_path / "mine.json"
    probes.write_text(json.dumps([{"instruction": "Capital of France?", "output": "Paris"}]), encoding="utf-8")
    (item,) = load_probe_set(probes).items
    assert (item.id, item.references) == (1, ["Paris"])


def test_read_objects_names_the_item_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"a": 1}, [1, 2]]), encoding="utf-8")
    with pytest.raises(WbError, match=r"rows\.json:item 2: expected a JSON object, got list"):
        list(read_objects(path))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    assert list(read_objects(empty)) == []


# --- a new format is one entry ------------------------------------------------------------------------------------


def test_a_format_registered_in_one_entry_is_read_by_every_reader(tmp_path: Path, monkeypatch: Any) -> None:
    from workbench.io import formats

    def tsv(data: bytes, path: Path) -> pl.DataFrame:
        return pl.read_csv(data.split(b"\n", 1)[1], separator="\t", infer_schema=False)

    toy = formats.TableFormat("tsv", (b"#TSV\n",), (".tsv",), "columns", tsv)  # type: ignore[arg-type]
    monkeypatch.setitem(formats.TABLES, "tsv", toy)
    records = tmp_path / "records.data"
    records.write_text("#TSV\ninstruction\toutput\nSay hi\tHi\n", encoding="utf-8")
    (batch,) = list(RecordReader(records))
    assert RecordReader(records).info.format == "tsv" and batch.rows[0][0] == "Say hi" and batch.rows[0][2] == "Hi"
    prefs = tmp_path / "prefs.data"
    prefs.write_text("#TSV\nprompt\tchosen\trejected\n2+2?\t4\t5\n", encoding="utf-8")
    assert _pair_tuples(pdata.load_pairs(prefs)) == [(1, ({"role": "user", "content": "2+2?"},), "4", "5")]
    items = tmp_path / "mc.data"
    items.write_text("#TSV\nquestion\tA\tB\tanswer\n1+1=?\t1\t2\tB\n", encoding="utf-8")
    assert _items(mc.load_mc(items)) == [(1, "1+1=?", {"A": "1", "B": "2"}, "B")]
