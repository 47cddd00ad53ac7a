"""Multiple-choice files: read the shapes people have into one list of items, with every bad row named.

Files are read by `workbench.io` (the one reader: gzip/zstd, UTF-8 with or without BOM or UTF-16/32, and the
format told by content, not by extension): CSV with or without a header, JSON Lines, a JSON array, Parquet, Arrow.
Row shapes:
- MMLU CSV, no header: `question,A,B,C,D,answer` (the answer a letter); quoted fields may hold commas and newlines.
- C-Eval / CMMLU with a header (CSV) or columns (Parquet, JSON): `Question,A,B,C,D,Answer` (any case), optionally
  an index or `id` column first and other columns (C-Eval's `explanation`) after; any number of letter columns.
- `question` + `choices` (a list, a {"A": ...} map, or Hugging Face's {"label": [...], "text": [...]}; `options` is
  read the same) + `answer` (a letter, or a 0-based index into the list) or `answerKey`.
- ARC: `{"question": {"stem": ..., "choices": [{"label", "text"}, ...]}, "answerKey": ...}`; labels may be
  letters or digits (`1`-`4`), the answer key names one of them.

A row that cannot be an item (no question, an empty option, an answer that is none of the options, bad JSON, more
cells than the header) is a `Reject` with its line (or item, or row) and field; a file with no usable row, or not a
multiple-choice file at all, is a WbError in one line, as is a header whose option columns have a gap (A, B, D) or a
repeat, or a CSV header column with no name. A quote left open costs its own line (rejected), not the rows after it:
every physical line of a CSV file is an item, a reject, blank or the header. Options are relabelled A, B, C, ... in
their order.

Light on purpose: no torch here.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WbError
from workbench.evaluate.forgetting import Item
from workbench.io.csvrows import check_header, csv_rows
from workbench.io.reader import RecordReader
from workbench.io.sniff import sniff
from workbench.io.streams import decompression_errors, open_decompressed
from workbench.records import RecordError

LETTERS = string.ascii_uppercase


@dataclass(frozen=True)
class Reject:
    line: int
    field: str
    error: str
    unit: str = "line"  # what `line` counts: lines (CSV, JSON Lines), items (a JSON array) or rows (Parquet)

    def describe(self, path: Path | str) -> str:
        return f"{path}:{self.unit} {self.line}: field {self.field}: {self.error}"


@dataclass
class McFile:
    """The items of one multiple-choice file (question in `instruction`, letter -> text in `options`, the answer
    letter in `reference`) and the rows that could not be items."""

    name: str
    path: Path
    shape: str  # mmlu_csv | header_csv, else row shape + format: jsonl, arc_jsonl, parquet, header_parquet ...
    items: list[Item]
    rejects: list[Reject] = field(default_factory=list)


class _Bad(Exception):
    def __init__(self, field_name: str, error: str) -> None:
        super().__init__(error)
        self.field = field_name
        self.error = error


def _read_text(path: Path) -> str:
    """The file's text, decompressed and decoded (a CSV file is parsed from it row by row)."""
    stream = open_decompressed(path)[0]
    with stream, decompression_errors(path):
        data = stream.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise WbError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None


def looks_like_mc(path: Path) -> bool:
    """Whether a file's first record is a multiple-choice item (probe files are told apart by this)."""
    try:
        for items, _ in RecordReader(Path(path), batch_size=1, duplicate_keys="last").iter_items():
            for _, row, _ in items:
                return isinstance(row, dict) and _row_shape(row) is not None
    except WbError:
        return False
    return False


def load_mc(path: Path | str, name: str | None = None) -> McFile:
    """Every item of a multiple-choice file, with the rows rejected."""
    path = Path(path)
    if not path.is_file():
        raise WbError(f"{path}: no such file")
    if sniff(path).format == "csv":
        shape, items, rejects = _csv(path, _read_text(path))
    else:
        shape, items, rejects = _records(path)
    if not items:
        first = f" (first: {rejects[0].describe(path)})" if rejects else ""
        raise WbError(f"{path}: no usable multiple-choice item in {len(rejects)} rows{first}")
    stem = path.name.removesuffix(".gz").removesuffix(".zst").rsplit(".", 1)[0]
    return McFile(name or stem, path, shape, items, rejects)


# --- JSON Lines, JSON, Parquet, Arrow ----------------------------------------------------------------------------


def _row_shape(row: dict[str, Any]) -> str | None:
    q = row.get("question")
    if isinstance(q, dict) and "stem" in q:
        return "arc_"
    if "question" in row and ("choices" in row or "options" in row):
        return ""
    keys = {str(k).strip().lower() for k in row}
    if {"question", "answer"} <= keys and any(len(k) == 1 and k.upper() in LETTERS for k in keys):
        return "header_"
    return None


