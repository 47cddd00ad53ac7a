"""CSV read as rows of cells, each with the physical line it starts on: for tables whose first row may be data
rather than a header (MMLU's multiple-choice files), where `workbench.io.reader` (polars, a header always) does
not fit. A quote left open costs its own line, not the rows after it.

Also the one check of a header's column names that both readers share: a column with no name (other than the
first, where a saved index has none) would be dropped or renamed quietly, so it is an error naming the column.
"""

from __future__ import annotations

import csv
import io
import itertools

from workbench.errors import WbError


class _Swallowed(csv.Error):
    """A row that runs over several lines with another width than the first row's: a quote left open."""


def csv_rows(text: str) -> tuple[list[tuple[int, list[str]]], list[tuple[int, str]]]:
    """The non-blank rows of a CSV text, each with the physical line it starts on, and (line, why) for each line that
    is no row.

    A quote opened and never closed makes a CSV reader read on to the next quote or to the end of the file,
    swallowing the rows in between. Read strictly, such a row is an error, or (closed by a later quote) a row of
    another width than the first row's that runs over several lines: its first line is unreadable, and reading
    starts again on the line after it. So every physical line is a row, unreadable or blank.
    """
    lines = io.StringIO(text, newline="").readlines()  # the lines as the csv module counts them
    rows: list[tuple[int, list[str]]] = []
    unreadable: list[tuple[int, str]] = []
    width: int | None = None
    at = 0  # index of the line to read from
    while at < len(lines):
        reader = csv.reader(itertools.islice(lines, at, None), strict=True)
        start = at + 1
        try:
            for row in reader:
                end = at + reader.line_num
                if any(c.strip() for c in row):
                    if width is None:
                        width = len(row)
                    elif end > start and len(row) != width:
                        raise _Swallowed(
                            f"a quote opened on this line closes on line {end}: lines {start}-{end} read as one row "
                            f"of {len(row)} columns, the first row has {width}"
                        )
                    rows.append((start, row))
                start = end + 1
            break
        except csv.Error as e:
            if isinstance(e, _Swallowed):
                why = str(e)
            elif str(e) == "unexpected end of data":
                why = "a quote opened on this line is never closed"
            else:
                why = f"not readable as CSV: {e} (a quote left open?)"
            unreadable.append((start, f"{why}; reading goes on at line {start + 1}"))
            at = start
    return rows, unreadable


def first_row(text: str) -> list[str]:
    """The cells of the first row of a CSV text (its header); [] when it has none."""
    return next(csv.reader(io.StringIO(text, newline="")), [])


def check_header(path: object, header: list[str], line: int = 1) -> None:
    """A WbError naming the first column after the first whose name is empty (`a,,b`; a trailing comma too): its
    cells would be dropped or read under a made-up name. The first column may be unnamed: a saved index."""
    for i, name in enumerate(header[1:], start=2):
        if not name.strip():
            raise WbError(
                f"{path}:line {line}: column {i} of the header has no name (after {header[i - 2].strip()!r}); "
                "name it or remove the column"
            )
