"""Throughput of `wb eval`'s two halves against what a user would write: generation and scoring (issue 6).

What is compared
----------------
1. **Generation** on the embedded model (SmolLM2-135M-Instruct), greedy, the same prompts and `max_new_tokens` for
   every side, no cache:
   * **plain loop** (the baseline): per prompt, `tokenizer.apply_chat_template(messages, add_generation_prompt=True)`
     then `model.generate(**inputs, max_new_tokens=N, do_sample=False)`, as a user would write it;
   * **wb batch 1**: `workbench.models.generate.generate(loaded, [prompt], GenerationSettings(batch_size=1,
     precision="fp32"))`, a call per prompt: one at a time through wb's own path (it should be as fast as the plain
     loop);
   * **wb batch B fp32**, **wb batch B bf16** (default B = 16; `--batch-sizes`, `--precisions`): the same function
     with prompts sorted by length, left-padded, B a batch, with `precision` fp32 or bf16 (bf16 autocast, the
     weights stay fp32; what `precision: auto` picks on a CPU with native bf16 units).

   Only real new tokens count: a row's tokens up to and including its first end-of-turn token (or all
   `max_new_tokens`), never the padding a finished row gets while the longest row of its batch goes on. The output
   ids are taken from `model.generate`'s return value (wb's call is observed through a thin wrapper on the model's
   `generate`). Tokens/s and prompts/s are wall-clock; tokens per CPU-second as well. The shared machine's load
   changes as the run goes, so the prompts are cut into rounds (`--round-size`, default 16, at least the largest
   batch); in a round the two one-at-a-time sides alternate prompt by prompt, and they and each batched side run in
   mirrored order from round to round. Each side's figures are its sums over the rounds.
   Torch threads: torch's own choice (one per core), except on a busy machine (1-minute load above CPUs - 1), where
   it is 1: two OpenMP threads that do not both get a core wait for each other at every operation; at a load of 2.5-4
   on 2 cores, generation ran 6 (one at a time) to 10 (batch 8) times slower with 2 threads than with 1
   (`--threads` overrides).
   The prompts (default 32): half English (GPTeacher code instructions), half Chinese (term explanations and poetry
   questions 3:1, a quarter integer arithmetic) from `../shared/data`, drawn with a fixed seed and shuffled (without
   it, `data/demo/eval.jsonl`).
2. **Scoring** of prediction/reference pairs (default 10,000, half English, half Chinese) built from the same real
   records, with predictions perturbed from the references (edits, truncation, reordered sentences, another
   record's answer, exact copies, empty answers):
   * **wb**: `workbench.evaluate.metrics.score_items(predictions, references)`: ROUGE-1/2/L, sentence BLEU, chrF,
     exact match, F1, accuracy per item, plus corpus BLEU and chrF;
   * **baseline**: rouge-score's `RougeScorer(["rouge1", "rouge2", "rougeL"])` + sacrebleu's `sentence_bleu` and
     `sentence_chrf`, pair by pair. rouge-score's default tokenizer keeps only `[a-z0-9]`, so Chinese text scores
     on its Latin letters and digits alone (0 for most Chinese pairs), and sacrebleu's default `13a` tokenizer makes
     a Chinese sentence one "word": the baseline does less work on Chinese, and wrong work;
   * **baseline zh-aware**: the same loop as a user who noticed would fix it: a rouge-score tokenizer that makes
     each Han character a token (a regex, lowercased), and `sentence_bleu(..., tokenize="zh")` for a reference with a
     Han character. Its scores are close to wb's; its speed is the fair comparison for Chinese.

Timings exclude imports, model loading and a warm-up call. The JSON result goes to `bench/out/eval_throughput.json`.
Run from the repository root: `.venv/bin/python bench/eval_throughput.py` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from random import Random
from statistics import mean
from typing import Any

from benchlib import ROOT, git_state, table, versions, write_report

sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "bench" / "out"
DEFAULT_DATA = ROOT.parent / "shared" / "data"
DEMO_EVAL = ROOT / "data" / "demo" / "eval.jsonl"

TARGET_GENERATION_RATIO = 8.0  # wb batched bf16 >= 8x one-at-a-time fp32, new tokens/s on CPU (issue 15)
TARGET_BATCH = 16
TARGET_SIDE = f"wb batch {TARGET_BATCH} bf16"
CJK_RE = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def fmt_load(load: Sequence[float]) -> str:
    return "/".join(f"{x:.2f}" for x in load)


# =====================================================================================================
# Real records
# =====================================================================================================


@dataclass(frozen=True)
class Record:
    lang: str  # "en" or "zh"
    kind: str  # "code", "term", "poetry", "arithmetic"
    instruction: str
    input: str
    output: str


def read_records(data_dir: Path) -> dict[str, list[Record]]:
    """The real records by kind: GPTeacher code (en), term explanations, poetry, arithmetic (zh)."""
    files = {
        "code": ("en", "en_codegen_instruct.json", "response"),
        "term": ("zh", "zh_term_explanations.json", "output"),
        "poetry": ("zh", "zh_poetry_culture.json", "output"),
        "arithmetic": ("zh", "zh_integer_arithmetic.json", "output"),
    }
    out: dict[str, list[Record]] = {}
    if all((data_dir / name).is_file() for _, name, _ in files.values()):
        for kind, (lang, name, answer) in files.items():
            rows = json.loads((data_dir / name).read_text(encoding="utf-8"))
            out[kind] = [
                Record(lang, kind, r["instruction"].strip(), (r.get("input") or "").strip(), r[answer].strip())
                for r in rows
                if r.get("instruction") and r.get(answer)
            ]
        return out
    # A fresh clone without ../shared/data: the demo eval set (the same sources, 50 records).
    print(f"note: {data_dir} not found; using {DEMO_EVAL.relative_to(ROOT)}", file=sys.stderr)
    for line in DEMO_EVAL.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if re.fullmatch(r"[\d+\-*/=]+", r["instruction"]):
            kind = "arithmetic"
        elif CJK_RE.search(r["instruction"]):
            kind = "term"
        else:
            kind = "code"
        lang = "en" if kind == "code" else "zh"
        out.setdefault(kind, []).append(Record(lang, kind, r["instruction"], r.get("input", ""), r["output"]))
    for kind in ("poetry", "arithmetic"):  # the demo set may hold none of these: draw terms instead
        out.setdefault(kind, list(out.get("term", [])))
    return out


def draw(pool: list[Record], n: int, rng: Random) -> list[Record]:
    """n records of a pool: without replacement while it lasts, then again."""
    got: list[Record] = []
    while len(got) < n:
        got.extend(rng.sample(pool, min(len(pool), n - len(got))))
    return got


def prompt_records(records: dict[str, list[Record]], n: int, seed: int) -> list[Record]:
    """Half English code instructions; half Chinese: a quarter arithmetic, the rest terms and poetry (3:1)."""
    rng = Random(seed)
    n_en = n // 2
    n_zh = n - n_en
    n_arith = n_zh // 4
    n_poetry = (n_zh - n_arith) // 4
    n_term = n_zh - n_arith - n_poetry
    # Keep code prompts to a realistic size (a few with a long code input would dominate prefill).
    code = [r for r in records["code"] if len(r.instruction) + len(r.input) <= 400]
    chosen = (
        draw(code, n_en, rng)
        + draw(records["term"], n_term, rng)
        + draw(records["poetry"], n_poetry, rng)
        + draw(records["arithmetic"], n_arith, rng)
    )
    rng.shuffle(chosen)
    return chosen


# =====================================================================================================
# Generation
# =====================================================================================================


def count_new(rows: Any, stops: set[int]) -> list[int]:
    """Real new tokens per row of generated ids: up to and including the first stop token, else all."""
    counts = []
    for row in rows.tolist():
        n = len(row)
        for k, tok in enumerate(row):
            if tok in stops:
                n = k + 1
                break
        counts.append(n)
    return counts


class GenerateRecorder:
    """Wraps a model's `generate` (as an instance attribute) and keeps the new ids of every call."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.original = model.generate
        self.new_ids: list[Any] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.original(*args, **kwargs)
        prompt_len = kwargs["input_ids"].shape[1] if "input_ids" in kwargs else args[0].shape[1]
        self.new_ids.append(out[:, prompt_len:].detach().cpu())
        return out

    def __enter__(self) -> GenerateRecorder:
        self.model.generate = self
        return self

    def __exit__(self, *exc: object) -> None:
        del self.model.generate


