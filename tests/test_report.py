"""`wb report`: one self-contained, escaped, offline HTML page plus Markdown and JSON; partial runs; two runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from report_fixtures import SCRIPT, headless_chromium, make_run

from workbench.report import html as report_html
from workbench.report.eval_views import MAX_IMPROVEMENTS, MAX_REGRESSIONS
from workbench.report.formatting import word_diff
from workbench.report.html import build_report
from workbench.report.summary import load_run

GATE = REPO / "pipelines" / "gate.yaml"
SECTIONS = ("data", "training", "task", "forgetting", "ab", "manifests")


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path / "w")


def sections(page: str) -> list[str]:
    return re.findall(r'data-section="([\w-]+)"', page)


def assert_offline(page: str) -> None:
    """Nothing in the page can make the browser fetch or run anything."""
    assert not re.search(r"<script", page, re.IGNORECASE), "a script element in the page"
    assert not re.search(r"<(link|iframe|object|embed|img|video|audio|source)\b", page, re.IGNORECASE)
    assert not re.search(r"""\b(src|href|action|srcset|poster)\s*=\s*["']?\s*(https?:|//)""", page, re.IGNORECASE)
    assert "@import" not in page and "url(" not in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


def test_report_writes_html_markdown_and_json_under_reports(
    run: Path, tmp_path: Path, wb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = wb("report", run)
    assert result.exit_code == 0, result.output
    html, md, js = (tmp_path / "reports" / f"demo.{ext}" for ext in ("html", "md", "json"))
    assert f"wrote {Path('reports/demo.html')}, {Path('reports/demo.md')}, {Path('reports/demo.json')}" in result.stdout
    page = html.read_text(encoding="utf-8")
    assert sections(page) == ["data", "training", "task", "forgetting", "ab", "manifests"]
    assert "Not in this run" not in page
    doc = json.loads(js.read_text(encoding="utf-8"))
    summary = doc["runs"][0]["summary"]
    assert summary["task"]["metrics"]["rouge_l"]["tuned"] == pytest.approx(0.6581, abs=1e-4)
    assert summary["clean"]["dropped_fraction"] == pytest.approx(11 / 312, abs=1e-6)
    assert summary["train"]["final_loss"] == 1.3 and summary["missing"] == {}
    assert doc["runs"][0]["gate"] is None and doc["comparison"] is None
    text = md.read_text(encoding="utf-8")
    assert text.startswith("## wb report: demo") and "| rouge\\_l | 0.658 [" in text
    assert "**Data**: read 312 → rejected 1 → dropped 11 → kept 300" in text


def test_every_output_is_escaped(run: Path, tmp_path: Path) -> None:
    files = build_report([run], tmp_path / "r.html")
    page = files.html.read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert" not in page and "<script" not in page.lower()
    assert "&lt;b&gt;bold&lt;/b&gt; &amp;amp; &lt;a href=" not in page  # escaped once, not twice
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;a href=&#34;https://example.com/x&#34;&gt;" in page
    assert "a + b  # a &lt; b &amp;&amp; b &gt; a" in page  # code keeps its spacing and comes out as text
    assert_offline(page)
    md = files.markdown.read_text(encoding="utf-8")
    assert "<script" not in md


def test_markdown_escapes_names_that_would_break_a_table(run: Path, tmp_path: Path) -> None:
    metrics = run / "eval" / "metrics.json"
    doc = json.loads(metrics.read_text(encoding="utf-8"))
    doc["forgetting"]["a|b<i>"] = doc["forgetting"].pop("general_en")
    metrics.write_text(json.dumps(doc), encoding="utf-8")
    files = build_report([run], tmp_path / "r.html")
    md = files.markdown.read_text(encoding="utf-8")
    assert "| a\\|b&lt;i&gt; | accuracy |" in md
    assert "a|b&lt;i&gt;" in files.html.read_text(encoding="utf-8")


def test_gate_verdict_comes_first_and_report_still_exits_0(run: Path, tmp_path: Path, wb: Any) -> None:
    result = wb("report", run, "-o", tmp_path / "out" / "x.html", "--gate", GATE)
    assert result.exit_code == 0, result.output
    assert "gate failed: 6 of 8 checks pass, 2 fail (demo)" in result.stdout
    page = (tmp_path / "out" / "x.html").read_text(encoding="utf-8")
    assert sections(page)[0] == "gate"
    assert "Gate failed: 6 of 8 checks pass, 2 fail<" in page and "too few to decide" in page
    doc = json.loads((tmp_path / "out" / "x.json").read_text(encoding="utf-8"))
    assert doc["runs"][0]["gate"]["passed"] is False and doc["runs"][0]["gate"]["counts"]["fail"] == 2
    assert "**Gate: ❌ failed**: 6 of 8 checks pass, 2 fail (" in (tmp_path / "out" / "x.md").read_text(
        encoding="utf-8"
    )


def test_a_run_without_eval_renders_data_and_training_and_says_what_is_missing(tmp_path: Path) -> None:
    trained = make_run(tmp_path / "w", name="trained", evaluate=False)
    files = build_report([trained], tmp_path / "t.html")
    page = files.html.read_text(encoding="utf-8")
    assert sections(page) == ["notes", *SECTIONS]
    assert "Output length of kept records" in page and "<polyline" in page  # data and loss curve are there
    assert page.count("Not in this run: no evaluation") == 3  # task, forgetting, A/B
    assert "run `wb eval" in page
    md = files.markdown.read_text(encoding="utf-8")
    assert "**Training**: lora on embedded" in md and "- eval: no evaluation" in md


def test_an_eval_only_folder_without_base_or_train_manifest_renders_what_it_has(
    tmp_path: Path, wb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    preds = make_run(tmp_path / "w", name="preds", train=False, base=False)
    monkeypatch.chdir(tmp_path)
    result = wb("report", preds / "eval")  # the eval folder itself works too
    assert result.exit_code == 0, result.output
    page = (tmp_path / "reports" / "preds.html").read_text(encoding="utf-8")
    assert sections(page) == ["notes", *SECTIONS]
    assert "no train manifest" in page and "no base-model scores" in page
    assert "No base-model scores, so no comparison with the base model." in page
    assert "[0.650, 0.778]" in page  # the tuned interval is shown
    assert_offline(page)


def test_a_train_manifest_whose_data_moved_still_renders_and_clean_stats_can_be_given(
    run: Path, tmp_path: Path, wb: Any
) -> None:
    data = tmp_path / "w" / "data"
    moved = tmp_path / "elsewhere"
    shutil.move(data, moved)
    files = build_report([run], tmp_path / "a.html")
    assert "cleaning stats for data/clean.jsonl not found" in files.html.read_text(encoding="utf-8")
    result = wb("report", run, "-o", tmp_path / "b.html", "--clean-stats", moved / "clean.stats.json")
    assert result.exit_code == 0
    assert "dropped: exact_duplicate" in (tmp_path / "b.html").read_text(encoding="utf-8")


def test_a_truncated_last_log_line_is_a_warning_not_an_error(run: Path, tmp_path: Path) -> None:
    log = run / "trainer_log.jsonl"
    log.write_text(log.read_text(encoding="utf-8") + '{"step": 13, "lo', encoding="utf-8")
    files = build_report([run], tmp_path / "r.html")
    assert "last line is incomplete (run interrupted?); ignored" in files.html.read_text(encoding="utf-8")


def test_bad_input_exits_2_with_one_line(run: Path, tmp_path: Path, wb: Any) -> None:
    (run / "eval" / "metrics.json").write_text("[1, 2]", encoding="utf-8")
    result = wb("report", run, "-o", tmp_path / "r.html")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {run / 'eval' / 'metrics.json'}: eval metrics must be a JSON object"
    assert not (tmp_path / "r.html").exists()
    result = wb("report", run, run, run)
    assert result.exit_code == 2 and "one run folder, or two to compare; got 3" in result.stderr
    result = wb("report", tmp_path / "missing")
    assert result.exit_code == 2 and "no such run folder" in result.stderr


def test_two_runs_side_by_side_with_the_difference(tmp_path: Path, wb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    a = make_run(tmp_path / "a", name="base-lr")
    b = make_run(tmp_path / "b", name="high-lr", seed=3, quality=0.65, loss_scale=0.9)
    monkeypatch.chdir(tmp_path)
    result = wb("report", a, b, "--gate", GATE)
    assert result.exit_code == 0, result.output
    page = (tmp_path / "reports" / "base-lr-vs-high-lr.html").read_text(encoding="utf-8")
    assert sections(page)[:3] == ["gate-summary", "gate-summary", "comparison"]
    for prefix in ("a-", "b-"):
        for name in ("gate", *SECTIONS):
            assert f'id="{prefix}{name}"' in page
    doc = json.loads((tmp_path / "reports" / "base-lr-vs-high-lr.json").read_text(encoding="utf-8"))
    rows = {r["metric"]: r for r in doc["comparison"]}
    rouge = rows["task.rouge_l.tuned"]
    assert rouge["diff"] == pytest.approx(rouge["b"] - rouge["a"])
    assert rouge["lower"] < rouge["diff"] < rouge["upper"] and rouge["paired_n"] == 40
    assert rows["forgetting.general_zh.accuracy.tuned"]["paired_n"] == 30
    assert rows["train.final_loss"]["diff"] == pytest.approx(1.17 - 1.3)
    md = (tmp_path / "reports" / "base-lr-vs-high-lr.md").read_text(encoding="utf-8")
    assert (
        "## wb report: base-lr (A) vs high-lr (B)" in md and "| task.rouge\\_l.tuned | 0.658 | 0.699 | +0.041 [" in md
    )
    assert_offline(page)


def test_ten_thousand_items_give_a_capped_page(tmp_path: Path) -> None:
    big = make_run(tmp_path / "w", name="big", n_task=10_000)
    files = build_report([big], tmp_path / "big.html", GATE)
    page = files.html.read_text(encoding="utf-8")
    assert len(page.encode()) < 400_000, len(page)
    assert page.count('<div class="item">') == MAX_REGRESSIONS + MAX_IMPROVEMENTS
    # The A/B section follows the set's headline metric (the first item metric in registry order: json_valid).
    task = json.loads(files.json.read_text(encoding="utf-8"))["runs"][0]["summary"]["task"]
    losses = task["metrics"]["json_valid"]["losses"]
    assert f"{losses - MAX_REGRESSIONS:,} more items where tuned lost not shown" in page
    assert "10,000 items" in page
    assert_offline(page)


def test_the_page_is_deterministic(run: Path, tmp_path: Path) -> None:
    one = build_report([run], tmp_path / "1.html", GATE)
    two = build_report([run], tmp_path / "2.html", GATE)
    assert one.html.read_bytes() == two.html.read_bytes()
    assert one.json.read_bytes() == two.json.read_bytes()


def test_word_diff_marks_words_not_in_the_reference_and_keeps_the_text() -> None:
    segments = word_diff("The weather is nice today.", "The weather is very nice today!")
    assert "".join(t for _, t in segments) == "The weather is very nice today!"
    assert [t for c, t in segments if c == "diff"] == ["very ", "!"]
    zh = word_diff("长城是中国古代的军事防御工程。", "长城是中国古代修建的防御工程。")
    assert "".join(t for _, t in zh) == "长城是中国古代修建的防御工程。"
    assert [t for c, t in zh if c == "diff"] == ["修建"]


def test_report_and_gate_modules_do_not_import_torch(run: Path, tmp_path: Path) -> None:
    code = (
        "import sys; from workbench.cli import main; "
        f"sys.argv = ['wb', 'report', {str(run)!r}, '-o', {str(tmp_path / 'r.html')!r}, '--gate', {str(GATE)!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'polars') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_template_ships_inside_the_package() -> None:
    assert (report_html.TEMPLATES / "report.html.j2").is_file()
    assert report_html.TEMPLATES.is_relative_to(Path(report_html.__file__).parent)


# -- in a real browser ----------------------------------------------------------------------------------------------


@pytest.mark.browser
def test_the_page_renders_offline_in_headless_chromium(tmp_path: Path) -> None:
    run = make_run(tmp_path / "w")
    other = make_run(tmp_path / "v", name="other", seed=5, quality=0.6)
    single = build_report([run], tmp_path / "single.html", GATE).html
    pair = build_report([run, other], tmp_path / "pair.html", GATE).html

    with headless_chromium() as browser:
        for path, ids in (
            (single, ["gate", *SECTIONS]),
            (pair, ["comparison", *(f"{x}{s}" for x in ("a-", "b-") for s in ("gate", *SECTIONS))]),
        ):
            page = browser.new_page()
            requests: list[str] = []
            problems: list[str] = []
            dialogs: list[str] = []
            page.on("request", lambda r, requests=requests: requests.append(r.url))
            page.on("console", lambda m, p=problems: p.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e, p=problems: p.append(str(e)))
            page.on("dialog", lambda d, seen=dialogs: (seen.append(d.message), d.dismiss()))
            url = path.resolve().as_uri()
            page.goto(url, wait_until="load")
            page.wait_for_timeout(200)
            for section_id in ids:
                box = page.locator(f"#{section_id}").bounding_box()
                assert box is not None and box["height"] > 20, section_id
            assert page.locator("script").count() == 0
            assert page.get_by_text(SCRIPT, exact=False).count() >= 1  # shown as text
            assert page.locator("svg polyline").count() >= 1
            assert requests == [url], requests
            assert problems == [], problems
            assert dialogs == [], dialogs
            page.close()


def test_corpus_scores_are_shown_on_the_0_to_1_scale_of_the_sentence_scores(run: Path, tmp_path: Path) -> None:
    page = build_report([run], tmp_path / "r.html").html.read_text(encoding="utf-8")
    corpus = re.search(r'<table data-part="corpus">.*?</table>', page, flags=re.S)
    assert corpus is not None
    assert '<th class="num">tuned (0–1)</th><th class="num">base (0–1)</th>' in corpus.group(0)
    cells = re.findall(r'<td class="num">([^<]*)</td>', corpus.group(0))
    # metrics.json holds sacrebleu's 23.1 and 11.0 (BLEU) and 48.2 and 40.1 (chrF): shown as 0.231 ... like bleu's 0.x
    assert cells[1:3] == ["0.231", "0.110"] and "0.482" in cells and "0.401" in cells
    assert "23.10" not in corpus.group(0) and "48.20" not in corpus.group(0)


_TABLE_FIT = """() => {
  const problems = [];
  for (const table of document.querySelectorAll('table')) {
    const box = table.parentElement, style = getComputedStyle(box);
    const room = box.getBoundingClientRect().right - parseFloat(style.paddingRight) - parseFloat(style.borderRightWidth);
    const name = (table.closest('section') || document.body).id + ' ' + (table.dataset.part || 'table');
    const over = table.getBoundingClientRect().right - room;
    if (over > 1) problems.push(name + ': ' + Math.round(over) + 'px too wide');
  }
  if (document.documentElement.scrollWidth > window.innerWidth) problems.push('the page scrolls sideways');
  return problems;
}"""


@pytest.mark.browser
def test_every_table_fits_a_1280_pixel_window(tmp_path: Path) -> None:
    run = make_run(tmp_path / "w")
    metrics = run / "eval" / "metrics.json"
    doc = json.loads(metrics.read_text(encoding="utf-8"))
    # A user's own probe set, named as such sets are: one long word, in a row of eleven cells.
    doc["forgetting"]["customer_support_regression_probes_zh_2026q3"] = doc["forgetting"]["general_zh"]
    metrics.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    other = make_run(tmp_path / "v", name="other", seed=5, quality=0.6)
    pages = [
        build_report([run], tmp_path / "one.html", GATE).html,
        build_report([run, other], tmp_path / "ab.html").html,
    ]
    with headless_chromium() as browser:
        for path in pages:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(path.resolve().as_uri(), wait_until="load")
            assert page.locator('table[data-part="forgetting"]').count() >= 1
            assert page.locator('table[data-part="corpus"]').count() >= 1
            assert page.evaluate(_TABLE_FIT) == [], path.name
            page.close()


def test_the_github_actions_example_uses_options_wb_has() -> None:
    import shlex

    import typer
    import yaml

    from workbench.cli import app

    workflow = yaml.safe_load((REPO / "docs" / "github-actions.yml").read_text(encoding="utf-8"))
    steps = workflow["jobs"]["gate"]["steps"]
    lines = [line.strip() for s in steps for line in str(s.get("run", "")).splitlines()]
    commands = [line for line in lines if line.startswith("wb ")]
    assert {c.split()[1] for c in commands} == {"clean", "train", "eval", "report", "gate"}
    assert any("GITHUB_STEP_SUMMARY" in line for line in lines)
    group = typer.main.get_command(app)
    for line in commands:
        if line.split()[1] not in ("report", "gate"):
            continue  # other stages are documented with their own commands
        args = shlex.split(line.replace("$RUN", "x"))[1:]
        command = group.commands[args[0]]  # type: ignore[attr-defined]
        command.make_context(args[0], args[1:])  # raises on an unknown option


# -- on files the real stages wrote ---------------------------------------------------------------------------------

REAL_TRAIN = [
    {"instruction": f"What is {a}+{b}?", "input": "", "output": f"{a}+{b}={a + b}"}
    for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]
] + [
    {"instruction": "中国的首都是哪里？", "input": "", "output": "北京"},
    {"instruction": "What is 1+2?", "input": "", "output": "1+2=3"},  # an exact duplicate: dropped
    {"instruction": "Tell me a joke.", "input": "", "output": "As an AI language model, I cannot tell jokes."},
]
REAL_EVAL = [
    {"instruction": "20+22= 用JSON回答", "input": "", "output": '{"result": 42}', "answer_type": "json"},
    {"instruction": "Echo this.", "input": SCRIPT, "output": SCRIPT},
    {"instruction": "日本的首都是哪里？", "input": "", "output": "东京"},
]


@pytest.mark.slow
def test_a_real_clean_train_eval_run_reports_and_gates(
    tmp_path: Path, wb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("peft", reason="needs the training extra")
    import csv

    from conftest import write_jsonl

    from workbench.models.base import tiny_model_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WB_CACHE", str(tmp_path / "cache"))
    write_jsonl(tmp_path / "raw.jsonl", REAL_TRAIN)
    write_jsonl(tmp_path / "eval.jsonl", REAL_EVAL)
    assert wb("clean", "raw.jsonl", "-o", "data/clean.jsonl", "-q").exit_code == 0
    tiny = tiny_model_dir(tmp_path / "tiny")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"name: real\nmodel: {tiny}\ndata: data/clean.jsonl\noutput_dir: runs\nmax_length: 64\nmax_steps: 4\n"
        "batch_size: 2\nlr: 0.02\neval_data: eval.jsonl\neval_steps: 2\nlogging_steps: 1\nsave_steps: 1000\n",
        encoding="utf-8",
    )
    trained = wb("train", recipe, "-q")
    assert trained.exit_code == 0, trained.stderr
    args = ("eval", "runs/real", "--data", "eval.jsonl", "--probe-limit", "2", "--max-new-tokens", "8", "-q")
    evaluated = wb(*args)
    assert evaluated.exit_code == 0, evaluated.stderr
    with Path("runs/real/eval/review_sample.csv").open(encoding="utf-8") as f:
        sample = list(csv.DictReader(f))
    for row in sample:
        row["verdict"] = "tie"
    with Path("filled.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(sample[0]))
        writer.writeheader()
        writer.writerows(sample)
    assert wb("eval", "runs/real", "--import-review", "filled.csv").exit_code == 0

    result = wb("report", "runs/real", "--gate", GATE)
    assert result.exit_code == 0, result.stderr
    page = Path("reports/real.html").read_text(encoding="utf-8")
    assert sections(page) == ["gate", "notes", *SECTIONS]  # notes: the eval's warnings (tiny set, overlap)
    assert "Not in this run" not in page
    assert "dropped: exact_duplicate" in page and "dropped: refusal" in page
    assert page.count("<polyline") == 2  # train and eval loss
    assert "general_text_en" in page and "perplexity" in page  # text probes: lower is better
    assert f"Human review of {len(sample)} items" in page
    assert_offline(page)
    summary = json.loads(Path("reports/real.json").read_text(encoding="utf-8"))["runs"][0]["summary"]
    assert summary["clean"]["dropped"] == 2 and summary["train"]["final_eval_loss"] is not None
    assert summary["review"]["verdicts"]["tie"] == len(sample)

    gated = wb("gate", "runs/real", "-t", GATE, "--junit", "gate.xml")
    # Every path is valid; one check is missing (one arithmetic item): its table row, and the count line.
    assert gated.exit_code == 1 and gated.stdout.count("missing") == 2
    assert ", 1 missing," in gated.stdout.splitlines()[-1]
    assert "missing: task.json_valid.delta_lower: no interval: 1 item has this metric" in gated.stderr
    gated = wb("gate", "runs/real", "-t", thresholds_file(tmp_path, ["review.verdicts.tie >= 1", "task.n <= 3"]))
    assert gated.exit_code == 0, gated.output


def thresholds_file(tmp_path: Path, checks: list[str]) -> Path:
    path = tmp_path / "checks.yaml"
    path.write_text("checks:\n" + "".join(f'  - "{c}"\n' for c in checks), encoding="utf-8")
    return path


def test_a_torn_cleaning_set_is_reported_as_incomplete(run: Path, tmp_path: Path) -> None:
    assert not any("incomplete" in w or "torn" in w for w in load_run(run).summary["warnings"])
    data = tmp_path / "w" / "data" / "clean.jsonl"
    data.write_text(data.read_text(encoding="utf-8") + "{}\n", encoding="utf-8")  # replaced after the manifest
    assert any("clean.jsonl: does not match" in w and "torn" in w for w in load_run(run).summary["warnings"])
    (tmp_path / "w" / "data" / "clean.manifest.json").unlink()  # a kill before the manifest was written
    assert any("an incomplete set" in w for w in load_run(run).summary["warnings"])


def test_make_demo_writes_only_where_git_ignores_and_leaves_the_sample_report_alone() -> None:
    """A fresh clone stays clean after `make demo`: every file the demo target writes lies under an ignored folder,
    and the committed sample in reports/ is never its output (docs/demo.md quotes it, with the CPU it came from)."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    variables = dict(re.findall(r"^(\w+) :?= (.+)$", makefile, flags=re.M))
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", makefile, flags=re.M)
    assert recipe is not None
    commands = [line.strip() for line in recipe.group(1).splitlines() if not line.strip().startswith("@echo")]
    written = []
    for command in commands:
        args = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), m.group(0)), command).split()
        written += [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-o", "--output", "--junit")]
    assert "runs/demo/report.html" in written and "out/demo/export" in written and len(written) == 4, written
    ignored = [line.strip().strip("/") for line in (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()]
    for path in written:
        assert path.split("/")[0] in ignored, f"make demo writes {path}, which git tracks"
    assert not any(p.startswith("reports/") for p in written)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "ends with the report at\n`runs/demo/report.html`" in readme
    demo = (REPO / "docs" / "demo.md").read_text(encoding="utf-8")
    assert "ends with the report at\n`runs/demo/report.html`" in demo
    assert "Figures of the committed sample report (fp32 on an AVX2-only AMD EPYC" in demo


def test_the_comparison_of_two_runs_takes_its_intervals_from_the_eval_statistics(tmp_path: Path) -> None:
    # The report has no bootstrap of its own: B − A over the common items is evaluate/compare's paired bootstrap.
    from workbench.evaluate import compare
    from workbench.report.comparison import compare_runs
    from workbench.report.summary import scored_items

    a = load_run(make_run(tmp_path / "a", name="a"))
    b = load_run(make_run(tmp_path / "b", name="b", seed=3, quality=0.65))
    row = next(r for r in compare_runs(a, b) if r["metric"] == "task.rouge_l.tuned")
    per_item = [{str(x["id"]): x["tuned"]["rouge_l"] for x in scored_items(run)["task"]} for run in (a, b)]
    ids = sorted(set(per_item[0]) & set(per_item[1]))
    delta, lower, upper = compare.paired_bootstrap([per_item[1][i] for i in ids], [per_item[0][i] for i in ids], 0)
    assert (row["lower"], row["upper"], row["paired_n"]) == (lower, upper, len(ids))
    assert row["diff"] == pytest.approx(delta)
