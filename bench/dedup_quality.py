"""Near-duplicate detection of `wb` against datatrove's MinHash dedup: quality, throughput and memory.

What is compared
----------------
* **wb**: `workbench.clean.dispatch.run(corpus, out, profile)` with a profile that has only the near-duplicate stage, at
  its defaults (MinHash over word 3-grams / CJK character 5-grams, 128 permutations, estimated Jaccard >= 0.8,
  every LSH candidate verified, keep the first). Run with wb's own venv (`.venv/bin/python`).
* **datatrove**: its four-stage MinHash pipeline with the default `MinhashConfig` (word 5-grams of simplified
  text, 14 buckets x 8 hashes, no verification; every document of a cluster but one is removed):
  `MinhashDedupSignature` -> `MinhashDedupBuckets` -> `MinhashDedupCluster` -> `MinhashDedupFilter`, on a
  `LocalPipelineExecutor`, reading the same records (text = instruction + "\\n" + input + "\\n" + output) with a
  `JsonlReader`. It runs in its own venv, `bench/.venv-datatrove` (see bench/README.md).

The corpora are generated (deterministic for a seed) from the real records in `../shared/data`: an English one
(code tasks: instructions, inputs and runs of response lines recombined) and a Chinese one (term explanations
and poetry notes: sentences recombined under templated questions). A known fraction of the base records gets one
planted near-duplicate each, at known edit rates (words for English, characters for Chinese; replaced, inserted
or deleted), somewhere later in the file. Quality is judged against that ground truth, extended with any pair
whose exact Jaccard similarity on wb's shingles is at least the threshold (see `score`).

`--scale` instead generates a ~1 GB mixed corpus (1,000,000 records by default) and times the full `wb clean`
with the default profile (rules, exact and near duplicates).

Each measured implementation runs in a fresh child process. Time is measured around the work inside the child
(imports excluded; the child's whole wall time is reported too); peak RSS comes from `os.wait4` (the largest
single process of the child's tree) and from sampling the RSS of the whole process tree (datatrove runs its
tasks in worker processes).

Run from the repository root: `.venv/bin/python bench/dedup_quality.py` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import bisect
import gc
import heapq
import json
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from random import Random
from typing import Any

from benchlib import ROOT, git_state, self_peak_rss_mb, table, write_report

SCRIPT = Path(__file__).resolve()
DEFAULT_OUT = ROOT / "bench" / "out"
DEFAULT_DATA = ROOT.parent / "shared" / "data"
WB_PYTHON = ROOT / ".venv" / "bin" / "python"
DATATROVE_VENV = ROOT / "bench" / ".venv-datatrove"
DATATROVE_PYTHON = DATATROVE_VENV / "bin" / "python"
DATATROVE_INSTALL = (
    "python3 -m venv bench/.venv-datatrove && bench/.venv-datatrove/bin/pip install "
    "datatrove==0.10.1 orjson spacy tokenizers 'xxhash<4' regex jieba"
)

TARGET_RECALL = 0.95
TARGET_PRECISION = 0.99
TARGET_SPEEDUP = 4.0
SCALE_TARGET_SECONDS = 15 * 60
SCALE_TARGET_RSS_MB = 4096.0

# The profile of the quality runs: nothing but the near-duplicate stage, at its defaults.
NEAR_ONLY_PROFILE: dict[str, Any] = {
    "name": "bench",
    "normalize": {
        "unicode": "none",
        "strip_control": False,
        "strip_zero_width": False,
        "whitespace": False,
        "placeholder_inputs": [],
    },
    "pii": {"action": "keep"},
    "dedup": {"near": None},
}

# Recall is also reported by the exact Jaccard similarity of the planted pair (lower edges of the bands).
JACCARD_BANDS = [0.0, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95]

# =====================================================================================================
# Corpus generation
# =====================================================================================================

Rec = dict[str, str]

EN_SUFFIXES = [
    "Use only the standard library.", "Add comments to explain each step.", "Handle invalid input gracefully.",
    "Keep the solution short.", "Explain the time complexity.", "Include an example call.",
    "Avoid global variables.", "Make the function reusable.", "Print the result at the end.",
    "Write it as a single function.", "Use descriptive variable names.", "Do not use external packages.",
    "Return the result instead of printing it.", "Add a short docstring.", "Assume the input is valid.",
    "Follow the language's usual style guide.", "Show the expected output as a comment.",
    "Prefer readability over cleverness.", "Make it work for an empty input too.", "Test it with two inputs.",
]  # fmt: skip
ZH_SINGLE = [
    "{t}是什么意思？请详细解释：", "请解释“{t}”的含义。", "简要介绍一下{t}。", "什么是{t}？请举例说明。",
    "从{a}的角度谈谈{t}。", "请用通俗的语言解释{t}，并说明它与{a}的关系。",
]  # fmt: skip
ZH_PAIR = [
    "{t}和{t2}有什么区别和联系？", "比较{t}与{t2}。", "{t}对{t2}有什么影响？", "请分别解释{t}和{t2}。",
    "为什么说{t}离不开{t2}？",
]  # fmt: skip
ZH_CONTEXT = [
    "请根据下面的材料，解释{t}的含义。", "阅读以下内容，谈谈你对{t}的理解。", "结合下面这段话，说明{t}的作用。",
    "根据材料，概括{t}的主要特点。",
]  # fmt: skip
ZH_SUFFIXES = [
    "请分点说明。", "请举一个例子。", "请用三百字左右回答。", "请尽量通俗易懂。", "请结合实际谈谈。",
    "回答要简洁。", "请先给出定义。", "请说明理由。", "面向中学生解释。", "最后做一个总结。",
]  # fmt: skip
ZH_ASPECTS = ["历史", "经济", "社会", "文化", "教育", "法律", "心理", "技术", "日常生活", "国际比较", "个人发展"]

WORD_RE = re.compile(r"\S+")
CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
ZH_SENTENCE_END = re.compile(r"(?<=[。！？；])")
ZH_TERM = re.compile(r"^[“\"《]?(.{1,24}?)[”\"》]?(?:这个词|这个概念)?(?:是什么|指什么|是指什么)")
DANGLING_END = re.compile(r"[,:，、：(\[{（【《\\]\s*$")  # outputs ending like this are dropped as truncated by wb


@dataclass
class Sources:
    """Real text the generator recombines."""

    en_instructions: list[str]
    en_inputs: list[str]  # the code records' inputs, '' included as often as in the source
    en_responses: list[list[tuple[int, str]]]  # each response as (line number, line or sentence of a long line)
    en_vocab: list[str]  # words for planted edits
    zh_terms: list[str]
    zh_docs: list[list[str]]  # each explanation (or poetry note) as its sentences
    zh_sentences: list[str]
    zh_chars: list[str]  # CJK characters for planted edits


EN_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`\[(])")


def _units(response: str) -> list[tuple[int, str]]:
    """A response as units the generator takes runs of: its lines, long prose lines cut into their sentences."""
    units: list[tuple[int, str]] = []
    for i, line in enumerate(response.split("\n")):
        line = line.rstrip()
        if line.lstrip().startswith("```"):  # fences would be cut in half by the runs the generator takes
            continue
        parts = EN_SENTENCE_END.split(line) if len(line) > 160 else [line]
        units.extend((i, part) for part in parts)
    return units


def _read_array(path: Path) -> list[dict[str, Any]]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(rows, list):
        raise SystemExit(f"{path}: expected a JSON array of records")
    return rows


def load_sources(data_dir: Path) -> Sources:
    code = _read_array(data_dir / "en_codegen_instruct.json")
    terms = _read_array(data_dir / "zh_term_explanations.json")
    poetry = _read_array(data_dir / "zh_poetry_culture.json")
    responses = [_units(r["response"]) for r in code if r["response"].strip()]
    vocab = sorted({w.lower() for r in code for w in re.findall(r"[A-Za-z]{3,12}", r["instruction"])})
    docs = []
    for r in [*terms, *poetry]:
        sentences = [s.strip() for s in ZH_SENTENCE_END.split(r["output"]) if s.strip()]
        if sentences:
            docs.append(sentences)
    names = []
    for r in terms:
        m = ZH_TERM.match(r["instruction"])
        if m:
            names.append(m.group(1).strip("“”\"'《》 "))
    if len(set(names)) < 2:
        raise SystemExit(f"{data_dir}: too few Chinese terms found in zh_term_explanations.json")
    sentences = [s for d in docs for s in d]
    return Sources(
        en_instructions=[r["instruction"].strip() for r in code if r["instruction"].strip()],
        en_inputs=[r.get("input") or "" for r in code],
        en_responses=responses,
        en_vocab=vocab,
        zh_terms=sorted(set(names)),
        zh_docs=docs,
        zh_sentences=sentences,
        zh_chars=sorted({c for s in sentences for c in CJK_RE.findall(s)}),
    )


def _target(rng: Random, chars: int) -> int:
    return rng.randint(int(chars * 0.7), int(chars * 1.3))


def make_en(rng: Random, src: Sources, chars: int) -> Rec:
    """A code task: a real instruction (often with a second one or a constraint), a real input, and an answer
    made of runs of lines from two to six real responses, none longer than half the answer (so that no two
    records share most of their text by chance)."""
    instruction = rng.choice(src.en_instructions)
    u = rng.random()
    if u < 0.45:
        instruction += " " + rng.choice(src.en_instructions)
    elif u < 0.8:
        instruction += " " + rng.choice(EN_SUFFIXES)
    inp = rng.choice(src.en_inputs)
    budget = max(120, _target(rng, chars) - len(instruction) - len(inp))
    cap = budget // 2
    chunks: list[str] = []
    used = tries = 0
    while (used < budget or len(chunks) < 2) and len(chunks) < 6 and tries < 50:
        tries += 1
        units = rng.choice(src.en_responses)
        start = rng.randrange(len(units))
        text, size, prev = "", 0, -1
        room = max(40, min(cap, budget - used))
        for line, unit in units[start : start + rng.randint(3, 10)]:
            if text and size + len(unit) > room:
                break
            text += ("" if not text else " " if line == prev else "\n") + unit
            size, prev = size + len(unit) + 1, line
        text = text.strip("\n")
        while "\n" in text and DANGLING_END.search(text):  # end a run on a complete line
            text = text.rsplit("\n", 1)[0].rstrip()
        if text.strip() and not DANGLING_END.search(text):
            chunks.append(text)
            used += len(text) + 2
    return {"instruction": instruction, "input": inp, "output": "\n\n".join(chunks)}


def _zh_passage(rng: Random, src: Sources, budget: int) -> str:
    """One to three sentences (in their original order) from each of two to six real explanations, no part
    longer than half the passage (so that no two records share most of their text by chance)."""
    budget = max(80, budget)
    cap = budget // 2
    parts: list[str] = []
    used = 0
    while (used < budget or len(parts) < 2) and len(parts) < 6:
        doc = rng.choice(src.zh_docs)
        picked = sorted(rng.sample(range(len(doc)), min(len(doc), rng.randint(1, 3))))
        text = ""
        room = max(30, min(cap, budget - used))
        for i in picked:
            if text and len(text) + len(doc[i]) > room:
                break
            text += doc[i]
        parts.append(text)
        used += len(text)
    return ("\n\n" if rng.random() < 0.3 else "").join(parts)


def make_zh(rng: Random, src: Sources, chars: int) -> Rec:
    """A Chinese question about one or two real terms (some with a passage of real sentences as input), answered
    with real sentences recombined."""
    t, t2 = rng.sample(src.zh_terms, 2)
    u = rng.random()
    inp = ""
    if u < 0.45:
        instruction = rng.choice(ZH_PAIR).format(t=t, t2=t2)
    elif u < 0.9:
        instruction = rng.choice(ZH_CONTEXT).format(t=t)
        inp = "".join(rng.sample(src.zh_sentences, rng.randint(1, 2)))
    else:
        instruction = rng.choice(ZH_SINGLE).format(t=t, a=rng.choice(ZH_ASPECTS))
    if not inp and rng.random() < 0.8:
        instruction += rng.choice(ZH_SUFFIXES)
    output = _zh_passage(rng, src, _target(rng, chars) - len(instruction) - len(inp))
    return {"instruction": instruction, "input": inp, "output": output}


FIELDS = ("instruction", "input", "output")
EDIT_OPS = ("replace", "insert", "delete")


def edit_en(rec: Rec, rate: float, rng: Random, vocab: list[str]) -> tuple[Rec, int]:
    """Replace, insert or delete `rate` of the record's words (whitespace-separated), at least one."""
    spans = [(f, m.start(), m.end()) for f in FIELDS for m in WORD_RE.finditer(rec[f])]
    n = max(1, round(rate * len(spans)))
    edits: dict[str, list[tuple[int, int, str]]] = {f: [] for f in FIELDS}
    for k in rng.sample(range(len(spans)), min(n, len(spans))):
        f, s, e = spans[k]
        edits[f].append((s, e, rng.choice(EDIT_OPS)))
    out = dict(rec)
    for f, items in edits.items():
        text = out[f]
        for s, e, op in sorted(items, reverse=True):  # from the end: earlier offsets stay valid
            word = rng.choice(vocab)
            if op == "replace":
                while word == text[s:e]:
                    word = rng.choice(vocab)
                text = text[:s] + word + text[e:]
            elif op == "insert":
                text = text[:s] + word + " " + text[s:]
            else:
                end = e + 1 if text[e : e + 1] == " " else e
                text = text[:s] + text[end:]
        out[f] = text
    return out, n


