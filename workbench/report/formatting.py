"""How the report writes a value in a table cell: capped text, signed differences, shares, intervals, durations, and
the prediction marked against its reference word by word. Numbers use `workbench.charts.fmt`, as the charts do, so a
value reads the same in a table and in a chart's tick or title."""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any, TypeGuard

import orjson

from workbench.charts import fmt
from workbench.text import diff_tokens

MAX_TEXT = 1200  # characters of one field in a table cell


def cap(text: Any, limit: int = MAX_TEXT) -> str:
    s = "" if text is None else str(text)
    if len(s) <= limit:
        return s
    return f"{s[:limit]}… ({len(s) - limit:,} more characters)"


def signed(x: Any, digits: int = 3) -> str:
    if not isinstance(x, int | float) or isinstance(x, bool):
        return "-"
    return ("+" if x > 0 else "") + fmt(x, digits)


def pct(part: Any, whole: Any) -> str:
    if not isinstance(part, int | float) or not isinstance(whole, int | float) or not whole:
        return "-"
    return f"{100 * part / whole:.1f}%"


def word_diff(reference: str, prediction: str) -> list[tuple[str, str]]:
    """The prediction as (class, text) segments: `same` where it matches the reference, `diff` where it does not."""
    ref, pred = diff_tokens(reference), diff_tokens(prediction)
    segments: list[tuple[str, str]] = []
    matcher = difflib.SequenceMatcher(None, ref, pred, autojunk=False)
    for op, _i1, _i2, j1, j2 in matcher.get_opcodes():
        if j1 == j2:
            continue
        cls = "same" if op == "equal" else "diff"
        text = "".join(pred[j1:j2])
        if segments and segments[-1][0] == cls:
            segments[-1] = (cls, segments[-1][1] + text)
        else:
            segments.append((cls, text))
    return segments


def is_num(x: Any) -> TypeGuard[float]:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def interval_text(lo: Any, hi: Any, signed_: bool = False) -> str:
    if not is_num(lo) or not is_num(hi):
        return "-"
    f = signed if signed_ else fmt
    return f"[{f(lo)}, {f(hi)}]"


def plain(v: Any) -> str:
    if isinstance(v, dict | list):
        return cap(orjson.dumps(v).decode(), 300)
    return cap(fmt(v) if isinstance(v, int | float) else v, 300)


def duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    s = float(seconds)
    if s < 90:
        return f"{s:.1f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def html_templates(folder: Path, keep_trailing_newline: bool = False) -> Any:
    """The Jinja environment of wb's HTML pages (the report, `wb review`): every value escaped unless marked safe
    (nothing is), an undefined name an error, and the `fmt` filter the charts use."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=keep_trailing_newline,
    )
    env.filters["fmt"] = fmt
    return env
