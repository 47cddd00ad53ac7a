"""Reading and writing record files: format sniffing, decompression, column mapping, atomic writes.

Formats are told apart by content, not by extension: JSON Lines, a JSON array (or an object holding one),
Parquet and CSV, each optionally gzip- or zstd-compressed. A UTF-8 BOM, CRLF line ends, blank lines and very
long lines are handled. Records come out in batches of canonical rows plus the rejects of that batch, so
memory stays bounded by the batch size for JSON Lines.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import orjson

from workbench.errors import WbError
from workbench.records import (
    ALIASES,
    FIELDS,
    RecordError,
    Row,
    input_as_instruction,
    is_tool_conversation,
    to_row,
    to_tool_conversation,
)

Format = Literal["jsonl", "json", "parquet", "csv", "arrow"]
Compression = Literal["none", "gzip", "zstd"]

BOM = b"\xef\xbb\xbf"
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class SourceInfo:
    path: Path
    format: Format
    compression: Compression

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


@dataclass
class Batch:
    """Consecutive records of one file: the rows that parsed and the rejects among them."""

    lines: list[int] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    bytes_read: int = 0
    # Tool-calling conversations (no Alpaca form): (position, {"messages", "tools"}), validated.
    conversations: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

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


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _open_decompressed(path: Path) -> tuple[IO[bytes], Compression]:
    try:
        f: IO[bytes] = path.open("rb")
    except FileNotFoundError:
        raise WbError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise WbError(f"{path}: is a directory, expected a data file") from None
    except OSError as err:
        raise WbError(f"{path}: cannot read ({err.strerror})") from None
    magic = f.read(4)
    f.seek(0)
    if magic.startswith(_GZIP_MAGIC):
        return io.BufferedReader(gzip.GzipFile(fileobj=f), buffer_size=1 << 20), "gzip"
    if magic == _ZSTD_MAGIC:
        import zstandard

        header = f.read(18)
        f.seek(0)
        expected = zstandard.frame_content_size(header)
        reader = zstandard.ZstdDecompressor().stream_reader(f, closefd=True, read_across_frames=True)
        return io.BufferedReader(_SizeChecked(reader, expected, path), buffer_size=1 << 20), "zstd"
    return io.BufferedReader(f, buffer_size=1 << 20), "none"  # type: ignore[type-var]


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
        # A JSON document spread over lines opens with a lone "{" or with `{"data": [`; JSON Lines opens with
        # a record (complete, or broken and then rejected on its own).
        return "json" if text == b"{" or text.endswith(b"[") else "jsonl"
    # Neither JSON opening: a CSV header, unless the name says JSON Lines (then a bad first line is rejected).
    return "jsonl" if path.name.lower().endswith(_JSONL_SUFFIXES) else "csv"


def _first_line(stream: IO[bytes]) -> bytes:
    while True:
        line = stream.readline()
        if not line or line.removeprefix(BOM).strip() or line.startswith((b"PAR1", b"ARROW1", b"\xff\xff\xff\xff")):
            return line


def sniff(path: Path) -> SourceInfo:
    stream, compression = _open_decompressed(path)
    with stream:
        try:
            first = _first_line(stream)
        except (OSError, EOFError) as err:
            raise WbError(f"{path}: cannot decompress ({err})") from None
    return SourceInfo(path=path, format=_sniff(first, path), compression=compression)


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


class RecordReader:
    """Reads a file as batches of canonical rows; `mapping` is fixed from the first records."""

    def __init__(
        self,
        path: Path,
        overrides: dict[str, str] | None = None,
        batch_size: int = 50_000,
        split: str | None = None,
        prefer: tuple[str, ...] = ("train",),
    ):
        self.path = Path(path)
        self.dataset = _dataset_split(self.path, split, prefer)
        first = self.dataset.files[0] if self.dataset is not None else self.path
        info = sniff(first)
        self.info = SourceInfo(self.path, info.format, info.compression) if self.dataset is not None else info
        self.overrides = overrides or {}
        self.batch_size = batch_size
        self.mapping: dict[str, str] | None = None
        self.blank_lines = 0

    @property
    def size_hint(self) -> int:
        """Bytes on disk, for progress bars."""
        if self.dataset is not None:
            return sum(f.stat().st_size for f in self.dataset.files)
        return self.path.stat().st_size

    def _map(self, objs: list[Any]) -> dict[str, str]:
        if self.mapping is None:
            keys: set[str] = set()
            for obj in (o for o in objs if isinstance(o, dict)):
                keys.update(obj)
                if len(keys) > 200:
                    break
            if not keys:  # no record parsed yet: decide on a later batch
                return resolve_mapping((), self.overrides)
            self.mapping = resolve_mapping(keys, self.overrides)
        return self.mapping

    def _convert(self, batch: Batch, items: list[tuple[int, Any, bytes | None]]) -> Batch:
        mapping = self._map([obj for _, obj, _ in items])
        unit = self.info.unit
        for line, obj, raw in items:
            if isinstance(obj, RecordError):
                err = obj
            else:
                try:
                    if is_tool_conversation(obj):
                        batch.conversations.append((line, to_tool_conversation(obj)))
                        continue
                    batch.rows.append(to_row(obj, mapping))
                    batch.lines.append(line)
                    continue
                except RecordError as e:
                    err = e
            raw_text = _raw_text(raw) if raw is not None else orjson.dumps(obj, default=str).decode()
            batch.rejects.append(Reject(line, unit, err.field, err.kind, str(err), raw_text))
        return batch

    def _iter_dataset(self, files: tuple[Path, ...]) -> Iterator[Batch]:
        """The shards of a dataset split one after another, positions counted on across them."""
        offset = 0
        for path in files:
            part = RecordReader(path, self.overrides, self.batch_size)
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
            self.blank_lines += part.blank_lines
            offset += last

    def __iter__(self) -> Iterator[Batch]:
        if self.dataset is not None:
            yield from self._iter_dataset(self.dataset.files)
        elif self.info.format == "jsonl":
            yield from self._iter_jsonl()
        else:
            yield from self._iter_document()

    def _iter_jsonl(self) -> Iterator[Batch]:
        stream, _ = _open_decompressed(self.path)
        items: list[tuple[int, Any, bytes | None]] = []
        nbytes = 0
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        with stream, _decompression_errors(self.path):
            for line_no, line in enumerate(stream, 1):
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
                items.append((line_no, obj, line.rstrip(b"\r\n")))
                if len(items) >= self.batch_size:
                    yield self._convert(Batch(bytes_read=nbytes), items)
                    items, nbytes = [], 0
        if items or nbytes:
            yield self._convert(Batch(bytes_read=nbytes), items)

    def _load_document(self) -> list[Any]:
        stream, _ = _open_decompressed(self.path)
        with stream, _decompression_errors(self.path):
            data = stream.read()
        fmt = self.info.format
        if fmt == "json":
            try:
                doc = orjson.loads(data.removeprefix(BOM))
            except orjson.JSONDecodeError as err:
                raise WbError(
                    f"{self.path}: not valid JSON ({err}); fix the file or convert it to JSON Lines"
                ) from None
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

    def _iter_document(self) -> Iterator[Batch]:
        docs = self._load_document()
        total = self.path.stat().st_size
        for start in range(0, max(len(docs), 1), self.batch_size):
            chunk = docs[start : start + self.batch_size]
            items: list[tuple[int, Any, bytes | None]] = [(start + i + 1, obj, None) for i, obj in enumerate(chunk)]
            end = start + len(chunk)
            nbytes = total if end >= len(docs) else 0
            yield self._convert(Batch(bytes_read=nbytes), items)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[IO[bytes]]:
    """Write to a temporary file beside `path` and rename it into place only when the block succeeds.

    A crash, kill or Ctrl-C leaves either the old file or nothing at `path`, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
