"""Quality gates: a YAML file of thresholds checked against a run's summary (see `summary.py` for the paths).

```yaml
checks:
  - metric: task.rouge_l.tuned            # a dotted path into the summary
    min: 0.35                             # min and/or max, inclusive
  - metric: forgetting.general_en.accuracy.delta_lower
    min: -0.02                            # non-inferiority: the paired interval's lower bound above -margin
  - "clean.dropped_fraction <= 0.2"       # the same as {metric: ..., max: 0.2}
```

A path that cannot exist (unknown section, a STAT field that is not one) is an error in the gate file: exit 2,
naming the file and the check. A well-formed path that this run does not have (no eval, no base scores, a probe set
that was not run) is the verdict `missing`, which fails the gate like a missed threshold: a gate never passes on
numbers it did not see.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from workbench.errors import WbError
from workbench.report.summary import CLEAN_NUMBERS, STAT_FIELDS, TRAIN_NUMBERS

Verdict = Literal["pass", "fail", "missing"]
DELTA_FIELDS = ("delta", "delta_lower", "delta_upper")
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_STRING_FORM = re.compile(rf"^\s*(?P<metric>[\w.-]+)\s*(?P<op>>=|<=)\s*(?P<value>{_NUMBER})\s*$")
PATH_HELP = (
    "paths: task.n, task.<metric>.<field>, task.corpus.<metric>.<tuned|base>, forgetting.<set>.n, "
    "forgetting.<set>.<metric>.<field>, clean.<number>, clean.dropped_by_rule.<rule>, train.<number>, "
    "overlap.<items|fraction>, review.<reviewed|tuned_preferred|verdicts.<verdict>>; "
    f"<field> is one of {', '.join(STAT_FIELDS)}"
)


def path_problem(path: str) -> str | None:
    """Why `path` can never name a number in a summary, or None if it is well-formed."""
    parts = path.split(".")
    if any(not p for p in parts):
        return f"{path!r}: empty part in the dotted path"
    head, n = parts[0], len(parts)
    if head == "task":
        if n == 2 and parts[1] == "n":
            return None
        if n == 4 and parts[1] == "corpus":
            return None if parts[3] in ("tuned", "base") else f"{path!r}: corpus scores have fields tuned, base"
        if n == 3 and parts[1] not in ("corpus", "regressions", "n"):
            return None if parts[2] in STAT_FIELDS else _bad_field(path, parts[2])
    elif head == "forgetting":
        if n == 3 and parts[2] == "n":
            return None
        if n == 4:
            return None if parts[3] in STAT_FIELDS else _bad_field(path, parts[3])
    elif head == "clean":
        if n == 2:
            return None if parts[1] in CLEAN_NUMBERS else f"{path!r}: clean numbers are {', '.join(CLEAN_NUMBERS)}"
        if n == 3 and parts[1] in ("dropped_by_rule", "rejected_by_kind"):
            return None
    elif head == "train":
        if n == 2:
            return None if parts[1] in TRAIN_NUMBERS else f"{path!r}: train numbers are {', '.join(TRAIN_NUMBERS)}"
    elif head == "overlap":
        if n == 2 and parts[1] in ("items", "fraction"):
            return None
    elif head == "review":
        if n == 2 and parts[1] in ("reviewed", "unreviewed", "tuned_preferred"):
            return None
        if n == 3 and parts[1] == "verdicts":
            return None
    else:
        return f"{path!r}: unknown section {head!r}; {PATH_HELP}"
    return f"{path!r}: not a number in the summary; {PATH_HELP}"


def _bad_field(path: str, name: str) -> str:
    return f"{path!r}: unknown field {name!r} (fields: {', '.join(STAT_FIELDS)})"


def _valid_path(path: str) -> str:
    problem = path_problem(path)
    if problem:
        raise ValueError(problem)
    return path


def _valid_string_form(text: str) -> str:
    m = _STRING_FORM.match(text)
    if m is None:
        raise ValueError(f"{text!r}: expected 'PATH >= NUMBER' or 'PATH <= NUMBER'")
    _valid_path(m["metric"])
    return text


# The patterns are for the published JSON Schema; the validators give the friendlier messages.
MetricPath = Annotated[
    str,
    AfterValidator(_valid_path),
    Field(
        description="Dotted path into the run summary, e.g. task.rouge_l.tuned; " + PATH_HELP,
        json_schema_extra={"pattern": r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+$"},
    ),
]
CheckString = Annotated[
    str,
    AfterValidator(_valid_string_form),
    Field(
        description="Short form: 'PATH >= NUMBER' (a minimum) or 'PATH <= NUMBER' (a maximum).",
        json_schema_extra={"pattern": rf"^\s*[\w.-]+\s*(>=|<=)\s*{_NUMBER}\s*$"},
    ),
]


class Check(BaseModel):
    """One threshold: the number at `metric` must be at least `min` and/or at most `max` (inclusive)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    metric: MetricPath
    min: float | None = Field(default=None, description="Lowest passing value (inclusive).")
    max: float | None = Field(default=None, description="Highest passing value (inclusive).")

    @model_validator(mode="after")
    def _bounds(self) -> Check:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    @classmethod
    def from_string(cls, text: str) -> Check:
        m = _STRING_FORM.match(text)
        assert m is not None  # validated by CheckString
        bound = "min" if m["op"] == ">=" else "max"
        return cls.model_validate({"metric": m["metric"], bound: float(m["value"])})

    @property
    def label(self) -> str:
        return f"{self.metric} {self.threshold_text}"

    @property
    def threshold_text(self) -> str:
        if self.min is not None and self.max is not None:
            return f"in [{_num(self.min)}, {_num(self.max)}]"
        return f">= {_num(self.min)}" if self.min is not None else f"<= {_num(self.max)}"


