"""Reading record files as batches: every format `workbench.io.sniff` tells apart, a dataset folder's shards, or
a stream, decoded into JSON values (`RecordReader.iter_items`) or converted to canonical rows with the rejects of
each batch (iterating a `RecordReader`). Memory stays bounded by the batch size for JSON Lines.

A UTF-8 BOM, CRLF line ends, blank lines and very long lines are handled.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from workbench.errors import WbError
from workbench.io.formats import TABLES
from workbench.io.jsontext import KEY_TOKEN, count_keys, duplicate_error, duplicate_in, duplicate_key, json_pairs
from workbench.io.options import DuplicateKeys, resolve_mapping
from workbench.io.sniff import EmptyInput, SourceInfo, first_line, sniff, sniff_format
from workbench.io.streams import (
    BOM,
    Bounded,
    Hashing,
    Replay,
    decompression_errors,
    is_stream,
    open_decompressed,
    open_raw,
    sha256_path,
    sniff_errors,
)
from workbench.output import sha256_file
from workbench.records import (
    EXTRA,
    FIELDS,
    RecordError,
    Row,
    is_tool_conversation,
    row_extra,
    to_row,
    to_tool_conversation,
)


@dataclass
class Reject:
    """A record that could not be read as a training example."""

    line: int
    unit: str
    field: str
    kind: str
    error: str
    raw: str

    def to_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "unit": self.unit,
            "field": self.field,
            "kind": self.kind,
            "error": self.error,
            "raw": self.raw,
        }


Item = tuple[int, Any, bytes | None]
"""A decoded record: its position, its JSON value (or the RecordError decoding it raised), its line's bytes (JSONL)."""


def raw_text(obj: Any, raw: bytes | None) -> str:
    """The record as written, for a rejects file: the line's text for JSON Lines, else the value as JSON."""
    return raw.decode("utf-8", errors="replace") if raw is not None else orjson.dumps(obj, default=str).decode()


@dataclass
class Batch:
    """Consecutive records of one file: the rows that parsed and the rejects among them."""

    lines: list[int] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    bytes_read: int = 0
    # Tool-calling conversations (no Alpaca form): (position, {"messages", "tools", ...extra fields}), validated.
    conversations: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    # Beside each row: the record's fields wb does not use, as JSON object text (`records.EXTRA`), or None.
    extras: list[str | None] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.rows) + len(self.rejects) + len(self.conversations)


def _dataset_split(path: Path, split: str | None, prefer: tuple[str, ...]) -> Any:
    """The split to read when `path` is a dataset folder (`workbench.layouts`); None for a file."""
    if not path.is_dir():
        if split is not None and path.exists():
            raise WbError(f"{path}: --split picks a split of a dataset folder; this is a single file")
        return None
    from workbench import layouts

    return layouts.resolve(path, split, prefer)


