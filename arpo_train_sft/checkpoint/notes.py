"""The notes a run's ranks leave in output_dir for the launcher (stopped.json, diverged.json, oom-rank<R>.json):
one JSON object, written whole or not at all, and read back only when it is newer than the launch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..atomic import atomic_writer


def write_note(path: Path, note: dict[str, Any]) -> dict[str, Any]:
    """Write `note` to `path` atomically; the note as written."""
    with atomic_writer(path) as handle:
        json.dump(note, handle, indent=1)
    return note


def read_note(path: Path, since: float) -> dict[str, Any] | None:
    """The JSON object at `path` if it was written at or after `since` (time.time()), else None."""
    try:
        if path.stat().st_mtime < since:
            return None
        note = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return note if isinstance(note, dict) else None
