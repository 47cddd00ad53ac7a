"""The report renders Chinese with a Chinese face and diffs Chinese answers per character."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from report_fixtures import headless_chromium, make_run

from workbench.report.formatting import word_diff
from workbench.report.html import build_report

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


_GLYPHS = """() => {
  const font = getComputedStyle(document.body).font;  // the page's own stack, CJK faces included
  const draw = (text) => {
    const canvas = document.createElement('canvas');
    canvas.width = 48;
    canvas.height = 32;
    const ctx = canvas.getContext('2d');
    ctx.font = font;
    ctx.textBaseline = 'top';
    ctx.fillText(text, 4, 4);
    return Array.from(ctx.getImageData(0, 0, canvas.width, canvas.height).data).join(',');
  };
  return {'中': draw('中'), '国': draw('国'), '城': draw('城'), 'missing': draw('\\u{10FFFD}'), 'blank': draw('')};
}"""


@pytest.mark.browser
def test_chinese_in_the_page_renders_as_glyphs_not_empty_boxes(tmp_path: Path) -> None:
    """Without a CJK font Chromium draws every Chinese character as the same empty box (the glyph of a code point no
    font has), and a page full of boxes still passes every other browser check. Here each character must draw
    something of its own: different from the others, from the missing-glyph box, and from nothing."""
    page_path = build_report([make_run(tmp_path / "w")], tmp_path / "r.html").html
    assert "长城" in page_path.read_text(encoding="utf-8")
    with headless_chromium() as browser:
        page = browser.new_page()
        page.goto(page_path.resolve().as_uri(), wait_until="load")
        drawn = page.evaluate(_GLYPHS)
    chars = ["中", "国", "城"]
    for ch in chars:
        draws_nothing = drawn[ch] == drawn["blank"]
        assert not draws_nothing, f"{ch} draws nothing"
        is_the_box = drawn[ch] == drawn["missing"]
        assert not is_the_box, f"{ch} draws the missing-glyph box: no CJK font (apt-get install fonts-noto-cjk)"
    distinct = len({drawn[ch] for ch in chars})
    assert distinct == len(chars), "different characters draw the same box: no CJK font"
