"""Cleaning profiles: a YAML file (see `pipelines/clean-*.yaml`) turned into normalisation settings, a PII
policy and an ordered list of rules with validated parameters. The `rules` mapping is checked against the rule
registry (`workbench.clean.rule_registry.RULES`) as it is when a profile is read or its schema written, so a rule
registered after this module was imported (an extension, a test) is accepted like a shipped one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    create_model,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from workbench.clean import preference_rules  # noqa: F401  (registers every shipped rule: record, score, preference)
from workbench.clean.pii import ALL_KINDS, PiiKind
from workbench.clean.rule_registry import RULES, Params
from workbench.dedup.contamination import DecontaminateConfig
from workbench.dedup.exact import ExactConfig
from workbench.dedup.minhash import NearConfig
from workbench.dedup.stages import DedupConfig
from workbench.errors import WbError
from workbench.text import ChineseConversion, UnicodeForm

BUILTIN = ("default", "strict", "zh", "preference")

DEFAULT_PLACEHOLDER_INPUTS = [
    "<noinput>",
    "<no input>",
    "no input",
    "noinput",
    "<none>",
    "none",
    "null",
    "n/a",
    "na",
    "nan",
    "-",
    "<empty>",
    "empty",
    "无",
    "无输入",
    "空",
]


class NormalizeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unicode: UnicodeForm = Field("NFKC", description="Unicode normalisation form, or none.")
    keep_as_written: bool = Field(
        True,
        description="Characters whose form is their meaning keep it under every Unicode form: CJK and full-width "
        "punctuation, the ellipsis, ℃, circled numbers, super/subscripts, emoji symbols, CJK compatibility "
        "ideographs (the list: workbench.text.KEEP_AS_WRITTEN_RANGES). Full-width Latin letters and digits, "
        "ligatures and compatibility spaces still fold. false: the Unicode form applies to every character.",
    )
    chinese: ChineseConversion | None = Field(
        None,
        description="Convert between Chinese scripts with OpenCC (pip install 'wb[zh]'): t2s traditional → "
        "simplified, s2t the reverse, tw2s/s2tw/hk2s/s2hk for Taiwan and Hong Kong forms, tw2sp/s2twp with phrases. "
        "null (default): Chinese text is left in the script it is written in. The stats count the records changed.",
    )
    strip_control: bool = Field(True, description="Remove control characters other than tab and newline.")
    strip_zero_width: bool = Field(True, description="Remove zero-width spaces, word joiners, BOMs, soft hyphens.")
    whitespace: bool = Field(True, description="Trim and collapse whitespace in prose (code keeps its spacing).")
    placeholder_inputs: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PLACEHOLDER_INPUTS),
        description="Inputs that mean 'no input' (compared case-insensitively) and become empty.",
    )


class PiiConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["redact", "drop", "keep"] = Field(
        "redact", description="redact: replace with <EMAIL>/<PHONE>/<IP>/<ID>; drop: drop the record; keep."
    )
    kinds: list[PiiKind] = Field(default_factory=lambda: list(ALL_KINDS))


class PreferenceDataConfig(BaseModel):
    """Settings for preference data (pairs, KTO examples) beyond its rules."""

    model_config = ConfigDict(extra="forbid")

    length_bias_max_share: float = Field(
        0.7,
        gt=0.5,
        le=1,
        description="Warn when the chosen answer is the longer one (or the shorter one) in more than this share of "
        "the kept pairs: DPO trained on such data learns length (lengths in UTF-8 bytes).",
    )


_RULES_MODELS: dict[tuple[tuple[str, type[Params]], ...], type[BaseModel]] = {}


def rules_model() -> type[BaseModel]:
    """The `rules` mapping as a model of the rules registered now: one optional field per rule, its parameter model.
    Built when a profile is validated or its schema written (not when this module is imported), so a rule
    registered later (an extension module, a test) is accepted and in the schema like a shipped one."""
    key = tuple((name, r.params) for name, r in RULES.items())
    if key not in _RULES_MODELS:
        _RULES_MODELS[key] = create_model(  # type: ignore[call-overload]
            "Rules", __config__=ConfigDict(extra="forbid"), **{name: (params | None, None) for name, params in key}
        )
    return _RULES_MODELS[key]


def _registered_rules(value: Any) -> BaseModel:
    model = rules_model()
    return value if isinstance(value, model) else model.model_validate(value)


class _RegisteredRules:
    """The profile's `rules` field: validated, and its JSON Schema written, from the registry at that moment."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(_registered_rules)

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        # As a definitions schema, so `Rules` and the parameter models land in `$defs` as the Profile's own would.
        rules = rules_model().__pydantic_core_schema__
        if rules["type"] != "definitions":
            rules = core_schema.definitions_schema(rules, [])
        return handler(rules)


RulesConfig = Annotated[BaseModel, _RegisteredRules()]


