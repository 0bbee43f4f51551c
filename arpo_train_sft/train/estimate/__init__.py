"""Per-GPU peak memory of a training config, term by term, and the cheapest change that makes it fit.

The terms and their formulas live in terms.py, the advice in advice.py; this module
reads the hardware a preset names and puts them together. Preflight calls `estimate` directly.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from ...config import RunConfig
from ...errors import UserError
from ..hardware import GPUS
from ..values import GPU_MEM_GIB, Bound, parse_number
from .advice import advise
from .terms import GIB, Setup, host_bytes, per_gpu_bytes, read_setup

# "Sized for: one node with 8x 24 GB GPUs": GPU makers' GB on these cards are binary (a "24 GB" card has
# 24,564 MiB), so the number is taken as GiB.
_SIZED_FOR = re.compile(r"Sized for:.*?(\d+)\s*x\s*(\d+(?:\.\d+)?)\s*GB GPUs", re.IGNORECASE | re.ASCII)
_HOST_RAM = re.compile(r"(\d+)\s*GB host RAM", re.IGNORECASE | re.ASCII)
# How far the total may be off the measured peak: the tolerance a real 2-rank ZeRO-3 step holds it to
# (tests/train/test_estimate_measured.py, on CPU: +0.5 to +4 % measured). Preflight fails a launch only
# beyond it, since the GPU-only terms (CUDA context, allocator slack) are not yet measured on a GPU.
MARGIN = 0.15


@dataclass(frozen=True)
class Estimate:
    """The estimate for one config on `gpus` GPUs of `gpu_mem_gib` each."""

    per_gpu_gib: dict[str, float]
    total_gib: float
    gpu_mem_gib: float
    host_gib: float
    fits: bool
    advice: list[str]
    gpus: int
    params: int
    setup: Setup

    def to_json(self) -> dict:
        """The `--json` shape."""
        return {
            "per_gpu_gib": {key: round(value, 2) for key, value in self.per_gpu_gib.items()},
            "total_gib": round(self.total_gib, 2),
            "gpu_mem_gib": self.gpu_mem_gib,
            "fits": self.fits,
            "advice": self.advice,
            "gpus": self.gpus,
            "host_gib": round(self.host_gib, 2),
        }


def hardware_from_header(path: Path) -> tuple[int | None, float | None, float | None]:
    """(GPUs, GiB per GPU, host GB) that a preset's "Sized for:" header names; None where it names none."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# "))
    text = " ".join(lines)
    gpus, host = _SIZED_FOR.search(text), _HOST_RAM.search(text)
    where = f"{path}: header 'Sized for:'"
    return (
        int(parse_number(f"{where} GPUs", gpus.group(1), GPUS)) if gpus else None,
        float(parse_number(f"{where} GB per GPU", gpus.group(2), GPU_MEM_GIB)) if gpus else None,
        float(parse_number(f"{where} GB host RAM", host.group(1), Bound(1, 10**9))) if host else None,
    )


def check_hardware_args(gpus: int | None, gpu_mem_gib: float | None) -> list[str]:
    """Problems with a GPU count or memory given by the caller, one line each naming the flag."""
    problems = []
    if gpus is not None and not GPUS.admits(gpus):
        problems.append(f"--gpus {gpus}: expected {GPUS.describe()}")
    if gpu_mem_gib is not None and not (math.isfinite(gpu_mem_gib) and GPU_MEM_GIB.admits(gpu_mem_gib)):
        problems.append(f"--gpu-mem {gpu_mem_gib}: expected {GPU_MEM_GIB.describe()} GiB per GPU")
    return problems


def estimate(cfg: RunConfig, gpus: int | None = None, gpu_mem_gib: float | None = None) -> Estimate:
    """Per-GPU peak memory of `cfg` on `gpus` GPUs of `gpu_mem_gib` GiB (default: what its header names)."""
    problems = check_hardware_args(gpus, gpu_mem_gib)
    header_gpus, header_mem, host_mem = hardware_from_header(cfg.path)
    gpus = gpus if gpus is not None else header_gpus
    gpu_mem_gib = gpu_mem_gib if gpu_mem_gib is not None else header_mem
    if not problems and (gpus is None or gpu_mem_gib is None):
        problems.append(
            f"{cfg.path}: its header names no 'Sized for: ... Nx M GB GPUs'; pass --gpus N and --gpu-mem GIB"
        )
    if problems:
        raise UserError(problems)
    s = read_setup(cfg)
    terms = {key: value / GIB for key, value in per_gpu_bytes(s, gpus).items()}
    total = sum(terms.values())
    host = host_bytes(s, gpus) / GIB
    advice = advise(s, gpus, gpu_mem_gib)
    if host_mem is not None and host > host_mem:
        advice.append(f"host RAM: about {host:.0f} GiB needed per node, the header names {host_mem:.0f} GB")
    return Estimate(terms, total, gpu_mem_gib, host, total <= gpu_mem_gib, advice, gpus, s.shape.params(), s)
