"""`wb export --gguf`: the GGUF file loads back with transformers' GGUF loader and answers like the safetensors model
it came from (the embedded SmolLM2 in f16 and q8_0, a tiny LoRA run merged first), `gguf`'s reader finds the tensors,
tokenizer and chat template, non-Llama models are refused, and the Ollama Modelfile's TEMPLATE renders conversations
exactly as the run's Jinja template does (checked with a small interpreter of the Go-template subset it uses)."""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import write_jsonl

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")
pytest.importorskip("peft")

from workbench.export import modelfile  # noqa: E402
from workbench.export.gguf import GGUF_FILE, write_folder  # noqa: E402
from workbench.models import embedded as wbembedded  # noqa: E402
from workbench.models.base import load_tokenizer, tiny_model_dir  # noqa: E402
from workbench.models.folders import models_dir  # noqa: E402
from workbench.models.templates import NAMED_TEMPLATES, choose_template, render_prompt  # noqa: E402
from workbench.train.recipe import Recipe  # noqa: E402
from workbench.train.trainer import train  # noqa: E402

FRUIT = [
    {"instruction": f"Name fruit number {i}.", "input": "", "output": w}
    for i, w in enumerate(["apple", "banana", "cherry", "梨子"])
]
PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "用一句话介绍长城。"}],
    [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one?"},
    ],
]
# Conversations the Modelfile's TEMPLATE must render as the Jinja template does: Unicode, a Go-template action and
# triple quotes inside the text (data, never template code), several turns, with and without a system prompt.
CONVERSATIONS = [
    *PROMPTS,
    [{"role": "user", "content": 'Render {{ .Content }} and """quotes""" 🦙\n\n  spaced  '}],
    [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b\n\nc"},
        {"role": "user", "content": "d"},
        {"role": "assistant", "content": "e"},
        {"role": "user", "content": "f"},
    ],
]


# --- a small interpreter of the Go text/template subset a Modelfile TEMPLATE uses (Ollama is not installed) ---

_ACTION = re.compile(r"\{\{\s*(.*?)\s*\}\}", re.S)
_TOKEN = re.compile(r'\s*(\(|\)|"(?:[^"\\]|\\.)*"|[^\s()]+)')


def go_render(template: str, messages: list[dict[str, str]]) -> str:
    """Render `template` with Ollama's data: `.Messages`, each with `.Role` and `.Content`. Text, `{{ .Field }}`,
    if / else if / else / end, range, and the functions and, or, not, eq, ne, index (no trim markers)."""
    assert "{{-" not in template and "-}}" not in template, "trim markers are outside the subset"
    nodes: list[Any] = []
    pos = 0
    for m in _ACTION.finditer(template):
        nodes += [template[pos : m.start()], ("action", m.group(1))]
        pos = m.end()
    nodes.append(template[pos:])
    tree, end = _parse(nodes, 0)
    assert end == len(nodes), "an {{ end }} without its {{ if }} or {{ range }}"
    data = {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]}
    return _exec(tree, data)


def _parse(nodes: list[Any], i: int) -> tuple[list[Any], int]:
    out: list[Any] = []
    while i < len(nodes):
        node = nodes[i]
        if isinstance(node, str):
            out.append(("text", node))
            i += 1
            continue
        word = node[1].split(" ", 1)[0]
        if word in ("end", "else"):
            return out, i
        if word in ("if", "range"):
            body, i = _parse(nodes, i + 1)
            branches = [(node[1][len(word) :].strip(), body)]
            otherwise: list[Any] = []
            while nodes[i][1] != "end":
                rest = nodes[i][1][len("else") :].strip()
                body, i = _parse(nodes, i + 1)
                if rest.startswith("if "):
                    branches.append((rest[3:], body))
                else:
                    otherwise = body
            out.append((word, branches, otherwise))
        else:
            out.append(("print", node[1]))
        i += 1
    return out, i


def _exec(tree: list[Any], dot: Any) -> str:
    out = []
    for node in tree:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "print":
            out.append(str(_eval(_TOKEN.findall(node[1]), dot)))
        elif node[0] == "if":
            chosen = next((body for cond, body in node[1] if _eval(_TOKEN.findall(cond), dot)), node[2])
            out.append(_exec(chosen, dot))
        else:  # range
            items = _eval(_TOKEN.findall(node[1][0][0]), dot)
            out.extend(_exec(node[1][0][1], item) for item in items)
            if not items:
                out.append(_exec(node[2], dot))
    return "".join(out)


def _eval(tokens: list[str], dot: Any) -> Any:
    value, i = _call(tokens, 0, dot)
    assert i == len(tokens), f"cannot parse {' '.join(tokens)!r}"
    return value


