"""A sliding window over a decoded stream, for reading a JSON array's elements one at a time."""

from __future__ import annotations

import codecs
import re
from typing import BinaryIO

_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20
_SPACE = re.compile(r"[ \t\r\n]*")


def printable(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class Text:
    """A sliding window over the decoded file: `buf[pos:]` is unread; `line`/`column` locate `pos`."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self.buf, self.pos, self.line, self.column = "", 0, 1, 1
        self.eof = False
        self._started = False

    def more(self) -> bool:
        """Drop what was read, append more of the file; False once the file is used up."""
        if self.eof:
            return False
        # At least as much as is held: a row spanning many chunks is then re-parsed O(log n) times, not O(n).
        data = self._f.read(max(_CHUNK, len(self.buf) - self.pos))
        if not self._started:
            data, self._started = data.removeprefix(_BOM), True
        self.eof = not data
        self.buf = self.buf[self.pos :] + self._decoder.decode(data, final=self.eof)
        self.pos = 0
        return True

    def advance(self, end: int) -> None:
        newline = self.buf.rfind("\n", self.pos, end)
        if newline < 0:
            self.column += end - self.pos
        else:
            self.line += self.buf.count("\n", self.pos, end)
            self.column = end - newline
        self.pos = end

    def peek(self) -> str:
        """Skip whitespace; the next character, or "" at the end of the file."""
        while True:
            self.advance(_SPACE.match(self.buf, self.pos).end())
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return ""

    def where(self, index: int) -> str:
        """'line L column C' of buf[index], for index >= pos."""
        newline = self.buf.rfind("\n", self.pos, index)
        if newline < 0:
            return f"line {self.line} column {self.column + index - self.pos}"
        line = self.line + self.buf.count("\n", self.pos, index)
        return f"line {line} column {index - newline}"

    def rest_of_line(self, index: int) -> str:
        end = self.buf.find("\n", index)
        return self.buf[self.pos : len(self.buf) if end < 0 else end]
