"""Reading and writing record files: format sniffing, decompression, column mapping, atomic writes.

Formats are told apart by content, not by extension: JSON Lines, a JSON array (or an object holding one),
Parquet and CSV, each optionally gzip- or zstd-compressed. A UTF-8 BOM, CRLF line ends, blank lines and very
long lines are handled. Records come out in batches of canonical rows plus the rejects of that batch, so
memory stays bounded by the batch size for JSON Lines.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import hashlib
import io
import itertools
import json
import os
import re
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import orjson

from workbench.errors import WbError
from workbench.output import IncompleteOutput as IncompleteOutput  # the one output-writing path, for io's callers
from workbench.output import OutputSet as OutputSet
from workbench.output import atomic_write as atomic_write
from workbench.output import check_complete as check_complete
from workbench.output import check_target as check_target
from workbench.output import ensure_dir as ensure_dir
from workbench.output import remove_old_stages as remove_old_stages
from workbench.output import sha256_file as sha256_file
from workbench.records import (
    ALIASES,
    EXTRA,
    FIELDS,
    RecordError,
    Row,
    input_as_instruction,
    is_tool_conversation,
    row_extra,
    to_row,
    to_tool_conversation,
)

Format = Literal["jsonl", "json", "parquet", "csv", "arrow"]
Compression = Literal["none", "gzip", "zstd"]
DuplicateKeys = Literal["reject", "last"]

BOM = b"\xef\xbb\xbf"
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


# Byte-order marks of the UTF-16/32 encodings, longest first (the UTF-32-LE mark begins with UTF-16-LE's).
_WIDE_BOMS = (
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF16_BE, "utf-16"),
    (codecs.BOM_UTF16_LE, "utf-16"),
)
STDIN = "-"


@dataclass(frozen=True)
class SourceInfo:
    path: Path
    format: Format
    compression: Compression
    encoding: str = "utf-8"

    @property
    def unit(self) -> str:
        """What a record's position is counted in: lines for JSON Lines, items or rows otherwise."""
        return {"jsonl": "line", "json": "item", "parquet": "row", "csv": "row", "arrow": "row"}[self.format]


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
    return _raw_text(raw) if raw is not None else orjson.dumps(obj, default=str).decode()


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


def sha256_path(path: Path) -> str:
    """SHA-256 of a file, or of a dataset folder: over its data files' relative paths and contents, in order."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(f.relative_to(path).as_posix().encode() + b"\0" + sha256_file(f).encode() + b"\n")
    return digest.hexdigest()


def is_stream(path: Path) -> bool:
    """Standard input (`-`), a pipe, FIFO or other non-regular file: read once, front to back."""
    if str(path) == STDIN:
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _open_raw(path: Path) -> IO[bytes]:
    if str(path) == STDIN:
        return sys.stdin.buffer
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise WbError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise WbError(f"{path}: is a directory, expected a data file") from None
    except OSError as err:
        raise WbError(f"{path}: cannot read ({err.strerror})") from None


def _read_head(stream: IO[bytes], n: int) -> bytes:
    """Up to `n` bytes: fewer only at the end of the stream (a pipe hands out what it has)."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


class _Replay(io.RawIOBase):
    """`prefix` (bytes already read to sniff the stream), then the rest of `inner`: sniffing needs no seek."""

    def __init__(self, inner: IO[bytes], prefix: bytes) -> None:
        self.inner, self.prefix = inner, prefix

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.prefix:
            n = min(len(buffer), len(self.prefix))
            buffer[:n] = self.prefix[:n]
            self.prefix = self.prefix[n:]
            return n
        data = self.inner.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.inner.close()
        super().close()


