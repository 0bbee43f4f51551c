"""Stream the rows of a JSON Lines file or of a JSON array file, with row and line numbers, in bounded memory.

One reader for every data command: each input is opened once and read once, as a stream. A row past one
of the limits below is a rejected row with its reason, never the end of the file: longer than
MAX_ROW_BYTES, nested deeper than MAX_DEPTH, or holding an integer of more than MAX_INT_DIGITS digits.
An input with no line end (or no row) within MAX_SKIP_BYTES, such as /dev/zero, ends the read with one
line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import UserError
from .bounds import MAX_ROW_BYTES, MAX_SKIP_BYTES, ROW_SAMPLE, TOO_DEEP, decode
from .inputs import open_input, replay
from .window import Text, printable

_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20
_JSON_SPACE = b" \t\r\n"
# Bytes that are not UTF-8 are decoded with surrogateescape into these lone surrogates; valid UTF-8 never
# yields them, so finding one in a row's text means the file had a bad byte there.
_BAD_BYTE = re.compile("[\udc80-\udcff]")
# What a cut-off value can still turn into: the rest of a literal, or of a number (1. -> 1.5, 1e -> 1e-3).
_UNFINISHED = ("true", "false", "null", "NaN", "Infinity", "-Infinity", ".", "e+", "e-", "E+", "E-")
# An element that fails (or ends) this close to the end of what was read may just be cut by the chunk.
_TAIL = 16
_TRUNCATED = "truncated: the file ends inside this row"
_STOPPED = "the rows after it cannot be told apart, so reading stops here"
_FORMATS = "JSON Lines (one JSON object per line) or a JSON array of objects"
ENDLESS = (
    "is it a data file (an endless input such as /dev/zero never ends a row)? fix: point at the JSONL file"
)


@dataclass(frozen=True)
class Row:
    """One row of a data file, parsed or not."""

    number: int  # 1-based row number (JSONL: counts non-blank lines; JSON array: element index + 1)
    line: int  # 1-based line in the file where the row starts
    data: Any  # the parsed value (normally a dict), or None when the row could not be parsed
    error: str | None  # why it could not be parsed
    text: str  # the row's raw text, decoded with errors="replace" when it is not UTF-8


def iter_rows(path: Path) -> Iterator[Row]:
    """Every row of `path` (JSON Lines, or a JSON array; gzipped or not; `-` is stdin), in order.

    The input is opened and read exactly once, so a pipe or FIFO gives the same rows as a file; raises
    UserError if it is neither format, and (while iterating) if reading it fails part way.
    """
    stream = open_input(path)
    try:
        head = _sniff(stream, path)
        first = head.removeprefix(_BOM).lstrip(_JSON_SPACE)[:1]
        stream = replay(head, stream, path)
        if first == b"[":
            return _array_rows(stream)
        rows = _jsonl_rows(stream, path)
        start = list(islice(rows, 2))
        _check_jsonl_start(path, first, start)
        return chain(start, rows)
    except BaseException:
        stream.close()
        raise


def _sniff(stream: BinaryIO, path: Path) -> bytes:
    """What was read up to the first byte that is not whitespace (after a UTF-8 BOM); UserError if none."""
    head = bytearray()
    while True:
        chunk = stream.read1(_CHUNK)
        head += chunk
        # A pipe may hand over fewer bytes than a BOM: decide only on a whole one, or at the end.
        # Earlier chunks were blank: only the new one can hold a row, unless the BOM was still undecided.
        seen = head.removeprefix(_BOM) if len(head) - len(chunk) < len(_BOM) else chunk
        if (len(head) >= len(_BOM) or not chunk) and seen.lstrip(_JSON_SPACE):
            return bytes(head)
        if len(head) > MAX_SKIP_BYTES:
            raise UserError(
                f"{path}: nothing but blank space in the first {MAX_SKIP_BYTES:,} bytes; {ENDLESS}"
            )
        if not chunk:
            break
    raise UserError(f"{path}: the file is empty (no rows); fix: point at the data file, or download it again")


def _check_jsonl_start(path: Path, first: bytes, head: list[Row]) -> None:
    """Refuse files whose first line shows they are not JSON Lines: binary data, or one pretty-printed object."""
    row = head[0]
    if row.error is None or (first == b"{" and row.error.startswith("not valid UTF-8")):
        return
    if first != b"{":
        raise UserError(
            f"{path}: line {row.line} starts with {row.text[:20]!r}, so this is neither {_FORMATS}; "
            "fix: convert the data to JSON Lines"
        )
    if len(head) == 2 and head[1].error is not None and _cut_short_text(row.text):
        raise UserError(
            f"{path}: line {row.line} opens a JSON object that goes on over the next lines (pretty-printed "
            f"JSON?), but rows must be {_FORMATS}; fix: write one complete object per line (e.g. `jq -c`)"
        )


def _jsonl_rows(f: BinaryIO, path: Path) -> Iterator[Row]:
    with f:
        number, line, gap = 0, 0, 0
        while raw := f.readline(MAX_ROW_BYTES + 1):
            line += 1
            if line == 1:
                raw = raw.removeprefix(_BOM)
            if len(raw) > MAX_ROW_BYTES and not raw.endswith(b"\n"):
                number += 1
                yield _long_row(f, path, raw, number, line)
                gap = 0
            elif raw.strip(_JSON_SPACE):
                number += 1
                yield _line_row(raw, number, line)
                gap = 0
            else:
                gap += len(raw)
                if gap > MAX_SKIP_BYTES:
                    raise UserError(
                        f"{path}: no row in {MAX_SKIP_BYTES:,} bytes after line {line}; {ENDLESS}"
                    )


def _long_row(f: BinaryIO, path: Path, head: bytes, number: int, line: int) -> Row:
    """The rejected row for a line longer than MAX_ROW_BYTES, read on to its end in bounded memory."""
    size, first = len(head), head[:ROW_SAMPLE]
    while not head.endswith(b"\n"):
        head = f.readline(_CHUNK)
        if not head:
            break
        size += len(head)
        if size > MAX_SKIP_BYTES:
            raise UserError(f"{path}: line {line} has no end in {MAX_SKIP_BYTES:,} bytes; {ENDLESS}")
    error = f"row too long: {size:,} bytes, the limit is {MAX_ROW_BYTES:,}; split or shorten it"
    return Row(number, line, None, error, first.decode("utf-8", "replace"))


def _line_row(raw: bytes, number: int, line: int) -> Row:
    last = not raw.endswith(b"\n")
    body = raw.removesuffix(b"\n").removesuffix(b"\r")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        column = len(body[: err.start].decode("utf-8", "replace")) + 1
        error = f"not valid UTF-8 (byte 0x{body[err.start]:02x} at column {column})"
        return Row(number, line, None, error, body.decode("utf-8", "replace"))
    try:
        data, end, error = decode(text, len(text) - len(text.lstrip(" \t\r\n")))
    except RecursionError:
        return Row(number, line, None, TOO_DEEP, text)
    except json.JSONDecodeError as err:
        error = (
            _TRUNCATED
            if last and _cut_short(err, text)
            else f"not valid JSON ({err.msg} at column {err.colno})"
        )
        return Row(number, line, None, error, text)
    if error is None and text[end:].strip(" \t\r\n"):
        error = f"not valid JSON (Extra data at column {end + 1})"
    return Row(number, line, None if error else data, error, text)


def _cut_short(err: json.JSONDecodeError, text: str) -> bool:
    """Whether `text` fails only because it stops too early, i.e. more text could still make it valid."""
    rest = text[err.pos :].rstrip()
    if not rest or err.msg.startswith("Unterminated string"):
        return True
    if err.msg.startswith("Invalid \\u"):
        return len(rest) < 5  # "u" and fewer than four hex digits
    return any(ending.startswith(rest) for ending in _UNFINISHED)


def _cut_short_text(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        return _cut_short(err, text)
    return False


def _array_rows(f: BinaryIO) -> Iterator[Row]:
    with f:
        text = Text(f)
        text.peek()
        text.advance(text.pos + 1)  # the opening [
        number = 0
        char = text.peek()
        while char != "]":
            number += 1
            row, readable = _element(text, number)
            yield row
            if not readable:
                return
            char = text.peek()
            if char == ",":
                text.advance(text.pos + 1)
                char = ""  # a row must follow a comma, even a "]" (which then fails to parse)
            elif char != "]":
                yield _junk_after(text, number)
                return
        text.advance(text.pos + 1)  # the closing ]
        if text.peek():
            error = f"not valid JSON (text after the array's closing ] at {text.where(text.pos)})"
            yield Row(number + 1, text.line, None, error, printable(text.rest_of_line(text.pos)))


def _element(text: Text, number: int) -> tuple[Row, bool]:
    """The next array element, read in full, and whether the elements after it can still be found."""
    text.peek()
    line = text.line
    while True:
        try:
            data, end, limit = decode(text.buf, text.pos)
        except RecursionError:
            return Row(number, line, None, f"{TOO_DEEP}; {_STOPPED}", ""), False
        except json.JSONDecodeError as err:
            near_end = err.msg.startswith("Unterminated string") or len(text.buf) - err.pos <= _TAIL
            if near_end and len(text.buf) - text.pos > MAX_ROW_BYTES:
                error = f"row too long: over {MAX_ROW_BYTES:,} bytes (the limit); {_STOPPED}"
                return Row(
                    number, line, None, error, printable(text.buf[text.pos : text.pos + ROW_SAMPLE])
                ), False
            if near_end and text.more():
                continue
            truncated = text.eof and _cut_short(err, text.buf)
            raw = text.buf[text.pos :] if truncated else text.rest_of_line(err.pos)
            bad = _BAD_BYTE.search(raw)
            if bad:
                error = _bad_byte(text, text.pos + bad.start(), bad)
            elif truncated:
                error = _TRUNCATED
            else:
                error = f"not valid JSON ({err.msg} at {text.where(err.pos)}); {_STOPPED}"
            return Row(number, line, None, error, printable(raw)), False
        # A number cut by the chunk's end still parses ("1" of "1.5e3"); only more text tells.
        if len(text.buf) - end <= _TAIL and text.more():
            continue
        raw = text.buf[text.pos : end]
        bad = _BAD_BYTE.search(raw)
        error = _bad_byte(text, text.pos + bad.start(), bad) if bad else limit
        if len(raw) > MAX_ROW_BYTES:
            error = f"row too long: {len(raw.encode('utf-8', 'surrogateescape')):,} bytes, the limit is {MAX_ROW_BYTES:,}"
        text.advance(end)
        return Row(number, line, None if error else data, error, printable(raw) if bad else raw), True


def _junk_after(text: Text, number: int) -> Row:
    """The row standing for whatever follows row `number` where a ',' or the closing ']' should be."""
    if text.pos == len(text.buf):
        error = f"truncated: the file ends before the array's closing ] (at {text.where(text.pos)})"
    else:
        error = (
            f"not valid JSON (expected ',' or ']' after row {number} at {text.where(text.pos)}); {_STOPPED}"
        )
    return Row(number + 1, text.line, None, error, printable(text.rest_of_line(text.pos)))


def _bad_byte(text: Text, index: int, match: re.Match[str]) -> str:
    return f"not valid UTF-8 (byte 0x{ord(match.group()) - 0xDC00:02x} at {text.where(index)})"