def _call(tokens: list[str], i: int, dot: Any) -> tuple[Any, int]:
    """A function applied to its arguments (up to ')' or the end), or one operand."""
    name = tokens[i]
    if name not in ("and", "or", "not", "eq", "ne", "index"):
        return _operand(tokens, i, dot)
    args: list[list[str]] = []
    i += 1
    while i < len(tokens) and tokens[i] != ")":
        start, depth = i, 0
        while True:  # one argument: an operand, or a parenthesised call and the fields after it
            depth += {"(": 1, ")": -1}.get(tokens[i], 0)
            i += 1
            if depth == 0:
                break
        while tokens[i - 1] == ")" and i < len(tokens) and tokens[i].startswith("."):
            i += 1
        args.append(tokens[start:i])
    if name in ("and", "or"):  # Go 1.18+ stops at the first argument that decides
        value: Any = name == "and"
        for arg in args:
            value = _eval(arg, dot)
            if bool(value) != (name == "and"):
                break
        return value, i
    values = [_eval(arg, dot) for arg in args]
    if name == "not":
        return not values[0], i
    if name == "index":
        return values[0][values[1]], i
    return (values[0] == values[1]) == (name == "eq"), i


def _operand(tokens: list[str], i: int, dot: Any) -> tuple[Any, int]:
    tok = tokens[i]
    if tok == "(":
        value, i = _call(tokens, i + 1, dot)
        assert tokens[i] == ")"
        i += 1
        while i < len(tokens) and tokens[i].startswith("."):
            value = value[tokens[i][1:]]
            i += 1
        return value, i
    if tok.startswith('"'):
        return json.loads(tok), i + 1
    if tok.isdigit():
        return int(tok), i + 1
    assert tok.startswith("."), f"unsupported operand {tok!r}"
    return dot[tok[1:]], i + 1


def test_the_go_template_interpreter_follows_go() -> None:
    """The interpreter itself, on what Go's text/template prints for these templates."""
    msgs = [{"role": "user", "content": "hi {{ x }}"}, {"role": "assistant", "content": "yo"}]
    tpl = '{{ if or (not .Messages) (ne (index .Messages 0).Role "system") }}S|{{ end }}'
    tpl += '{{ range .Messages }}{{ if eq .Role "user" }}U:{{ .Content }};{{ else if eq .Role "x" }}X{{ else }}'
    tpl += "A:{{ .Content }};{{ end }}{{ end }}G"
    assert go_render(tpl, msgs) == "S|U:hi {{ x }};A:yo;G"
    assert go_render(tpl, []) == "S|G"
    assert go_render(tpl, [{"role": "system", "content": "s"}]) == "A:s;G"


# --- fixtures ---


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory, tiny: Path) -> Path:
    root = tmp_path_factory.mktemp("runs")
    recipe = Recipe.model_validate(
        {
            "name": "Fruit.Run_1",
            "model": str(tiny),
            "data": write_jsonl(root / "fruit.jsonl", FRUIT * 2),
            "output_dir": root / "runs",
            "method": "lora",
            "val_size": 0,
            "max_length": 64,
            "max_steps": 6,
            "lr": 2e-2,
            "batch_size": 4,
            "warmup_ratio": 0,
            "scheduler": "constant",
        }
    )
    return train(recipe).run_dir


@pytest.fixture(scope="module")
def embedded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The converted embedded model: read from the user's cache when it is there, else converted into a temporary one."""
    cached = models_dir() / wbembedded.EMBEDDED_NAME
    if all((cached / name).is_file() for name in wbembedded.EMBEDDED_FILES):
        return cached
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WB_CACHE", str(tmp_path_factory.mktemp("wb-cache")))
        return wbembedded.embedded_model_dir()


@pytest.fixture(autouse=True)
def _gguf_loading_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers' GGUF loader, the independent reader these tests check wb's files with, parses a file twice per
    model (its config, then its weights) and builds gguf's tensor-name map once per tensor: ~30 s a load of the
    embedded model, of which dequantising is 3. Within a test, one reader per file (unchanged since it was read) and
    one map per architecture: the same model, loaded in a fraction of the time."""
    reader_class, readers = gguf.GGUFReader, {}

    def reader(path: Any, mode: str = "r") -> Any:
        stat = os.stat(path)
        key = (os.fspath(path), mode, stat.st_mtime_ns, stat.st_size)
        if key not in readers:
            readers[key] = reader_class(path, mode)
        return readers[key]

    monkeypatch.setattr(gguf, "GGUFReader", reader)
    monkeypatch.setattr(gguf, "get_tensor_name_map", functools.cache(gguf.get_tensor_name_map))


def _prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> Any:
    text = render_prompt(tokenizer, "chat", messages)
    return tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]


def _answers(model: Any, tokenizer: Any, new_tokens: int = 16) -> list[str]:
    out = []
    for messages in PROMPTS:
        ids = _prompt_ids(tokenizer, messages)
        with torch.inference_mode():
            made = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        out.append(tokenizer.decode(made[0, ids.shape[1] :]))
    return out


def _load(folder: Path, gguf_file: str | None = None) -> Any:
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {"use_safetensors": True}
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, **kwargs).eval()


def _reader_fields(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The file's metadata (scalars and strings as values, arrays as lists) and its tensors' types by name."""
    reader = gguf.GGUFReader(str(path))
    fields = {name: field.contents() for name, field in reader.fields.items()}
    return fields, {t.name: t.tensor_type.name for t in reader.tensors}


