"""Deduplication and decontamination: exact and near duplicates in English and Chinese, eval-set overlap."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import read_jsonl, write_jsonl

from workbench.clean.dispatch import run
from workbench.clean.profile import from_dict, load
from workbench.dedup.minhash import NearConfig, NearDuplicates, batch_shingles, shingle_sets, signatures
from workbench.dedup.shingles import record_ngrams
from workbench.frames import rows_to_frame

REPO = Path(__file__).resolve().parent.parent
WORDS = [
    "model",
    "data",
    "train",
    "token",
    "layer",
    "weight",
    "batch",
    "epoch",
    "loss",
    "learning",
    "rate",
    "gradient",
    "optimizer",
    "schedule",
    "warmup",
    "decay",
    "adapter",
    "rank",
    "alpha",
    "dropout",
    "prompt",
    "answer",
    "question",
    "context",
    "dataset",
    "split",
    "eval",
    "metric",
    "score",
    "sample",
    "review",
]
HANZI = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何除消构府称太准精值号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包火住调满县局照参红细引听该铁价严"


def english(rng: random.Random, words: int = 60) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


def chinese(rng: random.Random, chars: int = 80) -> str:
    return "".join(rng.choice(HANZI) for _ in range(chars)) + "。"


def edit_words(rng: random.Random, text: str, edits: int) -> str:
    words = text.split(" ")
    for _ in range(edits):
        words[rng.randrange(len(words))] = rng.choice(WORDS)
    return " ".join(words)


def edit_chars(rng: random.Random, text: str, edits: int) -> str:
    chars = list(text)
    for _ in range(edits):
        chars[rng.randrange(len(chars) - 1)] = rng.choice(HANZI)
    return "".join(chars)


def rec(instruction: str, output: str, input: str = "") -> dict[str, Any]:
    return {"instruction": instruction, "input": input, "output": output}


def dedup_profile(**near: Any) -> Any:
    return from_dict({"name": "t", "dedup": {"near": near or None}})


def test_signatures_equal_datasketch_minhash() -> None:
    from datasketch import MinHash

    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**32, size=300, dtype=np.uint64).astype(np.uint32)
    starts = np.array([0, 100, 250])
    ours = signatures(hashes, starts, 128, seed=1)
    for i, (lo, hi) in enumerate([(0, 100), (100, 250), (250, 300)]):
        m = MinHash(num_perm=128, seed=1, hashfunc=lambda x: x)
        m.update_batch([int(h) for h in hashes[lo:hi]])
        assert np.array_equal(ours[i], m.hashvalues)


def test_chinese_is_shingled_by_characters_not_as_one_token() -> None:
    import polars as pl

    grams = record_ngrams(pl.Series(["机器学习是人工智能的一个分支", "hello world"]), n_latin=3, n_cjk=5)
    counts = grams.group_by("rec").len().sort("rec")["len"].to_list()
    assert counts == [10, 1]  # 14 characters → 10 character 5-grams; 2 words < 3 → one whole-text shingle


def test_exact_duplicates_ignore_case_space_and_punctuation_and_name_the_first(tmp_path: Path) -> None:
    records = [
        rec("What is the capital of France?", "Paris."),
        rec("what is the capital of france", "It is Paris."),
        rec("  WHAT is the capital of France!!", "Paris"),
        rec("What is the capital of Spain?", "Madrid."),
        rec("法国的首都是哪里？", "巴黎。"),
        rec("法国的首都是哪里", "是巴黎。"),
    ]
    src = write_jsonl(tmp_path / "raw.jsonl", records)
    result = run(src, tmp_path / "c.jsonl", from_dict({"name": "t", "dedup": {"exact": None}}), batch_size=2)
    dropped = read_jsonl(tmp_path / "c.dropped.jsonl")
    assert [(d["line"], d["rule"], d["duplicate_of"]) for d in dropped] == [
        (2, "exact_duplicate", 1),
        (3, "exact_duplicate", 1),
        (6, "exact_duplicate", 5),
    ]
    assert result.summary["kept"] == 3 and result.summary["invariant_holds"]


def test_exact_key_can_include_the_output(tmp_path: Path) -> None:
    records = [rec("Q", "answer one"), rec("Q", "answer two"), rec("Q", "Answer one!")]
    src = write_jsonl(tmp_path / "raw.jsonl", records)
    profile = from_dict({"name": "t", "dedup": {"exact": {"fields": ["instruction", "input", "output"]}}})
    run(src, tmp_path / "c.jsonl", profile)
    assert [d["line"] for d in read_jsonl(tmp_path / "c.dropped.jsonl")] == [3]


@pytest.mark.parametrize("language", ["en", "zh"])
def test_near_duplicates_are_found_and_paraphrases_kept(tmp_path: Path, language: str) -> None:
    rng = random.Random(3 if language == "en" else 4)
    make, edit = (english, edit_words) if language == "en" else (chinese, edit_chars)
    originals = [make(rng, 100) for _ in range(300)]
    twins = [edit(rng, originals[i], 1) for i in range(0, 300, 10)]  # one edit: Jaccard far above 0.8
    distant = [edit(rng, originals[i], 30) for i in range(5, 300, 10)]  # heavily rewritten: below 0.8
    records = [rec("Continue the text.", t) for t in originals + twins + distant]
    src = write_jsonl(tmp_path / "raw.jsonl", records)
    result = run(src, tmp_path / "c.jsonl", dedup_profile(threshold=0.8), batch_size=97)
    dropped = {d["line"]: d for d in read_jsonl(tmp_path / "c.dropped.jsonl")}
    twin_lines = set(range(301, 331))
    assert set(dropped) == twin_lines
    for i, line in enumerate(sorted(twin_lines)):
        d = dropped[line]
        assert d["rule"] == "near_duplicate" and d["duplicate_of"] == 1 + 10 * i
        assert d["similarity"] >= 0.8 and d["reason"].startswith(f"near-duplicate of line {1 + 10 * i}")
    assert result.summary["dropped_by_rule"]["near_duplicate"] == 30


def wb_jaccard(a: dict[str, Any], b: dict[str, Any], cfg: NearConfig) -> float:
    """The exact Jaccard similarity of two records on the shingles wb's near-duplicate stage compares."""
    frame = rows_to_frame([1, 2], [(r["instruction"], r["input"], r["output"], "", []) for r in (a, b)])
    sets, offsets = shingle_sets(*batch_shingles(frame, cfg))
    x, y = set(sets[offsets[0] : offsets[1]].tolist()), set(sets[offsets[1] : offsets[2]].tolist())
    return len(x & y) / len(x | y)