class RecordReader:
    """Reads a file as batches of canonical rows; `mapping` is fixed from the first records.

    `path` may be `-` (standard input), a pipe or a FIFO: such a stream is opened once and read front to back.
    `duplicate_keys`: `reject` an object that names a key twice (kind `duplicate_key`), or keep the `last` value.
    `extra_fields`: carry each record's fields wb does not use (`Batch.extras`, and in tool conversations).
    """

    def __init__(
        self,
        path: Path,
        overrides: dict[str, str] | None = None,
        batch_size: int = 50_000,
        duplicate_keys: DuplicateKeys = "reject",
        split: str | None = None,
        prefer: tuple[str, ...] = ("train",),
        extra_fields: bool = True,
    ):
        self.path = Path(path)
        self.extra_fields = extra_fields
        self.dataset = _dataset_split(self.path, split, prefer)
        self.overrides = overrides or {}
        self.batch_size = batch_size
        self.duplicate_keys = duplicate_keys
        self.mapping: dict[str, str] | None = None
        self.blank_lines = 0
        self._hashing: Hashing | None = None
        self._stream: IO[bytes] | None = None
        self._document_bytes = 0
        self._duplicates_marked = False
        if self.dataset is not None:
            shard = sniff(self.dataset.files[0])
            self.info = SourceInfo(self.path, shard.format, shard.compression, shard.encoding)
        elif is_stream(self.path):
            self._hashing = Hashing(open_raw(self.path))
            with sniff_errors(self.path):
                stream, compression, encoding = open_decompressed(self.path, self._hashing)
                first, seen = first_line(stream)
            self._stream = io.BufferedReader(Replay(stream, seen), buffer_size=1 << 20)
            self.info = SourceInfo(self.path, sniff_format(first, self.path), compression, encoding)
        else:
            self.info = sniff(self.path)

    def _open(self) -> IO[bytes]:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            return stream
        if self._hashing is not None:
            raise WbError(f"{self.path}: a stream can be read only once")
        return open_decompressed(self.path)[0]

    def sha256(self) -> str:
        """SHA-256 of the input's bytes as stored (compressed or not); for a stream, of what was read; for a dataset
        folder, over its data files (`sha256_path`)."""
        if self._hashing is not None:
            return self._hashing.digest.hexdigest()
        return sha256_path(self.path) if self.dataset is not None else sha256_file(self.path)

    @property
    def size_hint(self) -> int:
        """Bytes on disk, for progress bars (0 for a stream)."""
        if self.dataset is not None:
            return sum(f.stat().st_size for f in self.dataset.files)
        return 0 if self._hashing is not None else self.path.stat().st_size

    def _map(self, objs: list[Any]) -> dict[str, str]:
        if self.mapping is None:
            keys: set[str] = set()
            records = [o for o in objs if isinstance(o, dict)]
            for obj in records:
                keys.update(obj)
                if len(keys) > 200:
                    break
            if not keys:  # no record parsed yet: decide on a later batch
                return resolve_mapping((), self.overrides)
            mapping = resolve_mapping(keys, self.overrides)
            for canon, src in self.overrides.items():  # a --map to a column the file lacks: one line, up front
                if src not in keys and not any(src in obj for obj in records):
                    shown = ", ".join(sorted(keys)[:12]) + (", ..." if len(keys) > 12 else "")
                    raise WbError(f"{self.path}: --map {canon}={src}: the file has no column {src!r} (it has {shown})")
            self._check_columns(list(records[0]), mapping)  # a table's rows share its columns, in order
            self.mapping = mapping
        return self.mapping

    def _check_columns(self, columns: list[str], mapping: dict[str, str]) -> None:
        """A table (CSV, Parquet, Arrow) has the same columns in every row: when none of them is read as the
        instruction or the output, every record would be rejected, so the file is refused before any is read."""
        if self.info.format not in TABLES or {"messages", "conversations"} & set(columns):
            return
        missing = [canon for canon in ("instruction", "output") if canon not in mapping]
        if not missing:
            return
        free = [c for c in columns if c not in mapping.values()] or columns
        example = " ".join(f"--map {canon}={free[min(i, len(free) - 1)]}" for i, canon in enumerate(missing))
        shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
        where = TABLES[self.info.format].columns_at
        raise WbError(
            f"{self.path}: {where}: no column is read as the {' or the '.join(missing)} (columns: {shown}); "
            f"name them with --map FIELD=COLUMN, e.g. {example}"
        )

    def _convert(self, batch: Batch, items: list[Item]) -> Batch:
        mapping = self._map([obj for _, obj, _ in items])
        mapped = frozenset(mapping.values())  # a record of mapped columns only has no field of its own
        unit = self.info.unit
        for line, obj, raw in items:
            if isinstance(obj, RecordError):
                err = obj
            else:
                try:
                    if is_tool_conversation(obj):
                        batch.conversations.append((line, to_tool_conversation(obj, self.extra_fields)))
                        continue
                    batch.rows.append(to_row(obj, mapping, self.overrides))
                    own = self.extra_fields and not obj.keys() <= mapped
                    batch.extras.append(row_extra(obj, mapping, self.overrides) if own else None)
                    batch.lines.append(line)
                    continue
                except RecordError as e:
                    err = e
            batch.rejects.append(Reject(line, unit, err.field, err.kind, str(err), raw_text(obj, raw)))
        return batch

    def iter_items(self) -> Iterator[tuple[list[Item], int]]:
        """The decoded records, batch by batch, before any conversion: (items, bytes read). Each item is
        (position, the JSON value or the RecordError that decoding or duplicate-key checking raised, the line's
        bytes for JSON Lines). Readers of other record shapes (preference data) convert them on their own."""
        if self.dataset is not None:
            offset = 0
            for path in self.dataset.files:
                part = RecordReader(path, self.overrides, self.batch_size, self.duplicate_keys)
                last = 0
                for items, nbytes in part.iter_items():
                    last = max([last, *(n for n, _, _ in items)])
                    yield [(offset + n, obj, raw) for n, obj, raw in items], nbytes
                self.blank_lines += part.blank_lines
                offset += last
        elif self.info.format == "jsonl":
            yield from self._jsonl_items()
        else:
            yield from self._document_items()

    def _iter_dataset(self, files: tuple[Path, ...]) -> Iterator[Batch]:
        """The shards of a dataset split one after another, positions counted on across them."""
        offset = 0
        for path in files:
            part = RecordReader(
                path, self.overrides, self.batch_size, self.duplicate_keys, extra_fields=self.extra_fields
            )
            part.mapping = self.mapping
            last = 0
            for batch in part:
                self.mapping = part.mapping
                positions = batch.lines + [r.line for r in batch.rejects] + [n for n, _ in batch.conversations]
                last = max([last, *positions])
                batch.lines = [offset + n for n in batch.lines]
                batch.conversations = [(offset + n, c) for n, c in batch.conversations]
                for r in batch.rejects:
                    r.line += offset
                yield batch
                del batch
            self.blank_lines += part.blank_lines
            offset += last

    def __iter__(self) -> Iterator[Batch]:
        if self.dataset is not None:
            yield from self._iter_dataset(self.dataset.files)
            return
        yield from self._batches(self._jsonl_items() if self.info.format == "jsonl" else self._document_items())

    def _batches(self, items_of: Iterator[tuple[list[Item], int]]) -> Iterator[Batch]:
        """Each batch of items converted; the items (decoded objects and raw lines) are let go as soon as their batch
        is made, and a batch before the next one is read, so that one batch at a time is in memory, not two."""
        for items, nbytes in items_of:
            batch = self._convert(Batch(bytes_read=nbytes), items)
            items.clear()  # the generator that made the list holds it until it resumes
            yield batch
            del batch

    def read_range(self, start: int, end: int, first_line: int) -> Iterator[Batch]:
        """The lines of an uncompressed JSON Lines file from byte `start` (a line start) up to byte `end`, numbered
        from `first_line`: one block of a file split across workers (`byte_ranges`). `mapping` must be set."""
        if self.info.format != "jsonl" or self.info.compression != "none" or self.info.encoding != "utf-8":
            raise ValueError(f"{self.path}: byte ranges need an uncompressed UTF-8 JSON Lines file")
        f = open_raw(self.path)
        f.seek(start)
        bounded = io.BufferedReader(Bounded(f, end - start), buffer_size=1 << 20)
        yield from self._batches(self._jsonl_items(bounded, first_line))

    def _jsonl_items(self, stream: IO[bytes] | None = None, first_line: int = 1) -> Iterator[tuple[list[Item], int]]:
        stream = self._open() if stream is None else stream
        items: list[Item] = []
        nbytes = 0
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        check_duplicates = self.duplicate_keys == "reject"
        with stream, decompression_errors(self.path):
            for line_no, line in enumerate(stream, first_line):
                nbytes += len(line)
                if line_no == 1:
                    line = line.removeprefix(BOM)
                if not line.strip():
                    self.blank_lines += 1
                    continue
                try:
                    obj: Any = loads(line)
                except decode_error as err:
                    obj = RecordError("", f"bad JSON: {err}", kind="bad_json")
                else:
                    if check_duplicates and (dup := duplicate_key(line, obj)) is not None:
                        obj = duplicate_error(dup)
                items.append((line_no, obj, line.rstrip(b"\r\n")))
                if len(items) >= self.batch_size:
                    yield items, nbytes
                    items, nbytes = [], 0
        if items or nbytes:
            yield items, nbytes

    def _load_document(self) -> list[Any]:
        stream = self._open()
        with stream, decompression_errors(self.path):
            data = stream.read()
        self._document_bytes = len(data)
        fmt = self.info.format
        if fmt == "json":
            text = data.removeprefix(BOM)
            try:
                doc = orjson.loads(text)
            except orjson.JSONDecodeError as err:
                raise WbError(
                    f"{self.path}: not valid JSON ({err}); fix the file or convert it to JSON Lines"
                ) from None
            if self.duplicate_keys == "reject" and len(KEY_TOKEN.findall(text)) > count_keys(doc):
                doc = json.loads(text, object_pairs_hook=json_pairs)  # the same values, duplicated keys marked
                self._duplicates_marked = True
            if isinstance(doc, dict):
                lists = [k for k, v in doc.items() if isinstance(v, list)]
                if len(lists) != 1:
                    raise WbError(
                        f"{self.path}: a JSON object file must hold exactly one list of records, "
                        f"found {len(lists)} lists"
                    )
                doc = doc[lists[0]]
            if not isinstance(doc, list):
                raise WbError(f"{self.path}: expected a JSON array of records, found {type(doc).__name__}")
            return doc
        try:
            frame = TABLES[fmt].load(data, self.path)
        except WbError:
            raise
        except Exception as err:  # polars raises many error types for malformed files
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise WbError(f"{self.path}: cannot read as {fmt}: {first}") from None
        return frame.to_dicts()

    def _document_items(self) -> Iterator[tuple[list[Item], int]]:
        docs = self._load_document()
        total = self.size_hint or self._document_bytes
        for start in range(0, max(len(docs), 1), self.batch_size):
            chunk = docs[start : start + self.batch_size]
            items: list[Item] = [(start + i + 1, obj, None) for i, obj in enumerate(chunk)]
            if self._duplicates_marked:
                marked = [(n, obj, duplicate_in(obj)) for n, obj, _ in items]
                items = [(n, obj if d is None else duplicate_error(d), None) for n, obj, d in marked]
            end = start + len(chunk)
            nbytes = total if end >= len(docs) else 0
            yield items, nbytes


