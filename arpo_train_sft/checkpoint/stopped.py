"""The note a run leaves when SIGTERM stopped it after saving: written by global rank 0, read by the launcher.

    <output_dir>/stopped.json  {"step": N, "max_steps": M, "checkpoint": "<output_dir>/checkpoint-N",
                                "signal": "SIGTERM", "time": "..."}

A note older than the launch it is read after belongs to an earlier launch and is ignored.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..atomic import atomic_writer

NOTE = "stopped.json"


def write_note(output_dir: Path, step: int, max_steps: int, signal_name: str) -> dict[str, Any]:
    """Record that the run stopped at `step` with checkpoint-<step> saved; the note as written."""
    note = {"step": step, "max_steps": max_steps, "checkpoint": str(output_dir / f"checkpoint-{step}"),
            "signal": signal_name, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    with atomic_writer(output_dir / NOTE) as handle:
        json.dump(note, handle, indent=1)
    return note


def read_note(output_dir: Path, since: float) -> dict[str, Any] | None:
    """The note a run launched at `since` (time.time()) left, or None when it left none."""
    path = output_dir / NOTE
    try:
        if path.stat().st_mtime < since:
            return None
        note = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return note if isinstance(note, dict) and isinstance(note.get("step"), int) else None
