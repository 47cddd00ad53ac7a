"""Preference shapes: the shapes preference data comes in (pydantic models, which the JSON Schemas under `schemas/`
are generated from), the one canonical form, and which shape a decoded record is (`detect_shape`, `detect_kind`).
Converting between them is `workbench.preference_records`; reading a file of them is `workbench.preference_files`.

Shapes read (each recognised by its keys, `detect_shape`):

- `pairwise`: `prompt` (a string, or a list of messages: TRL's conversational form) or `instruction` (+ `input`),
  with `chosen` and `rejected`; optional `system` and `history` (LLaMA-Factory's Alpaca "ranking" shape, TRL's
  standard and conversational explicit-prompt shapes).
- `implicit`: TRL's implicit prompt: `chosen` and `rejected` are whole conversations that share the prompt.
- `conversation`: `messages` (OpenAI `role`/`content`) or `conversations` (ShareGPT `from`/`value`) as the shared
  prompt, `chosen` and `rejected` each a message, a list of messages or a string (LLaMA-Factory's ShareGPT
  ranking shape, xtuner/TRL message shape); optional `system`.
- `kto`: one unpaired completion with a boolean `label` (TRL) or `kto_tag` (LLaMA-Factory): `messages` /
  `conversations` ending with the answer, or `prompt`/`instruction` + `completion` (or `output`/`response`).
- `scored`: a prompt and `completions: [{"text", "score"}]` (`response` is read as `text`), binarised by
  `preference_records.binarize`: chosen is the highest-scored completion, rejected the lowest-scored (the first
  listed of equal scores in each case); when every completion scores the same there is no preference and the
  record is a `NoPreference` (wb clean drops it under `tied_scores`, naming the score).
- `canonical` / `canonical_kto`: the canonical form itself (`model_dump()` of the models below).

The canonical form: `PreferencePair` (`prompt_messages`, `chosen`, `rejected`) or `KtoExample` (`prompt_messages`,
`completion`, `label`). `prompt_messages` holds the whole prompt: an optional leading system message, then user
and assistant turns that alternate and end with the user. Responses are single assistant answers (strings).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from workbench.records import Message, ShareGPTTurn, Turn

Role = Literal["system", "user", "assistant"]
Shape = Literal["pairwise", "implicit", "conversation", "kto", "scored", "canonical", "canonical_kto"]
Kind = Literal["pair", "kto"]
OutShape = Literal["alpaca", "sharegpt", "messages", "trl", "canonical"]
"""Shapes `from_canonical` writes: LLaMA-Factory Alpaca / ShareGPT, OpenAI messages, TRL conversational, canonical."""

PAIR_SHAPES: tuple[Shape, ...] = ("pairwise", "implicit", "conversation", "scored", "canonical")
KTO_SHAPES: tuple[Shape, ...] = ("kto", "canonical_kto")


# --- canonical form -------------------------------------------------------------------------------------------


class ChatMessage(BaseModel):
    """One turn of a canonical prompt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    content: StrictStr


class PreferencePair(BaseModel):
    """A prompt with a preferred and a dispreferred answer: what DPO, ORPO, SimPO and reward models train on."""

    model_config = ConfigDict(extra="ignore", title="PreferencePair")

    prompt_messages: list[ChatMessage] = Field(
        min_length=1,
        description="The prompt: optional system message, then alternating user/assistant turns ending on user.",
    )
    chosen: StrictStr = Field(description="The preferred assistant answer.")
    rejected: StrictStr = Field(description="The dispreferred assistant answer.")

    @property
    def kind(self) -> Kind:
        return "pair"


class KtoExample(BaseModel):
    """A prompt with one answer labelled desirable (`true`) or undesirable (`false`): what KTO trains on."""

    model_config = ConfigDict(extra="ignore", title="KtoExample")

    prompt_messages: list[ChatMessage] = Field(min_length=1, description="The prompt, as in PreferencePair.")
    completion: StrictStr = Field(description="The assistant answer being judged.")
    label: StrictBool = Field(description="true: a desirable answer; false: an undesirable one.")

    @property
    def kind(self) -> Kind:
        return "kto"


Canonical = PreferencePair | KtoExample


# --- input shapes (validation and JSON Schemas) ----------------------------------------------------------------

AnyMessage = Message | ShareGPTTurn
Response = StrictStr | AnyMessage | list[AnyMessage]


class PairwiseRecord(BaseModel):
    """`{"prompt" | "instruction" (+ "input"), "chosen", "rejected", "system"?, "history"?}`."""

    model_config = ConfigDict(extra="ignore", title="PairwisePreferenceRecord")

    prompt: StrictStr | list[AnyMessage] | None = Field(
        None, description="The user's message, or the prompt as a list of messages (TRL conversational)."
    )
    instruction: StrictStr | None = Field(None, description="LLaMA-Factory's name for the prompt.")
    input: StrictStr = Field("", description="Optional context after the instruction.")
    chosen: Response = Field(description="The preferred answer.")
    rejected: Response = Field(description="The dispreferred answer.")
    system: StrictStr = Field("", description="Optional system prompt.")
    history: list[Turn] = Field(default_factory=list, description="Earlier (user, assistant) turns, oldest first.")