@dataclass
class SideResult:
    """One generation side's sums over the rounds."""

    name: str
    batch_size: int
    prompts: int = 0
    new_tokens: int = 0
    token_slots: int = 0  # rows x steps computed, padding of finished rows included
    hit_max: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    rounds: list[dict[str, Any]] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0

    @property
    def prompts_per_s(self) -> float:
        return self.prompts / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_cpu_s(self) -> float:
        return self.new_tokens / self.cpu_seconds if self.cpu_seconds else 0.0

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("answers")
        d.update(
            tokens_per_s=self.tokens_per_s,
            prompts_per_s=self.prompts_per_s,
            tokens_per_cpu_s=self.tokens_per_cpu_s,
            real_token_share=self.new_tokens / self.token_slots if self.token_slots else 0.0,
        )
        return d


Runner = Callable[[list[Record]], tuple[list[str], list[int], int]]
"""Generates answers for records: (answers, real new tokens per prompt, token slots computed)."""


def side_name(batch_size: int, precision: str) -> str:
    return "wb batch 1" if batch_size == 1 else f"wb batch {batch_size} {precision}"


def make_runners(
    loaded: Any, settings_for: Callable[[int, str], Any], batch_sizes: list[int], precisions: list[str]
) -> dict[str, Runner]:
    import torch

    from workbench.models.generate import generate, prompt_for, stop_token_ids
    from workbench.records import user_text

    model, tokenizer = loaded.model, loaded.tokenizer
    stops = set(stop_token_ids(loaded))

    def plain_loop(records: list[Record]) -> tuple[list[str], list[int], int]:
        max_new = settings_for(1, "fp32").max_new_tokens
        answers, counts, slots = [], [], 0
        for r in records:
            messages = [{"role": "user", "content": user_text(r.instruction, r.input)}]
            inputs = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            with torch.inference_mode():
                out = model.generate(**inputs, max_new_tokens=max_new, do_sample=False)
            new = out[:, inputs["input_ids"].shape[1] :]
            counts.extend(count_new(new, stops))
            slots += new.numel()
            answers.append(tokenizer.decode(new[0], skip_special_tokens=True).strip())
        return answers, counts, slots

    def wb_runner(batch_size: int, precision: str) -> Runner:
        def run(records: list[Record]) -> tuple[list[str], list[int], int]:
            prompts = [prompt_for(loaded, {"instruction": r.instruction, "input": r.input}) for r in records]
            with GenerateRecorder(model) as rec:
                answers = generate(loaded, prompts, settings_for(batch_size, precision), cache=None)
            # Rows come in generate()'s length-sorted order; only sums are reported, so no need to map them back.
            counts = [n for ids in rec.new_ids for n in count_new(ids, stops)]
            slots = sum(ids.numel() for ids in rec.new_ids)
            return answers, counts, slots

        return run

    runners: dict[str, Runner] = {"plain loop": plain_loop, "wb batch 1": wb_runner(1, "fp32")}
    for b in batch_sizes:
        for precision in precisions if b != 1 else []:
            runners[side_name(b, precision)] = wb_runner(b, precision)
    return runners