def _records(path: Path) -> tuple[str, list[Item], list[Reject]]:
    """The items of a file of records (`workbench.io.reader`), each row in any shape above."""
    items: list[Item] = []
    rejects: list[Reject] = []
    shapes: set[str] = set()
    reader = RecordReader(path, duplicate_keys="last")
    unit, fmt = reader.info.unit, reader.info.format
    for batch, _ in reader.iter_items():
        for n, row, _raw in batch:
            if isinstance(row, RecordError):
                rejects.append(Reject(n, "(line)", f"not valid JSON: {row.message.removeprefix('bad JSON: ')}", unit))
                continue
            if not isinstance(row, dict):
                rejects.append(Reject(n, "(line)", f"expected a JSON object, got {type(row).__name__}", unit))
                continue
            shape = _row_shape(row)
            try:
                if shape == "arc_":
                    items.append(_arc_item(n, row))
                elif shape == "":
                    items.append(_json_item(n, row))
                elif shape == "header_":
                    items.append(_table_item(n, row))
                else:
                    raise _Bad("question", "needs `question` with `choices` (or ARC's question.stem)")
                shapes.add(str(shape))
            except _Bad as e:
                rejects.append(Reject(n, e.field, e.error, unit))
    return (shapes.pop() if len(shapes) == 1 else "") + fmt, items, rejects