def read_records(
    path: Path, split: str | None = None, prefer: tuple[str, ...] = ("train",), extra_fields: bool = False
) -> list[tuple[int, dict[str, Any]]]:
    """Every record of a file or of one split of a dataset folder; a malformed one is a WbError. `extra_fields`:
    each record's fields wb does not use come along (under `records.EXTRA`; in a tool conversation, as its keys),
    for commands that write the records back."""
    reader = RecordReader(Path(path), split=split, prefer=prefer, extra_fields=extra_fields)
    out: list[tuple[int, dict[str, Any]]] = []
    for batch in reader:
        if batch.rejects:
            r = batch.rejects[0]
            raise WbError(f"{path}:{r.unit} {r.line}: {r.error} (run `wb clean` first)")
        extras = batch.extras if extra_fields else [None] * len(batch.rows)
        for line, row, extra in zip(batch.lines, batch.rows, extras, strict=True):
            rec: dict[str, Any] = dict(zip(FIELDS, row, strict=True))
            if extra is not None:
                rec[EXTRA] = extra
            out.append((line, rec))
        out.extend(batch.conversations)  # tool-calling conversations: {"messages", "tools"}
    out.sort(key=lambda item: item[0])
    if not out:
        raise WbError(f"{path}: no records to train on")
    return out


def read_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(position, object) for each record of a file whose records are not SFT records (probes, predictions,
    multiple-choice items, preference rows, score files), in any format `RecordReader` reads: JSON Lines, JSON,
    Parquet, Arrow or CSV, compressed or not, told apart by content. A record that is not valid JSON or not an object
    is a WbError naming the file and its line (item, row); an empty file has none. A key named twice keeps its last
    value, as JSON parsers do."""
    try:
        reader = RecordReader(Path(path), duplicate_keys="last")
    except EmptyInput:
        return
    unit = reader.info.unit
    for items, _ in reader.iter_items():
        for n, obj, _raw in items:
            if isinstance(obj, RecordError):
                raise WbError(f"{path}:{unit} {n}: not valid JSON: {obj.message.removeprefix('bad JSON: ')}")
            if not isinstance(obj, dict):
                raise WbError(f"{path}:{unit} {n}: expected a JSON object, got {type(obj).__name__}")
            yield n, obj