def check_same_prompts(loaded: Any, records: list[Record]) -> int:
    """How many prompts tokenize to the same ids in wb (prompt_for) and the plain loop (apply_chat_template)."""
    from workbench.models.generate import prompt_for
    from workbench.records import user_text

    tok = loaded.tokenizer
    same = 0
    for r in records:
        wb_ids = tok(prompt_for(loaded, {"instruction": r.instruction, "input": r.input}), add_special_tokens=False)
        msgs = [{"role": "user", "content": user_text(r.instruction, r.input)}]
        plain = tok.apply_chat_template(msgs, add_generation_prompt=True, return_dict=True)
        same += list(wb_ids["input_ids"]) == list(plain["input_ids"])
    return same


def run_generation(opts: argparse.Namespace) -> dict[str, Any]:
    import torch

    load1, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if opts.threads:
        torch.set_num_threads(opts.threads)
        why = "--threads"
    elif load1 > cpus - 1 and torch.get_num_threads() > 1:
        torch.set_num_threads(1)
        why = (
            f"the machine is busy (load {load1:.2f} on {cpus} CPUs): with every core taken, torch's OpenMP threads "
            "wait for each other at every operation and generation runs several times slower; --threads N overrides"
        )
    else:
        why = "torch's own choice"
    print(f"torch threads: {torch.get_num_threads()} ({why})")
    from workbench.models.generate import GenerationSettings, generate
    from workbench.models.targets import load, resolve_target

    started = time.perf_counter()
    loaded = load([resolve_target("embedded")])
    print(
        f"loaded the embedded model in {time.perf_counter() - started:.1f} s; torch threads {torch.get_num_threads()}"
    )
    records = prompt_records(read_records(opts.data_dir), opts.prompts, opts.seed)
    tok = loaded.tokenizer
    prompt_tokens = [len(tok(_prompt(loaded, r), add_special_tokens=False)["input_ids"]) for r in records]
    same_prompts = check_same_prompts(loaded, records)

    def settings_for(batch_size: int, precision: str) -> GenerationSettings:
        return GenerationSettings(
            max_new_tokens=opts.max_new_tokens,
            batch_size=batch_size,
            do_sample=False,
            precision=precision,  # type: ignore[arg-type]
        )

    batch_sizes = [1, *sorted(b for b in opts.batch_sizes if b != 1)]
    runners = make_runners(loaded, settings_for, batch_sizes, opts.precisions)
    names = list(runners)
    batch_of = {"plain loop": 1, "wb batch 1": 1} | {
        side_name(b, p): b for b in batch_sizes if b != 1 for p in opts.precisions
    }

    # Warm-up (not timed): one short call of each kind.
    warm = records[:2]
    for precision in opts.precisions:
        generate(
            loaded,
            [_prompt(loaded, r) for r in warm],
            settings_for(2, precision).model_copy(update={"max_new_tokens": 4}),
        )
    _warm_plain(loaded, warm[0])

    round_size = max(opts.round_size, max(batch_sizes))
    rounds = [records[lo : lo + round_size] for lo in range(0, len(records), round_size)]
    results = {name: SideResult(name, batch_of[name]) for name in names}
    print(
        f"generation: {len(records)} prompts ({sum(r.lang == 'en' for r in records)} English, "
        f"{sum(r.lang == 'zh' for r in records)} Chinese; {mean(prompt_tokens):.0f} prompt tokens on average), "
        f"max_new_tokens {opts.max_new_tokens}, greedy, no cache; {len(rounds)} round(s) of up to {round_size}; "
        f"load {fmt_load(load_avg())}"
    )
    # One-at-a-time sides alternate prompt by prompt (the plain loop first on every other prompt); the groups run
    # in mirrored order from round to round (A B C, C B A, ...), so a load that drifts hits every side alike.
    groups = [["plain loop", "wb batch 1"], *[[name] for name in names if name not in ("plain loop", "wb batch 1")]]
    for k, chunk in enumerate(rounds):
        for group in groups if k % 2 == 0 else groups[::-1]:
            calls = (
                [(name, [rec]) for j, rec in enumerate(chunk) for name in (group if j % 2 == 0 else group[::-1])]
                if len(group) > 1
                else [(group[0], chunk)]
            )
            sums = {name: {"prompts": 0, "new_tokens": 0, "seconds": 0.0, "cpu_seconds": 0.0} for name in group}
            before = load_avg()
            for name, part in calls:
                t0, c0 = time.perf_counter(), time.process_time()
                answers, counts, slots = runners[name](part)
                seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
                res = results[name]
                res.prompts += len(part)
                res.new_tokens += sum(counts)
                res.token_slots += slots
                res.hit_max += sum(c >= opts.max_new_tokens for c in counts)
                res.seconds += seconds
                res.cpu_seconds += cpu
                res.answers.extend(answers)
                for key, value in (("prompts", len(part)), ("new_tokens", sum(counts)), ("seconds", seconds)):
                    sums[name][key] += value
                sums[name]["cpu_seconds"] += cpu
            after = load_avg()
            for name in group:
                r = sums[name]
                results[name].rounds.append({"round": k, **r, "load_before": before, "load_after": after})
                print(
                    f"  round {k + 1}/{len(rounds)} {name:<12} {r['prompts']:>3} prompts {r['new_tokens']:>5} tokens "
                    f"{r['seconds']:7.1f} s  {r['new_tokens'] / r['seconds']:6.1f} tokens/s  load {fmt_load(before)} "
                    f"-> {fmt_load(after)}",
                    flush=True,
                )

    plain = results["plain loop"]
    one = results["wb batch 1"]
    agreement = {
        name: sum(a == b for a, b in zip(res.answers, one.answers, strict=True))
        for name, res in results.items()
        if name != "wb batch 1"
    }
    # Greedy answers of bf16 against fp32 at the same batch size: the share of prompts whose answers agree.
    bf16_agreement = {
        b: sum(
            x == y
            for x, y in zip(results[side_name(b, "bf16")].answers, results[side_name(b, "fp32")].answers, strict=True)
        )
        for b in batch_sizes
        if b != 1 and side_name(b, "bf16") in results and side_name(b, "fp32") in results
    }
    ratios = {
        name: {
            "vs_plain_loop": res.tokens_per_s / plain.tokens_per_s if plain.tokens_per_s else 0.0,
            "vs_wb_batch_1": res.tokens_per_s / one.tokens_per_s if one.tokens_per_s else 0.0,
        }
        for name, res in results.items()
    }
    print_generation(results, ratios, agreement, len(records), same_prompts, opts.max_new_tokens)
    for b, same in bf16_agreement.items():
        print(f"batch {b}: bf16 answers identical to fp32 answers for {same}/{len(records)} prompts")
    target = None
    if TARGET_SIDE in ratios:
        value = ratios[TARGET_SIDE]["vs_plain_loop"]
        target = {"target": f">= {TARGET_GENERATION_RATIO}x", "value": value, "met": value >= TARGET_GENERATION_RATIO}
        print(
            f"\ntarget: {TARGET_SIDE} >= {TARGET_GENERATION_RATIO:.0f}x the plain fp32 loop, one prompt at a time "
            f"(new tokens/s): {value:.2f}x  {'met' if target['met'] else 'NOT met'}"
        )
    return {
        "prompts": len(records),
        "prompt_mix": {kind: sum(r.kind == kind for r in records) for kind in ("code", "term", "poetry", "arithmetic")},
        "mean_prompt_tokens": mean(prompt_tokens),
        "max_new_tokens": opts.max_new_tokens,
        "round_size": round_size,
        "torch_threads": torch.get_num_threads(),
        "torch_threads_why": why,
        "torch_version": torch.__version__,
        "prompts_tokenized_alike": same_prompts,
        "sides": {name: res.summary() for name, res in results.items()},
        "ratios": ratios,
        "answers_identical_to_wb_batch_1": agreement,
        "bf16_answers_identical_to_fp32_by_batch_size": bf16_agreement,
        "target": target,
    }