def _text(value: Any, field_name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Bad(field_name, f"expected text, got {type(value).__name__}")
    text = str(value).strip()
    if not text:
        raise _Bad(field_name, "empty")
    return text


def _json_item(n: int, row: dict[str, Any]) -> Item:
    key = "choices" if "choices" in row else "options"
    question = _text(row.get("question"), "question")
    raw = row[key]
    if isinstance(raw, list):
        texts = [_text(v, f"{key}[{i}]") for i, v in enumerate(raw)]
        labels = list(LETTERS[: len(texts)])
    elif isinstance(raw, dict) and set(raw) == {"label", "text"} and isinstance(raw["text"], list):
        if not isinstance(raw["label"], list) or len(raw["label"]) != len(raw["text"]):
            raise _Bad(f"{key}.label", "expected one label per choice text")
        labels = [_text(v, f"{key}.label[{i}]").upper() for i, v in enumerate(raw["label"])]
        texts = [_text(v, f"{key}.text[{i}]") for i, v in enumerate(raw["text"])]
    elif isinstance(raw, dict):
        labels = [str(k).strip().upper() for k in raw]
        texts = [_text(v, f"{key}.{k}") for k, v in raw.items()]
    else:
        raise _Bad(key, f"expected a list or a letter -> text object, got {type(raw).__name__}")
    answer = row.get("answer", row.get("answerKey"))
    if isinstance(answer, int) and not isinstance(answer, bool) and isinstance(raw, list):
        if not 0 <= answer < len(texts):
            raise _Bad("answer", f"index {answer} is outside the {len(texts)} choices (0-based)")
        answer = labels[answer]
    return _item(n, row.get("id", n), question, labels, texts, answer)


def _arc_item(n: int, row: dict[str, Any]) -> Item:
    q = row["question"]
    question = _text(q.get("stem"), "question.stem")
    choices = q.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise _Bad("question.choices", "expected a list of {label, text} objects")
    labels = [_text(c.get("label"), f"question.choices[{i}].label") for i, c in enumerate(choices)]
    texts = [_text(c.get("text"), f"question.choices[{i}].text") for i, c in enumerate(choices)]
    return _item(n, row.get("id", n), question, labels, texts, row.get("answerKey"), "answerKey")


def _table_item(n: int, row: dict[str, Any]) -> Item:
    """A row of a table with columns question, A, B, ..., answer (any case) and optionally id."""
    cells = {str(k).strip().lower(): v for k, v in row.items()}
    letters = sorted(k.upper() for k in cells if len(k) == 1 and k.upper() in LETTERS)
    if letters != list(LETTERS[: len(letters)]):
        missing = [c for c in LETTERS[: LETTERS.index(letters[-1])] if c not in letters]
        gap = f"option columns {', '.join(letters)} but no {', '.join(missing)}"
        raise _Bad("(row)", f"{gap}; they must run A, B, C, ...")
    question = _text(cells["question"], "question")
    texts = [_text(cells[c.lower()], c) for c in letters]
    answer = None if cells["answer"] is None else str(cells["answer"]).strip() or None
    return _item(n, n if cells.get("id") is None else cells["id"], question, letters, texts, answer)


def _item(
    n: int, ident: Any, question: str, labels: list[str], texts: list[str], answer: Any, answer_field: str = "answer"
) -> Item:
    if len(texts) < 2:
        raise _Bad("choices", f"needs at least 2 choices, got {len(texts)}")
    if len(texts) > len(LETTERS):
        raise _Bad("choices", f"at most {len(LETTERS)} choices, got {len(texts)}")
    if len(set(labels)) != len(labels):
        raise _Bad("choices", f"labels repeat: {labels}")
    if answer is None:
        raise _Bad(answer_field, "missing")
    key = str(answer).strip().upper()
    if key not in labels:
        raise _Bad(answer_field, f"{answer!r} is none of the choices {', '.join(labels)}")
    letters = LETTERS[: len(texts)]
    options = dict(zip(letters, texts, strict=True))
    ident = ident if isinstance(ident, int | str) and not isinstance(ident, bool) else n
    return Item(id=ident, instruction=question, reference=letters[labels.index(key)], options=options)


# --- CSV ----------------------------------------------------------------------------------------------------------


def _letter_columns(path: Path, line: int, header: list[str]) -> list[int]:
    """The columns of the options A, B, C, ... in a header; a gap (A, B, D) or a repeated name is a WbError."""
    named = [c for c in header if c in ("question", "answer", "id") or (len(c) == 1 and c.upper() in LETTERS)]
    repeated = sorted({c for c in named if named.count(c) > 1})
    if repeated:
        raise WbError(
            f"{path}:line {line}: the header names column {', '.join(c.upper() for c in repeated)} twice; "
            "rename or remove one"
        )
    letters = sorted(c.upper() for c in named if len(c) == 1)
    expected = list(LETTERS[: len(letters)])
    if letters != expected:
        missing = [c for c in LETTERS[: LETTERS.index(letters[-1])] if c not in letters]
        raise WbError(
            f"{path}:line {line}: the header has option columns {', '.join(letters)} but no {', '.join(missing)}; "
            "option columns must run A, B, C, ... without a gap (rename or remove a column)"
        )
    return [header.index(c.lower()) for c in letters]


def _csv(path: Path, text: str) -> tuple[str, list[Item], list[Reject]]:
    rows, lines = csv_rows(text)
    unreadable = [Reject(n, "(row)", why) for n, why in lines]
    if not rows:
        if unreadable:
            raise WbError(unreadable[0].describe(path))
        raise WbError(f"{path}: the file is empty")
    header = [c.strip().lower() for c in rows[0][1]]
    if "question" in header and "answer" in header and any(len(c) == 1 and c.upper() in LETTERS for c in header):
        check_header(path, header, rows[0][0])  # a column with no name would be left out quietly
        q_col, a_col = header.index("question"), header.index("answer")
        letter_cols = _letter_columns(path, rows[0][0], header)
        id_col = header.index("id") if "id" in header else (0 if header[0] == "" else None)
        items, rejects = _csv_items(rows[1:], q_col, letter_cols, a_col, id_col, len(header), exact=False)
        return "header_csv", items, sorted([*unreadable, *rejects], key=lambda r: r.line)
    width = len(rows[0][1])
    if width < 4:
        raise WbError(
            f"{path}: not a multiple-choice file: CSV rows need question, options and answer columns "
            "(MMLU: question,A,B,C,D,answer; or a header Question,A,B,C,D,Answer), JSONL needs question + choices"
        )
    items, rejects = _csv_items(rows, 0, list(range(1, width - 1)), width - 1, None, width, exact=True)
    return "mmlu_csv", items, sorted([*unreadable, *rejects], key=lambda r: r.line)


def _csv_items(
    rows: list[tuple[int, list[str]]],
    q_col: int,
    letter_cols: list[int],
    a_col: int,
    id_col: int | None,
    width: int,
    exact: bool,
) -> tuple[list[Item], list[Reject]]:
    """Items of CSV rows. `exact`: every row has `width` columns (no header: the first row's); otherwise a row has
    at most `width` (the header's: a cell beyond it would be lost) and at least the columns read."""
    items: list[Item] = []
    rejects: list[Reject] = []
    need = max([q_col, a_col, *letter_cols]) + 1
    letters = list(LETTERS[: len(letter_cols)])
    for n, row in rows:
        try:
            if exact and len(row) != width:
                raise _Bad("(row)", f"{len(row)} columns, the file's first row has {width}")
            if len(row) > width:
                raise _Bad("(row)", f"{len(row)} columns, the header has {width}")
            if len(row) < need:
                raise _Bad("(row)", f"{len(row)} columns, the header has {need}")
            question = _text(row[q_col], "question")
            texts = [_text(row[c], letters[i]) for i, c in enumerate(letter_cols)]
            ident: Any = row[id_col].strip() if id_col is not None and row[id_col].strip() else n
            if isinstance(ident, str) and ident.isdigit():
                ident = int(ident)
            items.append(_item(n, ident, question, letters, texts, row[a_col].strip() or None))
        except _Bad as e:
            rejects.append(Reject(n, e.field, e.error))
    return items, rejects
