"""Eval suites: how a task's answers are judged, as lm-evaluation-harness task YAMLs say it.

A suite file (`pipelines/eval-*.yaml`, JSON Schema `schemas/eval-suite.schema.json`) names the answer type of the
task's records (a record may carry its own `answer_type`), which registered metrics to compute (default: every
metric of the registry that applies to the answer type), the headline metric, and the settings the metrics need
(numeric tolerance, option letters, the label set, a JSON Schema, a pattern). `wb eval RUN --data F --suite FILE`.

Two judgements are made for every suite:
- `strip_prompt_prefix`: when a reference begins with the prompt text (arithmetic data writes "68+11=79" for the
  prompt "68+11="), the part after the shared prefix is what is scored, for the reference and for an answer that
  repeats the prompt, so repeating the question earns nothing.
- `cut_off_warning`: when more than this share of answers stopped at the token limit and a length-sensitive metric
  (BLEU, ROUGE, chrF) is reported, `wb eval` warns that those numbers measure the limit as much as the model.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workbench import metric_specs
from workbench.clean.profile import _pipelines_dir as pipelines_dir
from workbench.errors import WbError
from workbench.metric_specs import AnswerType
from workbench.yamlfile import first_error, read_yaml


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NumericSettings(_Section):
    rel_tol: float = Field(1e-6, ge=0, allow_inf_nan=False, description="Relative tolerance of numeric_match.")


class ChoiceSettings(_Section):
    letters: str = Field("ABCD", min_length=2, pattern=r"^[A-Z]+$", description="The option letters, in order.")


class RegexSettings(_Section):
    pattern: str = Field(description="A Python regular expression searched for in the answer.")
    ignore_case: bool = False
    full_match: bool = Field(False, description="The whole (stripped) answer must match, not a part of it.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as e:
            raise ValueError(f"not a valid regular expression ({e})") from None
        return value


class EvalSuite(_Section):
    """How `wb eval` judges a task's answers."""

    model_config = ConfigDict(extra="forbid", title="EvalSuite")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Shown in the report and the manifest.")
    description: str = ""
    answer_type: AnswerType = Field("text", description="Answer type of records that do not give their own.")
    metrics: list[str] | None = Field(
        None, description="Metrics to compute (default: every registered metric for the answer type)."
    )
    primary: str | None = Field(None, description="The headline metric of the report (default: the first).")
    labels: list[str] = Field(default_factory=list, description="The label set (answer type `label`).")
    numeric: NumericSettings = Field(default_factory=NumericSettings)
    choices: ChoiceSettings = Field(default_factory=ChoiceSettings)
    json_schema: dict[str, Any] | None = Field(None, description="JSON Schema for json_schema_valid.")
    regex: RegexSettings | None = None
    strip_prompt_prefix: bool = Field(True, description="Score what follows a prefix shared with the prompt.")
    cut_off_warning: float = Field(
        0.10, ge=0, le=1, description="Warn when more than this share of answers hit the token limit."
    )

    @field_validator("metrics")
    @classmethod
    def _registered(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if metric_specs.get(name) is None:
                raise ValueError(f"unknown metric {name!r} (metrics: {', '.join(metric_specs.names())})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EvalSuite:
        if self.primary is not None and metric_specs.get(self.primary) is None:
            raise ValueError(f"primary: unknown metric {self.primary!r} (metrics: {', '.join(metric_specs.names())})")
        if self.primary is not None and self.metrics is not None and self.primary not in self.metrics:
            raise ValueError(f"primary: {self.primary!r} is not one of this suite's metrics")
        if self.answer_type == "label" and len(self.labels) < 2:
            raise ValueError("labels: a label task needs its label set (two labels or more)")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels: a label is listed twice")
        if self.answer_type == "regex" and self.regex is None:
            raise ValueError("regex: a regex task needs a pattern")
        if self.json_schema is not None:
            import jsonschema

            try:
                jsonschema.Draft202012Validator.check_schema(self.json_schema)
            except jsonschema.SchemaError as e:
                raise ValueError(f"json_schema: not a valid JSON Schema ({e.message})") from None
        return self

    def metrics_for(self, answer_type: str) -> list[str]:
        """The item metrics and set metrics an item of this answer type gets, in registry order."""
        applicable = metric_specs.for_answer_type(answer_type)
        chosen = self.metrics if self.metrics is not None else applicable
        names = [m for m in applicable if m in chosen]
        if answer_type == "json" and self.json_schema is None:
            names = [m for m in names if m != "json_schema_valid"]
        return names


DEFAULT = EvalSuite(name="generic")
SHIPPED = ("generic", "math", "choice", "classify", "json")


def load_suite(spec: str | Path) -> EvalSuite:
    """A suite from a YAML file, or a shipped one by name (`math` = pipelines/eval-math.yaml)."""
    path = Path(spec)
    if not path.is_file() and str(spec) in SHIPPED:
        path = pipelines_dir() / f"eval-{spec}.yaml"
    elif not path.exists():
        raise WbError(f"{spec}: suite file not found (shipped suites: {', '.join(SHIPPED)})")
    raw = read_yaml(path, "suite file")
    if not isinstance(raw, dict):
        raise WbError(f"{spec}: a suite file must be a YAML mapping (name, answer_type, metrics, ...)")
    try:
        return EvalSuite.model_validate(raw)
    except ValidationError as err:
        loc, msg = first_error(err)
        raise WbError(f"{spec}: {loc + ': ' if loc else ''}{msg}") from None