def edit_zh(rec: Rec, rate: float, rng: Random, chars: list[str]) -> tuple[Rec, int]:
    """Replace, insert or delete `rate` of the record's CJK characters, at least one."""
    spots = [(f, m.start()) for f in FIELDS for m in CJK_RE.finditer(rec[f])]
    n = max(1, round(rate * len(spots)))
    edits: dict[str, list[tuple[int, str]]] = {f: [] for f in FIELDS}
    for k in rng.sample(range(len(spots)), min(n, len(spots))):
        f, s = spots[k]
        edits[f].append((s, rng.choice(EDIT_OPS)))
    out = dict(rec)
    for f, items in edits.items():
        text = out[f]
        for s, op in sorted(items, reverse=True):
            ch = rng.choice(chars)
            if op == "replace":
                while ch == text[s]:
                    ch = rng.choice(chars)
                text = text[:s] + ch + text[s + 1 :]
            elif op == "insert":
                text = text[:s] + ch + text[s:]
            else:
                text = text[:s] + text[s + 1 :]
        out[f] = text
    return out, n


@dataclass
class Corpus:
    path: Path
    truth: Path
    lang: str
    records: int
    bases: int
    copies: int
    bytes: int
    avg_chars: float
    seconds: float
    shards: list[str] = field(default_factory=list)
    distinctness: dict[str, Any] = field(default_factory=dict)