def test_near_duplicates_around_the_threshold_are_found_with_full_precision_and_high_recall(tmp_path: Path) -> None:
    """Pairs planted at exact Jaccard 0.70-0.90 (on wb's own shingles) around the default threshold 0.8, in English
    and Chinese: a pair at or above 0.8 is a duplicate, one below is not.

    Bounds: precision is exactly 1: LSH candidates are verified on their exact shingle sets, so no record below the
    threshold may be dropped (the signature estimate alone errs by about 0.035 here and would drop some of the
    0.77-0.80 pairs). Recall is at least 0.9: a pair becomes an LSH candidate with probability 1-(1-J^r)^b (16 bands
    of 8 rows: 0.95 at J = 0.8, 0.99 at 0.85), about 0.98 over pairs spread over 0.80-0.90, so a few misses are
    expected; datasketch's equal weighting (0.40 at 0.8) would miss about a third. MinHash is probabilistic but
    deterministic for its seed: the outcome here is fixed, the bound only leaves room for another seed or corpus."""
    cfg = NearConfig(threshold=0.8)
    rng = random.Random(30)
    bases = [rec("Continue the text.", english(rng, 150)) for _ in range(120)]
    bases += [rec("续写这段文字。", chinese(rng, 200)) for _ in range(120)]
    partners: list[tuple[int, dict[str, Any], float]] = []  # (index of the base, the record, exact Jaccard)
    for i, base in enumerate(bases):
        edit, rate = (edit_words, (2, 9)) if i < 120 else (edit_chars, (2, 10))
        while True:
            partner = rec(base["instruction"], edit(rng, base["output"], rng.randint(*rate)))
            j = wb_jaccard(base, partner, cfg)
            if 0.7 <= j <= 0.9:
                break
        partners.append((i, partner, j))
    rng.shuffle(partners)
    sims = [j for _, _, j in partners]
    assert sum(0.7 <= j < 0.8 for j in sims) >= 80 and sum(0.8 <= j <= 0.9 for j in sims) >= 80
    assert sum(0.77 <= j < 0.8 for j in sims) >= 15 and sum(0.8 <= j < 0.83 for j in sims) >= 15  # at the edge
    src = write_jsonl(tmp_path / "raw.jsonl", bases + [p for _, p, _ in partners])
    run(src, tmp_path / "c.jsonl", dedup_profile(threshold=0.8), batch_size=97)
    dropped = {d["line"]: d for d in read_jsonl(tmp_path / "c.dropped.jsonl")}
    first = len(bases) + 1  # the line of the first partner
    truth = {first + k for k, (_, _, j) in enumerate(partners) if j >= 0.8}
    found = set(dropped) & truth
    precision, recall = len(found) / max(len(dropped), 1), len(found) / len(truth)
    assert precision == 1.0, sorted((line, partners[line - first][2]) for line in set(dropped) - truth)
    assert recall >= 0.9, sorted(partners[line - first][2] for line in truth - found)
    for line in found:  # each names its base and the exact similarity
        base, _, j = partners[line - first]
        assert dropped[line]["duplicate_of"] == base + 1 and dropped[line]["similarity"] == pytest.approx(j)


