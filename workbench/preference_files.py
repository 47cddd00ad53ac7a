"""Preference files: reading a whole file of preference records (JSON Lines, JSON, Parquet, CSV: `RecordReader`)
into canonical form (`read_preferences`, through `workbench.pairs`, which `wb train` and `wb eval` read),
and telling from its first record whether a file holds pairs, KTO examples or neither (`sniff_kind`, how `wb clean`
and `wb stats` pick the preference driver). Errors name `file:line N: field: what is wrong`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from workbench.errors import WbError
from workbench.io.reader import RecordReader
from workbench.io.streams import is_stream
from workbench.preference_records import NoPreference, RecordError, to_canonical
from workbench.preference_shapes import Canonical, Kind, detect_kind

SNIFF_RECORDS = 64


def sniff_kind(path: Path) -> Kind | None:
    """`pair` or `kto` when the first JSON object of the file is preference data, else None (SFT data, or a file
    the SFT reader will explain). A stream (stdin, a pipe) is not read ahead: None, so callers ask for `--kind`."""
    if is_stream(Path(path)):
        return None
    try:
        for items, _ in RecordReader(Path(path), batch_size=SNIFF_RECORDS).iter_items():
            for _, obj, _ in items:
                if isinstance(obj, dict):
                    return detect_kind(obj)
    except WbError:
        return None
    return None


def read_preferences(path: Path, *, ties: Literal["error", "skip"] = "error") -> list[tuple[int, Canonical]]:
    """Every record of a preference file (JSON Lines, JSON, Parquet, CSV: `RecordReader`) in canonical form,
    with its line (or item/row) number. A record that is not valid preference data is a WbError naming
    `file:line N: field: what is wrong`; so is a file that mixes pairs and KTO examples. `ties="skip"` leaves out
    scored records whose completions all tie instead of failing on them."""
    reader = RecordReader(Path(path))
    unit = reader.info.unit
    out: list[tuple[int, Canonical]] = []
    first_kind: tuple[int, Kind] | None = None
    for items, _ in reader.iter_items():
        for n, obj, _raw in items:
            try:
                if isinstance(obj, RecordError):
                    raise obj
                ex = to_canonical(obj)
            except NoPreference as err:
                if ties == "skip":
                    continue
                raise WbError(f"{path}:{unit} {n}: {err}; run `wb clean` to drop such records") from None
            except RecordError as err:
                raise WbError(f"{path}:{unit} {n}: {err}") from None
            if first_kind is None:
                first_kind = (n, ex.kind)
            elif ex.kind != first_kind[1]:
                raise WbError(
                    f"{path}:{unit} {n}: a {ex.kind} record in a file of {first_kind[1]} records "
                    f"(from {unit} {first_kind[0]}); keep pairs and KTO examples in separate files"
                )
            out.append((n, ex))
    if not out:
        raise WbError(f"{path}: no preference records")
    return out
