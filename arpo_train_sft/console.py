"""The launcher's own lines on stdout (`[arpo-sft] ...`), among the ranks' output it echoes."""

from __future__ import annotations

import contextlib
import os
import sys

from .secrets import redact

# Whether the ranks' output last shown on the terminal ended mid-line (a progress bar does): a launcher line
# then starts on a line of its own. train/launch.py sets it as it echoes the ranks' output.
MID_LINE = [False]


def say(message: str) -> None:
    """One launcher line on stdout, before the ranks' own output."""
    try:
        prefix = "\n" if MID_LINE[0] else ""
        print(f"{prefix}[arpo-sft] {redact(message)}", flush=True)
        MID_LINE[0] = False
    except OSError:
        terminal_gone()


def terminal_gone() -> None:
    """stdout's terminal (or pipe) went away: send what follows to /dev/null, so nothing fails on it again
    (Python would otherwise exit 120 when it cannot flush stdout at exit)."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
