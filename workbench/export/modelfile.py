"""The Ollama `Modelfile` beside an exported GGUF file: `FROM ./model.gguf`, the run's chat template translated into
Ollama's Go-template syntax, and `PARAMETER stop` for the template's end-of-turn text.

A Jinja template cannot be translated in general; instead each family wb knows is described by its parts (text
before the conversation, each role's prefix and suffix around the message, the generation prompt), and a family
is chosen only when those parts reproduce the run's own rendering (`models.templates.render_prompt`, the one wb
trains, generates and evaluates with) of probe conversations exactly. A default system prompt that the template
inserts when a conversation has none (SmolLM2's, Qwen's) is read from that rendering. A template no family
reproduces gets no TEMPLATE line, and says so, rather than a guess. Tool calls are not translated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.export.card import ServeSection
from workbench.models.templates import ALPACA_PROMPT, Template, end_of_turn, render_prompt

MODELFILE = "Modelfile"
ROLES = ("system", "user", "assistant")
_INSTRUCTION, _RESPONSE = (part.strip("\n") + "\n" for part in ALPACA_PROMPT.split("{instruction}"))


@dataclass(frozen=True)
class Family:
    """A chat format as role-wrapped messages: `prefix`/`suffix` are format strings over {role}."""

    name: str
    start: str
    prefix: str
    suffix: str
    generation: str
    stops: tuple[str, ...] = ()
    role_text: tuple[tuple[str, str], ...] = ()  # what {role} stands for, where it is not the role's name

    def wrap(self, role: str, content: str) -> str:
        text = dict(self.role_text).get(role, role)
        return self.prefix.format(role=text) + content + self.suffix.format(role=text)


# Ordered: the first family that reproduces the template is used. `start` "{bos}" is the tokenizer's BOS text, dropped
# when the tokenizer (and so llama.cpp) prepends BOS itself.
FAMILIES = (
    Family("chatml", "", "<|im_start|>{role}\n", "<|im_end|>\n", "<|im_start|>assistant\n", ("<|im_end|>",)),
    Family(
        "llama3",
        "{bos}",
        "<|start_header_id|>{role}<|end_header_id|>\n\n",
        "<|eot_id|>",
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        ("<|eot_id|>",),
    ),
    Family("glm4", "[gMASK]<sop>", "<|{role}|>\n", "", "<|assistant|>", ("<|user|>", "<|observation|>")),
    # wb's format for models without a chat template: a bare system prompt, instructions, responses
    Family(
        "alpaca",
        "",
        "{role}",
        "\n\n",
        _RESPONSE,
        (_INSTRUCTION.strip(),),
        (("system", ""), ("user", _INSTRUCTION), ("assistant", _RESPONSE)),
    ),
)


@dataclass
class Translation:
    """The Modelfile's TEMPLATE (None: not translated, `note` says why; a TEMPLATE with a `note` differs from the
    Jinja template where the note says) and its stop texts."""

    family: str | None
    template: str | None
    stops: list[str]
    note: str | None = None


def translate(tokenizer: Any, template: Template) -> Translation:
    """The run's template as an Ollama Go template, when a known family reproduces its rendering exactly."""
    bos = tokenizer.bos_token or ""
    probe = tokenizer("a")["input_ids"]
    adds_bos = bool(probe) and probe[0] == tokenizer.bos_token_id
    eot = end_of_turn(tokenizer) if template == "chat" else ""
    for family in FAMILIES:
        if (family.name == "alpaca") != (template == "alpaca"):
            continue
        fam = family
        start = fam.start.replace("{bos}", "" if adds_bos else bos)
        default = _default_system(tokenizer, template, fam, fam.start.replace("{bos}", bos))
        if default is None:
            continue
        go = _go_template(fam, start, default)
        if go is None:
            continue
        stops = [s for s in dict.fromkeys([eot, *fam.stops, tokenizer.eos_token or ""]) if s and s.strip()]
        return Translation(family.name, go, stops, _whitespace_caveat(tokenizer, template, fam, start, default))
    stops = [eot] if eot.strip() else []
    return Translation(
        None,
        None,
        stops,
        "the chat template is not one of the families wb translates for Ollama "
        f"({', '.join(f.name for f in FAMILIES)}): the Modelfile has no TEMPLATE; write one by hand",
    )