def test_keep_longest_keeps_the_longer_record_of_a_pair(tmp_path: Path) -> None:
    rng = random.Random(5)
    base = english(rng, 80)
    longer = base + " extra words at the end"
    src = write_jsonl(tmp_path / "raw.jsonl", [rec("t", base), rec("t", longer)])
    run(src, tmp_path / "c.jsonl", dedup_profile(threshold=0.8, keep="longest"))
    dropped = read_jsonl(tmp_path / "c.dropped.jsonl")
    assert [(d["line"], d["duplicate_of"]) for d in dropped] == [(1, 2)]


def test_near_duplicate_resolution_is_deterministic_and_chain_free() -> None:
    rng = random.Random(9)
    base = english(rng, 60)
    chain = [base]
    for _ in range(6):  # each step a little further from the first
        chain.append(edit_words(rng, chain[-1], 3))
    rows = [("t", "", t, "", []) for t in chain]
    frame = rows_to_frame(list(range(1, len(rows) + 1)), rows)
    cfg = NearConfig(threshold=0.8)
    results = []
    for _ in range(2):
        nd = NearDuplicates(cfg)
        nd.add(frame)
        results.append(nd.resolve())
    assert results[0].equals(results[1])
    hashes, starts = batch_shingles(frame, cfg)
    sets, offsets = shingle_sets(hashes, starts)
    for line, kept, sim in results[0].iter_rows():
        assert kept not in set(results[0]["_line"].to_list())  # names a kept record
        a, b = set(sets[offsets[line - 1] : offsets[line]]), set(sets[offsets[kept - 1] : offsets[kept]])
        assert sim == pytest.approx(len(a & b) / len(a | b)) and sim >= 0.8  # the exact Jaccard


def test_decontamination_finds_a_planted_eval_item_in_a_large_file(tmp_path: Path) -> None:
    rng = random.Random(11)
    eval_items = [rec(english(rng, 30), english(rng, 20)) for _ in range(20)] + [rec("1234+4321=", "5555")]
    eval_file = write_jsonl(tmp_path / "eval.jsonl", eval_items)
    train = [rec(f"task {i}", english(rng, 40)) for i in range(20_000)]
    leak = eval_items[7]
    train[12_345] = rec("Answer this", f"Sure. {leak['instruction']} Then we continue.")  # a long passage leaked
    train[15_000] = dict(eval_items[20])  # a short eval item copied whole
    src = write_jsonl(tmp_path / "train.jsonl", train)
    result = run(src, tmp_path / "c.jsonl", from_dict({"name": "t"}), against=[eval_file])
    dropped = read_jsonl(tmp_path / "c.dropped.jsonl")
    assert [(d["line"], d["rule"], d["eval_item"]) for d in dropped] == [
        (12_346, "contamination", f"{eval_file}:line 8"),
        (15_001, "contamination", f"{eval_file}:line 21"),
    ]
    report = result.summary["contamination"][str(eval_file)]
    assert report == {"items": 21, "leaked_items": 2, "leaked": [f"{eval_file}:line 8", f"{eval_file}:line 21"]}
    assert result.summary["read"] == result.summary["kept"] + result.summary["dropped"] + result.summary["rejected"]


