"""Quality gates: a YAML file of thresholds checked against a run's summary (`runfile.summary.RunSummary`).

```yaml
checks:
  - metric: task.numeric_match.delta_lower  # a dotted path into the summary
    min: 0.0                                # min and/or max, inclusive
    min_n: 30                               # fewer items than this: inconclusive
  - metric: forgetting.general_en.accuracy.delta_lower
    min: -0.02                              # non-inferiority: the paired interval's lower bound above -margin
    allow_inconclusive: true                # an undecidable check warns instead of failing
  - "clean.dropped_fraction <= 0.2"         # the same as {metric: ..., max: 0.2}
```

Valid paths are derived from the run schema (`runfile.gate_paths.gate_path_problem`): a path that cannot exist
(unknown section, an unregistered metric, a field that is not a number) is an error in the gate file: exit 2, naming
the file and the check. Thresholds must be finite numbers.

Verdicts: `pass`; `fail` (the threshold is missed); `missing` (a well-formed path this run does not have: no eval, no
base scores, a probe set that was not run, a set of 0 items); `inconclusive` (the number cannot carry a decision: both
models score the same 0 or 1 on every item, every preference pair has the same margin, the paired interval is wider
than a non-inferiority margin (a negative `min` or a positive `max` on a delta), the set has fewer items than the
check's `min_n`, or a `task.judge.*` rate comes from a judge whose verdicts depend on answer order (position flip rate
above 0.5); only a number that would pass becomes inconclusive: a missed threshold stays `fail`).
`missing` and `inconclusive` fail the gate like a missed threshold — a gate never passes on numbers
it did not see or that cannot decide — unless the check says `allow_inconclusive: true`, which turns an inconclusive
verdict into a warning.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

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
from workbench.runfile import gate_paths
from workbench.runfile.evals import BASE_FIELDS, DELTA_FIELDS
from workbench.yamlfile import first_error, read_yaml

Verdict = Literal["pass", "fail", "missing", "inconclusive"]
VERDICTS: tuple[Verdict, ...] = ("pass", "fail", "missing", "inconclusive")
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_STRING_FORM = re.compile(rf"^\s*(?P<metric>[\w.-]+)\s*(?P<op>>=|<=)\s*(?P<value>{_NUMBER})\s*$")


Finite = Annotated[float, Field(allow_inf_nan=False)]


def path_problem(path: str) -> str | None:
    """Why `path` can never name a number in a summary, or None if it is well-formed."""
    return gate_paths.gate_path_problem(path)


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
        description="Dotted path into the run summary, e.g. task.numeric_match.delta_lower (docs/run-folder.md).",
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
    min: Finite | None = Field(default=None, description="Lowest passing value (inclusive).")
    max: Finite | None = Field(default=None, description="Highest passing value (inclusive).")
    min_n: int | None = Field(
        default=None, ge=1, description="Fewer items in the set than this: inconclusive (task and probe checks)."
    )
    allow_inconclusive: bool = Field(
        default=False, description="An inconclusive verdict is a warning instead of a failure."
    )

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
    raw = read_yaml(path, "threshold file")
    if not isinstance(raw, dict):
        raise WbError(f"{path}: a threshold file must be a YAML mapping with a `checks:` list")
    try:
        return GateFile.model_validate(raw)
    except ValidationError as err:
        loc, msg = first_error(err, skip=("check", "string"))
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
        """Does this check let the gate pass? (An allowed inconclusive verdict does, with a warning.)"""
        return self.verdict == "pass" or (self.verdict == "inconclusive" and self.check.allow_inconclusive)

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.check.metric,
            "min": self.check.min,
            "max": self.check.max,
            "min_n": self.check.min_n,
            "allow_inconclusive": self.check.allow_inconclusive,
            "threshold": self.check.threshold_text,
            "value": self.value,
            "verdict": self.verdict,
            "passed": self.passed,
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
    def failed(self) -> int:
        return sum(not r.passed for r in self.results)

    @property
    def warnings(self) -> list[str]:
        return [f"{r.check.metric}: {w}" for r in self.results for w in r.warnings]

    @property
    def tally(self) -> str:
        """The one count of a gate, the same on the terminal, the page and in Markdown: `8 of 10 checks pass,
        2 inconclusive (2 allowed)`."""
        parts = [f"{self.count('pass')} of {len(self.results)} checks pass"]
        for verdict in ("fail", "missing", "inconclusive"):
            n = self.count(verdict)
            allowed = sum(r.verdict == verdict and r.passed for r in self.results)
            if n:
                parts.append(f"{n} {verdict}" + (f" ({allowed} allowed)" if allowed else ""))
        return ", ".join(parts)

    @property
    def headline(self) -> str:
        return f"gate {'passed' if self.passed else 'failed'}: {self.tally}"

    def to_json(self) -> dict[str, Any]:
        return {
            "thresholds": self.source,
            "run": self.run,
            "passed": self.passed,
            "counts": {v: self.count(v) for v in VERDICTS},
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
    try:
        node = gate_paths.resolve(summary, path)
    except KeyError as e:
        return None, _why_absent(summary, parts, len(str(e.args[0]).split(".")) - 1)
    if isinstance(node, bool) or not isinstance(node, int | float) or not math.isfinite(node):
        return None, f"{path} is not a number here ({type(node).__name__})"
    return float(node), ""


def _why_absent(summary: dict[str, Any], parts: list[str], depth: int) -> str:
    where = ".".join(parts[:depth]) or parts[0]
    key = parts[depth]
    try:
        node = gate_paths.resolve(summary, where)
    except KeyError:
        node = None
    if parts[0] == "forgetting" and depth == 1:
        sets = ", ".join(sorted(node or {})) or "none"
        return f"no probe set {key!r} in this run's forgetting results (sets: {sets})"
    if key in BASE_FIELDS and not summary.get("has_base"):
        return f"{'.'.join(parts)}: {summary['missing'].get('base', 'no base-model scores in this run')}"
    if key in gate_paths.STAT_FIELDS and isinstance(node, dict) and "tuned" in node:
        n = node.get("n", _section_n(summary, parts))
        return f"no interval: {n} item{'s' if n != 1 else ''} {'has' if n == 1 else 'have'} this metric (2 needed)"
    if isinstance(node, dict):
        keys = [*node, *(node.get("metrics") or {})] if depth in (1, 2) else list(node)
        present = [k for k in keys if k != "metrics" and isinstance(node.get(k, 0), dict | int | float)]
        return f"no {key!r} under {where} (present: {', '.join(present) or 'none'})"
    return f"no {key!r} under {where}"


def _section_n(summary: dict[str, Any], parts: list[str]) -> Any:
    sec = summary.get("task") if parts[0] == "task" else (summary.get("forgetting") or {}).get(parts[1])
    return sec.get("n") if isinstance(sec, dict) else None


def _set_of(summary: dict[str, Any], parts: list[str]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the set section, the metric's STAT) that a task/forgetting check reads, or Nones."""
    if parts[0] == "task" and len(parts) == 3:
        sec = summary.get("task")
    elif parts[0] == "forgetting" and len(parts) == 4:
        sec = (summary.get("forgetting") or {}).get(parts[1])
    else:
        return None, None
    if not isinstance(sec, dict):
        return None, None
    stat = (sec.get("metrics") or {}).get(parts[-2])
    return sec, stat if isinstance(stat, dict) else None


