"""The note a run leaves when a step's loss or gradient norm was not finite: written by global rank 0, read by
the launcher, which turns it into one line and EXIT_DIVERGED.

    <output_dir>/diverged.json  {"step": N, "loss": "nan" | null, "grad_norm": "inf" | null,
                                 "checkpoint": "<output_dir>/checkpoint-K" | null, "facts": {...}, "time": "..."}

`loss` and `grad_norm` hold the non-finite value seen ("nan", "inf", "-inf"), null where it was finite or
not watched. `checkpoint` is the newest complete checkpoint before step N (as `scan` judges it); `facts`
are what the causes are named from: learning_rate, attention (the implementation the model ran),
deepspeed, fp16, and row (a training row, when the step's other micro-batches stayed finite). A note older
than the launch it is read after belongs to an earlier launch and is ignored.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..arpo.recipe import ARPO_LEARNING_RATE
from ..errors import EXIT_DIVERGED
from . import notes
from .scan import checkpoint_step, list_checkpoints, scan

NOTE = "diverged.json"
# A learning rate this many times ARPO's is named as a cause (the demo's 2e-3 is ~300x and trains fine on
# its tiny model, so this names a suspect, not a verdict).
LR_FACTOR = 10
# LLaMA-Factory issues reporting loss 0 / grad_norm NaN with sdpa attention under DeepSpeed.
SDPA_ISSUES = "LLaMA-Factory #9631 #8088 #9567 #8137"


@dataclass(frozen=True)
class Facts:
    """What the ranks ran with that can make a step non-finite."""

    learning_rate: float
    attention: str  # model.config._attn_implementation: "sdpa", "flash_attention_2", "eager", ...
    deepspeed: bool
    fp16: bool
    row: int | None = None  # 0-based row of the tokenized training set, when one micro-batch alone went bad


def last_complete_before(output_dir: Path, step: int) -> Path | None:
    """The newest checkpoint-K with K < step that a resume could load, or None."""
    earlier = [p for p in list_checkpoints(output_dir) if (checkpoint_step(p) or 0) < step]
    return next((p for p in reversed(earlier) if not scan(p).problems), None)


def write_note(
    output_dir: Path, step: int, loss: str | None, grad_norm: str | None, facts: Facts
) -> dict[str, Any]:
    """Record that step `step` was not finite and what came before it; the note as written."""
    checkpoint = last_complete_before(output_dir, step)
    note = {
        "step": step,
        "loss": loss,
        "grad_norm": grad_norm,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "facts": asdict(facts),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return notes.write_note(output_dir / NOTE, note)


def read_note(output_dir: Path, since: float) -> dict[str, Any] | None:
    """The note a run launched at `since` (time.time()) left, or None when it left none."""
    note = notes.read_note(output_dir / NOTE, since)
    try:
        Facts(**note["facts"])  # a note of another shape is not this launch's verdict
    except (KeyError, TypeError):
        return None
    return note if isinstance(note.get("step"), int) else None


def likely_causes(facts: Facts) -> list[str]:
    """The settings of this run known to make steps non-finite, most specific first."""
    causes = []
    if facts.row is not None:
        row = f"row {facts.row} of the tokenized training set"
        causes.append(f"data: {row} (the step's other micro-batches stayed finite)")
    if facts.learning_rate > LR_FACTOR * ARPO_LEARNING_RATE:
        causes.append(
            f"learning_rate {facts.learning_rate:g} (over {LR_FACTOR}x ARPO's {ARPO_LEARNING_RATE:g})"
        )
    if facts.deepspeed and "flash" not in facts.attention:
        causes.append(f"{facts.attention} attention under DeepSpeed ({SDPA_ISSUES}; set flash_attn: fa2)")
    if facts.fp16:
        causes.append("fp16 (its range overflows where bf16's does not; set bf16: true)")
    return causes or ["none this config names (learning rate, attention and precision look ordinary)"]


def describe(note: dict[str, Any]) -> str:
    """The one line the launcher prints for a note, without its `[arpo-sft] ` prefix."""
    bad = {name: note[name] for name in ("loss", "grad_norm") if note.get(name)}
    quantity, value = "/".join(bad), "/".join(bad.values())
    checkpoint = note["checkpoint"] or "none"
    causes = ", ".join(likely_causes(Facts(**note["facts"])))
    where = f"last checkpoint before it: {checkpoint}"
    return f"step {note['step']}: {quantity} is not finite ({value}); {where}; likely causes: {causes}"


def diverged_exit(output_dir: Path, since: float) -> int | None:
    """Print the one line and return EXIT_DIVERGED when this launch's ranks stopped on a non-finite step."""
    from ..console import say

    note = read_note(output_dir, since)
    if note is None:
        return None
    say(describe(note))
    return EXIT_DIVERGED