def _check_kind(value: Any) -> str:
    return "string" if isinstance(value, str) else "check"


class GateFile(BaseModel):
    """A gate: thresholds that a run must meet. `wb gate RUN --thresholds FILE` exits 1 if any is missed."""

    model_config = ConfigDict(extra="forbid", strict=True, title="GateThresholds")

    checks: list[
        Annotated[
            Annotated[Check, Tag("check")] | Annotated[CheckString, Tag("string")],
            Discriminator(_check_kind),
        ]
    ] = Field(min_length=1, description="Thresholds, each a mapping {metric, min, max} or a string 'PATH >= N'.")

    @field_validator("checks", mode="after")
    @classmethod
    def _parse_strings(cls, checks: list[Check | str]) -> list[Check | str]:
        return [Check.from_string(c) if isinstance(c, str) else c for c in checks]

    def resolved(self) -> list[Check]:
        return [c if isinstance(c, Check) else Check.from_string(c) for c in self.checks]


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    if float(x).is_integer() and abs(x) >= 1:
        return str(int(x))
    return f"{x:.4g}"


def load(path: Path) -> GateFile:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WbError(f"{path}: threshold file not found") from None
    except IsADirectoryError:
        raise WbError(f"{path}: is a folder, expected a YAML threshold file") from None
    except UnicodeDecodeError:
        raise WbError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise WbError(f"{path}: {where}not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(raw, dict):
        raise WbError(f"{path}: a threshold file must be a YAML mapping with a `checks:` list")
    try:
        return GateFile.model_validate(raw)
    except ValidationError as err:
        e = err.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in e["loc"] if p not in ("check", "string"))
        msg = str(e["msg"]).removeprefix("Value error, ")
        raise WbError(f"{path}: {loc or 'checks'}: {msg}") from None


# -- checking -----------------------------------------------------------------------------------------------------


@dataclass
class CheckResult:
    check: Check
    value: float | None
    verdict: Verdict
    message: str
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.check.metric,
            "min": self.check.min,
            "max": self.check.max,
            "threshold": self.check.threshold_text,
            "value": self.value,
            "verdict": self.verdict,
            "message": self.message,
            "warnings": self.warnings,
        }


