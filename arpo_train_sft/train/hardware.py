"""The hardware a plan is for when flags declare it (`--gpus N`, `--gpu-mem GIB`): one reading for every command."""

from __future__ import annotations

import os

from .values import GPU_MEM_GIB, RANKS_MAX, Bound, parse_number

GPUS = Bound(1, RANKS_MAX)


def gpu_count(text: str, most: int = RANKS_MAX) -> int:
    """`--gpus`: a whole number of GPUs, 1 to `most` (a job's, or one node's), in ASCII digits."""
    return int(parse_number("--gpus", text, Bound(1, most)))


def gpu_memory(text: str) -> float:
    """`--gpu-mem`: the memory of one GPU in GiB, above 0."""
    return float(parse_number("--gpu-mem", text, GPU_MEM_GIB))


def cpu_cores() -> int:
    """The CPU cores this process may run on: the most CPU ranks one node can usefully start."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