def _empty_set(summary: dict[str, Any], path: str) -> str | None:
    """Why a check reads a set of 0 items (a task or probe set, the preference pairs, the judged items), or None:
    a number over nothing measured nothing, whatever it says."""
    parts = path.split(".")
    if parts[0] == "task" and parts[1:2] == ["judge"]:
        sec, what = (summary.get("task") or {}).get("judge"), "the judge saw"
    elif parts[0] == "task":
        sec, what = summary.get("task"), "the task set has"
    elif parts[0] == "forgetting" and len(parts) > 2:
        sec, what = (summary.get("forgetting") or {}).get(parts[1]), f"probe set {parts[1]} has"
    elif parts[0] == "pref":
        sec, what = summary.get("pref"), "the preference section scored"
    else:
        return None
    if isinstance(sec, dict) and sec.get("n") == 0:
        return f"{what} 0 items: there is no number to check"
    return None


def _inconclusive(check: Check, summary: dict[str, Any]) -> str | None:
    """Why the number a check reads cannot carry a decision, or None."""
    parts = check.metric.split(".")
    pref_stat = (summary.get("pref") or {}).get(parts[1]) if parts[0] == "pref" and len(parts) == 3 else None
    if isinstance(pref_stat, dict) and pref_stat.get("constant"):
        return (
            f"every one of the {summary['pref'].get('n')} pairs has the same margin: the model does not tell chosen "
            "from rejected on these pairs, so the number carries no information"
        )
    judged = (summary.get("task") or {}).get("judge") if parts[:2] == ["task", "judge"] else None
    if isinstance(judged, dict):
        if check.min_n is not None and isinstance(judged.get("n"), int) and judged["n"] < check.min_n:
            return f"the judge saw {judged['n']} items, fewer than this check's min_n {check.min_n}"
        if not judged.get("informative") and parts[-1] not in ("position_flip_rate", "unparsed"):
            flip = judged.get("position_flip_rate")
            return (
                f"the judge's verdicts depend on answer order (position flip rate {_num(flip)}): not informative"
                if flip is not None
                else "no judge verdict could be read in both orders: not informative"
            )
        return None
    sec, stat = _set_of(summary, parts)
    if sec is None:
        return None
    n = stat.get("n", sec.get("n")) if stat is not None else sec.get("n")
    if check.min_n is not None and isinstance(n, int) and n < check.min_n:
        return f"the set has {n} items, fewer than this check's min_n {check.min_n}"
    if stat is None:
        return None
    field_ = parts[-1]
    if field_ in BASE_FIELDS and stat.get("constant"):
        value = stat.get("tuned")
        return (
            f"both models score {_num(value)} on every one of the {n} items: the comparison carries no information "
            "(a harder or more suitable set, or a likelihood metric such as loss, can tell them apart)"
        )
    if field_ in DELTA_FIELDS:
        lo, hi = stat.get("delta_lower"), stat.get("delta_upper")
        if isinstance(lo, int | float) and isinstance(hi, int | float):
            width = hi - lo
            # A margin on the losing side (min below 0, max above 0): a non-inferiority check. A superiority check
            # (min >= 0) is decided by the interval's end itself, whatever its width.
            margins = [b for b in (check.min,) if b is not None and b < 0] + [
                b for b in (check.max,) if b is not None and b > 0
            ]
            for bound in margins:
                if width > abs(bound):
                    return (
                        f"the paired 95% interval [{lo:.3g}, {hi:.3g}] is {width:.3g} wide, wider than the margin "
                        f"{abs(bound):.3g}: {n} items are too few to decide"
                    )
    return None


