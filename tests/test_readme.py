"""The README gets a user going: its first screen holds the two set-up commands and the six commands of the chain on
one's own file, with a recipe and a gate file that really validate and a chain that really runs; the reference
lives in docs/ pages, and every relative link of the README and the docs points at a file (and heading) that exists.
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, write_jsonl

README = REPO / "README.md"
FIRST_SCREEN = 50  # lines
CHAIN = ["clean", "stats", "train", "eval", "report", "gate"]

_FENCE = re.compile(r"(?ms)^```.*?^```[^\n]*$")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def readme() -> str:
    return README.read_text(encoding="utf-8")


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(info string, body) of every fenced block, in order."""
    return [(m[1], m[2]) for m in re.finditer(r"(?ms)^```(\w*)\n(.*?)^```", text)]


def chain_commands(text: str) -> list[list[str]]:
    """The `wb ...` lines of the first code block that holds them, as argument lists (comments dropped)."""
    for _, body in code_blocks(text):
        lines = [shlex.split(line, comments=True) for line in body.splitlines() if line.startswith("wb ")]
        if lines:
            return lines
    raise AssertionError("README shows no wb command")


def yaml_block(text: str, first_line: str) -> dict[str, Any]:
    """The YAML block whose first line starts with `first_line`."""
    for info, body in code_blocks(text):
        if info == "yaml" and body.startswith(first_line):
            loaded = yaml.safe_load(body)
            assert isinstance(loaded, dict)
            return loaded
    raise AssertionError(f"README shows no YAML block starting with {first_line!r}")


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_the_first_screen_holds_the_two_set_up_commands_and_the_six_commands_of_the_chain() -> None:
    screen = "\n".join(readme().splitlines()[:FIRST_SCREEN])
    setup = [line.split("#")[0].strip() for _, body in code_blocks(screen) for line in body.splitlines()]
    assert [line for line in setup if line.startswith("make")] == ["make demo", "make test"]
    commands = chain_commands(screen)
    assert [args[1] for args in commands] == CHAIN
    assert "# my-recipe.yaml" in screen and "# my-gate.yaml" in screen  # both files the chain needs are shown


def test_the_readme_recipe_validates_and_the_chain_passes_its_files_along() -> None:
    from workbench.train.recipe import Recipe

    text = readme()
    recipe = Recipe.model_validate(yaml_block(text, "# my-recipe.yaml"))
    by_name = {args[1]: args for args in chain_commands(text)}
    assert Path(option(by_name["clean"], "-o")) == recipe.data  # train reads what clean wrote
    assert by_name["stats"][2] == str(recipe.data)
    assert by_name["train"][2] == "my-recipe.yaml"
    for command in ("eval", "report", "gate"):  # each reads the run folder train writes
        assert Path(by_name[command][2]) == recipe.run_dir, command
    assert option(by_name["report"], "--gate") == option(by_name["gate"], "--thresholds") == "my-gate.yaml"


def test_the_readme_gate_file_checks_only_paths_a_run_can_have(tmp_path: Path) -> None:
    from workbench.report import gate

    path = tmp_path / "my-gate.yaml"
    path.write_text(yaml.safe_dump(yaml_block(readme(), "# my-gate.yaml")), encoding="utf-8")
    checks = gate.load(path).resolved()
    assert len(checks) == 3
    for check in checks:
        assert gate.path_problem(check.metric) is None, check.metric