def build_corpus(
    path: Path,
    lang: str,
    n: int,
    seed: int,
    dup_fraction: float,
    rates: list[float],
    src: Sources,
    chars: int,
    zh_share: float = 0.4,
) -> Corpus:
    """Write `n` base records plus one planted near-duplicate of `dup_fraction` of them to `path`, and the ground
    truth (`line`, `base_line`, `rate`, `edits` per copy) to `<stem>.truth.jsonl`. Each copy is placed at a
    random position after its base; edit rates take turns over the copies. `lang` is `en`, `zh` or `mix`
    (`zh_share` of the records Chinese). The same arguments give the same bytes."""
    started = time.perf_counter()
    rng = Random(f"{seed}/{lang}/{n}")
    n_copies = round(n * dup_fraction)
    chosen = dict.fromkeys(sorted(rng.sample(range(n), n_copies)))
    for j, b in enumerate(chosen):
        chosen[b] = rates[j % len(rates)]
    truth_path = path.with_name(path.name.removesuffix(".jsonl") + ".truth.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    pending: list[tuple[float, int, str, int, float, int]] = []  # (position key, seq, line, base line, rate, edits)
    line_no = chars_total = 0

    def write(f: Any, text: str) -> int:
        nonlocal line_no
        f.write(text + "\n")
        line_no += 1
        return line_no

    with path.open("w", encoding="utf-8", newline="\n") as f, truth_path.open("w", encoding="utf-8") as t:
        for i in range(n):
            while pending and pending[0][0] < i:
                _, _, text, base_line, rate, edits = heapq.heappop(pending)
                copy_line = write(f, text)
                t.write(json.dumps({"line": copy_line, "base_line": base_line, "rate": rate, "edits": edits}) + "\n")
            zh = lang == "zh" or (lang == "mix" and rng.random() < zh_share)
            rec = make_zh(rng, src, chars) if zh else make_en(rng, src, chars)
            base_line = write(f, json.dumps(rec, ensure_ascii=False))
            chars_total += sum(len(v) for v in rec.values())
            rate = chosen.get(i)
            if rate is not None:
                copy, edits = edit_zh(rec, rate, rng, src.zh_chars) if zh else edit_en(rec, rate, rng, src.en_vocab)
                key = i + rng.random() * (n - i)
                heapq.heappush(pending, (key, i, json.dumps(copy, ensure_ascii=False), base_line, rate, edits))
                chars_total += sum(len(v) for v in copy.values())
        while pending:
            _, _, text, base_line, rate, edits = heapq.heappop(pending)
            copy_line = write(f, text)
            t.write(json.dumps({"line": copy_line, "base_line": base_line, "rate": rate, "edits": edits}) + "\n")
    return Corpus(
        path=path,
        truth=truth_path,
        lang=lang,
        records=line_no,
        bases=n,
        copies=n_copies,
        bytes=path.stat().st_size,
        avg_chars=chars_total / max(line_no, 1),
        seconds=time.perf_counter() - started,
    )


def write_shards(corpus: Corpus, folder: Path, shards: int) -> list[str]:
    """The corpus split into `shards` contiguous files for datatrove (one reader task per file); a file is named
    after its first line number, from which the reader's adapter rebuilds every record's line number."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    per = -(-corpus.records // shards)
    names: list[str] = []
    with corpus.path.open("rb") as src:
        out = None
        for i, line in enumerate(src):
            if i % per == 0:
                if out is not None:
                    out.close()
                names.append(f"{i + 1:09d}.jsonl")
                out = (folder / names[-1]).open("wb")
            assert out is not None
            out.write(line)
        if out is not None:
            out.close()
    return names


# =====================================================================================================
# Workers: what runs inside each measured child process
# =====================================================================================================


def _wb_profile(mode: str) -> Any:
    sys.path.insert(0, str(ROOT))
    import workbench.clean.dispatch
    import workbench.clean.profile
    from workbench.clean.profile import from_dict

    return workbench.clean.profile.load("default") if mode == "default" else from_dict(NEAR_ONLY_PROFILE, "bench")


def worker_wb(args: argparse.Namespace) -> dict[str, Any]:
    """`workbench.clean.dispatch.run` on the corpus, timed around the call."""
    started = time.perf_counter()
    profile = _wb_profile(args.mode)
    import workbench.clean.dispatch
    import workbench.clean.profile

    imported = time.perf_counter()
    result = workbench.clean.dispatch.run(args.input, args.output, profile)
    seconds = time.perf_counter() - imported
    s = result.summary
    return {
        "seconds": seconds,
        "import_seconds": imported - started,
        **{k: s[k] for k in ("read", "kept", "dropped", "rejected", "dropped_by_rule")},
        "dropped_file": str(result.paths.dropped),
    }


class Laps:
    """Seconds per named step, summed."""

    def __init__(self) -> None:
        self.totals: Counter[str] = Counter()
        self.t = time.perf_counter()

    def start(self) -> None:
        self.t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.totals[name] += now - self.t
        self.t = now


def _timed(laps: Laps, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            laps.totals[name] += time.perf_counter() - t

    return wrapper


def worker_wb_steps(args: argparse.Namespace) -> dict[str, Any]:
    """`workbench.clean.dispatch.run`'s loop with a timer on each step (a copy of the loop: it reaches into wb's
    internals, so it may need updating when `run` changes). Not a measured run: the timers and the copy cost a
    little."""
    import inspect
    import tempfile

    profile = _wb_profile(args.mode)
    import polars as pl

    import workbench.clean.dispatch
    import workbench.clean.profile
    from workbench.clean.pipeline import apply_rules, normalize_frame, pii_frame
    from workbench.clean.sft import STAGE_COLUMNS
    from workbench.dedup import minhash
    from workbench.dedup.stages import DedupStages
    from workbench.frames import rows_to_frame
    from workbench.io.reader import RecordReader
    from workbench.records import FIELDS as WB_FIELDS

    steps, inner = Laps(), Laps()
    nd = minhash.NearDuplicates
    nd.candidate_pairs = _timed(inner, "resolve: candidate_pairs (LSH banding)", nd.candidate_pairs)  # type: ignore[method-assign]
    if hasattr(nd, "_bucket_pairs"):  # older wb: a Python list of pairs per bucket
        nd._bucket_pairs = staticmethod(_timed(inner, "resolve: _bucket_pairs (in candidate_pairs)", nd._bucket_pairs))  # type: ignore[attr-defined]
    if hasattr(nd, "pairs_of_band_keys"):  # band keys kept per record, pairs from them at the end
        nd.pairs_of_band_keys = _timed(inner, "resolve: pairs_of_band_keys (LSH banding)", nd.pairs_of_band_keys)  # type: ignore[method-assign]
    # Module-level helpers NearDuplicates calls by name (whichever this version of wb has).
    for name, label in (
        ("record_ngrams", "add: record_ngrams (tokens -> n-gram hashes)"),
        ("batch_shingles", "add: batch_shingles (record_ngrams + fold to 32 bits)"),
        ("batch_signatures", "add: batch_signatures (shingles + MinHash)"),
        ("signatures", "add: signatures (MinHash permutations)"),
        ("shingle_sets", "add: shingle_sets (sorted distinct hashes kept for verification)"),
        ("bucket_pair_codes", "resolve: bucket_pair_codes (pairs of one band's buckets)"),
        ("exact_jaccard", "resolve: exact_jaccard (verify candidates)"),
        ("similarity", "resolve: similarity (signature estimate of candidates)"),
    ):
        if hasattr(minhash, name):
            setattr(minhash, name, _timed(inner, label, getattr(minhash, name)))
    stages = DedupStages.build(profile.dedup, profile.decontaminate, [])
    # wb's API as of this writing, with the names it had before (near-duplicates only) as a fallback.
    at_end = getattr(stages, "needs_all_records", stages.near is not None)
    collect = getattr(stages, "collect", None) or (lambda kept: stages.near.add(kept))  # type: ignore[union-attr]
    resolve = getattr(stages, "resolve", None) or (lambda: stages.near.resolve())  # type: ignore[union-attr]
    split = getattr(stages, "split", None) or stages.near_duplicates  # type: ignore[attr-defined]
    batch_size = inspect.signature(workbench.clean.dispatch.run).parameters["batch_size"].default
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    batches = iter(RecordReader(Path(args.input), batch_size=batch_size))
    with tempfile.TemporaryDirectory(dir=out.parent) as stage_dir, out.open("wb") as sink:
        while True:
            steps.start()
            batch = next(batches, None)
            steps.lap("read + parse (RecordReader)")
            if batch is None:
                break
            df = rows_to_frame(batch.lines, batch.rows)
            steps.lap("rows_to_frame")
            df = normalize_frame(df, profile.normalize)[0]
            steps.lap("normalize_frame")
            df = pii_frame(df, profile.pii)[0]
            steps.lap("pii_frame")
            df = apply_rules(df, profile)
            steps.lap("apply_rules (features + rules)")
            kept = df.filter(pl.col("_rule").is_null())
            kept, _ = stages.stream(kept)
            steps.lap("decontamination + exact duplicates (stages.stream)")
            if at_end:
                collect(kept)
                steps.lap("near: collect (NearDuplicates.add)")
                kept.select(STAGE_COLUMNS).write_ipc(Path(stage_dir) / f"{batch.lines[0]:012d}.arrow")
                steps.lap("near: stage kept records (write_ipc)")
            else:
                kept.select(WB_FIELDS).write_ndjson(sink)
                steps.lap("write kept")
        if at_end:
            steps.start()
            resolved = resolve()
            steps.lap("near: resolve (NearDuplicates.resolve)")
            for part in sorted(Path(stage_dir).glob("*.arrow")):
                kept, _ = split(pl.read_ipc(part), resolved)
                kept.select(WB_FIELDS).write_ndjson(sink)
            steps.lap("near: read staged + write kept")
    return {
        "steps": dict(steps.totals),
        "inner": dict(inner.totals),
        "batch_size": batch_size,
        "peak_rss_mb": self_peak_rss_mb(),
    }


def _dt_adapter(self: Any, data: dict[str, Any], path: str, id_in_file: int | str) -> dict[str, Any]:
    """datatrove reader adapter: the text wb compares (instruction, input, output joined by newlines); the id is
    the record's line number in the corpus (the shard's file name is its first line)."""
    first = int(Path(path).name.split(".")[0])
    text = "\n".join((data.get("instruction") or "", data.get("input") or "", data.get("output") or ""))
    return {"text": text, "id": str(first + int(id_in_file)), "metadata": {}}


def worker_datatrove(args: argparse.Namespace) -> dict[str, Any]:
    """datatrove's MinHash dedup, its four stages one after the other, timed together and one by one."""
    started = time.perf_counter()
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    imported = time.perf_counter()
    work = Path(args.output)
    shutil.rmtree(work, ignore_errors=True)
    cfg = MinhashConfig()
    shards = len(list(Path(args.input).glob("*.jsonl")))
    workers = args.workers

    def reader() -> Any:
        return JsonlReader(str(args.input), adapter=_dt_adapter, glob_pattern="*.jsonl")

    def executor(pipeline: list[Any], tasks: int, name: str) -> Any:
        return LocalPipelineExecutor(
            pipeline,
            tasks=tasks,
            workers=min(workers, tasks),
            logging_dir=str(work / "logs" / name),
            skip_completed=False,
        )

    stages = [
        (
            "1 signatures",
            executor(
                [
                    reader(),
                    MinhashDedupSignature(output_folder=str(work / "signatures"), config=cfg, language=args.language),
                ],
                shards,
                "signatures",
            ),
        ),
        (
            "2 buckets",
            executor(
                [MinhashDedupBuckets(str(work / "signatures"), str(work / "buckets"), config=cfg)],
                cfg.num_buckets,
                "buckets",
            ),
        ),
        (
            "3 cluster",
            executor(
                [MinhashDedupCluster(str(work / "buckets"), str(work / "remove_ids"), config=cfg)],
                1,
                "cluster",
            ),
        ),
        (
            "4 filter",
            executor(
                [
                    reader(),
                    MinhashDedupFilter(
                        str(work / "remove_ids"),
                        exclusion_writer=JsonlWriter(str(work / "removed"), compression=None),
                    ),
                    JsonlWriter(str(work / "kept"), compression=None),
                ],
                shards,
                "filter",
            ),
        ),
    ]
    built = time.perf_counter()
    stage_seconds: dict[str, float] = {}
    for name, ex in stages:
        t = time.perf_counter()
        ex.run()
        stage_seconds[name] = time.perf_counter() - t
    seconds = time.perf_counter() - imported
    return {
        "seconds": seconds,
        "import_seconds": imported - started,
        "setup_seconds": built - imported,
        "stage_seconds": stage_seconds,
        "config": str(cfg),
        "language": args.language,
        "tasks": {"signatures": shards, "buckets": cfg.num_buckets, "cluster": 1, "filter": shards},
        "workers": workers,
    }


