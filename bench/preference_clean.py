"""Throughput and memory of `wb clean` on preference pairs (profile `preference`) against `wb clean` on the same
records as SFT data (profile `default`, the chosen answer as the output).

What is compared
----------------
* **preference**: `workbench.clean.dispatch.run(pairs, out, load("preference"))`: every step runs over the prompt and
  both answers (normalisation, PII, the answer rules once per side, the pair rules), then the whole-file passes
  (contradictions, decontamination and exact duplicates over staged Arrow files, MinHash near duplicates over the
  prompt and both answers), and canonical JSON writing.
* **sft baseline**: `workbench.clean.dispatch.run(sft, out, profile)` on `{"instruction": prompt, "output": chosen}` of
  the same pairs, `profile` being `default` with the preference profile's near-duplicate settings (threshold 0.9 over
  instruction + output), so both do the same dedup work: what cleaning the same data costs when only one answer
  is judged. The ratio says what the
  second answer and the preference passes cost; records/s of the two are the figures.

Each runs in a fresh child process (peak RSS from `os.wait4`, time measured around the call inside the child).
The input is generated, deterministic for a seed: English and Chinese (about a third) prompts with prose answers
of two to five sentences, with defects planted at a few percent (identical pairs, empty answers, a template token on
one side, contradicting pairs, duplicates).

Run from the repository root: `.venv/bin/python bench/preference_clean.py [--records N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from random import Random
from typing import Any

from benchlib import ROOT, git_state, table, versions, write_report

DEFAULT_OUT = ROOT / "bench" / "out"

TOPICS = [
    "regular exercise", "time management", "renewable energy", "version control", "a balanced diet",
    "remote work", "unit testing", "public transport", "personal budgeting", "photosynthesis", "climate change",
    "the water cycle", "cloud computing", "urban gardening", "electric vehicles", "good sleep habits",
    "code review", "recycling", "compound interest", "public speaking", "composting", "solar panels",
]  # fmt: skip
TOPICS_ZH = [
    "锻炼身体",
    "时间管理",
    "可再生能源",
    "均衡饮食",
    "远程办公",
    "公共交通",
    "个人理财",
    "光合作用",
    "气候变化",
    "垃圾分类",
]
EN = [
    "{t} is practical because it saves money in the long run.",
    "Many beginners underestimate how much {t} improves daily routines.",
    "A common mistake is to change everything at once; start with one small goal.",
    "Studies over the past {n} years suggest that {t} builds confidence gradually.",
    "It also helps to keep a simple written log of your progress.",
    "For small teams, the first step is usually to agree on a shared plan.",
    "Finally, remember that {t} rewards steady effort more than intensity.",
    "Cost matters too, so it is worth planning ahead before you begin.",
]
ZH = [
    "{t}是一件很实用的事情，长期来看可以节省不少开支。",
    "很多初学者低估了{t}对日常生活的帮助。",
    "常见的错误是一下子改变太多，最好从一个小目标开始。",
    "过去{n}年的研究表明，{t}能够逐步增强信心。",
    "记录每天的进展也很有帮助。",
    "最后要记住，{t}更看重坚持而不是强度。",
]
PROMPTS_EN = ["Explain {t} in simple terms.", "What are the benefits of {t}?", "Give me tips about {t}."]
PROMPTS_ZH = ["用简单的话解释{t}。", "{t}有什么好处？", "给我一些关于{t}的建议。"]


def _answer(rng: Random, topic: str, zh: bool, k: int) -> str:
    parts = [s.format(t=topic, n=rng.randint(2, 30)) for s in rng.sample(ZH if zh else EN, k)]
    return "".join(parts) if zh else " ".join(p[0].upper() + p[1:] for p in parts)


def generate(n: int, seed: int) -> list[dict[str, Any]]:
    rng = Random(seed)
    out: list[dict[str, Any]] = []
    while len(out) < n:
        zh = rng.random() < 0.33
        t = rng.choice(TOPICS_ZH if zh else TOPICS)
        prompt = rng.choice(PROMPTS_ZH if zh else PROMPTS_EN).format(t=t) + f" #{rng.randint(0, 10**6)}"
        chosen, rejected = _answer(rng, t, zh, rng.randint(3, 5)), _answer(rng, t, zh, rng.randint(2, 4))
        rec = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        roll = rng.random()
        if roll < 0.01:
            rec["rejected"] = rec["chosen"]
        elif roll < 0.02:
            rec["rejected"] = "N/A"
        elif roll < 0.03:
            rec["chosen"] += "<|im_end|>"
        elif roll < 0.035 and out:
            prev = out[rng.randrange(len(out))]
            rec = {"prompt": prev["prompt"], "chosen": prev["rejected"], "rejected": prev["chosen"]}
        elif roll < 0.045 and out:
            rec = dict(out[rng.randrange(len(out))])
        out.append(rec)
    return out


def child(kind: str, src: Path, out: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from workbench.clean import dispatch as clean
    from workbench.clean.profile import load

    profile = load("preference" if kind == "preference" else "default")
    if kind == "sft":  # the preference profile's near-duplicate settings: the same dedup work on both sides
        near = load("preference").dedup.near
        profile = profile.model_copy(update={"dedup": profile.dedup.model_copy(update={"near": near})})
    started = time.perf_counter()
    result = clean.run(src, out, profile, kind=kind)
    seconds = time.perf_counter() - started
    s = result.summary
    print(json.dumps({"seconds": seconds, "read": s["read"], "kept": s["kept"], "dropped": s["dropped_by_rule"]}))


def measure(kind: str, src: Path, out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", kind, str(src), str(out)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{kind} run failed (status {status})")
    result = json.loads(output.strip().splitlines()[-1])
    result["wall_seconds"] = time.perf_counter() - started
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    result["records_per_second"] = result["read"] / result["seconds"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = generate(args.records, args.seed)
    pref_src, sft_src = out_dir / "prefs_bench.jsonl", out_dir / "prefs_bench_sft.jsonl"
    pref_src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pairs), encoding="utf-8")
    sft = [{"instruction": r["prompt"], "output": r["chosen"]} for r in pairs]
    sft_src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sft), encoding="utf-8")
    results = {
        "sft": measure("sft", sft_src, out_dir / "prefs_bench_sft.clean.jsonl"),
        "preference": measure("preference", pref_src, out_dir / "prefs_bench.clean.jsonl"),
    }
    ratio = results["preference"]["records_per_second"] / results["sft"]["records_per_second"]
    rows = [
        [name, f"{r['read']:,}", f"{r['kept']:,}", f"{r['seconds']:.2f}", f"{r['records_per_second']:,.0f}",
         f"{r['peak_rss_mb']:.0f}"]
        for name, r in results.items()
    ]  # fmt: skip
    print(table(["run", "read", "kept", "seconds", "records/s", "peak RSS MB"], rows))
    print(f"preference / sft throughput: {ratio:.2f}")
    report = {
        "benchmark": "preference_clean",
        "records": args.records,
        "seed": args.seed,
        "results": results,
        "ratio_preference_to_sft": ratio,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        **git_state(),
        "versions": versions(["polars", "orjson", "datasketch"]),
    }
    print(write_report(out_dir / "preference_clean.json", report))


if __name__ == "__main__":
    main()