class _Hashing(io.RawIOBase):
    """Counts and hashes the bytes of a stream as they are read (a stream cannot be hashed beforehand)."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner, self.digest, self.nbytes = inner, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.inner.read(len(buffer))
        self.digest.update(data)
        self.nbytes += len(data)
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.inner.close()
        super().close()


class _Transcoded(io.RawIOBase):
    """UTF-16/32 text (its BOM read by the codec) handed out as UTF-8; bytes that do not decode are a WbError."""

    def __init__(self, inner: IO[bytes], encoding: str, path: Path) -> None:
        self.inner, self.encoding, self.path = inner, encoding, path
        self.decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
        self.pending, self.offset, self.done = b"", 0, False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.pending and not self.done:
            chunk = self.inner.read(1 << 16)
            try:
                self.pending = self.decoder.decode(chunk, final=not chunk).encode("utf-8")
            except UnicodeDecodeError as err:
                raise WbError(
                    f"{self.path}: starts with a {self.encoding.upper()} byte-order mark but byte "
                    f"{self.offset + err.start} is not valid {self.encoding.upper()}; re-save the file as UTF-8"
                ) from None
            self.offset += len(chunk)
            self.done = not chunk
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n

    def close(self) -> None:
        self.inner.close()
        super().close()


def _open_decompressed(path: Path, raw: IO[bytes] | io.RawIOBase | None = None) -> tuple[IO[bytes], Compression, str]:
    """The file's text as UTF-8 bytes, whatever its compression (gzip, zstd) and Unicode encoding (UTF-8,
    UTF-16/32 with a byte-order mark); reads front to back only, so pipes and standard input work."""
    f: Any = raw if raw is not None else _open_raw(path)
    head = _read_head(f, 18)
    src: Any = _Replay(f, head)  # a raw stream of the layer below, one layer after another
    compression: Compression = "none"
    if head.startswith(_GZIP_MAGIC):
        src, compression = gzip.GzipFile(fileobj=io.BufferedReader(src)), "gzip"
    elif head.startswith(_ZSTD_MAGIC):
        import zstandard

        expected = zstandard.frame_content_size(head) if len(head) >= 18 else -1
        reader = zstandard.ZstdDecompressor().stream_reader(src, closefd=True, read_across_frames=True)
        src, compression = _SizeChecked(reader, expected, path), "zstd"
    text_head = _read_head(src, 4)
    src = _Replay(src, text_head)
    encoding = next((enc for bom, enc in _WIDE_BOMS if text_head.startswith(bom)), "utf-8")
    if encoding != "utf-8":
        src = _Transcoded(src, encoding, path)
    return io.BufferedReader(src, buffer_size=1 << 20), compression, encoding


_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".jsonl.zst", ".ndjson.zst")


class _SizeChecked(io.RawIOBase):
    """A zstd stream that fails at its end when fewer bytes came out than the frame header declares.

    zstandard's stream reader ends quietly on a truncated file; the declared size catches that whenever the
    compressor wrote it (the zstd CLI and python-zstandard do for files of known size).
    """

    def __init__(self, inner: Any, expected: int, path: Path) -> None:
        self.inner, self.expected, self.path, self.seen = inner, expected, path, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.seen += n
        if n == 0 and self.expected >= 0 and self.seen < self.expected:
            raise EOFError(f"zstd stream ended after {self.seen} of {self.expected} bytes")
        return n

    def close(self) -> None:
        self.inner.close()
        super().close()


def _sniff(first_line: bytes, path: Path) -> Format:
    """Tell the format from the first line of the (decompressed) file."""
    if first_line.startswith(b"PAR1"):
        return "parquet"
    if first_line.startswith((b"ARROW1", b"\xff\xff\xff\xff")):  # Arrow IPC file / stream (datasets' .arrow)
        return "arrow"
    text = first_line.removeprefix(BOM).strip()
    if not text:
        raise WbError(f"{path}: file is empty")
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        # A JSON document opens with a lone "{" or with `{"data": [` (on one line or spread over many); JSON
        # Lines opens with a record (complete, or broken and then rejected on its own).
        return "json" if text == b"{" or text.endswith(b"[") or _opens_document(text) else "jsonl"
    # Neither JSON opening: a CSV header, unless the name says JSON Lines (then a bad first line is rejected).
    return "jsonl" if path.name.lower().endswith(_JSONL_SUFFIXES) else "csv"


# Keys that make an object a record (Alpaca fields and their aliases, conversations), not a wrapper of records.
_RECORD_KEYS = frozenset(
    {
        *(n for names in ALIASES.values() for n in names),
        "messages",
        "conversations",
        *("chosen", "rejected", "completions", "prompt_messages", "kto_tag"),  # preference records
    }
)
_WRAPPER_START = re.compile(rb'^\{\s*"((?:[^"\\]|\\.)*)"\s*:\s*\[')


def _opens_document(line: bytes) -> bool:
    """A first line that is a JSON object holding one list of records (`{"data": [...]}`), or begins one."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        start = _WRAPPER_START.match(line)  # `{"data": [{...}, {...},` with the rest on later lines
        return start is not None and start.group(1).decode("utf-8", "replace") not in _RECORD_KEYS
    if not isinstance(obj, dict) or _RECORD_KEYS & obj.keys():
        return False
    return sum(isinstance(v, list) for v in obj.values()) == 1


def _first_line(stream: IO[bytes]) -> tuple[bytes, bytes]:
    """The first non-blank line, and every byte read to find it."""
    seen: list[bytes] = []
    while True:
        line = stream.readline()
        seen.append(line)
        if not line or line.removeprefix(BOM).strip() or line.startswith((b"PAR1", b"ARROW1", b"\xff\xff\xff\xff")):
            return line, b"".join(seen)


@contextlib.contextmanager
def _sniff_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except (OSError, EOFError) as err:
        raise WbError(f"{path}: cannot decompress ({err})") from None
    except Exception as err:
        if type(err).__module__.startswith("zstandard"):
            raise WbError(f"{path}: cannot decompress ({err})") from None
        raise


