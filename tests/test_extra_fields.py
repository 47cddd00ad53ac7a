"""A record's own fields (`id`, `source`, `license`, `meta`, anything wb does not read) travel with it through
`wb clean` and `wb dedup`, SFT and preference data alike: kept and dropped files hold them after wb's fields, values
as read; the rejects hold the record as written; `--drop-extra-fields` leaves them out; a field named like one wb
writes is kept as `original_<name>`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import read_jsonl, write_jsonl

from workbench.clean.dispatch import run
from workbench.clean.profile import load

META = {"来源": "百科 🌏", "tags": ["事实", "地理"], "score": 0.75, "nested": {"deep": [1, None, True]}, "n": 10**12}
RECORDS: list[Any] = [
    {"id": "zh-001", "instruction": "中国的首都是哪里？", "output": "北京。", "source": "百科", "meta": META},
    {"instruction": "Capital of France?", "output": "Paris.", "id": 2, "license": "CC-BY-4.0"},
    {"id": "zh-003", "instruction": "中国的首都是哪里？", "output": "北京。", "source": "副本"},  # exact duplicate
    {"id": "en-004", "instruction": "Tell me a joke", "output": "As an AI language model, I cannot.", "rule": "x"},
    {"id": "bad-005", "instruction": "no answer", "meta": {"k": "v"}},  # rejected: no output
    {
        "id": "sg-006",
        "conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好！有什么可以帮你？"}],
    },
    {"instruction": "Plain", "output": "A record with nothing of its own."},
]


def _clean(tmp_path: Path, *args: str, command: str = "clean", records: list[Any] = RECORDS) -> Path:
    from typer.testing import CliRunner

    from workbench.cli import app

    src = write_jsonl(tmp_path / "raw.jsonl", records)
    out = tmp_path / f"{command}.jsonl"
    result = CliRunner().invoke(app, [command, str(src), "-o", str(out), "--quiet", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def test_kept_dropped_and_rejected_records_keep_their_own_fields_after_wbs(tmp_path: Path) -> None:
    out = _clean(tmp_path)
    kept = read_jsonl(out)
    assert kept[0] == {
        "instruction": "中国的首都是哪里？",
        "input": "",
        "output": "北京。",
        "system": "",
        "history": [],
        "id": "zh-001",
        "source": "百科",
        "meta": META,
    }
    assert list(kept[0]) == ["instruction", "input", "output", "system", "history", "id", "source", "meta"]
    assert kept[1]["id"] == 2 and kept[1]["license"] == "CC-BY-4.0"
    assert (
        kept[2]["id"] == "sg-006" and kept[2]["output"] == "你好！有什么可以帮你？"
    )  # a conversation's own fields too
    assert list(kept[3]) == ["instruction", "input", "output", "system", "history"]  # none of its own: none added
    # Unicode written as itself, the large integer and the nesting untouched.
    assert '"meta":{"来源":"百科 🌏","tags":["事实","地理"],"score":0.75,"nested":{"deep":[1,null,true]}' in (
        out.read_text(encoding="utf-8")
    )
    assert '"n":1000000000000}' in out.read_text(encoding="utf-8")
    dropped = {d["line"]: d for d in read_jsonl(tmp_path / "clean.dropped.jsonl")}
    assert dropped[3]["rule"] == "exact_duplicate" and dropped[3]["record"]["id"] == "zh-003"
    assert dropped[3]["record"]["source"] == "副本"
    # A record's own `rule` stays inside `record`: wb's `rule` beside it is the rule that dropped it.
    assert dropped[4]["rule"] == "refusal" and dropped[4]["record"]["rule"] == "x"
    assert dropped[4]["record"]["id"] == "en-004"
    [reject] = read_jsonl(tmp_path / "clean.rejects.jsonl")
    assert json.loads(reject["raw"]) == RECORDS[4]  # the record as written, its fields included


def test_dedup_keeps_their_own_fields_too(tmp_path: Path) -> None:
    out = _clean(tmp_path, command="dedup")
    assert [r.get("id") for r in read_jsonl(out)] == ["zh-001", 2, "en-004", "sg-006", None]
    [dup] = read_jsonl(tmp_path / "dedup.dropped.jsonl")
    assert dup["record"]["id"] == "zh-003"


def test_drop_extra_fields_leaves_them_out_and_the_manifest_says_so(tmp_path: Path) -> None:
    out = _clean(tmp_path, "--drop-extra-fields")
    kept = read_jsonl(out)
    assert len(kept) == 4 and all(list(r) == ["instruction", "input", "output", "system", "history"] for r in kept)
    for d in read_jsonl(tmp_path / "clean.dropped.jsonl"):
        assert list(d["record"]) == ["instruction", "input", "output", "system", "history"]
    manifest = json.loads((tmp_path / "clean.manifest.json").read_text(encoding="utf-8"))
    assert manifest["config"]["extra_fields"] == "drop"
    [reject] = read_jsonl(tmp_path / "clean.rejects.jsonl")
    assert json.loads(reject["raw"]) == RECORDS[4]  # the rejects still hold what was read


def test_a_field_named_like_one_wb_writes_is_kept_as_original_name(tmp_path: Path) -> None:
    records = [
        {"q": "问题一", "instruction": "旧的指令", "output": "答案一", "original_instruction": "更旧的"},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "system": "S"},
    ]
    out = _clean(tmp_path, "--map", "instruction=q", records=records)
    first, second = read_jsonl(out)
    assert first["instruction"] == "问题一"
    assert first["original_original_instruction"] == "旧的指令" and first["original_instruction"] == "更旧的"
    assert second["system"] == "" and second["original_system"] == "S"  # OpenAI records read no `system` key


def test_csv_columns_that_map_to_nothing_are_kept(tmp_path: Path) -> None:
    csv = tmp_path / "raw.csv"
    csv.write_bytes("\ufeffid,instruction,output,来源\r\n7,你好吗？,我很好。,对话\r\n".encode())
    out = tmp_path / "clean.jsonl"
    result = run(csv, out, load("default"))
    assert result.summary["kept"] == 1
    assert read_jsonl(out)[0] == {
        "instruction": "你好吗？",
        "input": "",
        "output": "我很好。",
        "system": "",
        "history": [],
        "id": "7",
        "来源": "对话",
    }


def test_preference_pairs_keep_their_own_fields(tmp_path: Path) -> None:
    pair = {"prompt": "法国的首都是哪里？", "chosen": "巴黎。", "rejected": "伦敦。"}
    records = [
        {"id": "p-1", **pair, "meta": {"annotator": "张三", "agree": 0.9}},
        {**pair, "id": "p-2"},  # exact duplicate
        {
            "messages": [{"role": "user", "content": "2+2?"}],
            "chosen": "4",
            "rejected": "5",
            "prompt": "a note of the annotator",
            "id": "p-3",
        },
    ]
    out = _clean(tmp_path, records=records)
    first, third = read_jsonl(out)
    assert list(first) == ["prompt", "chosen", "rejected", "id", "meta"]
    assert first["meta"] == {"annotator": "张三", "agree": 0.9} and first["chosen"][0]["content"] == "巴黎。"
    assert third["prompt"] == [{"role": "user", "content": "2+2?"}]
    assert third["original_prompt"] == "a note of the annotator" and third["id"] == "p-3"
    [dup] = read_jsonl(tmp_path / "clean.dropped.jsonl")
    assert dup["rule"] == "exact_duplicate" and dup["record"]["id"] == "p-2"
    (tmp_path / "drop").mkdir()
    out = _clean(tmp_path / "drop", "--drop-extra-fields", records=records)
    assert [list(r) for r in read_jsonl(out)] == [["prompt", "chosen", "rejected"]] * 2


def test_kto_examples_keep_their_own_fields(tmp_path: Path) -> None:
    records = [
        {"prompt": "写一句问候", "completion": "你好！", "label": True, "id": 1, "batch": "a"},
        {"prompt": "写一句问候", "completion": "滚。", "label": False, "id": 2, "batch": "b"},
    ]
    out = _clean(tmp_path, records=records)
    assert [(r["id"], r["batch"]) for r in read_jsonl(out)] == [(1, "a"), (2, "b")]
