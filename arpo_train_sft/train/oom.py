"""A CUDA out-of-memory error on a rank, told as one line with the change that makes the run fit.

The rank that hits it (rank/oom.py) appends its traceback to the node's training log, prints MARKER (the
launcher stops echoing the ranks' output to the terminal there; the log keeps all of it) and leaves

    <output_dir>/oom-rank<R>.json  {"rank": R, "step": N, "tokens": T, "time": ...}

The launcher reads the earliest note newer than its launch and prints one line: the rank, the step, the
tokens in that micro-batch, `arpo-sft estimate`'s figure for the run and the cheapest change from its
advice as overrides to paste.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..checkpoint.notes import read_note as read_json_note
from ..checkpoint.notes import write_note as write_json_note
from ..config import RunConfig
from ..errors import UserError

MARKER = "[arpo-sft] out of memory on rank"
# Where the launcher tells the ranks its log is, so a rank can put a traceback there and not on the terminal.
LOG_ENV = "ARPO_SFT_LOG"


def write_note(output_dir: Path, rank: int, step: int, tokens: int | None) -> Path:
    """Record rank's out-of-memory error at step (tokens: the micro-batch's, None before any forward)."""
    path = output_dir / f"oom-rank{rank}.json"
    write_json_note(path, {"rank": rank, "step": step, "tokens": tokens, "time": time.time()})
    return path


def read_note(output_dir: Path, since: float) -> dict[str, Any] | None:
    """The earliest note a rank of the launch at `since` left, or None."""
    found = [read_json_note(path, since) for path in output_dir.glob("oom-rank*.json")]
    found = [note for note in found if note is not None and isinstance(note.get("time"), (int, float))]
    return min(found, key=lambda note: note["time"]) if found else None


def oom_line(note: dict[str, Any], cfg: RunConfig, gpus: int, gpu_mem_gib: float | None) -> str:
    """The one console line: where it ran out, what the estimate says, and the cheapest change."""
    tokens = f"a micro-batch of {note['tokens']:,} tokens" if note.get("tokens") else "its first micro-batch"
    where = f"rank {note['rank']} ran out of GPU memory at step {note['step']} on {tokens}"
    return f"{where}; {_estimate_advice(cfg, gpus, gpu_mem_gib)}"


def _estimate_advice(cfg: RunConfig, gpus: int, gpu_mem_gib: float | None) -> str:
    from .estimate import MARGIN, estimate
    from .estimate.advice import advise

    try:
        est = estimate(cfg, gpus=gpus or None, gpu_mem_gib=gpu_mem_gib)
    except UserError as err:
        return f"no estimate ({err.problems[0]}); lower per_device_train_batch_size or cutoff_len"
    said = f"arpo-sft estimate: {est.total_gib:.1f} GiB per GPU of {est.gpu_mem_gib:g}"
    # The estimate fitted yet the GPU did not: ask for a change that takes its margin off the total.
    target = est.gpu_mem_gib if not est.fits else est.total_gib * (1 - MARGIN)
    advice = advise(est.setup, est.gpus, target)
    if not est.fits:
        return f"{said}; {advice[0] if advice else 'see arpo-sft estimate'}"
    change = advice[0].replace("cheapest change that fits:", "cheapest change that saves the margin:")
    return f"{said} (it fitted: the estimate is {MARGIN:.0%} low here at least); {change}"