def _prompt(loaded: Any, r: Record) -> str:
    from workbench.models.generate import prompt_for

    return prompt_for(loaded, {"instruction": r.instruction, "input": r.input})


def _warm_plain(loaded: Any, r: Record) -> None:
    import torch

    from workbench.records import user_text

    msgs = [{"role": "user", "content": user_text(r.instruction, r.input)}]
    inputs = loaded.tokenizer.apply_chat_template(
        msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        loaded.model.generate(**inputs, max_new_tokens=4, do_sample=False)


def print_generation(
    results: dict[str, SideResult],
    ratios: dict[str, dict[str, float]],
    agreement: dict[str, int],
    n: int,
    same_prompts: int,
    max_new: int,
) -> None:
    head = ["side", "prompts", "new tokens", "at max", "seconds", "tokens/s", "prompts/s", "tok/CPU-s", "real/slots"]
    head += ["x plain", "x batch 1", "same as b1"]
    rows = []
    for name, res in results.items():
        rows.append(
            [
                name,
                f"{res.prompts}",
                f"{res.new_tokens:,}",
                f"{res.hit_max}",
                f"{res.seconds:.1f}",
                f"{res.tokens_per_s:.1f}",
                f"{res.prompts_per_s:.2f}",
                f"{res.tokens_per_cpu_s:.1f}",
                f"{res.new_tokens / res.token_slots:.0%}" if res.token_slots else "-",
                f"{ratios[name]['vs_plain_loop']:.2f}",
                f"{ratios[name]['vs_wb_batch_1']:.2f}",
                "-" if name == "wb batch 1" else f"{agreement[name]}/{n}",
            ]
        )
    print()
    print(table(head, rows))
    print(
        f"\n'new tokens': real tokens up to and including the end-of-turn token; 'at max': answers cut at "
        f"max_new_tokens ({max_new}); 'real/slots': real tokens / (rows x steps) computed, the rest is padding of "
        f"rows that finished before the longest of their batch; 'same as b1': answers identical to wb batch 1's. "
        f"Prompts tokenized alike by wb and the plain loop: {same_prompts}/{n}."
    )


# =====================================================================================================
# Scoring
# =====================================================================================================

SENTENCE_END = re.compile(r"(?<=[.!?。！？；\n])")


def _units(text: str, lang: str) -> list[str]:
    """Editable units: words with their following whitespace (English), characters (Chinese)."""
    return re.findall(r"\S+\s*|\s+", text) if lang == "en" else list(text)


def perturb(ref: str, lang: str, rng: Random, vocab: list[str], others: list[str]) -> tuple[str, str]:
    """A plausible model answer for a reference: (kind of perturbation, prediction)."""
    x = rng.random()
    if x < 0.05:
        return "copy", ref
    if x < 0.08:
        return "empty", rng.choice(["", "I don't know.", "我不知道。", "N/A"])
    if x < 0.25:
        other = rng.choice(others)
        cut = int(len(other) * rng.uniform(0.5, 1.0))
        return "other answer", other[:cut]
    units = _units(ref, lang)
    if x < 0.45:  # cut off, as max_new_tokens does
        units = units[: max(1, int(len(units) * rng.uniform(0.2, 0.9)))]
        rate = 0.05
        kind = "truncated"
    elif x < 0.55:  # sentences reordered
        sentences = [s for s in SENTENCE_END.split(ref) if s]
        rng.shuffle(sentences)
        units = _units("".join(sentences), lang)
        rate = 0.05
        kind = "reordered"
    else:
        rate = rng.uniform(0.05, 0.4)
        kind = "edited"
    out: list[str] = []
    for u in units:
        y = rng.random()
        if y >= rate:
            out.append(u)
        elif y < rate / 3:
            continue  # deleted
        elif y < 2 * rate / 3:
            out.append(rng.choice(vocab))  # replaced
        else:
            out.extend([u, rng.choice(vocab)])  # inserted
    return kind, "".join(out)


@dataclass
class Pairs:
    predictions: list[str]
    references: list[str]
    langs: list[str]
    kinds: list[str]


def build_pairs(records: dict[str, list[Record]], n: int, seed: int) -> Pairs:
    """n pairs, half English (code answers), half Chinese (terms 1/2, poetry 1/4, arithmetic 1/4)."""
    rng = Random(seed + 1)
    n_en = n // 2
    n_zh = n - n_en
    n_arith = n_zh // 4
    n_poetry = n_zh // 4
    refs = (
        draw(records["code"], n_en, rng)
        + draw(records["term"], n_zh - n_arith - n_poetry, rng)
        + draw(records["poetry"], n_poetry, rng)
        + draw(records["arithmetic"], n_arith, rng)
    )
    rng.shuffle(refs)
    vocab = {
        "en": [u for r in records["code"][:500] for u in _units(r.output, "en")],
        "zh": [c for r in records["term"] for c in r.output if CJK_RE.match(c)],
    }
    others = {lang: [r.output for kind, rs in records.items() for r in rs if r.lang == lang] for lang in ("en", "zh")}
    preds, kinds = [], []
    for r in refs:
        same_kind = [x.output for x in records[r.kind]]
        kind, pred = perturb(r.output, r.lang, rng, vocab[r.lang], same_kind if rng.random() < 0.7 else others[r.lang])
        preds.append(pred)
        kinds.append(kind)
    return Pairs(preds, [r.output for r in refs], [r.lang for r in refs], kinds)


class CjkTokenizer:
    """What a user who noticed the Chinese zeros would give rouge-score: each Han character a token, else words."""

    pattern = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W_\u3400-\u9fff\uf900-\ufaff]+")

    def tokenize(self, text: str) -> list[str]:
        return self.pattern.findall(text.lower())


