"""JSONL event logs, read the same way by every command (``leadscore produce``, ``leadscore
replay``).

A log is a file of lines, gzip-compressed when its name ends in ``.gz``. A line is cut at
``\\n``; trailing ``\\r`` are removed (CRLF files); a line of whitespace only is blank and is
not a record, but it keeps its number, so every record is named by its 1-based line number
in the file. What a non-blank line contains is not looked at here.

The same reading in three forms: :func:`iter_lines` (one record at a time),
:func:`read_chunks` (lists of lines, blank ones included, for bulk readers), and
:func:`read_bytes` + :func:`split_lines` (small files read at once).
"""

from __future__ import annotations

import contextlib
import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

#: Bytes read from the file at a time by :func:`read_chunks` (results never depend on it).
CHUNK_BYTES = 4 << 20


class JsonlError(Exception):
    """A log that cannot be read (missing, unreadable, a corrupt or truncated ``.gz``); the
    message names the file."""


@dataclass(slots=True)
class LineChunk:
    """Consecutive lines of a log, blank lines included (see :func:`is_blank`)."""

    lines: list[bytes]
    #: Line number of ``lines[0]`` (1-based): ``lines[i]`` is line ``first_line + i``.
    first_line: int
    #: Bytes of the file (compressed bytes for ``.gz``) this chunk accounts for, for
    #: progress bars.
    file_bytes: int


def is_blank(line: bytes) -> bool:
    """Whether a line (trailing ``\\r`` already removed) is blank: whitespace only."""
    return not line.strip()


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[tuple[IO[bytes], IO[bytes] | gzip.GzipFile]]:
    """``(file, decompressed stream)``; errors, reading included, become JsonlError."""
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise JsonlError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with raw:
        stream: IO[bytes] | gzip.GzipFile = raw
        if path.suffix == ".gz":
            stream = gzip.GzipFile(fileobj=raw)
        try:
            yield raw, stream
        except (OSError, EOFError, zlib.error) as exc:  # a corrupt or truncated .gz
            raise JsonlError(f"{path}: cannot read: {exc}") from None


def read_chunks(path: Path, chunk_bytes: int | None = None) -> Iterator[LineChunk]:
    """The lines of ``path``, in order, about ``chunk_bytes`` (default
    :data:`CHUNK_BYTES`) at a time; trailing ``\\r`` removed, blank lines kept (so line
    numbers stay contiguous). Raises :class:`JsonlError`."""
    size = chunk_bytes or CHUNK_BYTES
    with _opened(path) as (raw, stream):
        line_no = 1
        rest = b""
        done = 0
        while data := stream.read(size):
            buffer = rest + data
            lines = buffer.split(b"\n")
            rest = lines.pop()  # an incomplete last line waits for the next read
            if b"\r" in buffer:
                lines = [line.rstrip(b"\r") for line in lines]
            position = raw.tell()
            yield LineChunk(lines, line_no, position - done)
            done = position
            line_no += len(lines)
        if rest:
            yield LineChunk([rest.rstrip(b"\r")], line_no, raw.tell() - done)


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, line)`` for every non-blank line of ``path``, trailing ``\\r``
    removed. Raises :class:`JsonlError`."""
    for chunk in read_chunks(path):
        for number, line in enumerate(chunk.lines, chunk.first_line):
            if not is_blank(line):
                yield number, line


def read_bytes(path: Path) -> bytes:
    """The whole content of ``path``, decompressed when it ends in ``.gz`` (for small files;
    :func:`split_lines` cuts it). Raises :class:`JsonlError`."""
    with _opened(path) as (_, stream):
        return stream.read()


def split_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """:func:`iter_lines` of a content already in memory."""
    for number, line in enumerate(data.split(b"\n"), 1):
        stripped = line.rstrip(b"\r")
        if not is_blank(stripped):
            yield number, stripped