def test_chinese_decontamination_uses_character_ngrams(tmp_path: Path) -> None:
    rng = random.Random(12)
    passage = chinese(rng, 40)
    eval_file = write_jsonl(tmp_path / "eval.jsonl", [rec("请解释下面这段话。", passage)])
    train = [rec("问题", chinese(rng, 60)) for _ in range(50)]
    train.append(rec("复述", "他说：" + passage[5:30] + "，然后结束。"))  # 25 characters of the passage
    src = write_jsonl(tmp_path / "train.jsonl", train)
    run(src, tmp_path / "c.jsonl", from_dict({"name": "t"}), against=[eval_file])
    assert [d["line"] for d in read_jsonl(tmp_path / "c.dropped.jsonl")] == [51]


def test_wb_dedup_runs_only_the_dedup_stages(tmp_path: Path, wb: Any) -> None:
    records = [rec("Say hi\u200b", "Hi!"), rec("say  hi\u200b!", "Hello!"), rec("Empty", "N/A")]
    src = write_jsonl(tmp_path / "clean.jsonl", records)
    result = wb("dedup", src, "-o", tmp_path / "d.jsonl")
    assert result.exit_code == 0, result.output
    kept = read_jsonl(tmp_path / "d.jsonl")
    assert [k["instruction"] for k in kept] == ["Say hi\u200b", "Empty"]  # no normalisation, no rules
    assert [d["rule"] for d in read_jsonl(tmp_path / "d.dropped.jsonl")] == ["exact_duplicate"]


def test_bad_against_file_is_one_line_and_exit_2(tmp_path: Path, wb: Any) -> None:
    src = write_jsonl(tmp_path / "raw.jsonl", [rec("Q", "A")])
    bad = write_jsonl(tmp_path / "eval.jsonl", ['{"instruction": "x"'])
    result = wb("clean", src, "-o", tmp_path / "c.jsonl", "--against", bad)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {bad}:line 1: bad JSON")


def test_profile_dedup_settings_are_validated(tmp_path: Path) -> None:
    from workbench.errors import WbError

    with pytest.raises(WbError, match=r"dedup\.near\.threshold"):
        from_dict({"name": "t", "dedup": {"near": {"threshold": 1.5}}}, "p.yaml")
    with pytest.raises(WbError, match=r"dedup\.fuzzy"):
        from_dict({"name": "t", "dedup": {"fuzzy": None}}, "p.yaml")
    assert load("default").dedup.near is not None and load("default").dedup.exact is not None
    assert json.dumps(load("strict").as_dict()["dedup"]["near"]["keep"]) == '"longest"'


