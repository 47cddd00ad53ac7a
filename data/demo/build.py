"""Rebuild `raw.jsonl`, the demo's bilingual sample, from the MIT-licensed files in ../shared/data.

Real records (GPTeacher code tasks, Chinese arithmetic, poetry and culture), plus a handful of planted defects of
the kinds `wb clean` exists for, so the demo shows every stage at work. `eval.jsonl` is the demo's task eval set:
50 records of the same kinds that `raw.jsonl` does not hold. The arithmetic records are the seeds' "answer in JSON"
format task (`{"expression": "43+7", "result": 50}`) and say `"answer_type": "json"`, so `wb eval` judges them by
`json_valid` and `json_field_f1` (the result is one of the fields) while the code and poetry answers are judged by
overlap. Every record fits the demo's `max_length` (384 tokens of the embedded model's chat template), so no
record is cut in training: records are chosen by their length in the embedded model's tokens (term explanations,
600+ tokens each, are left out). Run from the repository root with the project's environment:
`.venv/bin/python data/demo/build.py ../shared/data`.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

PLANTED: list[str] = [
    '{"instruction": "Translate to French: good morning", "input": "<noinput>", "output": "Bonjour"}',
    '{"instruction": "Summarize the following article.", "input": "", "output": "The article says prices rose."}',
    '{"instruction": "What is 2+2?", "input": "", "output": "N/A"}',
    '{"instruction": "Tell me a joke.", "input": "", "output": "As an AI language model, I cannot tell jokes."}',
    '{"instruction": "介绍一下你自己。", "input": "", "output": "作为一个AI语言模型，我无法拥有个人经历。"}',
    '{"instruction": "Who should I contact?", "input": "", "output": "Write to jane.doe@gmail.com or call 13812345678."}',
    '{"instruction": "Repeat after me", "input": "hello world", "output": "hello world"}',
    '{"instruction": "Describe the picture.", "input": "<Picture Attached>", "output": "A cat on a mat."}',
    '{"instruction": "List three colours", "input": "", "output": "red\\nred\\nred\\nred\\nred\\nblue"}',
    '{"instruction": "Write a haiku", "input": "", "output": "Autumn moonlight—\\na worm digs silently\\ninto the chestnut.\\n\\n##\\n18. Instruction: write another"}',
    '{"instruction": "Print hello in Python", "input": "", "output": "```python\\nprint(\\"hello\\")\\n"}',
    '{"instruction": "broken record", "input": "", "output": "missing brace"',
    '{"instruction": "Count to three", "input": "", "output": 123}',
    '{"output": "an answer to no question"}',  # no prompt at all (an input alone is the prompt, so it must lack both)
]


def as_json(r: dict[str, str]) -> dict[str, str]:
    """An arithmetic record as the seeds' "answer in JSON" format task: the expression and its result as an object."""
    expression = r["instruction"].rstrip("=")
    result = r["output"].rsplit("=", 1)[1]
    value = float(result) if "." in result else int(result)
    answer = json.dumps({"expression": expression, "result": value}, ensure_ascii=False)
    return {
        "instruction": f"{expression}= 用JSON回答",
        "input": "",
        "output": answer,
    }


MAX_TOKENS = 300  # of instruction + input + output; the chat template adds ~40, the recipe's max_length is 384


def _token_counter() -> Any:
    from transformers import AutoTokenizer

    from workbench.models.base import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("embedded")))
    return lambda r: len(tokenizer(r["instruction"] + "\n" + r["input"] + "\n" + r["output"])["input_ids"])


def main(shared: Path, out: Path) -> None:
    rng = random.Random(7)
    tokens = _token_counter()
    fits = lambda pool: [r for r in pool if tokens(r) <= MAX_TOKENS]  # noqa: E731
    code = json.loads((shared / "en_codegen_instruct.json").read_text(encoding="utf-8"))
    arith = json.loads((shared / "zh_integer_arithmetic.json").read_text(encoding="utf-8"))
    poetry = fits(json.loads((shared / "zh_poetry_culture.json").read_text(encoding="utf-8")))
    code = fits([{"instruction": r["instruction"], "input": r["input"], "output": r["response"]} for r in code[:1500]])
    eval_poetry = rng.sample(poetry, 5)
    poetry = [r for r in poetry if r not in eval_poetry]
    records = rng.sample(code, 60) + [as_json(r) for r in rng.sample(arith, 80)] + poetry
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    lines += lines[:5]  # exact duplicates, for the dedup stage
    lines += PLANTED
    rng.shuffle(lines)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")

    # The task eval set: records of the same kinds that the training data does not hold.
    used = {json.dumps(r, ensure_ascii=False, sort_keys=True) for r in records}
    unused = lambda pool: [r for r in pool if json.dumps(r, ensure_ascii=False, sort_keys=True) not in used]  # noqa: E731
    held = random.Random(11)
    numbers = [{**as_json(r), "answer_type": "json"} for r in held.sample(unused(arith), 30)]
    evals = numbers + held.sample(unused(code), 15) + eval_poetry
    held.shuffle(evals)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in evals)
    out.with_name("eval.jsonl").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data"), Path(__file__).with_name("raw.jsonl"))
