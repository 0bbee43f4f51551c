"""How big the model is, and so how much disk one checkpoint of a full fine-tune takes."""

from __future__ import annotations

from pathlib import Path

# A DeepSpeed checkpoint of a bf16 full fine-tune: bf16 weights (2) + fp32 master copy, Adam m and v (12)
# + bf16 module states (2), per parameter.
CHECKPOINT_BYTES_PER_PARAM = 16
# The model saved at the end of training: bf16 safetensors.
FINAL_MODEL_BYTES_PER_PARAM = 2


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
