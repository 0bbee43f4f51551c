"""The hardware a plan is for when flags declare it (`--gpus N`, `--gpu-mem GIB`): one reading for every command."""

from __future__ import annotations

from ..errors import UserError


def gpu_count(text: str) -> int:
    """`--gpus`: a whole number of GPUs, 1 or more."""
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"--gpus {text}: expected a whole number of GPUs, 1 or more (e.g. 8)")
    return int(text)


def gpu_memory(text: str) -> float:
    """`--gpu-mem`: the memory of one GPU in GiB, above 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise UserError(f"--gpu-mem {text}: expected the memory of one GPU in GiB, above 0 (e.g. 80)")
    return value
