"""`wb augment`: generated records carry provenance, pass the clean rules and never copy an original (exact or
near duplicate), with generated = kept + dropped."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import read_jsonl, write_jsonl

from workbench import augment
from workbench.clean.profile import load as load_profile
from workbench.errors import WbError
from workbench.models.generate import Answer, GenerationSettings

ORIGINALS = [
    {
        "instruction": "Explain why the sky is blue in two sentences.",
        "input": "",
        "output": "Sunlight scatters off air molecules, and blue light scatters the most. So the sky looks blue from every direction.",
    },
    {
        "instruction": "Give three tips for sleeping better at night.",
        "input": "",
        "output": "Go to bed at the same time every day, avoid screens before sleep and keep the bedroom dark and cool.",
    },
    {
        "instruction": "用一句话解释什么是光合作用。",
        "input": "",
        "output": "光合作用是植物利用阳光把二氧化碳和水转化为有机物并释放氧气的过程。",
    },
    {
        "instruction": "Write a haiku about autumn leaves.",
        "input": "",
        "output": "Red leaves drift and fall / the cold wind carries them home / the branches stand bare",
    },
]


def test_a_copy_of_an_original_is_dropped_and_new_records_carry_provenance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", ORIGINALS)
    made = {
        ORIGINALS[0]["instruction"]: "Explain why the sky is blue in two sentences.",  # an exact copy
        ORIGINALS[1]["instruction"]: "Give three tips for sleeping better at night!",  # a copy up to punctuation
        ORIGINALS[2]["instruction"]: "请用一句话说明光合作用是什么。",  # a real paraphrase
        ORIGINALS[3]["instruction"]: "Compose a haiku whose subject is leaves falling in autumn.",
    }

    def fake_generate(loaded: Any, prompts: list[str], settings: Any, cache: Any, progress: Any) -> list[Answer]:
        out = []
        for p in prompts:
            source = next(k for k in made if k in p)
            out.append(Answer(made[source], 9, finished=source != ORIGINALS[3]["instruction"]))
        return out

    monkeypatch.setattr("workbench.models.generate.generate_answers", fake_generate)
    monkeypatch.setattr("workbench.models.targets.load", lambda targets, on_status=None: _FakeLoaded())
    monkeypatch.setattr("workbench.models.generate.prompt_for", lambda loaded, rec: rec["instruction"])
    result = augment.augment_file(
        data,
        tmp_path / "more.jsonl",
        "some-model",
        "paraphrase",
        ("en", "zh"),
        load_profile("default"),
        GenerationSettings(),
        use_cache=False,
    )
    s = result.stats
    assert (s["generated"], s["kept"], s["dropped"]) == (4, 1, 3) and s["invariant_holds"]
    assert s["dropped_by_rule"] == {"exact_duplicate": 2, "unfinished_generation": 1}
    kept = read_jsonl(tmp_path / "more.jsonl")
    assert kept == [
        {
            "instruction": "请用一句话说明光合作用是什么。",
            "input": "",
            "output": ORIGINALS[2]["output"],
            "system": "",
            "history": [],
            "augmented_from": 3,
            "augmentation": {"method": "paraphrase", "model": "some-model", "lang": "zh"},
        }
    ]
    dropped = {d["record"]["augmented_from"]: d for d in read_jsonl(tmp_path / "more.dropped.jsonl")}
    assert dropped[1]["reason"] == "exact-duplicate of original line 1"
    assert dropped[2]["rule"] == "exact_duplicate"  # case, spaces and punctuation are ignored
    assert dropped[4]["reason"] == "generation was cut at max_new_tokens"
    manifest = json.loads((tmp_path / "more.manifest.json").read_text(encoding="utf-8"))
    assert manifest["command"] == "augment" and set(manifest["outputs"]) == {"augmented", "dropped", "stats"}


def test_a_near_copy_of_an_answer_is_a_near_duplicate(tmp_path: Path) -> None:
    answer = "Sunlight scatters off the molecules of the air, and blue light scatters the most of all colours, so the sky looks blue from every direction we look."
    originals = [(1, {"instruction": "Why is the sky blue?", "input": "", "output": answer})]
    near = augment.Candidate(
        1, {"instruction": "Why is the sky blue?", "input": "", "output": answer + " Indeed."}, "en", True
    )
    fresh = augment.Candidate(
        1,
        {
            "instruction": "Why is the sky blue?",
            "input": "",
            "output": "Air scatters short wavelengths of sunlight far more than long ones, which is why a clear daytime sky appears blue to us.",
        },
        "en",
        True,
    )
    kept, dropped = augment.screen(originals, [near, fresh], load_profile("default"))
    assert list(kept) == [1]
    assert dropped.row(0) == (1, "near_duplicate", dropped.row(0)[2]) and "of original line 1" in dropped.row(0)[2]


class _FakeLoaded:
    template = "chat"


def test_prompt_files_and_options_are_checked_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text(
        "paraphrase: {en: 'Reword this', zh: '{instruction}'}\nback_translate: {en_to_zh: '{text}', zh_to_en: '{text}'}\n",
        encoding="utf-8",
    )
    with pytest.raises(WbError, match=r"p.yaml: paraphrase.en: the prompt must contain \{instruction\}"):
        augment.load_augment_prompts(bad)
    with pytest.raises(WbError, match="--lang: 'fr': give en, zh or en,zh"):
        augment.parse_langs("fr")
    assert augment.fill("Say {text} {x}", text="{instruction}") == "Say {instruction} {x}"
    assert augment.load_augment_prompts().paraphrase.zh.count("{instruction}") == 1


def test_new_records_carry_their_originals_own_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = {"id": "zh-3", "license": "CC-BY-SA-4.0", "meta": {"来源": "教科书", "页": 12}, "augmentation": "人工"}
    data = write_jsonl(tmp_path / "d.jsonl", [{**ORIGINALS[0], "id": "en-1"}, {**ORIGINALS[2], **own}])
    made = {ORIGINALS[0]["instruction"]: ORIGINALS[0]["instruction"], ORIGINALS[2]["instruction"]: "光合作用是什么？"}

    def fake_generate(loaded: Any, prompts: list[str], settings: Any, cache: Any, progress: Any) -> list[Answer]:
        return [Answer(next(v for k, v in made.items() if k in p), 9, finished=True) for p in prompts]

    monkeypatch.setattr("workbench.models.generate.generate_answers", fake_generate)
    monkeypatch.setattr("workbench.models.targets.load", lambda targets, on_status=None: _FakeLoaded())
    monkeypatch.setattr("workbench.models.generate.prompt_for", lambda loaded, rec: rec["instruction"])
    settings = GenerationSettings()
    args = (load_profile("default"), settings)
    augment.augment_file(data, tmp_path / "a.jsonl", "m", "paraphrase", ("en", "zh"), *args, use_cache=False)
    [new] = read_jsonl(tmp_path / "a.jsonl")
    assert new["instruction"] == "光合作用是什么？" and new["augmented_from"] == 2
    assert new["augmentation"] == {"method": "paraphrase", "model": "m", "lang": "zh"}  # wb's provenance
    assert {k: new[k] for k in ("id", "license", "meta")} == {k: own[k] for k in ("id", "license", "meta")}
    assert new["original_augmentation"] == "人工"  # the record's own field of that name, kept beside it
    [copy] = read_jsonl(tmp_path / "a.dropped.jsonl")
    assert copy["rule"] == "exact_duplicate" and copy["record"]["id"] == "en-1" and "_extra" not in copy["record"]
    augment.augment_file(
        data, tmp_path / "b.jsonl", "m", "paraphrase", ("en", "zh"), *args, use_cache=False, extra_fields=False
    )
    [bare] = read_jsonl(tmp_path / "b.jsonl")
    assert "id" not in bare and "original_augmentation" not in bare


# Only the tests below that generate with a tiny model need torch; the ones above run everywhere.
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs the training extra (torch)")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workbench.models.base import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny")


@needs_torch
@pytest.mark.parametrize("method", ["paraphrase", "back_translate"])
def test_a_tiny_model_augments_through_batched_generation(
    tmp_path: Path, tiny: Path, method: str, wb: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WB_CACHE", str(tmp_path / "cache"))
    data = write_jsonl(tmp_path / "d.jsonl", ORIGINALS)
    args = ("augment", data, "--model", tiny, "--method", method, "--lang", "en", "--max-new-tokens", "12", "-o")
    res = wb(*args, tmp_path / "a.jsonl", "--precision", "fp32")
    assert res.exit_code == 0, res.output
    stats = json.loads((tmp_path / "a.stats.json").read_text(encoding="utf-8"))
    assert stats["not_in_chosen_languages"] == 1 and stats["generated"] == 3  # the Chinese record is not in --lang en
    assert stats["generated"] == stats["kept"] + stats["dropped"]
    assert f"generated 3 = kept {stats['kept']} + dropped {stats['dropped']}" in res.stdout
    rows = read_jsonl(tmp_path / "a.jsonl") + [d["record"] for d in read_jsonl(tmp_path / "a.dropped.jsonl")]
    assert sorted(r["augmented_from"] for r in rows) == [1, 2, 4]
    assert all(r["augmentation"]["method"] == method and r["augmentation"]["model"] == str(tiny) for r in rows)
    if method == "back_translate":
        assert all(r["augmentation"]["pivot"]["lang"] == "zh" for r in rows)
        assert all(r["instruction"] == ORIGINALS[r["augmented_from"] - 1]["instruction"] for r in rows)
    again = wb(*args, tmp_path / "b.jsonl", "--precision", "fp32")  # cached generations: the same records
    assert again.exit_code == 0
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