def _warnings(check: Check, summary: dict[str, Any]) -> list[str]:
    """Verdicts another sample could flip."""
    parts = check.metric.split(".")
    if parts[-1] not in ("tuned", "delta"):
        return []
    _, stat = _set_of(summary, parts)
    if stat is None:
        return []
    lo_key, hi_key = ("delta_lower", "delta_upper") if parts[-1] == "delta" else ("lower", "upper")
    lo, hi = stat.get(lo_key), stat.get(hi_key)
    if not isinstance(lo, int | float) or not isinstance(hi, int | float):
        return []
    evidence = lo_key if check.min is not None else hi_key
    for bound in (check.min, check.max):
        if bound is not None and lo < bound < hi:
            return [
                f"the threshold {bound:.4g} lies inside the 95% interval [{lo:.3g}, {hi:.3g}]: another sample "
                f"could flip this verdict (gate on {evidence} to require evidence)"
            ]
    return []


def evaluate(gate: GateFile, summary: dict[str, Any], source: str = "") -> GateResult:
    results: list[CheckResult] = []
    for check in gate.resolved():
        value, why = resolve(summary, check.metric)
        empty = _empty_set(summary, check.metric)
        if empty is not None:
            value, why = None, empty
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
        warnings = _warnings(check, summary)
        reason = _inconclusive(check, summary)
        if reason is not None and verdict == "pass":  # a missed threshold stays a failure, whatever the noise
            verdict, message = "inconclusive", f"{_num(value)}: {reason}"  # the reason is said once, here
        elif reason is not None:
            warnings.append(reason)
        results.append(CheckResult(check, value, verdict, message, warnings))
    return GateResult(source, str((summary.get("run") or {}).get("name", "")), results)


def run_gate(summary: dict[str, Any], thresholds: Path) -> GateResult:
    return evaluate(load(thresholds), summary, str(thresholds))