def worker_datatrove_jaccard(args: argparse.Namespace) -> dict[str, Any]:
    """Not measured: the exact Jaccard similarity of every planted pair on datatrove's own shingles (its 5-grams of
    simplified text, tokenised for `args.language`), to explain its recall."""
    from datatrove.pipeline.dedup import MinhashDedupSignature

    sig = MinhashDedupSignature(output_folder=str(Path(args.output) / "unused"), language=args.language)
    truth = [json.loads(x) for x in Path(args.truth).read_text(encoding="utf-8").splitlines()]
    want = {t["line"] for t in truth} | {t["base_line"] for t in truth}
    texts = {}
    with Path(args.input).open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if i in want:
                r = json.loads(line)
                texts[i] = "\n".join((r["instruction"], r["input"], r["output"]))
    shingles = {i: set(sig.get_shingles(t).ravel().tolist()) for i, t in texts.items()}
    out = {}
    for t in truth:
        a, b = shingles[t["line"]], shingles[t["base_line"]]
        out[str(t["line"])] = len(a & b) / len(a | b) if a | b else 1.0
    empty = sum(1 for s in shingles.values() if not s)
    return {"jaccard": out, "records_without_shingles": empty, "records_checked": len(shingles)}


WORKERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "wb": worker_wb,
    "wb-steps": worker_wb_steps,
    "datatrove": worker_datatrove,
    "datatrove-jaccard": worker_datatrove_jaccard,
}


# =====================================================================================================
# Running children
# =====================================================================================================


