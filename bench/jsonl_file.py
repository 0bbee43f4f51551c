"""Read a JSON-lines record that a bench script wrote, or say in one line why it cannot be read."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


class BadRecord(Exception):
    """The file cannot be read, or one of its lines is not a record; the message is the line to show."""


def read_jsonl(
    path: Path, unreadable: str, bad_line: str, is_record: Callable[[object], bool] | None = None
) -> list:
    """Each non-blank line of path, parsed; BadRecord says `path: cannot read it (why); unreadable` or
    `path: line N bad_line` for the first line that is not JSON or fails is_record."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise BadRecord(f"{path}: cannot read it ({err.strerror}); {unreadable}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise BadRecord(f"{path}: line {number} {bad_line}") from None
        if is_record is not None and not is_record(record):
            raise BadRecord(f"{path}: line {number} {bad_line}")
        records.append(record)
    return records
