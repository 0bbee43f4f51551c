"""The note a run leaves when SIGTERM stopped it after saving: written by global rank 0, read by the launcher.

    <output_dir>/stopped.json  {"step": N, "max_steps": M, "checkpoint": "<output_dir>/checkpoint-N",
                                "signal": "SIGTERM", "time": "..."}

A note older than the launch it is read after belongs to an earlier launch and is ignored.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import notes

NOTE = "stopped.json"


def write_note(output_dir: Path, step: int, max_steps: int, signal_name: str) -> dict[str, Any]:
    """Record that the run stopped at `step` with checkpoint-<step> saved; the note as written."""
    note = {
        "step": step,
        "max_steps": max_steps,
        "checkpoint": str(output_dir / f"checkpoint-{step}"),
        "signal": signal_name,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return notes.write_note(output_dir / NOTE, note)


def read_note(output_dir: Path, since: float) -> dict[str, Any] | None:
    """The note a run launched at `since` (time.time()) left, or None when it left none."""
    note = notes.read_note(output_dir / NOTE, since)
    return note if note is not None and isinstance(note.get("step"), int) else None
