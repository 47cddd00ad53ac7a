"""Byte streams of an input: opening a file or standard input, decompression (gzip, zstd), Unicode transcoding
(UTF-16/32 with a byte-order mark to UTF-8), hashing while reading, and byte ranges of a file for parallel readers.

Everything here reads front to back, so pipes and standard input work: sniffing replays the bytes it looked at
(`Replay`) instead of seeking back.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import hashlib
import io
import itertools
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

from workbench.errors import WbError
from workbench.output import sha256_file

Compression = Literal["none", "gzip", "zstd"]

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


def open_raw(path: Path) -> IO[bytes]:
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


class Replay(io.RawIOBase):
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


class Hashing(io.RawIOBase):
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


def open_decompressed(path: Path, raw: IO[bytes] | io.RawIOBase | None = None) -> tuple[IO[bytes], Compression, str]:
    """The file's text as UTF-8 bytes, whatever its compression (gzip, zstd) and Unicode encoding (UTF-8,
    UTF-16/32 with a byte-order mark); reads front to back only, so pipes and standard input work."""
    f: Any = raw if raw is not None else open_raw(path)
    head = _read_head(f, 18)
    src: Any = Replay(f, head)  # a raw stream of the layer below, one layer after another
    compression: Compression = "none"
    if head.startswith(_GZIP_MAGIC):
        src, compression = gzip.GzipFile(fileobj=io.BufferedReader(src)), "gzip"
    elif head.startswith(_ZSTD_MAGIC):
        import zstandard

        expected = zstandard.frame_content_size(head) if len(head) >= 18 else -1
        reader = zstandard.ZstdDecompressor().stream_reader(src, closefd=True, read_across_frames=True)
        src, compression = _SizeChecked(reader, expected, path), "zstd"
    text_head = _read_head(src, 4)
    src = Replay(src, text_head)
    encoding = next((enc for bom, enc in _WIDE_BOMS if text_head.startswith(bom)), "utf-8")
    if encoding != "utf-8":
        src = _Transcoded(src, encoding, path)
    return io.BufferedReader(src, buffer_size=1 << 20), compression, encoding


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


@contextlib.contextmanager
def sniff_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except (OSError, EOFError) as err:
        raise WbError(f"{path}: cannot decompress ({err})") from None
    except Exception as err:
        if type(err).__module__.startswith("zstandard"):
            raise WbError(f"{path}: cannot decompress ({err})") from None
        raise


@contextlib.contextmanager
def decompression_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except (EOFError, OSError) as err:
        raise WbError(f"{path}: compressed data is truncated or corrupt ({err})") from None
    except Exception as err:
        if type(err).__module__.startswith("zstandard"):
            raise WbError(f"{path}: compressed data is truncated or corrupt ({err})") from None
        raise


class Bounded(io.RawIOBase):
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