_PROBES = (
    [("system", "\x01S"), ("user", "\x01U1")],
    [("system", "\x01S"), ("user", "\x01U1"), ("assistant", "\x01A1"), ("user", "\x01U2")],
    [("user", "\x01U1"), ("assistant", "\x01A1"), ("user", "\x01U2")],
    [("user", "\x01U1")],
)


def _default_system(tokenizer: Any, template: Template, fam: Family, start: str) -> str | None:
    """The system prompt the template inserts into a conversation without one ('' for none), or None when the
    family does not reproduce the template's rendering of the probe conversations."""
    default: str | None = None
    for probe in _PROBES:
        actual = render_prompt(tokenizer, template, [{"role": r, "content": c} for r, c in probe])
        body = "".join(fam.wrap(r, c) for r, c in probe) + fam.generation
        if probe[0][0] == "system":
            if actual != start + body:
                return None
            continue
        if not (actual.startswith(start) and actual.endswith(body)):
            return None
        inserted = actual[len(start) : len(actual) - len(body)]
        if inserted:
            head, tail = fam.wrap("system", "\x02").split("\x02")
            if not (inserted.startswith(head) and inserted.endswith(tail)):
                return None
            inserted = inserted[len(head) : len(inserted) - len(tail)]
        if default is not None and inserted != default:
            return None
        default = inserted
    return default


def _whitespace_caveat(tokenizer: Any, template: Template, fam: Family, start: str, default: str) -> str | None:
    """A line when the Jinja template strips the whitespace around a message (Llama 3's does), which Go templates
    cannot; the TEMPLATE keeps it, so only messages that start or end with whitespace render differently."""
    padded = [{"role": "system", "content": "\x01S"}, {"role": "user", "content": " \x01U \n"}]
    kept = start + fam.wrap("system", "\x01S") + fam.wrap("user", " \x01U \n") + fam.generation
    if render_prompt(tokenizer, template, padded) == kept:
        return None
    return (
        f"the chat template ({fam.name}) strips whitespace around each message and Ollama's TEMPLATE cannot: "
        "messages that start or end with whitespace render differently there"
    )


def _go_template(fam: Family, start: str, default: str) -> str | None:
    """The family as one line of Go template over Ollama's `.Messages`; None when a literal would need escaping."""
    parts = [start]
    if default:
        parts.append(
            '{{ if or (not .Messages) (ne (index .Messages 0).Role "system") }}'
            + fam.wrap("system", default)
            + "{{ end }}"
        )
    parts.append("{{ range .Messages }}")
    for i, role in enumerate(ROLES):
        head, tail = fam.wrap(role, "\x02").split("\x02")
        parts.append(
            ("{{ if" if i == 0 else "{{ else if") + f' eq .Role "{role}" }}}}' + head + "{{ .Content }}" + tail
        )
    parts.append("{{ end }}{{ end }}" + fam.generation)
    literal = "".join(re.sub(r"\{\{.*?\}\}", "", p) for p in parts)
    if "{{" in literal or "}}" in literal or '"""' in literal:
        return None
    return "".join(parts)


def modelfile_text(gguf_name: str, translation: Translation) -> str:
    lines = [f"FROM ./{gguf_name}", ""]
    if translation.template is not None:
        lines += [f'TEMPLATE """{translation.template}"""', ""]
    lines += [f'PARAMETER stop "{_quoted(s)}"' for s in translation.stops]
    return "\n".join(lines).rstrip("\n") + "\n"


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def ollama_name(run_name: str) -> str:
    """An Ollama model name from the run's name (lower case letters, digits, '-', '_' and '.')."""
    name = re.sub(r"[^a-z0-9._-]+", "-", run_name.lower()).strip("-._")
    return name or "wb-model"


def ollama_command(run_name: str, out: Path) -> str:
    return f"ollama create {ollama_name(run_name)} -f {out / MODELFILE}"


def gguf_section(out: Path, run_name: str) -> ServeSection:
    """The model card's llama.cpp / Ollama section for a GGUF export in `out`."""
    folder, name = out.name, ollama_name(run_name)
    body = "\n".join(
        [
            "`model.gguf` carries the tokenizer and the chat template in its metadata; with llama.cpp:",
            "",
            "```",
            f"llama-cli -m {folder}/model.gguf -cnv",
            "```",
            "",
            "With Ollama (the Modelfile holds the template in Go-template form and the stop tokens):",
            "",
            "```",
            f"ollama create {name} -f {folder}/{MODELFILE}",
            f"ollama run {name}",
            "```",
        ]
    )
    return ServeSection("llama.cpp and Ollama (GGUF)", body)
