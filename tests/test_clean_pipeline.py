"""`wb clean` end to end through the library: outputs, accounting, determinism, atomicity."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import DEMO_DATA, read_jsonl, write_jsonl

from workbench.clean.dispatch import run
from workbench.clean.profile import load

RAW = [
    {"instruction": "把下面的句子翻译成英文。", "input": "我爱机器学习。", "output": "I love machine learning."},
    {"instruction": "What is 2+2?", "input": "<noinput>", "output": "4"},
    '{"instruction": "broken", "output": ',
    {"instruction": "Tell me a joke", "input": "", "output": "As an AI language model, I cannot tell jokes."},
    {"instruction": "Contact?", "input": "", "output": "Mail bob.jones@gmail.com or call 13812345678."},
    {"instruction": "Count", "input": "", "output": 3},
    {"instruction": "Emoji", "input": "", "output": "Party 🎉 time 👨‍👩‍👧"},
    {"instruction": "Empty", "input": "", "output": "N/A"},
]


def clean(
    tmp_path: Path, records: list[object], profile: str = "default", name: str = "raw.jsonl"
) -> tuple[Path, dict]:
    src = write_jsonl(tmp_path / name, records)
    result = run(src, tmp_path / "out" / "clean.jsonl", load(profile))
    return tmp_path / "out", result.summary


def test_every_record_is_kept_dropped_or_rejected_with_a_reason(tmp_path: Path) -> None:
    out, summary = clean(tmp_path, RAW)
    kept = read_jsonl(out / "clean.jsonl")
    dropped = read_jsonl(out / "clean.dropped.jsonl")
    rejects = read_jsonl(out / "clean.rejects.jsonl")
    assert (summary["read"], summary["kept"], summary["dropped"], summary["rejected"]) == (8, 4, 2, 2)
    assert summary["invariant_holds"] and summary["invariant"] == "read = kept + dropped + rejected"
    assert [d["line"] for d in dropped] == [4, 8]
    assert [d["rule"] for d in dropped] == ["refusal", "empty_output"]
    assert all(d["reason"] and d["record"]["instruction"] for d in dropped)
    assert [(r["line"], r["kind"]) for r in rejects] == [(3, "bad_json"), (6, "wrong_type")]
    assert rejects[0]["raw"] == '{"instruction": "broken", "output": '
    assert rejects[1]["field"] == "output"
    assert [k["instruction"] for k in kept] == ["把下面的句子翻译成英文。", "What is 2+2?", "Contact?", "Emoji"]
    assert kept[1]["input"] == ""  # <noinput> placeholder emptied
    assert kept[2]["output"] == "Mail <EMAIL> or call <PHONE>."
    assert kept[3]["output"] == "Party 🎉 time 👨‍👩‍👧"
    assert summary["modified"]["pii_redacted"] == 1 and summary["pii_found"]["email"] == 1
    assert set(kept[0]) == {"instruction", "input", "output", "system", "history"}


def test_stats_file_matches_the_summary_and_records_the_mapping(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "gpteacher.json", [{"instruction": "Say hi", "input": "", "response": "Hi!"}])
    result = run(src, tmp_path / "clean.jsonl", load("default"))
    stats = json.loads((tmp_path / "clean.stats.json").read_text())
    assert stats == json.loads(json.dumps(result.summary))
    assert stats["mapping"]["output"] == "response"
    assert stats["input"]["format"] == "jsonl"  # sniffed from content despite the .json name
    assert sum(stats["kept_output_tokens_histogram"]["counts"]) == stats["kept"] == 1
    manifest = json.loads((tmp_path / "clean.manifest.json").read_text())
    assert manifest["inputs"]["data"]["sha256"] == stats["input"]["sha256"]
    assert manifest["versions"]["polars"] and manifest["peak_rss_mb"] > 0


def test_strict_profile_drops_personal_data_instead_of_redacting(tmp_path: Path) -> None:
    out, _ = clean(tmp_path, RAW, profile="strict")
    dropped = {d["line"]: d for d in read_jsonl(out / "clean.dropped.jsonl")}
    assert dropped[5]["rule"] == "pii"
    assert dropped[5]["reason"] == "contains personal data: email, phone"


def test_outputs_are_byte_identical_across_runs(tmp_path: Path) -> None:
    names = ("clean.jsonl", "clean.dropped.jsonl", "clean.rejects.jsonl", "clean.stats.json")
    runs = []
    for i, batch_size in enumerate((50_000, 50_000, 64)):
        out = tmp_path / f"run{i}"
        run(DEMO_DATA, out / "clean.jsonl", load("default"), batch_size=batch_size)
        runs.append({n: (out / n).read_bytes() for n in names})
    assert runs[0] == runs[1]
    # Smaller batches: the same kept records and stats; the same drops, written batch by batch.
    assert runs[2]["clean.jsonl"] == runs[0]["clean.jsonl"]
    assert runs[2]["clean.stats.json"] == runs[0]["clean.stats.json"]
    assert sorted(runs[2]["clean.dropped.jsonl"].splitlines()) == sorted(runs[0]["clean.dropped.jsonl"].splitlines())


def test_demo_data_accounting_and_planted_defects(tmp_path: Path) -> None:
    result = run(DEMO_DATA, tmp_path / "clean.jsonl", load("default"))
    s = result.summary
    assert s["read"] == s["kept"] + s["dropped"] + s["rejected"] == 183
    assert s["rejected"] == 3
    fired = {rule for rule, n in s["dropped_by_rule"].items() if n}
    assert {
        "empty_output",
        "refusal",
        "missing_context",
        "merged_instructions",
        "truncated_output",
        "repeated_lines",
    } <= fired


def test_gzip_input_gives_the_same_output_as_plain(tmp_path: Path) -> None:
    gz = tmp_path / "raw.jsonl.gz"
    gz.write_bytes(gzip.compress(DEMO_DATA.read_bytes()))
    run(DEMO_DATA, tmp_path / "a.jsonl", load("default"))
    run(gz, tmp_path / "b.jsonl", load("default"))
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_output_may_not_overwrite_the_input(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "clean.jsonl", RAW[:1])
    from workbench.errors import WbError

    with pytest.raises(WbError, match="overwrite the input"):
        run(src, src, load("default"))
    assert read_jsonl(src)[0]["output"] == "I love machine learning."


@pytest.mark.parametrize("batch_size", [400, 97])
def test_generated_realistic_data_cleans_with_exact_accounting(tmp_path: Path, batch_size: int) -> None:
    data = Path(__file__).parent / "data" / "generated_400.jsonl"
    result = run(data, tmp_path / "clean.jsonl", load("default"), batch_size=batch_size)
    s = result.summary
    assert s["read"] == 400 == s["kept"] + s["dropped"] + s["rejected"]
    fired = {rule for rule, n in s["dropped_by_rule"].items() if n}
    assert {"refusal", "repeated_lines", "repeated_ngrams", "truncated_output", "exact_duplicate"} <= fired
    assert len(read_jsonl(tmp_path / "clean.dropped.jsonl")) == s["dropped"]


# Real Chinese data (alpaca_chinese_dataset, tests/data/README.md): the default profile must leave Chinese as written.
ZH_TERMS = Path(__file__).resolve().parent / "data" / "zh_term_explanations.json"
CJK_PUNCTUATION = "，。、：；？！（）「」『』《》【】……—“”‘’－～\u3000℃²"


def _kept_with_sources(out: Path, sources: list[dict]) -> list[tuple[dict, dict]]:
    dropped = {d["line"] for d in read_jsonl(out / "clean.dropped.jsonl")}
    rest = [s for line, s in enumerate(sources, 1) if line not in dropped]
    kept = read_jsonl(out / "clean.jsonl")
    assert len(kept) == len(rest)
    return list(zip(kept, rest, strict=True))


@pytest.mark.parametrize("profile", ["default", "strict", "zh"])
def test_real_chinese_records_keep_punctuation_ideographs_and_emoji_byte_identical(
    tmp_path: Path, profile: str
) -> None:
    sources = json.loads(ZH_TERMS.read_text(encoding="utf-8"))
    # The same records again with emoji, full-width Latin letters and digits, and ASCII punctuation mixed in.
    mixed = [
        {
            **s,
            "output": f"{s['output']} 👍🏽 👨‍👩‍👧 ‼️ ＡＢＣ１２３，ＯＫ！ 1️⃣ 🇨🇳",
            "instruction": s["instruction"] + "🤔",
        }
        for s in sources
    ]
    src = tmp_path / "zh.json"
    src.write_text(json.dumps(sources + mixed, ensure_ascii=False), encoding="utf-8")
    result = run(src, tmp_path / "out" / "clean.jsonl", load(profile))
    pairs = _kept_with_sources(tmp_path / "out", sources + mixed)
    assert len(pairs) >= 140
    for kept, source in pairs:
        for field in ("instruction", "input", "output"):
            want = source[field].replace("ＡＢＣ１２３", "ABC123").replace("ＯＫ", "OK")
            # Only whitespace may differ (trailing spaces, runs of spaces in prose).
            assert "".join(kept[field].split()) == "".join(want.split()), (field, want[:60])
            for ch in CJK_PUNCTUATION:
                assert kept[field].count(ch) == want.count(ch), (ch, want[:60])
    assert any("👍🏽 👨‍👩‍👧 ‼️ ABC123，OK！ 1️⃣ 🇨🇳" in k["output"] for k, _ in pairs)
    # Of the real records, only whitespace changes: one record in 152 (main's NFKC rewrote 151 of 151 kept).
    real = [(k, s) for k, s in pairs if not s["instruction"].endswith("🤔")]
    assert len(real) >= 150
    assert sum(1 for k, s in real if k["output"] != s["output"]) <= 2
    assert result.summary["invariant_holds"]


def _zh_profile(tmp_path: Path, chinese: str | None) -> Path:
    prof = tmp_path / "zh-profile.yaml"
    line = f"  chinese: {chinese}\n" if chinese else ""
    prof.write_text(f"name: t\nnormalize:\n  unicode: NFKC\n{line}rules:\n  empty_output:\n", encoding="utf-8")
    return prof


def test_traditional_chinese_is_converted_to_simplified_when_asked_and_counted(tmp_path: Path) -> None:
    opencc = pytest.importorskip("opencc", reason="pip install 'wb[zh]' (make test installs it)")
    sources = json.loads(ZH_TERMS.read_text(encoding="utf-8"))
    s2t = opencc.OpenCC("s2t.json")
    traditional = [{k: s2t.convert(v) for k, v in s.items()} for s in sources]
    differs = sum(1 for t, s in zip(traditional, sources, strict=True) if t != s)
    assert differs > 140  # nearly every real record has characters with a traditional form
    src = tmp_path / "zh-hant.json"
    src.write_text(json.dumps(traditional, ensure_ascii=False), encoding="utf-8")
    summary = run(src, tmp_path / "out" / "clean.jsonl", load(_zh_profile(tmp_path, "t2s"))).summary
    assert summary["modified"]["chinese_converted"] == differs
    pairs = _kept_with_sources(tmp_path / "out", sources)
    back = sum(1 for k, s in pairs if k["output"].split() == s["output"].split())  # one record loses a space
    assert back == len(pairs)  # s2t then t2s gives every real record its written text back
    assert pairs[0][0]["output"].startswith("政治（Politics）是一个")
    # Off by default: the same file is left in traditional characters.
    plain = run(src, tmp_path / "plain" / "clean.jsonl", load(_zh_profile(tmp_path, None))).summary
    assert plain["modified"]["chinese_converted"] == 0
    assert read_jsonl(tmp_path / "plain" / "clean.jsonl")[0]["output"] == traditional[0]["output"]


def test_chinese_conversion_without_opencc_is_one_line_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wb: Any
) -> None:
    from workbench import text

    monkeypatch.setitem(sys.modules, "opencc", None)  # import opencc now raises ImportError
    text.chinese_converter.cache_clear()
    src = write_jsonl(tmp_path / "raw.jsonl", [{"instruction": "漢字", "output": "簡體"}])
    res = wb("clean", src, "-o", tmp_path / "out.jsonl", "--profile", _zh_profile(tmp_path, "t2s"))
    text.chinese_converter.cache_clear()
    assert res.exit_code == 2
    assert "normalize.chinese: t2s needs OpenCC; install it with pip install 'wb[zh]'" in res.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_an_unknown_chinese_conversion_is_a_profile_error(tmp_path: Path, wb: Any) -> None:
    src = write_jsonl(tmp_path / "raw.jsonl", [{"instruction": "a", "output": "b"}])
    res = wb("clean", src, "-o", tmp_path / "out.jsonl", "--profile", _zh_profile(tmp_path, "x2y"))
    assert res.exit_code == 2 and "normalize.chinese" in res.stderr


def test_cleaning_a_batch_in_chunks_gives_the_same_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import workbench.clean.pipeline as pipeline
    import workbench.dedup.minhash as minhash

    data = Path(__file__).parent / "data" / "generated_400.jsonl"
    run(data, tmp_path / "whole" / "clean.jsonl", load("default"))
    monkeypatch.setattr(pipeline, "CLEAN_CHUNK", 37)  # rules and near-duplicate shingling in small pieces
    monkeypatch.setattr(minhash, "ADD_CHUNK", 29)
    chunked = run(data, tmp_path / "chunks" / "clean.jsonl", load("default"))
    assert chunked.stats.dropped and chunked.stats.kept
    for name in ("clean.jsonl", "clean.dropped.jsonl", "clean.rejects.jsonl", "clean.stats.json"):
        assert (tmp_path / "chunks" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_each_step_holds_one_chunk_of_a_batch_and_the_dropped_file_keeps_a_batchs_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch goes through every step (rules, decontamination, exact and near duplicates, staging) a chunk at a
    time, so only one chunk's frames exist at once; the files are byte for byte those of whole batches, and in the
    dropped file each batch still lists the rules' drops, then decontamination's, then exact duplicates'."""
    import random

    import workbench.clean.pipeline as pipeline
    from workbench.dedup.contamination import EvalIndex
    from workbench.dedup.exact import ExactDuplicates
    from workbench.dedup.minhash import NearDuplicates

    rng = random.Random(12)
    words = ["model", "naïve", "café", "token", "layer", "batch", "Ünïcödé", "weight", "loss", "rate", "data", "step"]

    def prose(i: int) -> str:
        if i % 2:
            return (
                "".join(rng.choice("的一是在不了有和人这中大为上个国我以要他时来用们生到作地") for _ in range(160))
                + "。"
            )
        return " ".join(rng.choice(words) for _ in range(150)) + "."

    records: list[Any] = []
    for i in range(120):
        if i % 10 == 3:
            records.append({"instruction": f"Task {i}", "input": "", "output": "As an AI language model, I cannot."})
        elif i % 10 == 5 and i > 10:
            records.append(dict(records[i - 5]))  # exact duplicate
        elif i % 10 == 7 and i > 10:
            near = dict(records[i - 7], instruction=f"Task {i - 7} 第{i - 7}题 again")
            near["output"] = near["output"].replace(near["output"][40:44], "四五六七" if i % 2 else "zzzz", 1)
            records.append(near)  # near duplicate (another prompt: not an exact duplicate)
        else:
            records.append({"instruction": f"Task {i} 第{i}题", "input": "", "output": prose(i)})
    records[50] = '{"instruction": "broken'  # a reject in the first batch
    evals = write_jsonl(tmp_path / "eval.jsonl", [records[i] for i in (9, 29, 69, 89)])
    src = write_jsonl(tmp_path / "raw.jsonl", records)
    heights: list[int] = []

    def spy(cls: Any, name: str) -> None:
        original = getattr(cls, name)

        def wrapped(self: Any, frame: Any, *a: Any, **kw: Any) -> Any:
            heights.append(frame.height)
            return original(self, frame, *a, **kw)

        monkeypatch.setattr(cls, name, wrapped)

    for cls, name in ((EvalIndex, "check"), (ExactDuplicates, "check"), (NearDuplicates, "add")):
        spy(cls, name)
    run(src, tmp_path / "whole" / "c.jsonl", load("default"), batch_size=60, against=[evals])
    assert max(heights) > 16
    heights.clear()
    monkeypatch.setattr(pipeline, "CLEAN_CHUNK", 16)
    chunked = run(src, tmp_path / "chunks" / "c.jsonl", load("default"), batch_size=60, against=[evals])
    assert heights and max(heights) <= 16
    by_rule = chunked.summary["dropped_by_rule"]
    assert by_rule["refusal"] == 12 and by_rule["contamination"] == 4
    assert by_rule["exact_duplicate"] >= 10 and by_rule["near_duplicate"] >= 10, by_rule
    for name in ("c.jsonl", "c.dropped.jsonl", "c.rejects.jsonl", "c.stats.json"):
        assert (tmp_path / "chunks" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    dropped = read_jsonl(tmp_path / "chunks" / "c.dropped.jsonl")
    kinds = {"refusal": 0, "contamination": 1, "exact_duplicate": 2}
    for first in (1, 61):
        in_batch = [
            (kinds[d["rule"]], d["line"]) for d in dropped if first <= d["line"] < first + 60 and d["rule"] in kinds
        ]
        assert in_batch == sorted(in_batch) and {k for k, _ in in_batch} == {0, 1, 2}


def test_writing_records_holds_a_chunk_of_json_text_not_the_whole_frame(tmp_path: Path) -> None:
    """Kept and dropped records are encoded `WRITE_CHUNK` at a time: the JSON text exists three times while it is
    written (polars, Python str, bytes; a str of Chinese text or emoji takes 2-4 bytes a character), so encoding a
    whole batch at once held several times the file's size."""
    import tracemalloc

    import polars as pl

    from workbench.frames import rows_to_frame, write_dropped, write_records

    n = 40_000
    rows = [
        (f"第{i}题：解释“模型”🙂", "", f"答案 {i}：模型把输入映射到输出。Ünïcödé naïve café", "", []) for i in range(n)
    ]
    frame = rows_to_frame(list(range(1, n + 1)), rows).with_columns(pl.lit("near_duplicate").alias("_rule"))
    columns = [pl.col("_line").alias("line"), pl.col("_rule").alias("rule")]
    peaks = []
    for name, write in (
        ("kept", lambda f: write_records(f, frame)),
        ("dropped", lambda f: write_dropped(f, frame, columns)),
    ):
        tracemalloc.start()
        try:
            with (tmp_path / name).open("wb") as f:
                write(f)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    kept, dropped = (tmp_path / "kept").read_bytes(), (tmp_path / "dropped").read_bytes()
    assert kept.count(b"\n") == dropped.count(b"\n") == n
    assert json.loads(kept.splitlines()[-1])["instruction"] == f"第{n - 1}题：解释“模型”🙂"
    assert json.loads(dropped.splitlines()[0]) == {
        "line": 1,
        "rule": "near_duplicate",
        "record": json.loads(kept.splitlines()[0]),
    }
    assert peaks[0] < len(kept) and peaks[1] < len(dropped), (peaks, len(kept), len(dropped))  # whole: 6x
