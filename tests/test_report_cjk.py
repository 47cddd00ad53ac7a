"""The report renders Chinese with a Chinese face and diffs Chinese answers per character."""

from __future__ import annotations

import re
from pathlib import Path

from report_fixtures import make_run

from workbench.report.html import build_report, word_diff

CJK_FACES = ("PingFang SC", "Microsoft YaHei", "Noto Sans CJK SC", "Source Han Sans SC")


def test_the_page_font_stacks_name_cjk_faces_before_the_generic_family(tmp_path: Path) -> None:
    page = build_report([make_run(tmp_path / "w")], tmp_path / "r.html").html.read_text(encoding="utf-8")
    body = re.search(r"body \{[^}]*font: [^;]*;", page)
    assert body is not None
    stack = [f.strip().strip('"') for f in body.group(0).split("font: 14px/1.5", 1)[1].rstrip(";").split(",")]
    assert stack[-1] == "sans-serif"
    for face in CJK_FACES:
        assert face in stack[:-1], face
    # Latin faces come first, so English keeps its own face and only CJK glyphs fall through to a CJK font.
    assert stack.index("Segoe UI") < stack.index("PingFang SC")


def test_word_diff_splits_chinese_per_character_next_to_latin_words() -> None:
    segments = word_diff("用Python写代码。", "用Java写代码！")
    assert [t for c, t in segments if c == "diff"] == ["Java", "！"]
    assert "".join(t for _, t in segments) == "用Java写代码！"