def baseline_score(
    predictions: Sequence[str], references: Sequence[str], scorer: Any, cjk_aware: bool = False
) -> list[dict[str, float]]:
    """What a user would write: rouge-score + sacrebleu, pair by pair. `cjk_aware`: sacrebleu's `zh` tokenizer for a
    reference with a Han character (the scorer then has a CJK tokenizer too); otherwise every default."""
    import sacrebleu

    out = []
    for pred, ref in zip(predictions, references, strict=True):
        rouge = scorer.score(ref, pred)
        bleu_tokenize = "zh" if cjk_aware and CJK_RE.search(ref) else "13a"
        out.append(
            {
                "rouge1": rouge["rouge1"].fmeasure,
                "rouge2": rouge["rouge2"].fmeasure,
                "rouge_l": rouge["rougeL"].fmeasure,
                "bleu": sacrebleu.sentence_bleu(pred, [ref], tokenize=bleu_tokenize).score / 100,
                "chrf": sacrebleu.sentence_chrf(pred, [ref]).score / 100,
            }
        )
    return out


SCORING_SIDES = ("wb", "baseline", "baseline zh-aware")


def run_scoring(opts: argparse.Namespace) -> dict[str, Any]:
    from rouge_score.rouge_scorer import RougeScorer

    from workbench.evaluate.metrics import score_items

    records = read_records(opts.data_dir)
    pairs = build_pairs(records, opts.pairs, opts.seed)
    n = len(pairs.predictions)
    by_lang = {lang: [i for i in range(n) if pairs.langs[i] == lang] for lang in ("en", "zh")}
    lengths = {
        lang: {
            "reference_chars": mean(len(pairs.references[i]) for i in idx) if idx else 0.0,
            "prediction_chars": mean(len(pairs.predictions[i]) for i in idx) if idx else 0.0,
        }
        for lang, idx in by_lang.items()
    }
    kinds = {k: pairs.kinds.count(k) for k in sorted(set(pairs.kinds))}
    print(
        f"\nscoring: {n:,} pairs ({len(by_lang['en']):,} English, {len(by_lang['zh']):,} Chinese); mean characters "
        + "; ".join(
            f"{lang} reference {v['reference_chars']:.0f}, prediction {v['prediction_chars']:.0f}"
            for lang, v in lengths.items()
        )
        + f"; predictions: {', '.join(f'{k} {v:,}' for k, v in kinds.items())}; load {fmt_load(load_avg())}"
    )
    scorers = {
        "baseline": RougeScorer(["rouge1", "rouge2", "rougeL"]),
        "baseline zh-aware": RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=CjkTokenizer()),
    }

    def score(name: str, preds: Sequence[str], refs: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        if name == "wb":
            result = score_items(preds, refs)
            extra = {"bleu_tokenize": result.bleu_tokenize, "corpus": {k: v.score for k, v in result.corpus.items()}}
            return [dict(item) for item in result.items], extra
        return baseline_score(preds, refs, scorers[name], cjk_aware=name != "baseline"), {}

    for name in SCORING_SIDES:  # warm-up: wb's punctuation table, sacrebleu's tokenizers
        score(name, pairs.predictions[:4] + pairs.predictions[-4:], pairs.references[:4] + pairs.references[-4:])

    sides: dict[str, dict[str, Any]] = {}
    scores: dict[str, list[dict[str, Any]]] = {}
    for name in SCORING_SIDES:
        before = load_avg()
        t0, c0 = time.perf_counter(), time.process_time()
        scores[name], extra = score(name, pairs.predictions, pairs.references)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        after = load_avg()
        sides[name] = {
            "pairs": n,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "pairs_per_s": n / seconds,
            "pairs_per_cpu_s": n / cpu if cpu else 0.0,
            "load_before": before,
            "load_after": after,
            **extra,
        }
        print(
            f"  {name:<17} {seconds:7.1f} s  {n / seconds:8,.0f} pairs/s  CPU {cpu:6.1f} s  "
            f"load {fmt_load(before)} -> {fmt_load(after)}",
            flush=True,
        )
    per_language: dict[str, dict[str, float]] = {}
    if opts.by_language:
        print("  by language (each side again on each half; pairs per CPU-second):")
        for lang, idx in by_lang.items():
            preds = [pairs.predictions[i] for i in idx]
            refs = [pairs.references[i] for i in idx]
            per_language[lang] = {}
            for name in SCORING_SIDES:
                c0 = time.process_time()
                score(name, preds, refs)
                per_language[lang][name] = len(idx) / max(time.process_time() - c0, 1e-9)
            print(
                f"    {lang}: "
                + ", ".join(f"{name} {v:,.0f}" for name, v in per_language[lang].items())
                + f"; wb/baseline {per_language[lang]['wb'] / per_language[lang]['baseline']:.2f}x, "
                f"wb/baseline zh-aware {per_language[lang]['wb'] / per_language[lang]['baseline zh-aware']:.2f}x"
            )
    ratios = {
        name: {
            "pairs_per_s": sides["wb"]["pairs_per_s"] / sides[name]["pairs_per_s"],
            "pairs_per_cpu_s": sides["wb"]["pairs_per_cpu_s"] / sides[name]["pairs_per_cpu_s"],
        }
        for name in SCORING_SIDES[1:]
    }

    means: dict[str, dict[str, dict[str, float]]] = {}
    for name, rows in scores.items():
        means[name] = {
            lang: {k: mean(rows[i][k] for i in idx) for k in ("rouge1", "rouge2", "rouge_l", "bleu", "chrf")}
            for lang, idx in by_lang.items()
            if idx
        }
    zh_rouge_zero = {
        name: sum(1 for i in by_lang["zh"] if rows[i]["rouge1"] == 0 and pairs.predictions[i])
        for name, rows in scores.items()
    }
    zh_nonempty = sum(1 for i in by_lang["zh"] if pairs.predictions[i])
    print()
    head = ["side", "pairs", "seconds", "pairs/s", "CPU s", "pairs/CPU-s", "load before", "load after"]
    rows = [
        [
            name,
            f"{s['pairs']:,}",
            f"{s['seconds']:.1f}",
            f"{s['pairs_per_s']:,.0f}",
            f"{s['cpu_seconds']:.1f}",
            f"{s['pairs_per_cpu_s']:,.0f}",
            fmt_load(s["load_before"]),
            fmt_load(s["load_after"]),
        ]
        for name, s in sides.items()
    ]
    print(table(head, rows))
    print()
    for name, r in ratios.items():
        print(f"throughput ratio wb/{name}: {r['pairs_per_s']:.2f}x (per CPU-second: {r['pairs_per_cpu_s']:.2f}x)")
    print("wb also computes exact match, F1, accuracy and corpus BLEU/chrF, which the baseline does not.")
    print("mean scores (rouge1 / rouge2 / rougeL / BLEU / chrF):")
    for name, per_lang in means.items():
        for lang, m in per_lang.items():
            vals = " / ".join(f"{m[k]:.3f}" for k in ("rouge1", "rouge2", "rouge_l", "bleu", "chrf"))
            print(f"  {name:<17} {lang}  {vals}")
    print(
        f"rouge-score's default tokenizer keeps only [a-z0-9]: Chinese text scores on its Latin letters and digits "
        f"alone, so {zh_rouge_zero['baseline']:,} of {zh_nonempty:,} Chinese pairs with a non-empty prediction get "
        f"ROUGE-1 = 0 from the baseline ({zh_rouge_zero['wb']:,} from wb); sacrebleu's default 13a tokenizer "
        f"treats a Chinese sentence as one word (wb picks '{sides['wb'].get('bleu_tokenize')}' for this corpus). "
        "'baseline zh-aware' is the same loop with a tokenizer that makes each Han character a token and sacrebleu's "
        "'zh' for Chinese references: the fair comparison for Chinese."
    )
    return {
        "pairs": n,
        "langs": {lang: len(idx) for lang, idx in by_lang.items()},
        "mean_lengths": lengths,
        "prediction_kinds": kinds,
        "sides": sides,
        "ratios_wb_over": ratios,
        "by_language_pairs_per_cpu_s": per_language,
        "mean_scores": means,
        "zh_pairs_rouge1_zero": zh_rouge_zero,
        "zh_pairs_nonempty_prediction": zh_nonempty,
    }


# =====================================================================================================
# Main
# =====================================================================================================


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=32, help="prompts to generate for (default 32)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="max_new_tokens of every side (default 64)")
    p.add_argument("--batch-sizes", default="16", help="wb batch sizes besides 1 (default 16)")
    p.add_argument("--precisions", default="fp32,bf16", help="precisions of the batched sides (default fp32,bf16)")
    p.add_argument(
        "--round-size", type=int, default=16, help="prompts a round (default 16; at least the largest batch)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (default: torch's own choice, or 1 when the load average exceeds CPUs - 1)",
    )
    p.add_argument("--pairs", type=int, default=10_000, help="prediction/reference pairs to score (default 10000)")
    p.add_argument("--seed", type=int, default=20240611, help="seed of the prompt and pair draws (default 20240611)")
    p.add_argument("--skip-generation", action="store_true", help="do not measure generation")
    p.add_argument("--skip-scoring", action="store_true", help="do not measure scoring")
    p.add_argument("--by-language", action="store_true", help="also score each language's half on its own (CPU time)")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help="where the JSON goes (default bench/out)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="the real records (default ../shared/data)")
    args = p.parse_args(argv)
    try:
        args.batch_sizes = sorted({int(b) for b in args.batch_sizes.split(",") if b.strip()})
        args.precisions = [x.strip() for x in args.precisions.split(",") if x.strip()]
    except ValueError:
        p.error("--batch-sizes: comma-separated integers")
    if args.prompts < 1 or args.max_new_tokens < 1 or args.pairs < 1 or any(b < 1 for b in args.batch_sizes):
        p.error("--prompts, --max-new-tokens, --pairs and the batch sizes must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            **versions(("torch", "transformers", "sacrebleu", "rouge-score")),
        },
        "wb_source": git_state(("workbench",)),
        "seed": args.seed,
        "load_start": load_avg(),
    }
    print(f"load average at start: {fmt_load(report['load_start'])} (1/5/15 min, {os.cpu_count()} CPUs)")
    if not args.skip_generation:
        report["generation"] = run_generation(args)
    if not args.skip_scoring:
        report["scoring"] = run_scoring(args)
    report["load_end"] = load_avg()
    report["seconds"] = time.perf_counter() - started
    busy = max(report["load_start"][0], report["load_end"][0]) > (os.cpu_count() or 1) * 0.75
    print(
        f"\nload average at end: {fmt_load(report['load_end'])}; whole run {report['seconds']:.0f} s"
        + ("; note: the machine was busy, wall-clock figures are lower than on an idle machine" if busy else "")
    )
    print(f"results: {write_report(args.out_dir / 'eval_throughput.json', report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
