"""wb's GGUF export in a real client: llama.cpp (through llama-cpp-python) answers the same conversations as
`wb generate`, greedily, with the chat template it reads from the GGUF file's own metadata.

llama-cpp-python compiles llama.cpp, so it lives in its own virtual environment, never in wb's. Set it up once (the
build takes about an hour on one shared core; the flags keep it to the CPU library and the Python bindings):

    python3 -m venv /work/bench-venvs/llamacpp
    CMAKE_BUILD_PARALLEL_LEVEL=1 MAKEFLAGS=-j1 CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON \\
        -DGGML_F16C=ON -DGGML_OPENMP=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \\
        -DLLAMA_BUILD_SERVER=OFF" nice -n 19 /work/bench-venvs/llamacpp/bin/pip install 'llama-cpp-python==0.3.36'

(`--client-python` points at another interpreter.) The script writes wb's GGUF of the model (`--run RUN`: `wb
export RUN --gguf`, else the embedded SmolLM2 through the same writer) in f16 and q8_0 into a temporary folder, then
runs the client in its own process: `Llama(model_path=...).create_chat_completion(messages, temperature=0,
top_k=1)`, which renders the conversation with the GGUF's `tokenizer.chat_template` and stops at its end-of-turn
token. wb's side is `wb generate`'s library path (`models.targets.load` + `models.generate.generate`, greedy, fp32)
on the same conversations. It prints the answers side by side, whether each equals wb's, and writes
`bench/out/gguf_client.json`. A comparison, not a test: exit status 0 unless a side fails to run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import ROOT, git_state, versions, write_report

sys.path.insert(0, str(ROOT))

DEFAULT_CLIENT = Path("/work/bench-venvs/llamacpp/bin/python")
DEFAULT_OUT = ROOT / "bench" / "out" / "gguf_client.json"
CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write one sentence about the sea."}],
    [{"role": "user", "content": "用一句话介绍长城。"}],
    [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one?"},
    ],
]

# Runs in the client's interpreter: reads the job from stdin, prints the answers as JSON.
CLIENT = r"""
import json, sys, time
from llama_cpp import Llama, __version__
job = json.load(sys.stdin)
started = time.perf_counter()
llm = Llama(model_path=job["gguf"], n_ctx=1024, n_threads=job["threads"], seed=0, verbose=False)
loaded = time.perf_counter() - started
answers = []
for messages in job["conversations"]:
    made = llm.create_chat_completion(messages=messages, max_tokens=job["max_tokens"], temperature=0.0, top_k=1)
    answers.append(made["choices"][0]["message"]["content"])
print(json.dumps({
    "answers": answers,
    "llama_cpp_python": __version__,
    "template_in_file": llm.metadata.get("tokenizer.chat_template"),
    "load_seconds": loaded,
    "answer_seconds": time.perf_counter() - started - loaded,
}))
"""


def wb_answers(spec: str, max_tokens: int) -> list[str]:
    from workbench.models import generate as gen
    from workbench.models import targets
    from workbench.models.templates import render_prompt

    loaded = targets.load([targets.resolve_target(spec)], dtype="float32")
    prompts = [render_prompt(loaded.tokenizer, loaded.template, c) for c in CONVERSATIONS]  # type: ignore[arg-type]
    settings = gen.GenerationSettings(max_new_tokens=max_tokens, precision="fp32")
    return [a.strip() for a in gen.generate(loaded, prompts, settings)]


def write_gguf(spec: str | None, folder: Path, quant: str) -> Path:
    """wb's GGUF of a run (`wb export RUN --gguf`) or of the embedded model (the same writer)."""
    from workbench.export.gguf import GGUF_FILE, write_folder
    from workbench.export.pipeline import export
    from workbench.models.embedded import embedded_model_dir

    if spec is not None:
        return export(Path(spec), folder, merge=True, gguf_quant=quant).path / GGUF_FILE
    folder.mkdir(parents=True)
    write_folder(embedded_model_dir(), folder, quant, "auto", "smollm2-135m-instruct")
    return folder / GGUF_FILE


def client_answers(python: Path, gguf: Path, max_tokens: int, threads: int) -> dict[str, Any]:
    job = {"gguf": str(gguf), "conversations": CONVERSATIONS, "max_tokens": max_tokens, "threads": threads}
    done = subprocess.run(
        [str(python), "-c", CLIENT], input=json.dumps(job), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"the llama-cpp-python client failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def agreement(client: str, ours: str) -> str:
    """same; same once U+FFFD is dropped (a token that is part of a UTF-8 character: wb decodes it as U+FFFD,
    llama-cpp-python drops it); or differs."""
    if client.strip() == ours:
        return "same"
    if client.replace("\ufffd", "").strip() == ours.replace("\ufffd", "").strip():
        return "same but U+FFFD"
    return "differs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a run folder to export (default: the embedded model)")
    parser.add_argument("--client-python", type=Path, default=DEFAULT_CLIENT)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    started = time.time()
    ours = wb_answers(args.run or "embedded", args.max_tokens)
    sides: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="wb-gguf-") as tmp:
        for quant in ("f16", "q8_0"):
            gguf = write_gguf(args.run, Path(tmp) / quant, quant)
            sides[quant] = client_answers(args.client_python, gguf, args.max_tokens, args.threads)
            sides[quant]["gguf_bytes"] = gguf.stat().st_size
    for i, conversation in enumerate(CONVERSATIONS):
        print(f"\n[{i + 1}] {conversation[-1]['content']}")
        print(f"  wb generate      : {ours[i]!r}")
        for quant, side in sides.items():
            mark = agreement(side["answers"][i], ours[i])
            print(f"  llama.cpp {quant:<5}: {side['answers'][i].strip()!r}  ({mark})")
    report = {
        "model": args.run or "embedded",
        "max_tokens": args.max_tokens,
        "conversations": CONVERSATIONS,
        "wb_generate": ours,
        "llama_cpp": sides,
        "agreement": {q: [agreement(a, o) for a, o in zip(s["answers"], ours, strict=True)] for q, s in sides.items()},
        "load_average": os.getloadavg()[0],
        "wall_seconds": time.time() - started,
        "git": git_state(),
        "versions": versions(["torch", "transformers", "gguf"]),
    }
    print(f"\nwrote {write_report(args.out, report)}")


if __name__ == "__main__":
    main()
