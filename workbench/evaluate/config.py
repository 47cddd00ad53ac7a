"""What `wb eval` evaluates and how answers are generated: the settings every command-line option comes from.

Light on purpose (pydantic and `workbench.models.generate`'s settings, no torch): the CLI reads the fields'
defaults and descriptions to build its options, so a setting is defined once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from workbench.models.generate import GenerationSettings

SHIPPED_PROBES = ("general_en", "general_zh", "general_text_en", "general_text_zh", "mc_general_en", "mc_general_zh")
"""Shipped forgetting sets (`probes/<name>.jsonl`); the `mc_` ones are multiple choice, scored by log-likelihood."""
SHIPPED_MC = tuple(name for name in SHIPPED_PROBES if name.startswith("mc_"))

ProgressFn = Callable[[str, int, int], None]
"""Told (what, done, total) as a long phase advances (generation of a set by one model, the judge)."""
StatusFn = Callable[[str], None]
"""Told a line of what is happening (loading a model)."""


class EvalConfig(BaseModel):
    """What `wb eval` evaluates and how; every field has a command-line option."""

    model_config = ConfigDict(extra="forbid")

    data: Path | None = Field(None, description="Task eval records (reference = output).")
    split: str | None = Field(None, description="Split of a dataset folder given as data; default test.")
    suite: str = Field("generic", description="How answers are judged: a suite file or a shipped name.")
    limit: int | None = Field(None, ge=1, description="Only the first N task records.")
    probes: list[str] = Field(
        default_factory=lambda: list(SHIPPED_PROBES), description="Probe sets: shipped names or files."
    )
    probe_limit: int | None = Field(None, ge=1, description="Only the first N items of each probe set.")
    mc: list[str] = Field(
        default_factory=list,
        description="Multiple-choice files (MMLU/C-Eval/CMMLU CSV, JSONL, ARC JSONL) scored by log-likelihood.",
    )
    mc_limit: int | None = Field(None, ge=1, description="Only the first N scored items of each --mc file.")
    fewshot: int = Field(
        0, ge=0, le=25, description="Multiple choice: the first K items of each file are examples, not scored."
    )
    mc_prompt: Literal["template", "plain"] = Field(
        "template",
        description="Multiple choice: render the question with the run's template (continuation starts the answer), "
        "or plain `Question: ...\nAnswer:` text with a space before each option (lm-evaluation-harness's default).",
    )
    mc_letters: bool = Field(
        False,
        description="Multiple choice: also score each option's letter after the question with its options listed "
        "(MMLU's format, mc_letter_accuracy); about three times the tokens of the options alone.",
    )
    base: bool = Field(True, description="Also evaluate the base model for the A/B and forgetting comparisons.")
    base_model: str | None = Field(None, description="Base to compare a merged model with (default: the run's).")
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    probe_max_new_tokens: int = Field(32, ge=1, description="New tokens for short-answer probes.")
    max_length: int = Field(1024, ge=16, description="Tokens per sequence when computing reference losses.")
    seed: int = Field(0, description="Seed of sampling and of the bootstrap.")
    review_size: int = Field(50, ge=0, description="Items in review_sample.csv.")
    cache: bool = Field(True, description="Reuse generations from the cache.")
    prefs: Path | None = Field(
        None, description="Held-out preference pairs: implicit-reward accuracy of the run (and of --reward-model)."
    )
    reward_model: Path | None = Field(
        None,
        description="A reward run (method reward): its accuracy on --prefs, and the tuned-vs-base win rate of the "
        "task answers under it.",
    )
    judge: str | None = Field(
        None,
        description="Pairwise judge of base vs tuned task answers: a local model folder, a run, or embedded "
        "(each item judged in both orders).",
    )
    judge_prompts: Path | None = Field(
        None, description="Folder with judge-en.yaml and judge-zh.yaml (default: the shipped pipelines/ ones)."
    )