class WorkerError(RuntimeError):
    pass


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, CPU clock ticks of the process and of its reaped children, resident pages)."""
    table: dict[int, tuple[int, int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # after the command name: state, ppid, ..., utime (11), stime, cutime, cstime (14), ..., rss (21)
        table[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]), int(fields[21]))
    return table


def tree_usage(root: int) -> tuple[int, float]:
    """RSS (bytes) and CPU seconds of a process and all its live descendants, the CPU seconds including those of
    descendants they have already reaped (Linux /proc; zeros elsewhere)."""
    if not os.path.isdir("/proc"):
        return 0, 0.0
    procs = _proc_table()
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        kids.setdefault(ppid, []).append(pid)
    rss = ticks = 0
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            ticks += procs[pid][1]
            rss += procs[pid][2]
        todo.extend(kids.get(pid, []))
    return rss * os.sysconf("SC_PAGE_SIZE"), ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class ChildRun:
    result: dict[str, Any]
    wall_seconds: float
    load_before: float  # 1-minute load average when the child started (other work on the machine skews timings)
    load_after: float
    cpu_seconds: float  # the larger of wait4's and the sampled process tree's (datatrove's pool workers are
    # children of a forkserver the child never waits for, so wait4 misses their CPU time)
    peak_rss_mb: float  # ru_maxrss of the child: its largest single process (itself or a waited-for descendant)
    peak_tree_rss_mb: float  # sampled every 0.2 s: the sum over the child's whole process tree


def run_child(python: Path, worker: str, log: Path, **kwargs: Any) -> ChildRun:
    """Run one worker in a fresh interpreter; its output goes to `log`."""
    result_path = log.with_suffix(".result.json")
    result_path.unlink(missing_ok=True)
    cmd = [str(python), str(SCRIPT), "--worker", worker, "--result", str(result_path)]
    for k, v in kwargs.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    log.parent.mkdir(parents=True, exist_ok=True)
    peak, cpu = 0, 0.0
    load_before = os.getloadavg()[0]
    done = threading.Event()
    started = time.perf_counter()
    with log.open("wb") as logf:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT)

        def sample() -> None:
            nonlocal peak, cpu
            while not done.wait(0.2):
                rss, ticks = tree_usage(proc.pid)
                peak, cpu = max(peak, rss), max(cpu, ticks)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        sampler.join()
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise WorkerError(f"{worker} worker failed with exit status {code}; end of {log}:\n{tail}")
    rss_kb = usage.ru_maxrss / 1024 if sys.platform == "darwin" else usage.ru_maxrss
    return ChildRun(
        result=json.loads(result_path.read_text(encoding="utf-8")),
        wall_seconds=wall,
        load_before=load_before,
        load_after=os.getloadavg()[0],
        cpu_seconds=max(usage.ru_utime + usage.ru_stime, cpu),
        peak_rss_mb=rss_kb / 1024,
        peak_tree_rss_mb=peak / (1 << 20),
    )


# =====================================================================================================
# Scoring against the ground truth
# =====================================================================================================


@dataclass
class Truth:
    copy_of: dict[int, int]  # copy line -> base line
    rate: dict[int, float]  # copy line -> edit rate
    partner: dict[int, int]  # both directions

    @classmethod
    def load(cls, path: Path) -> Truth:
        copy_of, rate = {}, {}
        for line in path.read_text(encoding="utf-8").splitlines():
            t = json.loads(line)
            copy_of[t["line"]] = t["base_line"]
            rate[t["line"]] = t["rate"]
        partner = {**copy_of, **{b: c for c, b in copy_of.items()}}
        return cls(copy_of=copy_of, rate=rate, partner=partner)


def read_corpus_texts(path: Path, lines: set[int]) -> dict[int, Rec]:
    out: dict[int, Rec] = {}
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if i in lines:
                out[i] = json.loads(line)
    return out


def accidental_pairs(corpus: Path, truth: Truth, threshold: float, sweep: float = 0.7) -> dict[str, Any]:
    """How distinct the base records are, independently of both runs: an LSH sweep with wb's MinHash code at a
    lower threshold (`sweep`) over the whole corpus; candidate pairs that are not planted pairs and whose estimate
    reaches `sweep` - 0.1 get their exact Jaccard similarity computed. Not measured."""
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import polars as pl

    from workbench.dedup.minhash import NearConfig, NearDuplicates, batch_signatures

    started = time.perf_counter()
    cfg = NearConfig(threshold=sweep)
    frame = pl.read_ndjson(corpus).select(list(cfg.fields))
    sig = batch_signatures(frame, cfg)
    pairs = NearDuplicates(cfg).candidate_pairs(sig)
    est = (sig[pairs[:, 0]] == sig[pairs[:, 1]]).mean(axis=1) if len(pairs) else np.empty(0)
    close = pairs[est >= sweep - 0.1] + 1  # positions -> line numbers
    others = {(int(a), int(b)) for a, b in close if truth.partner.get(int(a)) != int(b)}
    jacc = exact_jaccard(corpus, others) if others else {}
    above = sorted(((j, p) for p, j in jacc.items() if j >= threshold), reverse=True)
    return {
        "sweep_threshold": sweep,
        "candidate_pairs": len(pairs),
        "checked_pairs": len(others),
        "pairs_exact_jaccard_ge_threshold": len(above),
        "max_exact_jaccard": max(jacc.values(), default=None),
        "examples": [{"lines": list(p), "exact_jaccard": round(j, 4)} for j, p in above[:10]],
        "seconds": time.perf_counter() - started,
    }


def exact_jaccard(corpus: Path, pairs: set[tuple[int, int]]) -> dict[tuple[int, int], float]:
    """Exact Jaccard similarity of record pairs on wb's shingles: `record_ngrams` over instruction, input and
    output joined by newlines (`joined_text`), with NearConfig's default n-gram lengths; 64-bit n-gram hashes."""
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import polars as pl

    from workbench.dedup.minhash import NearConfig
    from workbench.dedup.shingles import record_ngrams
    from workbench.text import joined_text

    cfg = NearConfig()
    needed = sorted({x for p in pairs for x in p})
    recs = read_corpus_texts(corpus, set(needed))
    frame = pl.DataFrame({f: [recs[i][f] for i in needed] for f in cfg.fields})
    texts = frame.select(joined_text(list(cfg.fields)).alias("t"))["t"]
    grams = record_ngrams(texts, cfg.ngram_latin, cfg.ngram_cjk).unique(maintain_order=False).sort("rec", "h")
    rec = grams["rec"].to_numpy()
    h = grams["h"].to_numpy()
    bounds = np.searchsorted(rec, np.arange(len(needed) + 1))
    sets = {line: h[bounds[k] : bounds[k + 1]] for k, line in enumerate(needed)}
    out = {}
    for a, b in pairs:
        sa, sb = sets[a], sets[b]
        inter = np.intersect1d(sa, sb, assume_unique=True).size
        out[(a, b)] = inter / (sa.size + sb.size - inter)
    return out


@dataclass
class Drops:
    """What an implementation dropped as duplicates: each dropped line and the line it was matched to (wb:
    `duplicate_of`; datatrove: the document its cluster kept), wb's estimated similarity, and the lines dropped
    for other reasons (rules)."""

    partner: dict[int, int]
    estimate: dict[int, float] = field(default_factory=dict)
    other: set[int] = field(default_factory=set)

    def group(self, line: int) -> int:
        """The kept record a line ended with (itself when kept), following chains (exact, then near)."""
        seen = 0
        while line in self.partner and seen < 64:
            line = self.partner[line]
            seen += 1
        return line