def test_the_readme_stays_under_1500_words() -> None:
    assert len(readme().split()) <= 1500


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (letters, digits, `-`, `_` and spaces kept),
    spaces to hyphens."""
    text = heading.strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for m in re.finditer(r"(?m)^#{1,6} (.+)$", text):
        slug = _slug(m[1])
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def relative_links(path: Path) -> list[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans are not links
    return [t for t in _LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_every_relative_link_in_the_readme_and_the_docs_points_at_a_file_and_heading_that_exist() -> None:
    pages = [README, *sorted((REPO / "docs").glob("*.md"))]
    checked = 0
    for page in pages:
        for target in relative_links(page):
            file, _, anchor = target.partition("#")
            linked = (page.parent / file).resolve() if file else page
            assert linked.exists(), f"{page.relative_to(REPO)}: link to {target}: no such file"
            if anchor and linked.suffix == ".md":
                assert anchor in anchors(linked), f"{page.relative_to(REPO)}: link to {target}: no such heading"
            checked += 1
    assert checked > 40


def test_every_docs_page_is_reached_from_the_readme_by_links() -> None:
    reached, todo = {README}, [README]
    while todo:
        page = todo.pop()
        for target in relative_links(page):
            linked = (page.parent / target.partition("#")[0]).resolve()
            if linked.suffix == ".md" and linked.is_relative_to(REPO) and linked not in reached:
                reached.add(linked)
                todo.append(linked)
    direct = {(README.parent / t.partition("#")[0]).resolve() for t in relative_links(README)}
    shown = {(page.parent / t).resolve() for page in reached for t in _IMAGE.findall(page.read_text(encoding="utf-8"))}
    for page in sorted((REPO / "docs").iterdir()):
        if page.is_dir():  # a folder of images: each one shown by a page the README reaches
            for image in sorted(p for p in page.rglob("*") if p.is_file()):
                assert image in shown, f"{image.relative_to(REPO)} is not shown by a page the README reaches"
            continue
        assert page in reached | direct, f"docs/{page.name} is not linked from the README or a page it links"


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("# The output set of `wb clean`\n\n## 中文 标题\n", encoding="utf-8")
    page = tmp_path / "a.md"
    page.write_text(
        "[x](b.md#the-output-set-of-wb-clean) [y](c.md) `[z](d.md)` [w](b.md#中文-标题)\n", encoding="utf-8"
    )
    assert relative_links(page) == ["b.md#the-output-set-of-wb-clean", "c.md", "b.md#中文-标题"]
    assert anchors(tmp_path / "b.md") == {"the-output-set-of-wb-clean", "中文-标题"}


USER_DATA = [
    {
        "instruction": "Write a Python function that adds two numbers.",
        "input": "",
        "output": "def add(a, b):\n    return a + b",
    },
    {"instruction": "把这句话翻译成英文。", "input": "今天天气很好。", "output": "The weather is nice today."},
    {"instruction": "What is the capital of France?", "input": "", "output": "Paris."},
    {"instruction": "What is the capital of France?", "input": "", "output": "Paris."},  # a duplicate: dropped
    {"instruction": "写一句关于春天的诗。", "input": "", "output": "春眠不觉晓，处处闻啼鸟。"},
    {"instruction": "Name a prime number above 10.", "input": "", "output": "11"},
    {"instruction": "Summarise: the cat sat on the mat.", "input": "", "output": "A cat sat on a mat."},
    {"instruction": "Tell me a joke.", "input": "", "output": "As an AI language model, I cannot tell jokes."},
    {"instruction": "3+4=", "input": "", "output": "7"},
    {"instruction": "列出三种水果。", "input": "", "output": "苹果、香蕉、橙子"},
    {"instruction": "Give an antonym of 'hot'.", "input": "", "output": "cold"},
    {"instruction": "Reverse the word 'abc'.", "input": "", "output": "cba"},
]
USER_EVAL = [
    {"instruction": "What is the capital of Japan?", "input": "", "output": "Tokyo."},
    {"instruction": "5+6=", "input": "", "output": "11"},
    {"instruction": "写一句关于秋天的诗。", "input": "", "output": "停车坐爱枫林晚，霜叶红于二月花。"},
]


@pytest.mark.slow
def test_the_readme_chain_runs_on_a_users_file(tmp_path: Path, wb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The six commands exactly as the README shows them, on a user's bilingual file, with the README's recipe and
    gate file; only the model is the tiny test model, and training and evaluation are cut short by options appended
    to the README's lines."""
    pytest.importorskip("peft", reason="needs the training extra")
    from workbench.models.base import tiny_model_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WB_CACHE", str(tmp_path / "cache"))
    text = readme()
    write_jsonl(tmp_path / "my-data.jsonl", USER_DATA)
    write_jsonl(tmp_path / "my-eval.jsonl", USER_EVAL)
    (tmp_path / "my-recipe.yaml").write_text(yaml.safe_dump(yaml_block(text, "# my-recipe.yaml")), encoding="utf-8")
    (tmp_path / "my-gate.yaml").write_text(yaml.safe_dump(yaml_block(text, "# my-gate.yaml")), encoding="utf-8")
    tiny = str(tiny_model_dir(tmp_path / "tiny"))
    shorter = {
        "train": [f"model={tiny}", "max_steps=2", "max_length=128", "batch_size=2"],
        "eval": ["--probe-limit", "2", "--max-new-tokens", "8"],
    }
    for args in chain_commands(text):
        command = args[1]
        args = [tiny if a == "embedded" else a for a in args[1:]] + shorter.get(command, [])
        result = wb(*args)
        if command == "gate":  # the tiny model may miss a threshold (1); bad input (2) would be a broken README
            assert result.exit_code in (0, 1), result.output
            assert all(p in result.stdout for p in ("task.n", "task.rouge_l.delta_lower", "general_en")), result.stdout
        else:
            assert result.exit_code == 0, f"wb {' '.join(args)}: {result.output}"
    assert (tmp_path / "data" / "clean.dropped.jsonl").read_text(encoding="utf-8").count("\n") == 2
    assert (tmp_path / "runs" / "my-run" / "eval" / "metrics.json").exists()
    assert (tmp_path / "reports" / "my-run.html").exists()