@pytest.mark.slow
def test_semantic_duplicates_with_the_embedded_model(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    records = [
        rec("How do I reverse a string in Python?", "Use slicing: s[::-1]."),
        rec("What is the capital of France?", "Paris."),
        rec("How can I reverse a string in Python?", "Use slicing: s[::-1]."),
        rec("法国的首都是哪里？", "巴黎。"),
        rec("How do I sort a list in Python?", "Use sorted(xs) or xs.sort()."),
    ]
    src = write_jsonl(tmp_path / "raw.jsonl", records)
    profile = from_dict({"name": "t", "dedup": {"semantic": {"threshold": 0.9}}})
    result = run(src, tmp_path / "c.jsonl", profile, batch_size=2)
    dropped = read_jsonl(tmp_path / "c.dropped.jsonl")
    assert [(d["line"], d["rule"], d["duplicate_of"]) for d in dropped] == [(3, "semantic_duplicate", 1)]
    assert dropped[0]["similarity"] >= 0.9 and dropped[0]["reason"].startswith("semantic-duplicate of line 1 (cosine")
    assert result.summary["kept"] == 4


def _planted_batches(rng: random.Random, n_batches: int = 4, per_batch: int = 300) -> list[Any]:
    """Batches of English/Chinese records with exact and near repeats planted across and within batches."""
    texts: list[str] = []
    for i in range(n_batches * per_batch):
        roll = rng.random()
        if texts and roll < 0.1:
            texts.append(rng.choice(texts))
        elif texts and roll < 0.2:
            texts.append(edit_words(rng, rng.choice(texts), 2))
        else:
            texts.append(english(rng, 50) if i % 3 else chinese(rng, 70))
    rows = [(t[:40], "", t, "", []) for t in texts]
    return [
        rows_to_frame(
            list(range(b * per_batch + 1, (b + 1) * per_batch + 1)), rows[b * per_batch : (b + 1) * per_batch]
        )
        for b in range(n_batches)
    ]


def test_near_duplicates_with_shingles_spilled_to_disk_resolve_as_in_memory(tmp_path: Path) -> None:
    batches = _planted_batches(random.Random(21))
    in_memory, spilled = NearDuplicates(NearConfig()), NearDuplicates(NearConfig(), spill_dir=tmp_path)
    for frame in batches:
        in_memory.add(frame)
        spilled.add(frame)
    expected = in_memory.resolve()
    assert expected.height > 50 and spilled.resolve().equals(expected)
    assert (tmp_path / "shingles.u32").stat().st_size == sum(len(s) for s in in_memory.sets) * 4
    assert spilled.sets == []  # nothing of the shingle sets stayed in memory


def test_exact_duplicates_across_and_within_batches_name_the_first_line() -> None:
    from workbench.dedup.exact import ExactConfig, ExactDuplicates, key_expr

    batches = _planted_batches(random.Random(22))
    seen: dict[int, int] = {}
    expected: list[int | None] = []
    for frame in batches:  # the plain reference: a dict of first lines
        for key, line in zip(frame.select(key_expr(ExactConfig()))[:, 0].to_list(), frame["_line"], strict=True):
            expected.append(seen.get(key))
            seen.setdefault(key, line)
    exact = ExactDuplicates(ExactConfig())
    got = [v for frame in batches for v in exact.check(frame).to_list()]
    assert got == expected and sum(v is not None for v in got) > 50


def test_candidate_pairs_are_all_pairs_of_small_buckets_and_a_star_of_large_ones() -> None:
    rng = np.random.default_rng(5)
    n, bands = 3000, 4
    keys = rng.integers(0, 400, size=(n, bands)).astype(np.uint64)  # buckets of ~7 records
    keys[:100, 0] = 123_456_789  # one bucket of 100 records in band 0: joined to its first member only
    expected: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[int, list[int]] = {}
        for i, k in enumerate(keys[:, band].tolist()):
            buckets.setdefault(k, []).append(i)
        for members in buckets.values():
            if len(members) <= 64:
                expected.update((a, b) for x, a in enumerate(members) for b in members[x + 1 :])
            else:
                expected.update((members[0], m) for m in members[1:])
    got = NearDuplicates(NearConfig()).pairs_of_band_keys(keys)
    assert [tuple(p) for p in got.tolist()] == sorted(expected)
    assert (0, 99) in {tuple(p) for p in got.tolist()}  # the large bucket's star


# --- memory of near-duplicate detection: same results, less held at once ---------------------------------------


def test_near_duplicate_run_imports_neither_datasketch_nor_scipy(tmp_path: Path) -> None:
    """datasketch's import pulls in scipy (30 MB of a dedup run's 230); wb draws the same permutations and bands
    itself."""
    import subprocess
    import sys

    rng = random.Random(2)
    base = english(rng, 80)
    src = write_jsonl(
        tmp_path / "d.jsonl", [rec("t", base), rec("t", edit_words(rng, base, 1)), rec("问", chinese(rng))]
    )
    code = (
        "import sys; from pathlib import Path; from workbench.clean.dispatch import run; "
        "from workbench.clean.profile import from_dict\n"
        f"r = run(Path({str(src)!r}), Path({str(tmp_path / 'o.jsonl')!r}), "
        "from_dict({'name': 't', 'dedup': {'near': None}}))\n"
        "print(r.summary['dropped_by_rule'].get('near_duplicate'), "
        "sorted({m.split('.')[0] for m in sys.modules} & {'datasketch', 'scipy'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip().splitlines()[-1] == "1 []"


def test_permutations_and_bands_equal_datasketchs() -> None:
    from datasketch import MinHash
    from datasketch.lsh import _optimal_param

    from workbench.dedup.minhash import bands, permutations

    for num_perm, seed in [(128, 1), (16, 7), (256, 12345)]:
        a, b = MinHash(num_perm=num_perm, seed=seed).permutations
        ours = permutations(num_perm, seed)
        assert ours[0].dtype == a.dtype and np.array_equal(ours[0], a) and np.array_equal(ours[1], b)
    for threshold, num_perm, weight in [(0.8, 128, 0.95), (0.7, 128, 0.95), (0.5, 64, 0.5), (0.9, 100, 0.99)]:
        assert bands(threshold, num_perm, weight) == _optimal_param(threshold, num_perm, 1 - weight, weight)
    assert bands(0.8, 128, 0.95) == (16, 8)


def _ngrams_exploding_token_text(texts: Any, n_latin: int, n_cjk: int) -> Any:
    """The n-grams as wb computed them before (the token text exploded, one pass per n): the reference."""
    import polars as pl

    from workbench import text
    from workbench.dedup.shingles import ngram_hash

    frame = (
        pl.DataFrame({"t": texts})
        .with_row_index("rec")
        .with_columns(
            pl.when(text.script_expr(pl.col("t")) == "cjk").then(pl.lit(n_cjk)).otherwise(pl.lit(n_latin)).alias("n"),
            pl.col("t").str.extract_all(text.TOKEN_PATTERN).alias("tok"),
        )
    )
    exploded = frame.select("rec", "n", "tok").explode("tok").with_columns(pl.col("tok").hash(0).alias("th"))
    parts = []
    for n in sorted({n_latin, n_cjk}):
        same_n = exploded.filter(pl.col("n") == n) if n_latin != n_cjk else exploded
        parts.append(same_n.select("rec", ngram_hash(pl.col("th"), pl.col("rec"), n).alias("h")).drop_nulls("h"))
    grams = pl.concat(parts)
    short = frame.join(grams.select(pl.col("rec").unique()), on="rec", how="anti").select(
        "rec",
        pl.when(pl.col("tok").list.len() > 0)
        .then(pl.col("tok").list.join("\x1f").hash(1))
        .otherwise(pl.col("t").hash(2))
        .alias("h"),
    )
    return pl.concat([grams, short]).sort("rec", maintain_order=True)


def test_ngrams_hashed_in_their_lists_in_one_pass_equal_the_exploded_token_texts() -> None:
    """Hashing tokens inside their lists and both n-gram lengths in one pass (no token text exploded, no copy per
    n) gives the same shingles, short, empty and null texts included."""
    import polars as pl

    rng = random.Random(8)
    texts = [english(rng, rng.randint(0, 12)) for _ in range(20)] + [chinese(rng, rng.randint(0, 9)) for _ in range(20)]
    texts += ["", " ", "!!!", "a", "a b", "机", "机器学习", "hello 世界 naïve café", "Ω ω", None]
    series = pl.Series(texts * 2, dtype=pl.String)
    for n_latin, n_cjk in [(3, 5), (1, 5), (2, 2), (5, 3), (1, 1)]:
        got = record_ngrams(series, n_latin, n_cjk)
        assert got.equals(_ngrams_exploding_token_text(series, n_latin, n_cjk)), (n_latin, n_cjk)


def test_shingle_sets_are_each_records_distinct_hashes_in_order() -> None:
    rng = np.random.default_rng(3)
    counts = rng.integers(1, 40, size=200)
    hashes = rng.integers(0, 60, size=int(counts.sum()), dtype=np.uint64).astype(np.uint32)  # many repeats
    hashes[:5] = [2**32 - 1, 0, 2**32 - 1, 7, 0]
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    sets, offsets = shingle_sets(hashes, starts)
    bounds = [*starts.tolist(), len(hashes)]
    for i in range(len(starts)):
        expected = sorted(set(hashes[bounds[i] : bounds[i + 1]].tolist()))
        assert sets[offsets[i] : offsets[i + 1]].tolist() == expected
    assert sets.dtype == np.uint32 and offsets[-1] == len(sets)


def test_spilled_sets_verified_a_few_pairs_per_mapping_resolve_as_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workbench.dedup import minhash

    monkeypatch.setattr(minhash, "VERIFY_CHUNK", 3)
    batches = _planted_batches(random.Random(23))
    in_memory, spilled = NearDuplicates(NearConfig()), NearDuplicates(NearConfig(), spill_dir=tmp_path)
    for frame in batches:
        in_memory.add(frame)
        spilled.add(frame)
    expected = in_memory.resolve()
    assert expected.height > 50 and spilled.resolve().equals(expected)
