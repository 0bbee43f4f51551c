"""The note a run leaves when SIGTERM stopped it after saving, read by the launcher to exit 143.

    <output_dir>/stopped.json  {"step": N, "max_steps": M, "checkpoint": "<output_dir>/checkpoint-N",
                                "signal": "SIGTERM", "time": "..."}

Global rank 0 writes it in output_dir, for people and tools. Each node's local rank 0 writes the same note
in the directory its launcher names in DIR_ENV, a private one on that node, and the launcher reads it from
there: output_dir may be node-local, and only node 0's would then hold a note.

A note older than the launch it is read after belongs to an earlier launch and is ignored.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import notes

NOTE = "stopped.json"
# Where the launcher asks its node's ranks to leave the note for it (a temporary directory it removes).
DIR_ENV = "ARPO_SFT_STOP_DIR"


def write_note(
    output_dir: Path, step: int, max_steps: int, signal_name: str, to: Path | None = None
) -> dict[str, Any]:
    """Record that the run stopped at `step` with output_dir/checkpoint-<step> saved, in `to` (default:
    output_dir); the note as written."""
    note = {
        "step": step,
        "max_steps": max_steps,
        "checkpoint": str(output_dir / f"checkpoint-{step}"),
        "signal": signal_name,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return notes.write_note((to or output_dir) / NOTE, note)


def read_note(directory: Path, since: float) -> dict[str, Any] | None:
    """The note a run launched at `since` (time.time()) left in `directory`, or None when it left none."""
    note = notes.read_note(directory / NOTE, since)
    return note if note is not None and isinstance(note.get("step"), int) else None
