"""How big the model is, and so how much disk one checkpoint of a full fine-tune takes, and who writes it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..estimate.terms import Setup

# The optimizer state a checkpoint holds: fp32 master weights + Adam's m and v, 4 bytes each per parameter.
OPTIMIZER_BYTES_PER_PARAM = 12
# The model saved at the end of training: bf16 safetensors.
FINAL_MODEL_BYTES_PER_PARAM = 2


def checkpoint_bytes(s: Setup) -> tuple[int, int]:
    """Bytes per parameter in one checkpoint-N: (what global rank 0 writes alone, what the ranks split).

    With e the weights' bytes (2 under bf16/fp16, 4 in fp32): rank 0 alone writes model.safetensors (e, the
    weights gathered; ZeRO-3 does so with stage3_gather_16bit_weights_on_model_save, which the shipped
    JSONs set) and, under ZeRO-0/1/2, DeepSpeed's module states (e; ZeRO-3's hold no weights). The optimizer
    state (12) is split over the ranks by ZeRO-1/2/3, and written by rank 0 alone otherwise; without
    DeepSpeed, torch's Adam keeps no master copy, so the figure errs high there. bf16 ZeRO-2: 2 + 2 + 12 = 16
    in all; bf16 ZeRO-3: 2 + 12 = 14.
    """
    e = s.elem_bytes
    alone = e + (e if s.deepspeed and s.stage < 3 else 0)
    if s.deepspeed and s.stage >= 1:
        return alone, OPTIMIZER_BYTES_PER_PARAM
    return alone + OPTIMIZER_BYTES_PER_PARAM, 0


def model_params(name: str) -> tuple[float | None, str]:
    """(parameter count or None, where it came from) for a local model dir or a hub id."""
    from ...errors import UserError
    from ..shapes import model_shape

    try:
        return model_shape(name).params(), "config.json or the built-in Qwen2.5 table"
    except UserError:
        return None, "unknown"


def count_rows(path: Path) -> int:
    """Rows of a JSON-lines file, counted by newlines without parsing them."""
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 24), b""))