class ImplicitPairRecord(BaseModel):
    """TRL's implicit prompt: `chosen` and `rejected` are whole conversations whose shared beginning is the prompt."""

    model_config = ConfigDict(extra="ignore", title="ImplicitPreferenceRecord")

    chosen: list[AnyMessage] = Field(min_length=2)
    rejected: list[AnyMessage] = Field(min_length=2)


class ConversationPairRecord(BaseModel):
    """`{"messages" | "conversations": [prompt turns], "chosen", "rejected", "system"?}`."""

    model_config = ConfigDict(extra="ignore", title="ConversationPreferenceRecord")

    messages: list[AnyMessage] | None = Field(None, description="The shared prompt, OpenAI messages.")
    conversations: list[AnyMessage] | None = Field(None, description="The shared prompt, ShareGPT turns.")
    chosen: Response
    rejected: Response
    system: StrictStr = ""


class KtoRecord(BaseModel):
    """One answer with a boolean `label` / `kto_tag`; the prompt as messages (ending with the answer unless a
    `completion` is given) or as `prompt` / `instruction`."""

    model_config = ConfigDict(extra="ignore", title="KtoRecord")

    messages: list[AnyMessage] | None = None
    conversations: list[AnyMessage] | None = None
    prompt: StrictStr | list[AnyMessage] | None = None
    instruction: StrictStr | None = None
    input: StrictStr = ""
    completion: Response | None = Field(
        None, validation_alias=AliasChoices("completion", "output", "response"), description="The answer judged."
    )
    label: StrictBool | None = Field(None, description="TRL's name: true = desirable.")
    kto_tag: StrictBool | None = Field(None, description="LLaMA-Factory's name: true = desirable.")
    system: StrictStr = ""
    history: list[Turn] = Field(default_factory=list)


Score = Annotated[StrictFloat | StrictInt, Field(allow_inf_nan=False)]


class ScoredCompletion(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: StrictStr = Field(validation_alias=AliasChoices("text", "response"))
    score: Score


class ScoredRecord(BaseModel):
    """A prompt with several scored completions (UltraFeedback-style), binarised into one pair by `binarize`."""

    model_config = ConfigDict(extra="ignore", title="ScoredCompletionsRecord")

    messages: list[AnyMessage] | None = None
    conversations: list[AnyMessage] | None = None
    prompt: StrictStr | list[AnyMessage] | None = None
    instruction: StrictStr | None = None
    input: StrictStr = ""
    system: StrictStr = ""
    history: list[Turn] = Field(default_factory=list)
    completions: list[ScoredCompletion] = Field(min_length=2)


INPUT_MODELS: dict[Shape, type[BaseModel]] = {
    "pairwise": PairwiseRecord,
    "implicit": ImplicitPairRecord,
    "conversation": ConversationPairRecord,
    "kto": KtoRecord,
    "scored": ScoredRecord,
    "canonical": PreferencePair,
    "canonical_kto": KtoExample,
}


# --- detection --------------------------------------------------------------------------------------------------


def detect_shape(obj: Any) -> Shape | None:
    """The preference shape of one decoded JSON value, by its keys; None for anything else (SFT records)."""
    if not isinstance(obj, dict):
        return None
    if "prompt_messages" in obj:
        return "canonical_kto" if "label" in obj or "completion" in obj else "canonical"
    if "completions" in obj and isinstance(obj["completions"], list):
        return "scored"
    if "chosen" in obj or "rejected" in obj:
        if "messages" in obj or "conversations" in obj:
            return "conversation"
        if "prompt" in obj or "instruction" in obj:
            return "pairwise"
        if isinstance(obj.get("chosen"), list) and isinstance(obj.get("rejected"), list):
            return "implicit"
        return "pairwise"  # validation names the missing prompt
    if "kto_tag" in obj or has_kto_label(obj):
        return "kto"
    return None


def has_kto_label(obj: dict[str, Any]) -> bool:
    """A `label` that makes a record a KTO example (a boolean, or any label beside a `completion`)."""
    return "label" in obj and (isinstance(obj["label"], bool) or "completion" in obj)


def detect_kind(obj: Any) -> Kind | None:
    """`pair` (it makes a PreferencePair), `kto` (a KtoExample), or None (not preference data)."""
    shape = detect_shape(obj)
    if shape is None:
        return None
    return "kto" if shape in KTO_SHAPES else "pair"
