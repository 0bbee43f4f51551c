"""Open a data input once, as a stream: a file, a FIFO or process substitution, `-` for stdin; gzip by its magic."""

from __future__ import annotations

import gzip
import io
import sys
import zlib
from pathlib import Path
from typing import Any, BinaryIO

from ..atomic import STDIN
from ..errors import UserError

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


def open_input(path: Path) -> BinaryIO:
    """`path` (stdin for `-`) opened for reading exactly once, gunzipped when it starts with gzip's magic bytes.

    Nothing is ever re-opened or rewound, so a pipe yields the same bytes as a file; a read that fails part
    way (a cut-off gzip file, a bad CRC, an I/O error) raises one UserError naming the input.
    """
    raw = sys.stdin.buffer if str(path) == STDIN else _open(path)
    stream = replay(b"", raw, path)
    magic = stream.read(len(_GZIP_MAGIC))
    stream = replay(magic, stream, path)
    if magic == _GZIP_MAGIC:
        # GzipFile leaves the stream under it open; the layer above closes both.
        stream = replay(b"", gzip.GzipFile(fileobj=stream, mode="rb"), path, under=stream)
    return stream


def replay(head: bytes, f: BinaryIO, path: Path, under: BinaryIO | None = None) -> BinaryIO:
    """A buffered stream of `head` followed by the rest of `f`: how a peeked-at prefix is put back."""
    return io.BufferedReader(_Replay(head, f, path, under), _CHUNK)


class _Replay(io.RawIOBase):
    def __init__(self, head: bytes, f: BinaryIO, path: Path, under: BinaryIO | None) -> None:
        self._head, self._f, self._path, self._under = head, f, path, under
        self._read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n], self._head = self._head[:n], self._head[n:]
            return n
        try:
            n = self._f.readinto(buffer)
        except (OSError, EOFError, zlib.error) as err:
            raise UserError(
                f"{self._path}: reading failed after {self._read:,} bytes ({err}); "
                "fix: check the file, or download it again (a gzip file may be cut off)"
            ) from None
        self._read += n or 0
        return n

    def close(self) -> None:
        for f in (self._f, self._under):
            if f is not None and f is not sys.stdin.buffer:
                f.close()
        super().close()


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; fix: check the path") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory; fix: pass the .jsonl or .json file inside it") from None
    except OSError as err:
        raise UserError(f"{path}: cannot be read ({err.strerror}); fix: check its permissions") from None
