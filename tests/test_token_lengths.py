"""`wb stats --tokenizer`: lengths in the model's own tokens after its chat template, and the max_length to pick."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import write_jsonl
from test_chat_templates import TEMPLATES, tiny_tokenizer

from workbench.token_lengths import nearest_rank, summarize

ZH_TERMS = Path(__file__).resolve().parent / "data" / "zh_term_explanations.json"


def test_summary_gives_percentiles_shares_over_and_the_99_percent_length() -> None:
    s = summarize(list(range(100, 0, -1)), max_lengths=(50, 99, 100))
    assert (s["min"], s["p50"], s["p90"], s["p99"], s["max"]) == (1, 50, 90, 99, 100)
    assert s["over"] == {"50": 0.5, "99": 0.01, "100": 0.0}
    assert s["covering_99"] == 99 and s["suggested_max_length"] == 128
    assert s["cdf"][-1] == [100, 1.0] and all(a[0] <= b[0] for a, b in zip(s["cdf"], s["cdf"][1:], strict=False))
    assert nearest_rank([5], 0.99) == 5
    assert summarize([])["suggested_max_length"] is None


@pytest.fixture
def tokenizer_dir(tmp_path: Path) -> Path:
    tok = tiny_tokenizer((TEMPLATES / "qwen2.5-instruct.jinja").read_text(encoding="utf-8"))
    tok.save_pretrained(tmp_path / "tok")
    return tmp_path / "tok"


def test_lengths_are_the_tokens_of_the_rendered_conversation(tmp_path: Path, tokenizer_dir: Path, wb: Any) -> None:
    from transformers import AutoTokenizer

    records = json.loads(ZH_TERMS.read_text(encoding="utf-8"))[:30]
    records.append({"instruction": "<script>alert(1)</script>", "input": "", "output": "x"})
    records.append({"instruction": "<script>alert(1)</script>", "input": "", "output": "y"})
    src = write_jsonl(tmp_path / "zh.jsonl", records)
    html = tmp_path / "stats.html"
    res = wb(
        "stats",
        src,
        "--tokenizer",
        tokenizer_dir,
        "--max-length",
        "256",
        "--max-length",
        "64",
        "--json",
        "--html",
        html,
    )
    assert res.exit_code == 0, res.output
    t = json.loads(res.stdout)["token_lengths"]
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)

    def rendered_tokens(r: dict[str, str]) -> int:
        msgs = [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["output"]}]
        return len(tok(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)["input_ids"])

    want = sorted(rendered_tokens(r) for r in records)
    assert (t["records"], t["min"], t["max"]) == (32, want[0], want[-1])
    assert t["covering_99"] == want[31]  # nearest rank: 99 % of 32 records is all 32
    assert t["suggested_max_length"] % 64 == 0 and 0 <= t["suggested_max_length"] - want[31] < 64
    assert t["over"] == {
        "64": round(sum(v > 64 for v in want) / 32, 6),
        "256": round(sum(v > 256 for v in want) / 32, 6),
    }
    page = html.read_text(encoding="utf-8")
    assert "<svg" in page and f"max_length: {t['suggested_max_length']}" in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    table = wb("stats", src, "--tokenizer", tokenizer_dir)
    assert f"suggested max_length {t['suggested_max_length']}" in " ".join(table.output.split())


def test_a_missing_tokenizer_or_bad_template_is_one_line(tmp_path: Path, wb: Any) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": "b"}])
    res = wb("stats", src, "--tokenizer", tmp_path / "nope")
    assert res.exit_code == 2 and "nope" in res.stderr and "Traceback" not in res.stderr
    res = wb("stats", src, "--tokenizer", tmp_path / "nope", "--template", "qwen9")
    assert res.exit_code == 2 and "--template" in res.stderr


def test_tool_conversations_are_measured_when_the_template_renders_them(tmp_path: Path) -> None:
    from test_tool_conversations import OPENAI

    from workbench.token_lengths import token_lengths

    src = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": "b"}, OPENAI])
    for name, measured, skipped in (("qwen2.5-instruct.jinja", 2, 0), ("llama3-instruct.jinja", 1, 1)):
        tok = tiny_tokenizer((TEMPLATES / name).read_text(encoding="utf-8"))
        tok.save_pretrained(tmp_path / name)
        t = token_lengths(src, str(tmp_path / name))
        assert (t["records"], t["skipped_tool_conversations"]) == (measured, skipped)