def _expected_tensors(blocks: int) -> set[str]:
    per_block = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")
    return {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{b}.{name}.weight" for b in range(blocks) for name in per_block
    }


# --- the embedded model ---


@pytest.mark.slow
def test_the_embedded_model_as_gguf_answers_like_its_safetensors(embedded_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = load_tokenizer(embedded_dir)
    reference = _load(embedded_dir)
    expected = _answers(reference, tokenizer)
    assert all(a.strip() for a in expected)
    for quant in ("f16", "q8_0"):
        out = tmp_path / quant
        out.mkdir()
        assert write_folder(embedded_dir, out, quant, "auto", "smollm2-135m") == []
        model = _load(out, GGUF_FILE)
        assert _answers(model, tokenizer) == expected, quant
        if quant == "f16":  # f16 weights: the logits of a prompt stay within 0.1 (measured 0.04; they reach ±38)
            ids = _prompt_ids(tokenizer, PROMPTS[2])
            with torch.inference_mode():
                diff = (model(ids).logits - reference(ids).logits).abs().max().item()
            assert diff < 0.1, diff
            from_gguf = AutoTokenizer.from_pretrained(str(out), gguf_file=GGUF_FILE)
            text = "Hello 你好 🦙 <|im_start|>user\n  spaced\t\tout  — ok?"
            assert from_gguf(text)["input_ids"] == tokenizer(text)["input_ids"]
        del model
    fields, tensors = _reader_fields(tmp_path / "q8_0" / GGUF_FILE)
    assert set(tensors) == _expected_tensors(30)  # tied embeddings: no separate output.weight
    assert tensors["blk.0.attn_q.weight"] == "Q8_0" and tensors["token_embd.weight"] == "Q8_0"
    assert tensors["blk.0.attn_norm.weight"] == "F32"
    assert fields["general.architecture"] == "llama" and fields["llama.block_count"] == 30
    assert fields["llama.attention.head_count_kv"] == 3 and fields["general.file_type"] == 7
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "smollm"
    assert len(fields["tokenizer.ggml.tokens"]) == 49152
    assert fields["tokenizer.ggml.tokens"][2] == "<|im_end|>" and fields["tokenizer.ggml.token_type"][2] == 3
    merges = json.loads((embedded_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]["merges"]
    assert len(fields["tokenizer.ggml.merges"]) == len(merges)
    assert fields["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id == 2
    assert fields["tokenizer.ggml.add_bos_token"] is False
    assert fields["tokenizer.chat_template"] == tokenizer.chat_template


# --- a LoRA run through the CLI ---


def test_a_lora_run_exports_to_gguf_that_answers_like_its_merged_export(
    lora_run: Path, tmp_path: Path, wb: Any
) -> None:
    result = wb("export", lora_run, "--gguf", "-o", tmp_path / "gguf")
    assert result.exit_code == 0, result.stderr
    files = {p.name for p in (tmp_path / "gguf").iterdir()}
    assert {"Modelfile", "model.gguf", "model.safetensors", "README.md", "wb_export.json"} <= files
    assert f"ollama create fruit.run_1 -f {tmp_path / 'gguf' / 'Modelfile'}" in result.stdout
    card = (tmp_path / "gguf" / "README.md").read_text(encoding="utf-8")
    assert "ollama create fruit.run_1 -f gguf/Modelfile" in card and "llama-cli -m gguf/model.gguf" in card
    # the folder is also the merged model (with the run's template): the GGUF must answer as its safetensors do
    tokenizer = load_tokenizer(tmp_path / "gguf")
    merged = _load(tmp_path / "gguf")
    converted = _load(tmp_path / "gguf", GGUF_FILE)
    assert _answers(converted, tokenizer, 8) == _answers(merged, tokenizer, 8)
    ids = _prompt_ids(tokenizer, PROMPTS[0])
    with torch.inference_mode():
        diff = (converted(ids).logits - merged(ids).logits).abs().max().item()
    assert diff < 0.05, diff  # f16 rounding of the weights (measured 0.010)
    fields, tensors = _reader_fields(tmp_path / "gguf" / GGUF_FILE)
    assert set(tensors) == _expected_tensors(2)
    assert tensors["blk.1.ffn_down.weight"] == "F16" and fields["general.file_type"] == 1
    assert fields["general.name"] == "Fruit.Run_1"
    assert fields["tokenizer.chat_template"] == tokenizer.chat_template
    text = (tmp_path / "gguf" / "Modelfile").read_text(encoding="utf-8")
    assert text.startswith("FROM ./model.gguf\n") and 'PARAMETER stop "<|im_end|>"' in text


def test_q8_0_and_refusals(lora_run: Path, tmp_path: Path, wb: Any) -> None:
    q8 = wb("export", lora_run, "--gguf", "--quant", "q8_0", "-o", tmp_path / "q8", "-q")
    assert q8.exit_code == 0, q8.stderr
    assert _reader_fields(tmp_path / "q8" / GGUF_FILE)[1]["blk.0.attn_v.weight"] == "Q8_0"
    bad_quant = wb("export", lora_run, "--gguf", "--quant", "q4_k", "-o", tmp_path / "x")
    assert bad_quant.exit_code == 2 and "--quant q4_k: choose one of f16, q8_0" in bad_quant.stderr
    stray = wb("export", lora_run, "--merge", "--quant", "q8_0", "-o", tmp_path / "x")
    assert stray.exit_code == 2 and "--quant goes with --gguf" in stray.stderr
    both = wb("export", lora_run, "--adapter-only", "--gguf", "-o", tmp_path / "x")
    assert both.exit_code == 2 and "it does not go with --adapter-only" in both.stderr
    # a whole-model run of another architecture: refused in one line, nothing written
    run = tmp_path / "runs" / "qwen"
    (run / "model").mkdir(parents=True)
    (run / "recipe.yaml").write_text("name: qwen\nmethod: full\n", encoding="utf-8")
    config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 10}
    (run / "model" / "config.json").write_text(json.dumps(config), encoding="utf-8")
    other = wb("export", run, "--gguf", "-o", tmp_path / "x")
    assert other.exit_code == 2
    assert (
        other.stderr.strip()
        .splitlines()[-1]
        .endswith("GGUF export writes Llama-family models (LlamaForCausalLM); this is Qwen2ForCausalLM")
    )
    assert "Traceback" not in other.stderr and not (tmp_path / "x").exists()
    assert not list(tmp_path.glob(".*.tmp"))


# --- the Modelfile's TEMPLATE ---


@pytest.mark.parametrize("spec", ["auto", *NAMED_TEMPLATES, "alpaca"])
def test_the_modelfile_template_renders_like_the_jinja_template(spec: str, tiny: Path) -> None:
    """auto is the embedded SmolLM2's own template (ChatML with a default system prompt)."""
    tokenizer = load_tokenizer(tiny)
    used = choose_template(tokenizer, spec)
    translation = modelfile.translate(tokenizer, used)
    assert translation.template is not None
    expected_family = {"auto": "chatml", "qwen": "chatml", "alpaca": "alpaca"}.get(spec, spec)
    assert translation.family == expected_family
    trims = spec == "llama3"  # Llama 3's template strips each message; Go templates cannot, and the note says so
    assert (translation.note is not None and "strips whitespace" in translation.note) == trims
    for messages in CONVERSATIONS:
        if trims:
            messages = [{**m, "content": m["content"].strip()} for m in messages]
        assert go_render(translation.template, messages) == render_prompt(tokenizer, used, messages)
    stop = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>", "glm4": "<|user|>", "alpaca": "### Instruction:"}
    assert stop[expected_family] in translation.stops
    text = modelfile.modelfile_text(GGUF_FILE, translation)
    assert f'TEMPLATE """{translation.template}"""' in text
    assert f'PARAMETER stop "{stop[expected_family]}"' in text


def test_an_unknown_template_gets_no_template_line_and_says_so(tiny: Path, tmp_path: Path) -> None:
    mistral = "{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    mistral += "{% else %}{{ m['content'] }}</s>{% endif %}{% endfor %}"
    (tmp_path / "mistral.jinja").write_text(mistral, encoding="utf-8")
    tokenizer = load_tokenizer(tiny)
    translation = modelfile.translate(tokenizer, choose_template(tokenizer, str(tmp_path / "mistral.jinja")))
    assert translation.template is None and translation.family is None
    assert translation.note is not None and "no TEMPLATE" in translation.note
    assert translation.stops == ["</s>"]
    text = modelfile.modelfile_text(GGUF_FILE, translation)
    assert "TEMPLATE" not in text and text.startswith("FROM ./model.gguf\n")
    assert modelfile.ollama_name("My Run/ü 2") == "my-run-2"