def wb_drops(dropped_file: Path, rules: tuple[str, ...] = ("near_duplicate",)) -> Drops:
    drops = Drops(partner={})
    with dropped_file.open(encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            if d["rule"] in rules:
                drops.partner[d["line"]] = d["duplicate_of"]
                if d.get("similarity") is not None:
                    drops.estimate[d["line"]] = d["similarity"]
            else:
                drops.other.add(d["line"])
    return drops


def datatrove_drops(work: Path, shard_names: list[str]) -> Drops:
    """Removed documents from the filter's exclusion writer; the document each was matched to is the one its
    cluster kept, the clusters being the connected components of stage 2's duplicate pairs (`*.dups`: file rank,
    document index, file rank, document index; rank r reads shard r, whose name is its first line)."""
    first = [int(n.split(".")[0]) for n in sorted(shard_names)]
    removed: set[int] = set()
    for p in sorted((work / "removed").glob("*.jsonl")):
        with p.open(encoding="utf-8") as f:
            removed.update(int(json.loads(line)["id"]) for line in f)
    parent: dict[int, int] = {}
    nodes: set[int] = set()

    def find(x: int) -> int:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while x != root:
            parent[x], x = root, parent.get(x, x)
        return root

    for p in sorted((work / "buckets").glob("*.dups")):
        raw = p.read_bytes()
        for f1, d1, f2, d2 in struct.iter_unpack("<4I", raw):
            x, y = first[f1] + d1, first[f2] + d2
            nodes.update((x, y))
            a, b = find(x), find(y)
            if a != b:
                parent[max(a, b)] = min(a, b)
    kept_of: dict[int, int] = {}
    for x in sorted(nodes):
        if x not in removed:
            r = find(x)
            if r in kept_of:
                raise WorkerError(f"datatrove kept two documents of one cluster: lines {kept_of[r]} and {x}")
            kept_of[r] = x
    drops = Drops(partner={})
    for x in removed:
        drops.partner[x] = kept_of[find(x)]
    return drops


def _band(j: float) -> str:
    k = bisect.bisect_right(JACCARD_BANDS, j) - 1
    lo = JACCARD_BANDS[k]
    hi = JACCARD_BANDS[k + 1] if k + 1 < len(JACCARD_BANDS) else 1.0
    return f"[{lo:.2f}, {hi:.2f}{']' if hi == 1.0 else ')'}"


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def score(truth: Truth, drops: Drops, jacc: dict[tuple[int, int], float], threshold: float) -> dict[str, Any]:
    """Precision and recall against the planted pairs, extended with exact-Jaccard matches.

    * A planted pair (base, copy) is **found** when both end in the same group: one of them was dropped as a
      near-duplicate of the other, or both name the same kept record (datatrove: same cluster).
    * A drop is **correct** when the dropped record's planted partner ended in its group, or when the exact
      Jaccard similarity (wb's shingles) of the dropped record and the record it was matched to reaches the
      threshold (accidental near-duplicates among the base records count as true).
    """

    def jac(a: int, b: int) -> float:
        return jacc[(min(a, b), max(a, b))]

    correct = planted_drops = accidental = 0
    false_drops: list[dict[str, Any]] = []
    for line, kept in drops.partner.items():
        mate = truth.partner.get(line)
        if mate is not None and drops.group(mate) == drops.group(line):
            correct += 1
            planted_drops += 1
        elif jac(line, kept) >= threshold:
            correct += 1
            accidental += 1
        else:
            false_drops.append({"line": line, "matched": kept, "exact_jaccard": round(jac(line, kept), 4)})
    literal_precision = _ratio(sum(1 for x in drops.partner if x in truth.copy_of), len(drops.partner))
    found: dict[int, bool] = {c: drops.group(c) == drops.group(b) for c, b in truth.copy_of.items()}
    pair_j = {c: jac(c, b) for c, b in truth.copy_of.items()}
    by_rate: dict[str, Any] = {}
    for rate in sorted(set(truth.rate.values())):
        cs = [c for c in truth.copy_of if truth.rate[c] == rate]
        above = [c for c in cs if pair_j[c] >= threshold]
        by_rate[f"{rate:g}"] = {
            "pairs": len(cs),
            "recall": _ratio(sum(found[c] for c in cs), len(cs)),
            "mean_exact_jaccard": sum(pair_j[c] for c in cs) / len(cs) if cs else None,
            "pairs_jaccard_ge_threshold": len(above),
            "recall_jaccard_ge_threshold": _ratio(sum(found[c] for c in above), len(above)),
        }
    by_band: dict[str, Any] = {}
    for c in sorted(truth.copy_of, key=lambda c: pair_j[c]):
        b = by_band.setdefault(_band(pair_j[c]), {"pairs": 0, "found": 0})
        b["pairs"] += 1
        b["found"] += found[c]
    for b in by_band.values():
        b["recall"] = b["found"] / b["pairs"]
    above = [c for c in truth.copy_of if pair_j[c] >= threshold]
    est_err = [abs(drops.estimate[x] - jac(x, k)) for x, k in drops.partner.items() if x in drops.estimate]
    return {
        "dropped": len(drops.partner),
        "precision": _ratio(correct, len(drops.partner)),
        "recall": _ratio(sum(found.values()), len(found)),
        "recall_jaccard_ge_threshold": _ratio(sum(found[c] for c in above), len(above)),
        "pairs": len(found),
        "pairs_jaccard_ge_threshold": len(above),
        "correct_drops": {"planted": planted_drops, "accidental_exact_jaccard_ge_threshold": accidental},
        "false_drops": len(false_drops),
        "false_drop_examples": false_drops[:10],
        "literal": {
            "precision_dropped_that_are_planted_copies": literal_precision,
            "recall_planted_copies_dropped": _ratio(sum(1 for c in truth.copy_of if c in drops.partner), len(found)),
            "bases_dropped_instead_of_their_copy": sum(
                1 for c, b in truth.copy_of.items() if drops.partner.get(b) == c
            ),
        },
        "by_edit_rate": by_rate,
        "recall_by_exact_jaccard": by_band,
        "estimate_abs_error_mean": sum(est_err) / len(est_err) if est_err else None,
        "missed_examples": [
            {"copy": c, "base": truth.copy_of[c], "rate": truth.rate[c], "exact_jaccard": round(pair_j[c], 4)}
            for c in sorted(truth.copy_of)
            if not found[c] and pair_j[c] >= threshold
        ][:10],
    }


# =====================================================================================================
# Report
# =====================================================================================================


@dataclass
class ImplResult:
    corpus: str
    implementation: str
    records: int
    seconds: float
    wall_seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    peak_tree_rss_mb: float
    quality: dict[str, Any]
    details: dict[str, Any]
    load_1min: list[float] = field(default_factory=list)  # the machine's load average before and after the run

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def print_results(results: list[ImplResult], rates: list[float], threshold: float) -> None:
    head = ["corpus", "implementation", "records", "seconds", "records/s", "wall s", "CPU s", "proc RSS MB"]
    head += ["tree RSS MB"]
    head += ["dropped", "precision", "recall", f"recall J>={threshold:g}"]
    rows = []
    for r in results:
        q = r.quality
        rows.append(
            [
                r.corpus,
                r.implementation,
                f"{r.records:,}",
                f"{r.seconds:.1f}",
                f"{r.records_per_s:,.0f}",
                f"{r.wall_seconds:.1f}",
                f"{r.cpu_seconds:.1f}",
                f"{r.peak_rss_mb:,.0f}",
                f"{r.peak_tree_rss_mb:,.0f}",
                f"{q['dropped']:,}",
                _pct(q["precision"]),
                _pct(q["recall"]),
                _pct(q["recall_jaccard_ge_threshold"]),
            ]
        )
    print(table(head, rows, left=2))
    print("\nrecall by edit rate (pairs with exact Jaccard >= threshold / their recall in brackets):")
    head = ["corpus", "implementation", *(f"{x:g}" for x in rates)]
    rows = []
    for r in results:
        cells = []
        for x in rates:
            b = r.quality["by_edit_rate"].get(f"{x:g}")
            cells.append(
                "-"
                if b is None
                else f"{_pct(b['recall'])} (J {b['mean_exact_jaccard']:.2f}; {b['pairs_jaccard_ge_threshold']}"
                f"/{b['pairs']} >= thr: {_pct(b['recall_jaccard_ge_threshold'])})"
            )
        rows.append([r.corpus, r.implementation, *cells])
    print(table(head, rows, left=2))
    print("\nrecall by exact Jaccard of the planted pair:")
    bands = sorted({b for r in results for b in r.quality["recall_by_exact_jaccard"]})
    rows = []
    for r in results:
        qb = r.quality["recall_by_exact_jaccard"]
        rows.append(
            [
                r.corpus,
                r.implementation,
                *(f"{_pct(qb[b]['recall'])} of {qb[b]['pairs']}" if b in qb else "-" for b in bands),
            ]
        )
    print(table(["corpus", "implementation", *bands], rows, left=2))


def _versions(python: Path, packages: list[str]) -> dict[str, str]:
    code = (
        "import json,sys,platform\nfrom importlib.metadata import version,PackageNotFoundError\nout={'python':"
        "platform.python_version()}\nfor p in sys.argv[1:]:\n    try: out[p]=version(p)\n"
        "    except PackageNotFoundError: out[p]='?'\nprint(json.dumps(out))"
    )
    try:
        done = subprocess.run([str(python), "-c", code, *packages], capture_output=True, text=True, check=True)
        return json.loads(done.stdout)
    except (OSError, subprocess.CalledProcessError, ValueError):
        return {}


def _machine(wb_python: Path) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "env": {k: v for k, v in os.environ.items() if k.startswith("POLARS_")},
        "wb_venv": _versions(wb_python, ["polars", "numpy", "datasketch", "orjson"]),
    }


def _print_breakdown(steps: dict[str, Any]) -> None:
    total = sum(steps["steps"].values())
    print(f"\nwb step breakdown ({total:.1f} s in all; one extra process, not a measured run):")
    for name, sec in sorted(steps["steps"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:<46} {sec:8.2f} s  {sec / total:6.1%}")
    for name, sec in sorted(steps["inner"].items()):
        print(f"    {name:<44} {sec:8.2f} s")


# =====================================================================================================
# Main: quality comparison and scale run
# =====================================================================================================


@dataclass
class Options:
    records: int
    seed: int
    dup_fraction: float
    rates: list[float]
    chars: int
    langs: list[str]
    workers: int
    shards: int
    keep: bool
    breakdown: bool
    out_dir: Path
    data_dir: Path
    wb_python: Path
    datatrove_python: Path
    skip_datatrove: bool
    datatrove_zh_tokenizer: bool
    zh_share: float


def _record(r: ImplResult) -> dict[str, Any]:
    return {**asdict(r), "records_per_s": r.records_per_s}


def _load(child: ChildRun) -> list[float]:
    if child.load_before > 0.7:
        print(
            f"  note: the machine was busy before this run (load average {child.load_before:.2f}): its timings are "
            "skewed by other work"
        )
    return [round(child.load_before, 2), round(child.load_after, 2)]


def run_wb(opts: Options, corpus: Corpus, work: Path, mode: str, label: str) -> ImplResult:
    out = work / "wb" / "out.jsonl"
    shutil.rmtree(out.parent, ignore_errors=True)
    child = run_child(opts.wb_python, "wb", work / "wb.log", input=corpus.path, output=out, mode=mode)
    res = child.result
    print(
        f"  wb: {res['seconds']:.1f} s ({corpus.records / res['seconds']:,.0f} records/s), "
        f"wall {child.wall_seconds:.1f} s, peak RSS {child.peak_rss_mb:,.0f} MB "
        f"(tree {child.peak_tree_rss_mb:,.0f} MB), dropped {res['dropped_by_rule']}"
    )
    return ImplResult(
        corpus=label,
        implementation="wb",
        records=res["read"],
        seconds=res["seconds"],
        wall_seconds=child.wall_seconds,
        cpu_seconds=child.cpu_seconds,
        peak_rss_mb=child.peak_rss_mb,
        peak_tree_rss_mb=child.peak_tree_rss_mb,
        quality={},
        details={**res, "profile": mode},
        load_1min=_load(child),
    )


def run_datatrove(opts: Options, corpus: Corpus, work: Path, language: str, label: str, name: str) -> ImplResult:
    out = work / name
    child = run_child(
        opts.datatrove_python,
        "datatrove",
        work / f"{name}.log",
        input=work / "dt-input",
        output=out,
        language=language,
        workers=opts.workers,
    )
    res = child.result
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in res["stage_seconds"].items())
    print(
        f"  {name}: {res['seconds']:.1f} s ({corpus.records / res['seconds']:,.0f} records/s; {stages}), wall "
        f"{child.wall_seconds:.1f} s, peak RSS {child.peak_rss_mb:,.0f} MB (tree {child.peak_tree_rss_mb:,.0f} MB)"
    )
    return ImplResult(
        corpus=label,
        implementation=name,
        records=corpus.records,
        seconds=res["seconds"],
        wall_seconds=child.wall_seconds,
        cpu_seconds=child.cpu_seconds,
        peak_rss_mb=child.peak_rss_mb,
        peak_tree_rss_mb=child.peak_tree_rss_mb,
        quality={},
        details=res,
        load_1min=_load(child),
    )