class Profile(BaseModel):
    """A cleaning profile. Rules run in the order they are listed; the first that matches drops the record."""

    model_config = ConfigDict(extra="forbid", title="CleanProfile")

    name: str
    description: str = ""
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig)
    pii: PiiConfig = Field(default_factory=PiiConfig)
    rules: RulesConfig = Field(default_factory=lambda: rules_model()())
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    decontaminate: DecontaminateConfig = Field(
        default_factory=DecontaminateConfig, description="n-gram lengths for `--against` eval files."
    )
    preference: PreferenceDataConfig = Field(
        default_factory=PreferenceDataConfig, description="Preference data only: the length-bias warning."
    )
    rule_order: list[str] = Field(default_factory=list, exclude=True)

    def enabled_rules(self) -> list[tuple[str, Params]]:
        return [(name, getattr(self.rules, name)) for name in self.rule_order]

    def as_dict(self) -> dict[str, Any]:
        """The resolved profile, every default filled in, rules in their order (stored in the stats)."""
        return {
            "name": self.name,
            "description": self.description,
            "normalize": self.normalize.model_dump(),
            "pii": self.pii.model_dump(),
            "rules": [{"rule": name, **params.model_dump()} for name, params in self.enabled_rules()],
            "dedup": self.dedup.model_dump(),
            "decontaminate": self.decontaminate.model_dump(),
            "preference": self.preference.model_dump(),
        }

    def with_semantic_precision(self, precision: str | None) -> Profile:
        """This profile with its semantic-dedup stage (if any) computing in `precision` (None: as it says)."""
        semantic = self.dedup.semantic
        if precision is None or semantic is None:
            return self
        dedup = self.dedup.model_copy(update={"semantic": semantic.model_copy(update={"precision": precision})})
        return self.model_copy(update={"dedup": dedup})

    def dedup_only(self) -> Profile:
        """This profile's dedup stages alone (both on with defaults if it has none), for `wb dedup`."""
        dedup = self.dedup
        if dedup.exact is None and dedup.near is None:
            dedup = DedupConfig(exact=ExactConfig(), near=NearConfig())
        off = NormalizeConfig(
            unicode="none",
            keep_as_written=True,
            strip_control=False,
            strip_zero_width=False,
            whitespace=False,
            placeholder_inputs=[],
        )
        return self.model_copy(
            update={
                "normalize": off,
                "pii": PiiConfig(action="keep"),
                "rules": rules_model()(),
                "rule_order": [],
                "dedup": dedup,
            }
        )


def _pipelines_dir() -> Path:
    """Built-in profiles: `pipelines/` in a source checkout, `workbench/_pipelines` in an installed wheel."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_pipelines", here.parent / "pipelines"):
        if candidate.is_dir():
            return candidate
    raise WbError("built-in pipelines folder not found; pass --profile PATH")


def _error_line(source: str, err: ValidationError) -> str:
    e = err.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in e["loc"])
    return f"{source}: {loc}: {e['msg']}"


def _rule_params(name: str, params: Any) -> Any:
    """A rule's parameters; a bare value (`ifd_max: 1.0`) sets the field a score rule names as its scalar."""
    if params is None:
        return {}
    scalar = getattr(RULES[name].params, "scalar", "")
    if scalar and not isinstance(params, dict):
        return {scalar: params}
    return params


def from_dict(raw: Any, source: str = "profile") -> Profile:
    if not isinstance(raw, dict):
        raise WbError(f"{source}: a profile must be a YAML mapping, found {type(raw).__name__}")
    raw = dict(raw)
    rules = raw.get("rules") or {}
    if not isinstance(rules, dict):
        raise WbError(f"{source}: rules: expected a mapping of rule name to parameters")
    unknown = [name for name in rules if name not in RULES]
    if unknown:
        raise WbError(f"{source}: rules.{unknown[0]}: unknown rule; known rules are {', '.join(RULES)}")
    raw["rules"] = {name: _rule_params(name, params) for name, params in rules.items()}
    dedup = raw.get("dedup")
    if isinstance(dedup, dict):  # a stage listed without parameters is on with its defaults
        raw["dedup"] = {name: ({} if params is None else params) for name, params in dedup.items()}
    raw["rule_order"] = list(rules)
    try:
        return Profile.model_validate(raw)
    except ValidationError as err:
        raise WbError(_error_line(source, err)) from None


def _load_path(path: Path) -> Profile:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WbError(f"{path}: profile not found; built-in profiles are {', '.join(BUILTIN)}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise WbError(f"{path}: cannot read profile ({err})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "?"
        raise WbError(f"{path}: {where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    return from_dict(raw, str(path))


def load(spec: str | Path) -> Profile:
    """A profile by built-in name (`default`, `strict`, `zh`) or by path to a YAML file."""
    if isinstance(spec, str) and spec in BUILTIN:
        return _load_path(_pipelines_dir() / f"clean-{spec}.yaml")
    return _load_path(Path(spec).resolve())
