"""`wb clean --engine ray`: Ray Data gives the local engine's output set, record for record.

One local Ray session serves the whole module (starting one takes several seconds). Skipped when Ray is not
installed (`pip install 'wb[ray]'`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, read_jsonl, write_jsonl
from workbench.clean import dispatch as cleaning
from workbench.clean.output import OutputPaths
from workbench.clean.profile import load

ray = pytest.importorskip("ray", reason="Ray Data is not installed (pip install 'wb[ray]')")

from workbench.clean import ray_engine  # noqa: E402

BASE = REPO / "tests" / "data" / "generated_400.jsonl"
TOOL_CONVERSATION = {
    "messages": [
        {"role": "user", "content": "北京天气怎么样？"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "北京"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
        {"role": "assistant", "content": "北京 21 度。"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ],
}


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def _valid(lines: list[str]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("output"), str) and len(rec["output"]) > 80:
            out.append(rec)
    return out


def _own_fields(n: int, name: str = "rec") -> dict[str, Any]:
    """Fields wb does not use, which every output keeps: an id, Unicode, nesting, a name wb uses in dropped lines."""
    return {"id": f"{name}-{n}", "meta": {"来源": "测试", "tags": ["a", 1.5, None]}, "rule": n}


def _with_own_fields(line: str, n: int) -> str:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return line
    if not isinstance(rec, dict) or n % 3:
        return line
    return json.dumps({**rec, **_own_fields(n)}, ensure_ascii=False)


def planted(tmp: Path) -> tuple[Path, Path]:
    """The 400 generated EN + ZH records (with their malformed lines; every third valid one with fields of its own)
    plus planted duplicates far from their originals, a blank line, a tool conversation; and an eval file one of the
    records leaks into."""
    lines = [_with_own_fields(line, n) for n, line in enumerate(BASE.read_text(encoding="utf-8").splitlines())]
    good = _valid(lines)
    en = [r for r in good if r["output"].isascii()][:6]
    zh = [r for r in good if not r["output"].isascii()][:6]
    extra: list[Any] = []
    for n, r in enumerate(en[:3] + zh[:3]):  # exact: same prompt, other case and punctuation
        copy = {
            "instruction": r["instruction"].upper() + "!!",
            "output": r["output"] + " (copy)",
            **_own_fields(n, "copy"),
        }
        extra.append({**r, **copy})
    for r in en[3:]:  # near: another prompt (so not an exact duplicate), one word of a long answer changed
        words = r["output"].split(" ")
        words[len(words) // 2] = "changed"
        extra.append({**r, "instruction": "Now " + r["instruction"], "output": " ".join(words)})
    for r in zh[3:]:  # near, Chinese: one character changed
        out = r["output"]
        extra.append(
            {
                **r,
                "instruction": "请" + r["instruction"],
                "output": out[: len(out) // 2] + "变" + out[len(out) // 2 + 1 :],
            }
        )
    tool = {**TOOL_CONVERSATION, **_own_fields(0)}
    rows = [*lines[:200], json.dumps(tool, ensure_ascii=False), "", *lines[200:]]
    rows += [json.dumps(r, ensure_ascii=False) for r in extra]
    data = tmp / "raw.jsonl"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    leak = zh[5]["output"][:40]
    evals = write_jsonl(
        tmp / "eval.jsonl", [{"instruction": "复述", "output": leak}, {"instruction": "x", "output": "y"}]
    )
    return data, evals


def _sorted_lines(path: Path) -> list[str]:
    return sorted(path.read_text(encoding="utf-8").splitlines())


def _same_set(local: Path, other: Path) -> None:
    lp, rp = OutputPaths.for_output(local), OutputPaths.for_output(other)
    assert local.read_bytes() == other.read_bytes()  # kept records in input order, byte for byte
    assert lp.rejects.read_bytes() == rp.rejects.read_bytes()
    assert _sorted_lines(lp.dropped) == _sorted_lines(rp.dropped)
    assert json.loads(lp.stats.read_text()) == json.loads(rp.stats.read_text())
    lm, rm = (json.loads(p.read_text()) for p in (lp.manifest, rp.manifest))
    assert lm.keys() == rm.keys() and lm["config"] == rm["config"] and lm["inputs"] == rm["inputs"]
    assert {k: v["sha256"] for k, v in lm["outputs"].items() if k != "dropped"} == {
        k: v["sha256"] for k, v in rm["outputs"].items() if k != "dropped"
    }


def test_ray_engine_writes_the_local_engines_set_across_small_blocks(ray_session: None, tmp_path: Path) -> None:
    data, evals = planted(tmp_path)
    profile = load("default")
    local = cleaning.run(data, tmp_path / "local.jsonl", profile, against=[evals], batch_size=64)
    # 32 KiB blocks: about a dozen, so most planted duplicates sit in another block than their original.
    dist = ray_engine.run(data, tmp_path / "ray.jsonl", profile, against=[evals], block_bytes=32768, batch_size=64)
    s = local.summary
    assert s["dropped_by_rule"]["exact_duplicate"] >= 6 and s["dropped_by_rule"]["near_duplicate"] >= 6
    assert s["dropped_by_rule"]["contamination"] >= 1 and s["rejected"] > 0 and s["kept_tool_conversations"] == 1
    assert dist.summary == s
    _same_set(tmp_path / "local.jsonl", tmp_path / "ray.jsonl")
    dropped = read_jsonl(tmp_path / "ray.dropped.jsonl")
    near = [d for d in dropped if d["rule"] == "near_duplicate"]
    assert any(not d["record"]["output"].isascii() for d in near)  # a Chinese near-duplicate among them
    assert all(d["line"] - d["duplicate_of"] > 200 for d in near)  # planted ones only, far from their originals
    exact = [d for d in dropped if d["rule"] == "exact_duplicate"]
    copies = {d["record"]["id"]: d for d in exact if d["record"].get("id", "").startswith("copy-")}
    assert sorted(copies) == [f"copy-{n}" for n in range(6)]
    assert all(d["rule"] == "exact_duplicate" and d["record"]["rule"] == int(i[5:]) for i, d in copies.items())
    kept = read_jsonl(tmp_path / "ray.jsonl")
    own = [r for r in kept if "id" in r]
    assert len(own) > 20 and all(r["meta"] == _own_fields(0)["meta"] for r in own)


def test_ray_engine_on_a_json_array_keep_longest(ray_session: None, tmp_path: Path) -> None:
    data, _ = planted(tmp_path)
    records = []
    for line in data.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    array = tmp_path / "raw.json"
    array.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    yaml = tmp_path / "longest.yaml"
    yaml.write_text(
        "name: longest\nrules:\n  empty_output:\ndedup:\n  exact:\n    fields: [instruction, input, output]\n"
        "  near:\n    threshold: 0.7\n    keep: longest\n",
        encoding="utf-8",
    )
    profile = load(str(yaml))
    local = cleaning.run(array, tmp_path / "local.jsonl", profile, batch_size=50)
    dist = ray_engine.run(array, tmp_path / "ray.jsonl", profile, batch_size=50)
    assert local.summary["dropped_by_rule"]["near_duplicate"] >= 6
    assert dist.summary == local.summary
    _same_set(tmp_path / "local.jsonl", tmp_path / "ray.jsonl")


def test_cli_engine_ray(ray_session: None, tmp_path: Path, wb: Any) -> None:
    data, _ = planted(tmp_path)
    result = wb("clean", data, "-o", tmp_path / "out.jsonl", "--engine", "ray", "--quiet")
    assert result.exit_code == 0, result.output
    local = wb("clean", data, "-o", tmp_path / "local.jsonl", "--quiet")
    assert result.stdout == local.stdout  # the same accounting line
    _same_set(tmp_path / "local.jsonl", tmp_path / "out.jsonl")
    dedup = wb("dedup", data, "-o", tmp_path / "d-ray.jsonl", "--engine", "ray", "--quiet")
    assert dedup.exit_code == 0 and dedup.stdout == wb("dedup", data, "-o", tmp_path / "d.jsonl", "--quiet").stdout
    _same_set(tmp_path / "d.jsonl", tmp_path / "d-ray.jsonl")
    pairs, _ = planted_pairs(tmp_path)  # preference data: recognised, cleaned on Ray, the same accounting line
    result = wb("clean", pairs, "-o", tmp_path / "p-ray.jsonl", "--engine", "ray", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout == wb("clean", pairs, "-o", tmp_path / "p.jsonl", "--quiet").stdout
    _same_set(tmp_path / "p.jsonl", tmp_path / "p-ray.jsonl")
    semantic = tmp_path / "semantic.yaml"
    semantic.write_text("name: s\ndedup:\n  semantic:\n", encoding="utf-8")
    bad = wb("clean", data, "-o", tmp_path / "s.jsonl", "--engine", "ray", "-p", semantic)
    assert bad.exit_code == 2 and "local engine only" in bad.stderr


PREFS = REPO / "data" / "preference" / "prefs.jsonl"


def _pair(prompt: str, chosen: str, rejected: str, **extra: Any) -> dict[str, Any]:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra}


def planted_pairs(tmp: Path) -> tuple[Path, Path]:
    """The shipped pairs (with an own field on every third) plus every way a pair leaves: a rule (identical answers,
    refusal), contradictions across the file (two of them far apart), an exact and a near duplicate of shipped
    pairs, tied scores, a broken line, a KTO record among pairs (rejected), Chinese; and an eval file one pair leaks
    into."""
    shipped = [json.loads(line) for line in PREFS.read_text(encoding="utf-8").splitlines()]
    rows: list[Any] = [{**r, **_own_fields(n)} if n % 3 == 0 else r for n, r in enumerate(shipped)]
    long_prompt = "Explain in two sentences why the sky looks blue on a clear day and red at sunset, for a child."
    chosen = "Sunlight scatters off air molecules, and blue light scatters the most, so the sky looks blue."
    rows[5:5] = [
        _pair("Pick a colour", "Blue.", "Red."),
        _pair("选一个颜色", "蓝色", "红色", id="zh-1"),
        _pair("Say hi", "Hello there!", "Hello there!"),
        _pair(long_prompt, chosen + " At sunset light travels further, so reds remain.", "Because it is."),
    ]
    rows[60:60] = [
        '{"prompt": "broken", "chosen": ',
        {"prompt": "Hi", "completion": "Hello", "label": True},
        {"prompt": "Name a tree", "completions": [{"text": "Oak.", "score": 5}, {"text": "Pine.", "score": 5}]},
    ]
    rows += [
        _pair("pick a colour ", "red", "blue"),
        _pair("选一个颜色", "红色", "蓝色"),
        _pair(long_prompt, chosen + " At sunset light travels further, so reds remain.", "Because it is so."),
        {**shipped[10], "id": "copy"},
        _pair("Joke?", "I'm sorry, but I cannot help with that.", "Why did the chicken cross the road?"),
        _pair("泄露", "复述这一段评测文本：天空之所以是蓝色的，是因为瑞利散射使蓝光散射得最多。", "不知道"),
    ]
    data = write_jsonl(tmp / "prefs.jsonl", rows)
    evals = write_jsonl(
        tmp / "eval.jsonl", [{"instruction": "复述", "output": "天空之所以是蓝色的，是因为瑞利散射使蓝光散射得最多。"}]
    )
    return data, evals


def test_ray_engine_cleans_preference_pairs_as_the_local_engine_does(ray_session: None, tmp_path: Path) -> None:
    data, evals = planted_pairs(tmp_path)
    profile = load("preference")
    local = cleaning.run(data, tmp_path / "local.jsonl", profile, against=[evals], batch_size=40)
    dist = ray_engine.run(data, tmp_path / "ray.jsonl", profile, against=[evals], batch_size=40)
    s = local.summary
    by_rule = s["dropped_by_rule"]
    assert by_rule["contradictory_pair"] == 4 and by_rule["identical_pair"] == 1 and by_rule["tied_scores"] == 1
    assert by_rule["exact_duplicate"] == 1 and by_rule["near_duplicate"] == 1 and by_rule["contamination"] == 1
    assert by_rule["refusal_chosen"] == 1 and s["rejected"] == 2 and s["preference"]["length_bias"]["pairs"] > 100
    assert dist.summary == s and dist.mapping == local.mapping == {}
    _same_set(tmp_path / "local.jsonl", tmp_path / "ray.jsonl")
    drops = {d["line"]: d for d in read_jsonl(tmp_path / "ray.dropped.jsonl")}
    assert drops[6]["rule"] == "contradictory_pair" and drops[6]["contradicts"] == [
        len(data.read_text().splitlines()) - 5
    ]


def test_ray_engine_cleans_kto_examples_as_the_local_engine_does(ray_session: None, tmp_path: Path) -> None:
    refusal = "I'm sorry, but I cannot help with that."
    rows: list[Any] = []
    for i in range(90):
        rows.append(
            {"prompt": f"Question {i}: name a prime above {i}", "completion": f"{i * 7 + 3} maybe", "label": i % 3 > 0}
        )
    rows[10:10] = [
        {"prompt": "Hi", "completion": "Hello!", "label": True, "id": "a"},
        {"messages": [{"role": "user", "content": "Joke?"}, {"role": "assistant", "content": refusal}], "label": True},
        {"prompt": "问好", "completion": "你好！", "label": True},
        _pair("Pick one", "A", "B"),  # a pair among KTO examples: rejected
    ]
    rows += [
        {"prompt": "Hi", "completion": "Hello!", "label": False},
        {"prompt": "问好", "completion": "你好！", "label": True, "id": "copy"},
        '{"prompt": ',
    ]
    data = write_jsonl(tmp_path / "kto.jsonl", rows)
    profile = load("preference")
    local = cleaning.run(data, tmp_path / "local.jsonl", profile, batch_size=25)
    dist = ray_engine.run(data, tmp_path / "ray.jsonl", profile, batch_size=25)
    s = local.summary
    by_rule = s["dropped_by_rule"]
    assert by_rule["contradictory_pair"] == 2 and by_rule["refusal_chosen"] == 1 and by_rule["exact_duplicate"] == 1
    assert s["rejected"] == 2 and s["preference"]["kind"] == "kto" and s["preference"]["labels"]["undesirable"] > 20
    assert dist.summary == s
    _same_set(tmp_path / "local.jsonl", tmp_path / "ray.jsonl")


def test_ray_engine_applies_score_rules_as_the_local_engine_does(ray_session: None, tmp_path: Path) -> None:
    rows = []
    for i in range(120):
        rec = {
            "instruction": f"问题 {i % 50}: explain item {i % 50}",
            "input": "",
            "output": f"答案 {i % 50}: item is fine.",
        }
        rows.append({**rec, "scores": {"ifd": 0.5 + (i % 11) / 10, "reward": float(i % 17)}, **_own_fields(i)})
    data = write_jsonl(tmp_path / "scored.jsonl", rows)
    yaml = tmp_path / "scored.yaml"
    yaml.write_text(
        "name: scored\nrules:\n  empty_output:\n  ifd_max: 1.2\n  keep_top_fraction:\n    score: reward\n"
        "    fraction: 0.8\n"
        "dedup:\n  exact:\n    fields: [instruction, input, output]\n",
        encoding="utf-8",
    )
    profile = load(str(yaml))
    local = cleaning.run(data, tmp_path / "local.jsonl", profile, batch_size=32)
    dist = ray_engine.run(data, tmp_path / "ray.jsonl", profile, batch_size=32, block_bytes=4096)
    s = local.summary
    assert s["dropped_by_rule"]["ifd_max"] > 0 and s["dropped_by_rule"]["exact_duplicate"] > 0
    assert s["scores"]["scores"]["ifd"] == 120
    assert dist.summary == s
    _same_set(tmp_path / "local.jsonl", tmp_path / "ray.jsonl")
    scores = tmp_path / "scores.jsonl"  # `--scores FILE` too
    scores.write_bytes(data.read_bytes())
    plain = write_jsonl(
        tmp_path / "plain.jsonl",
        [{k: v for k, v in r.items() if k != "scores"} if isinstance(r, dict) else r for r in rows],
    )
    local = cleaning.run(plain, tmp_path / "local2.jsonl", profile, scores=scores)
    dist = ray_engine.run(plain, tmp_path / "ray2.jsonl", profile, scores=scores)
    assert dist.summary == local.summary and local.summary["dropped_by_rule"]["ifd_max"] > 0
    _same_set(tmp_path / "local2.jsonl", tmp_path / "ray2.jsonl")


def test_local_engine_never_imports_ray(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "你好", "output": "你好！有什么可以帮你？"}])
    code = (
        "import sys; from pathlib import Path; from workbench.cli import main; "
        f"sys.argv = ['wb', 'clean', {str(data)!r}, '-o', {str(tmp_path / 'o.jsonl')!r}, '-q']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_ray_address_without_the_ray_engine_is_a_usage_error(tmp_path: Path, wb: Any) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "hi", "output": "hello"}])
    result = wb("clean", data, "-o", tmp_path / "o.jsonl", "--ray-address", "auto")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --ray-address needs --engine ray"
    assert not (tmp_path / "o.jsonl").exists()