def quality_one(opts: Options, lang: str, src: Sources, threshold: float) -> tuple[Corpus, list[ImplResult]]:
    work = opts.out_dir / f"dedup-{lang}-{opts.records}-seed{opts.seed}"
    corpus = build_corpus(
        work / "corpus.jsonl", lang, opts.records, opts.seed, opts.dup_fraction, opts.rates, src, opts.chars
    )
    print(
        f"\n[{lang}] generated {corpus.records:,} records ({corpus.bases:,} base + {corpus.copies:,} planted copies; "
        f"{corpus.bytes / 1e6:.1f} MB; {corpus.avg_chars:.0f} text characters a record) in {corpus.seconds:.1f} s"
    )
    results = [run_wb(opts, corpus, work, "near", lang)]
    truth = Truth.load(corpus.truth)
    drops = {"wb": wb_drops(Path(results[0].details["dropped_file"]))}
    dt_jaccard: dict[str, Any] = {}
    if not opts.skip_datatrove:
        corpus.shards = write_shards(corpus, work / "dt-input", opts.shards)
        variants = [("datatrove", "eng")]
        if lang == "zh" and opts.datatrove_zh_tokenizer:
            variants.append(("datatrove-cmn", "cmn"))
        for name, language in variants:
            r = run_datatrove(opts, corpus, work, language, lang, name)
            results.append(r)
            drops[name] = datatrove_drops(work / name, corpus.shards)
            jr = run_child(
                opts.datatrove_python,
                "datatrove-jaccard",
                work / f"{name}-jaccard.log",
                input=corpus.path,
                truth=corpus.truth,
                output=work / name,
                language=language,
            ).result
            dt_jaccard[name] = jr
    if opts.breakdown:
        results[0].details["breakdown"] = breakdown(opts, lang, corpus, "near")
    pairs = {(min(c, b), max(c, b)) for c, b in truth.copy_of.items()}
    for d in drops.values():
        pairs |= {(min(x, k), max(x, k)) for x, k in d.partner.items()}
    started = time.perf_counter()
    jacc = exact_jaccard(corpus.path, pairs)
    print(f"  exact Jaccard of {len(pairs):,} pairs on wb's shingles in {time.perf_counter() - started:.1f} s")
    accidental = accidental_pairs(corpus.path, truth, threshold)
    corpus.distinctness = accidental
    print(
        f"  distinctness sweep (LSH at {accidental['sweep_threshold']:g}, {accidental['candidate_pairs']:,} candidates"
        f"): {accidental['pairs_exact_jaccard_ge_threshold']} pairs other than the planted ones with exact Jaccard "
        f">= {threshold:g} (largest {accidental['max_exact_jaccard']}) in {accidental['seconds']:.1f} s"
    )
    for r in results:
        r.quality = score(truth, drops[r.implementation], jacc, threshold)
        if r.implementation in dt_jaccard:
            own = dt_jaccard[r.implementation]
            own_j = {int(k): v for k, v in own["jaccard"].items()}
            r.quality["own_shingles"] = {
                "records_without_shingles": own["records_without_shingles"],
                "records_checked": own["records_checked"],
                "mean_jaccard_by_edit_rate": {
                    f"{x:g}": sum(own_j[c] for c in truth.copy_of if truth.rate[c] == x)
                    / max(1, sum(1 for c in truth.copy_of if truth.rate[c] == x))
                    for x in opts.rates
                },
                "pairs_jaccard_ge_threshold": sum(1 for v in own_j.values() if v >= threshold),
            }
    if not opts.keep:
        shutil.rmtree(work, ignore_errors=True)
    return corpus, results


def main_quality(opts: Options) -> int:
    sys.path.insert(0, str(ROOT))
    from workbench.dedup.minhash import NearConfig

    threshold = NearConfig().threshold
    if not opts.skip_datatrove and not opts.datatrove_python.exists():
        print(f"error: {opts.datatrove_python} not found; create it with:\n  {DATATROVE_INSTALL}", file=sys.stderr)
        return 2
    src = load_sources(opts.data_dir)
    results: list[ImplResult] = []
    corpora: dict[str, Any] = {}
    for lang in opts.langs:
        corpus, rs = quality_one(opts, lang, src, threshold)
        corpora[lang] = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(corpus).items()}
        results += rs
    print()
    print_results(results, opts.rates, threshold)
    ratios: dict[str, Any] = {}
    goals: dict[str, Any] = {}
    print(f"\ntargets (wb, threshold {threshold:g}):")
    for lang in opts.langs:
        wb = next(r for r in results if r.corpus == lang and r.implementation == "wb")
        for r in results:
            if r.corpus == lang and r.implementation != "wb":
                ratios[f"{lang}/{r.implementation}"] = {
                    "records_per_s": wb.records_per_s / r.records_per_s,
                    "wall": r.wall_seconds / wb.wall_seconds,
                    "cpu": r.cpu_seconds / wb.cpu_seconds,
                }
        q = wb.quality
        dt = ratios.get(f"{lang}/datatrove", {}).get("records_per_s")
        goals[lang] = {
            "precision": {"target": f">= {TARGET_PRECISION}", "value": q["precision"]},
            "recall_jaccard_ge_threshold": {"target": f">= {TARGET_RECALL}", "value": q["recall_jaccard_ge_threshold"]},
            "throughput_ratio_vs_datatrove": {"target": f">= {TARGET_SPEEDUP}x", "value": dt},
        }
        goals[lang]["precision"]["met"] = (q["precision"] or 0) >= TARGET_PRECISION
        goals[lang]["recall_jaccard_ge_threshold"]["met"] = (q["recall_jaccard_ge_threshold"] or 0) >= TARGET_RECALL
        goals[lang]["throughput_ratio_vs_datatrove"]["met"] = dt is not None and dt >= TARGET_SPEEDUP
        for name, t in goals[lang].items():
            value = "-" if t["value"] is None else f"{t['value']:.4f}"
            print(f"  {lang}  {name:<32} {t['target']:<9} {value:>8}  {'met' if t['met'] else 'NOT met'}")
        print(f"  {lang}  (overall recall, all planted pairs: {_pct(q['recall'])})")
    for key, v in ratios.items():
        print(f"  throughput ratio wb/{key.split('/')[1]} on {key.split('/')[0]}: {v['records_per_s']:.2f}x "
              f"(whole child wall time: {v['wall']:.2f}x; CPU time: {v['cpu']:.2f}x)")  # fmt: skip
    report: dict[str, Any] = {
        "records": opts.records,
        "seed": opts.seed,
        "dup_fraction": opts.dup_fraction,
        "edit_rates": opts.rates,
        "threshold": threshold,
        "machine": {**_machine(opts.wb_python), "datatrove_venv": _dt_versions(opts)},
        "wb_source": git_state(),
        "corpora": corpora,
        "results": [_record(r) for r in results],
        "throughput_ratio": ratios,
        "targets": goals,
    }
    if opts.breakdown:
        report["wb_breakdown"] = {r.corpus: r.details["breakdown"] for r in results if "breakdown" in r.details}
    path = opts.out_dir / "dedup_quality.json"
    write_report(path, report)
    print(f"\nresults: {path}")
    return 0