def sniff(path: Path) -> SourceInfo:
    raw = _open_raw(path)
    with _sniff_errors(path):
        stream, compression, encoding = _open_decompressed(path, raw)
        with stream:
            first, _ = _first_line(stream)
    return SourceInfo(path=path, format=_sniff(first, path), compression=compression, encoding=encoding)


def resolve_mapping(keys: Iterable[str], overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Pick a source column for each canonical field: explicit overrides first, then known aliases."""
    present = set(keys)
    mapping: dict[str, str] = {}
    for canon, names in ALIASES.items():
        for name in names:
            if name in present:
                mapping[canon] = name
                break
    for canon, src in (overrides or {}).items():
        if canon not in FIELDS:
            raise WbError(f"--map {canon}={src}: unknown field {canon!r}; fields are {', '.join(FIELDS)}")
        mapping[canon] = src
    mapping = input_as_instruction(mapping, overrides or {})
    taken: dict[str, str] = {}
    for canon, src in mapping.items():
        if src in taken:
            raise WbError(f"--map: column {src!r} is mapped to both {taken[src]} and {canon}")
        taken[src] = canon
    return mapping


def parse_duplicate_keys(value: str) -> DuplicateKeys:
    """`--duplicate-keys reject|last`."""
    if value == "reject":
        return "reject"
    if value == "last":
        return "last"
    raise WbError(f"--duplicate-keys {value!r}: expected reject or last")


def default_output(input_path: Path | str, command: str) -> Path:
    """Where a command writes when no `--output` is given: `./<name>.<command>.jsonl`, `<name>` the input's file name
    up to its first dot (`stdin` for standard input, `data` for a name that starts with a dot)."""
    stem = "stdin" if str(input_path) == STDIN else Path(input_path).name.split(".")[0] or "data"
    return Path(f"{stem}.{command}.jsonl")


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """Parse `--map output=response` options."""
    out: dict[str, str] = {}
    for item in items:
        canon, sep, src = item.partition("=")
        if not sep or not canon.strip() or not src.strip():
            raise WbError(f"--map {item!r}: expected FIELD=COLUMN, e.g. --map output=response")
        out[canon.strip()] = src.strip()
    return out


@contextlib.contextmanager
def _decompression_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except (EOFError, OSError) as err:
        raise WbError(f"{path}: compressed data is truncated or corrupt ({err})") from None
    except Exception as err:
        if type(err).__module__.startswith("zstandard"):
            raise WbError(f"{path}: compressed data is truncated or corrupt ({err})") from None
        raise


def _raw_text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


_KEY_TOKEN = re.compile(rb'"\s*:')  # every key of a JSON text ends so (a string value may too: then we look closer)


def _count_keys(obj: Any) -> int:
    if isinstance(obj, dict):
        return len(obj) + sum(_count_keys(v) for v in obj.values())
    if isinstance(obj, list):
        return sum(_count_keys(v) for v in obj)
    return 0


def _duplicate_in(value: Any) -> str | None:
    if isinstance(value, _Duplicated):
        return value.duplicate
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return next((d for d in map(_duplicate_in, children) if d is not None), None)


class _Duplicated(dict[str, Any]):
    """An object that named a key twice (the stdlib parser's pairs show it; orjson keeps the last silently)."""

    duplicate: str = ""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj and not isinstance(obj, _Duplicated):
            obj = _Duplicated(obj)
            obj.duplicate = key
        obj[key] = value
    return obj


def duplicate_key(raw: bytes, parsed: Any) -> str | None:
    """The first key that an object of the JSON text `raw` names twice, if any; `parsed` is orjson's reading of
    it. Exact, and cheap when there is none: a text with no more key tokens than `parsed` has keys holds none."""
    if len(_KEY_TOKEN.findall(raw)) <= _count_keys(parsed):
        return None
    return _duplicate_in(json.loads(raw, object_pairs_hook=_pairs))


def _duplicate_error(key: str) -> RecordError:
    return RecordError(key, f"key {key!r} appears twice in one object (JSON keeps only the last)", "duplicate_key")


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
        self._hashing: _Hashing | None = None
        self._stream: IO[bytes] | None = None
        self._document_bytes = 0
        self._duplicates_marked = False
        if self.dataset is not None:
            shard = sniff(self.dataset.files[0])
            self.info = SourceInfo(self.path, shard.format, shard.compression, shard.encoding)
        elif is_stream(self.path):
            self._hashing = _Hashing(_open_raw(self.path))
            with _sniff_errors(self.path):
                stream, compression, encoding = _open_decompressed(self.path, self._hashing)
                first, seen = _first_line(stream)
            self._stream = io.BufferedReader(_Replay(stream, seen), buffer_size=1 << 20)
            self.info = SourceInfo(self.path, _sniff(first, self.path), compression, encoding)
        else:
            self.info = sniff(self.path)

    def _open(self) -> IO[bytes]:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            return stream
        if self._hashing is not None:
            raise WbError(f"{self.path}: a stream can be read only once")
        return _open_decompressed(self.path)[0]

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
        if self.info.format not in ("csv", "parquet", "arrow") or {"messages", "conversations"} & set(columns):
            return
        missing = [canon for canon in ("instruction", "output") if canon not in mapping]
        if not missing:
            return
        free = [c for c in columns if c not in mapping.values()] or columns
        example = " ".join(f"--map {canon}={free[min(i, len(free) - 1)]}" for i, canon in enumerate(missing))
        shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
        where = "line 1 (the header)" if self.info.format == "csv" else "columns"
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
        f = _open_raw(self.path)
        f.seek(start)
        bounded = io.BufferedReader(_Bounded(f, end - start), buffer_size=1 << 20)
        yield from self._batches(self._jsonl_items(bounded, first_line))

    def _jsonl_items(self, stream: IO[bytes] | None = None, first_line: int = 1) -> Iterator[tuple[list[Item], int]]:
        stream = self._open() if stream is None else stream
        items: list[Item] = []
        nbytes = 0
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        check_duplicates = self.duplicate_keys == "reject"
        with stream, _decompression_errors(self.path):
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
                        obj = _duplicate_error(dup)
                items.append((line_no, obj, line.rstrip(b"\r\n")))
                if len(items) >= self.batch_size:
                    yield items, nbytes
                    items, nbytes = [], 0
        if items or nbytes:
            yield items, nbytes

    def _load_document(self) -> list[Any]:
        stream = self._open()
        with stream, _decompression_errors(self.path):
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
            if self.duplicate_keys == "reject" and len(_KEY_TOKEN.findall(text)) > _count_keys(doc):
                doc = json.loads(text, object_pairs_hook=_pairs)  # the same values, duplicated keys marked
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
        import polars as pl

        try:
            if fmt == "parquet":
                frame = pl.read_parquet(io.BytesIO(data))
            elif fmt == "arrow":
                buf = io.BytesIO(data)
                frame = pl.read_ipc(buf) if data.startswith(b"ARROW1") else pl.read_ipc_stream(buf)
            else:
                frame = pl.read_csv(io.BytesIO(data.removeprefix(BOM)), infer_schema=False)
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
                marked = [(n, obj, _duplicate_in(obj)) for n, obj, _ in items]
                items = [(n, obj if d is None else _duplicate_error(d), None) for n, obj, d in marked]
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


class _Bounded(io.RawIOBase):
    """At most `limit` bytes of a raw file, from where it stands."""

    def __init__(self, inner: IO[bytes], limit: int) -> None:
        self.inner, self.left = inner, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.left <= 0:
            return 0
        view = memoryview(buffer)[: self.left]
        n = self.inner.readinto(view)  # type: ignore[attr-defined]
        self.left -= n or 0
        return n or 0

    def close(self) -> None:
        self.inner.close()
        super().close()


def byte_ranges(path: Path, block_bytes: int) -> list[tuple[int, int]]:
    """Split a file into (start, end) byte ranges of about `block_bytes`, each starting at a line start."""
    size = Path(path).stat().st_size
    bounds = [0]
    with Path(path).open("rb") as f:
        while bounds[-1] + block_bytes < size:
            f.seek(bounds[-1] + block_bytes)
            f.readline()  # on to the next line start
            at = f.tell()
            if at >= size:
                break
            bounds.append(at)
    bounds.append(size)
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a] or [(0, 0)]


def count_lines(path: Path, start: int, end: int) -> int:
    """Line ends (b"\\n") in a byte range of a file: how far the line numbers of the next range are shifted."""
    n = 0
    with Path(path).open("rb") as f:
        f.seek(start)
        left = end - start
        while left > 0:
            chunk = f.read(min(left, 1 << 24))
            if not chunk:
                break
            n += chunk.count(b"\n")
            left -= len(chunk)
    return n


def dumps_json(obj: Any) -> bytes:
    """Deterministic pretty JSON: sorted keys, UTF-8, trailing newline."""
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def write_json(path: Path, obj: Any) -> None:
    with atomic_write(path) as f:
        f.write(dumps_json(obj))


def jsonl_line(obj: Any) -> bytes:
    return orjson.dumps(obj) + b"\n"


def json_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a small JSONL file (BOM and CRLF allowed); a line that is
    not a JSON object is a WbError naming the file and line."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise WbError(f"{path}: cannot read: {e}") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise WbError(f"{path}:line {n}: not valid JSON: {e}") from None
        if not isinstance(row, dict):
            raise WbError(f"{path}:line {n}: expected a JSON object, got {type(row).__name__}")
        yield n, row
