"""How well `wb score`'s IFD finds mismatched instruction/answer pairs in real data, against answer perplexity.

Takes real instruction data (GPTeacher code instructions, EN; alpaca_chinese term explanations and poetry, ZH; MIT,
see /work/shared/data/README.md), plants mismatched pairs by shuffling the answers of a share of the records among
themselves (within a language, so a language switch does not give them away), scores every record with the
embedded model (`workbench.score.pipeline.score_file`, the code `wb score` runs) and reports the ROC AUC of each score
for ranking the planted records above the intact ones (1.0: every planted record scores higher; 0.5: chance).

Baseline, side by side: `ppl_answer` (the answer's perplexity given the prompt, what a plain perplexity filter
uses). IFD divides it by the answer's perplexity without the prompt, which removes how hard the answer is on its own.

    .venv/bin/python bench/ifd_mismatch.py                  # 50 EN + 50 ZH records, 10 % planted, seed 7
    .venv/bin/python bench/ifd_mismatch.py --per-language 60 --share 0.2
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import benchlib

sys.path.insert(0, str(benchlib.ROOT))


def load(data_dir: Path, per_language: int, rng: random.Random) -> list[dict[str, Any]]:
    en = json.loads((data_dir / "en_codegen_instruct.json").read_text(encoding="utf-8"))
    zh = json.loads((data_dir / "zh_term_explanations.json").read_text(encoding="utf-8"))
    zh += json.loads((data_dir / "zh_poetry_culture.json").read_text(encoding="utf-8"))
    en = [
        {"instruction": r["instruction"], "input": r.get("input", ""), "output": r["response"], "lang": "en"}
        for r in en
        if r["response"].strip() and len(r["response"]) < 500
    ]
    fields = ("instruction", "input", "output")
    zh = [{**{k: r[k] for k in fields}, "lang": "zh"} for r in zh if 0 < len(r["output"].strip()) < 320]
    return rng.sample(en, min(per_language, len(en))) + rng.sample(zh, min(per_language, len(zh)))


def plant(records: list[dict[str, Any]], share: float, rng: random.Random) -> list[bool]:
    """Shuffle the answers of `share` of each language's records among themselves (a derangement: none keeps its
    own); returns which records were planted."""
    planted = [False] * len(records)
    for lang in ("en", "zh"):
        idx = [i for i, r in enumerate(records) if r["lang"] == lang]
        chosen = rng.sample(idx, max(2, round(share * len(idx))))
        answers = [records[i]["output"] for i in chosen]
        shifted = answers[1:] + answers[:1]  # a cyclic shift: every chosen record gets another one's answer
        for i, answer in zip(chosen, shifted, strict=True):
            records[i]["output"] = answer
            planted[i] = True
    return planted


def roc_auc(scores: list[float | None], positive: list[bool]) -> float | None:
    """Probability that a random planted record scores above a random intact one (ties count half); records without
    a score are left out."""
    pos = [s for s, p in zip(scores, positive, strict=True) if p and s is not None]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p and s is not None]
    if not pos or not neg:
        return None
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-language", type=int, default=50)
    ap.add_argument("--share", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--data-dir", type=Path, default=benchlib.ROOT.parent / "shared" / "data")
    ap.add_argument("--out-dir", type=Path, default=benchlib.ROOT / "bench" / "out")
    args = ap.parse_args()

    from workbench.score.pipeline import score_file

    rng = random.Random(args.seed)
    records = load(args.data_dir, args.per_language, rng)
    planted = plant(records, args.share, rng)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    data = args.out_dir / "ifd_mismatch.input.jsonl"
    data.write_text(
        "".join(
            json.dumps({k: r[k] for k in ("instruction", "input", "output")}, ensure_ascii=False) + "\n"
            for r in records
        ),
        encoding="utf-8",
    )
    started = time.time()
    result = score_file(
        data,
        args.out_dir / "ifd_mismatch.scored.jsonl",
        "embedded",
        batch_size=args.batch_size,
        max_length=args.max_length,
        use_cache=False,
    )
    seconds = time.time() - started
    rows = [
        json.loads(x)["scores"] for x in (args.out_dir / "ifd_mismatch.scored.jsonl").read_text("utf-8").splitlines()
    ]
    figures: dict[str, dict[str, float | None]] = {}
    for lang in ("all", "en", "zh"):
        sel = [i for i, r in enumerate(records) if lang == "all" or r["lang"] == lang]
        figures[lang] = {
            name: roc_auc([rows[i][name] for i in sel], [planted[i] for i in sel])
            for name in ("ifd", "ppl_answer", "ppl_answer_alone")
        }
    ifd_ge_1 = {
        "planted": sum(1 for r, p in zip(rows, planted, strict=True) if p and (r["ifd"] or 0) >= 1),
        "intact": sum(1 for r, p in zip(rows, planted, strict=True) if not p and (r["ifd"] or 0) >= 1),
    }
    out = [
        [lang, *(f"{f[n]:.3f}" if f[n] is not None else "-" for n in ("ifd", "ppl_answer", "ppl_answer_alone"))]
        for lang, f in figures.items()
    ]
    print(benchlib.table(["records", "AUC ifd", "AUC ppl_answer (baseline)", "AUC ppl_answer_alone"], out))
    auc_ifd, auc_ppl = figures["all"]["ifd"], figures["all"]["ppl_answer"]
    ratio = (auc_ifd - 0.5) / (auc_ppl - 0.5) if auc_ifd is not None and auc_ppl not in (None, 0.5) else None
    print(
        f"{len(records)} records ({sum(planted)} planted), {seconds:.0f} s scoring; IFD >= 1: "
        f"{ifd_ge_1['planted']} planted, {ifd_ge_1['intact']} intact"
        + (f"; (AUC-0.5) ratio ifd/ppl_answer {ratio:.2f}" if ratio is not None else "")
    )
    benchlib.write_report(
        args.out_dir / "ifd_mismatch.json",
        {
            "benchmark": "ifd_mismatch",
            "records": len(records),
            "planted": sum(planted),
            "share": args.share,
            "seed": args.seed,
            "max_length": args.max_length,
            "auc": figures,
            "auc_margin_ratio_ifd_over_ppl_answer": ratio,
            "ifd_at_or_above_1": ifd_ge_1,
            "scoring_seconds": round(seconds, 1),
            "precision": result.stats["precision"],
            **benchlib.git_state(),
            "versions": benchlib.versions(["torch", "transformers"]),
        },
    )


if __name__ == "__main__":
    main()