@dataclass
class GateResult:
    source: str
    run: str
    results: list[CheckResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def count(self, verdict: Verdict) -> int:
        return sum(r.verdict == verdict for r in self.results)

    @property
    def warnings(self) -> list[str]:
        return [f"{r.check.metric}: {w}" for r in self.results for w in r.warnings]

    def to_json(self) -> dict[str, Any]:
        return {
            "thresholds": self.source,
            "run": self.run,
            "passed": self.passed,
            "counts": {v: self.count(v) for v in ("pass", "fail", "missing")},
            "checks": [r.to_json() for r in self.results],
        }


def resolve(summary: dict[str, Any], path: str) -> tuple[float | None, str]:
    """The number at `path`, or None and why it is not there."""
    parts = path.split(".")
    head = parts[0]
    missing = summary.get("missing") or {}
    section = summary.get(head)
    if head in ("task", "forgetting", "overlap", "review") and "eval" in missing:
        return None, missing["eval"]
    if head == "review" and not section:
        return None, "no human review: fill eval/review_sample.csv, then `wb eval RUN --import-review FILE`"
    if not section:
        return None, missing.get(head) or f"this run has no {head} section"
    node: Any = section
    for depth, key in enumerate(parts[1:], 1):
        if not isinstance(node, dict) or key not in node:
            return None, _why_absent(summary, parts, depth, node)
        node = node[key]
    if isinstance(node, bool) or not isinstance(node, int | float):
        return None, f"{path} is not a number here ({type(node).__name__})"
    return float(node), ""


def _why_absent(summary: dict[str, Any], parts: list[str], depth: int, node: Any) -> str:
    where = ".".join(parts[:depth]) or parts[0]
    key = parts[depth]
    if parts[0] == "forgetting" and depth == 1:
        sets = ", ".join(sorted(node)) or "none"
        return f"no probe set {key!r} in this run's forgetting results (sets: {sets})"
    if key in ("base", *DELTA_FIELDS, "wins", "ties", "losses", "mcnemar_p") and not summary.get("has_base"):
        return f"{'.'.join(parts)}: {summary['missing'].get('base', 'no base-model scores in this run')}"
    if isinstance(node, dict):
        present = [k for k, v in node.items() if isinstance(v, dict | int | float) and not isinstance(v, bool)]
        return f"no {key!r} under {where} (present: {', '.join(present) or 'none'})"
    return f"no {key!r} under {where}"


def _stat_of(summary: dict[str, Any], parts: list[str]) -> dict[str, Any] | None:
    node: Any = summary
    for key in parts:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def _warnings(check: Check, summary: dict[str, Any], value: float) -> list[str]:
    """Verdicts the eval set is too small to support."""
    parts = check.metric.split(".")
    if parts[0] not in ("task", "forgetting") or parts[-1] not in (*DELTA_FIELDS, "tuned"):
        return []
    stat = _stat_of(summary, parts[:-1])
    owner = _stat_of(summary, parts[:-2]) or {}
    if stat is None:
        return []
    n = owner.get("n")
    out: list[str] = []
    lo_key, hi_key = ("delta_lower", "delta_upper") if parts[-1] in DELTA_FIELDS else ("lower", "upper")
    lo, hi = stat.get(lo_key), stat.get(hi_key)
    if not isinstance(lo, int | float) or not isinstance(hi, int | float):
        return out
    width = hi - lo
    if parts[-1] in DELTA_FIELDS:
        for bound in (check.min, check.max):
            if bound is not None and bound != 0 and width > abs(bound):
                out.append(
                    f"the paired 95% interval is {width:.3g} wide, wider than the margin {abs(bound):.3g}: "
                    f"{n if n is not None else 'the'} items are too few to decide"
                )
                break
    if parts[-1] in ("tuned", "delta"):
        evidence = lo_key if check.min is not None else hi_key
        for bound in (check.min, check.max):
            if bound is not None and lo < bound < hi:
                out.append(
                    f"the threshold {bound:.4g} lies inside the 95% interval [{lo:.3g}, {hi:.3g}]: another sample "
                    f"could flip this verdict (gate on {evidence} to require evidence)"
                )
                break
    return out


def evaluate(gate: GateFile, summary: dict[str, Any], source: str = "") -> GateResult:
    results: list[CheckResult] = []
    for check in gate.resolved():
        value, why = resolve(summary, check.metric)
        if value is None:
            results.append(CheckResult(check, None, "missing", why))
            continue
        low = check.min is not None and value < check.min
        high = check.max is not None and value > check.max
        if low:
            message = f"{_num(value)} < min {_num(check.min)}"
        elif high:
            message = f"{_num(value)} > max {_num(check.max)}"
        else:
            message = f"{_num(value)} {check.threshold_text}"
        verdict: Verdict = "fail" if low or high else "pass"
        results.append(CheckResult(check, value, verdict, message, _warnings(check, summary, value)))
    return GateResult(source, str((summary.get("run") or {}).get("name", "")), results)


def run_gate(summary: dict[str, Any], thresholds: Path) -> GateResult:
    return evaluate(load(thresholds), summary, str(thresholds))