def _dt_versions(opts: Options) -> dict[str, str]:
    if opts.skip_datatrove:
        return {}
    return _versions(opts.datatrove_python, ["datatrove", "numpy", "spacy", "xxhash", "orjson", "jieba"])


def breakdown(opts: Options, label: str, corpus: Corpus, mode: str) -> dict[str, Any]:
    """wb's steps timed one by one in an extra process (not a measured run)."""
    work = corpus.path.parent
    child = run_child(
        opts.wb_python, "wb-steps", work / "wb-steps.log", input=corpus.path, output=work / "steps.jsonl", mode=mode
    )
    print(f"\n[{label}]", end="")
    _print_breakdown(child.result)
    (work / "steps.jsonl").unlink(missing_ok=True)
    return child.result


def main_scale(opts: Options) -> int:
    src = load_sources(opts.data_dir)
    work = opts.out_dir / f"dedup-scale-{opts.records}-seed{opts.seed}"
    corpus = build_corpus(
        work / "corpus.jsonl",
        "mix",
        opts.records,
        opts.seed,
        opts.dup_fraction,
        opts.rates,
        src,
        opts.chars,
        zh_share=opts.zh_share,
    )
    print(
        f"generated {corpus.records:,} records ({corpus.bases:,} base + {corpus.copies:,} planted copies, "
        f"{opts.zh_share:.0%} Chinese; {corpus.bytes / 1e9:.2f} GB; {corpus.avg_chars:.0f} text characters a "
        f"record) in {corpus.seconds:.1f} s: {corpus.path}"
    )
    del src
    gc.collect()
    r = run_wb(opts, corpus, work, "default", "scale")
    truth = Truth.load(corpus.truth)
    drops = wb_drops(Path(r.details["dropped_file"]), rules=("near_duplicate", "exact_duplicate"))
    eligible = [(c, b) for c, b in truth.copy_of.items() if c not in drops.other and b not in drops.other]
    found = sum(1 for c, b in eligible if drops.group(c) == drops.group(b))
    by_rule = r.details["dropped_by_rule"]
    goals = {
        "seconds": {"target": f"< {SCALE_TARGET_SECONDS}", "value": r.seconds, "met": r.seconds < SCALE_TARGET_SECONDS},
        "peak_rss_mb": {
            "target": f"< {SCALE_TARGET_RSS_MB:.0f}",
            "value": max(r.peak_rss_mb, r.peak_tree_rss_mb),
            "met": max(r.peak_rss_mb, r.peak_tree_rss_mb) < SCALE_TARGET_RSS_MB,
        },
    }
    print()
    head = ["corpus", "implementation", "records", "GB", "seconds", "records/s", "wall s", "CPU s", "proc RSS MB"]
    head += ["tree RSS MB", "kept"]
    row = [
        "scale",
        "wb clean (default profile)",
        f"{r.records:,}",
        f"{corpus.bytes / 1e9:.2f}",
        f"{r.seconds:.1f}",
        f"{r.records_per_s:,.0f}",
        f"{r.wall_seconds:.1f}",
        f"{r.cpu_seconds:.1f}",
        f"{r.peak_rss_mb:,.0f}",
        f"{r.peak_tree_rss_mb:,.0f}",
        f"{r.details['kept']:,}",
    ]
    print(table(head, [row], left=2))
    print(f"\ndropped by rule: {by_rule}")
    print(
        f"planted pairs neither of which a rule dropped: {len(eligible):,} of {len(truth.copy_of):,}; found by the "
        f"exact or near duplicate stage: {found:,} ({found / max(len(eligible), 1):.2%})"
    )
    print("\ntargets:")
    for name, t in goals.items():
        print(f"  {name:<12} {t['target']:<8} {t['value']:>10.1f}  {'met' if t['met'] else 'NOT met'}")
    report: dict[str, Any] = {
        "records": opts.records,
        "seed": opts.seed,
        "dup_fraction": opts.dup_fraction,
        "edit_rates": opts.rates,
        "zh_share": opts.zh_share,
        "machine": _machine(opts.wb_python),
        "wb_source": git_state(),
        "corpus": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(corpus).items()},
        "result": _record(r),
        "targets": goals,
        "planted_pairs": {"total": len(truth.copy_of), "not_dropped_by_rules": len(eligible), "found": found},
    }
    if opts.breakdown:
        report["wb_breakdown"] = breakdown(opts, "scale", corpus, "default")
    path = opts.out_dir / "dedup_scale.json"
    write_report(path, report)
    print(f"\nresults: {path}")
    if not opts.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scale", action="store_true", help="scale run: the full `wb clean` (default profile) on ~1 GB")
    p.add_argument("--records", type=int, help="base records (default 100000; with --scale 1000000)")
    p.add_argument("--seed", type=int, default=20240611, help="seed of the generator (default 20240611)")
    p.add_argument("--dup-fraction", type=float, help="base records that get a planted copy (0.10; --scale 0.03)")
    p.add_argument("--edit-rates", default="0.01,0.02,0.05,0.1", help="edit rates of the copies, taking turns")
    p.add_argument("--chars", type=int, help="mean text characters of a base record (450; --scale 550)")
    p.add_argument("--langs", default="en,zh", help="corpora of the quality run (default en,zh)")
    p.add_argument("--zh-share", type=float, default=0.4, help="Chinese records in the --scale corpus (0.4)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="datatrove worker processes (CPUs)")
    p.add_argument("--shards", type=int, help="datatrove input files = reader tasks (default: --workers)")
    p.add_argument("--skip-datatrove", action="store_true", help="run wb only")
    p.add_argument(
        "--no-datatrove-cmn", action="store_true", help="skip the extra datatrove run with its Chinese tokenizer"
    )
    p.add_argument("--breakdown", action="store_true", help="also time wb's steps (an extra, unmeasured process)")
    p.add_argument("--keep", action="store_true", help="keep the corpora and outputs in --out-dir")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT.relative_to(ROOT)}")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="real records to recombine (../shared/data)")
    p.add_argument("--wb-python", type=Path, default=WB_PYTHON, help="wb's interpreter (.venv/bin/python)")
    p.add_argument("--datatrove-python", type=Path, default=DATATROVE_PYTHON, help="bench/.venv-datatrove/bin/python")
    for hidden in ("worker", "input", "output", "result", "mode", "language", "truth"):
        p.add_argument(f"--{hidden}", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None and args.worker not in WORKERS:
        p.error(f"unknown worker {args.worker}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        result = WORKERS[args.worker](args)
        result.setdefault("peak_rss_mb", self_peak_rss_mb())
        Path(args.result).write_text(json.dumps(result), encoding="utf-8")
        return 0
    rates = [float(x) for x in args.edit_rates.split(",") if x.strip()]
    records = args.records or (1_000_000 if args.scale else 100_000)
    if records < 2 or not rates or any(not 0 <= x < 1 for x in rates):
        raise SystemExit("--records must be at least 2 and every edit rate in [0, 1)")
    opts = Options(
        records=records,
        seed=args.seed,
        dup_fraction=args.dup_fraction if args.dup_fraction is not None else (0.03 if args.scale else 0.10),
        rates=rates,
        chars=args.chars or (550 if args.scale else 450),
        langs=[x.strip() for x in args.langs.split(",") if x.strip()],
        workers=args.workers,
        shards=args.shards or args.workers,
        keep=args.keep,
        breakdown=args.breakdown,
        out_dir=args.out_dir.resolve(),
        data_dir=args.data_dir,
        wb_python=args.wb_python,
        datatrove_python=args.datatrove_python,
        skip_datatrove=args.skip_datatrove,
        datatrove_zh_tokenizer=not args.no_datatrove_cmn,
        zh_share=args.zh_share,
    )
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return main_scale(opts) if args.scale else main_quality(opts)
    except WorkerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
