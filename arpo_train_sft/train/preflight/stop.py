"""Whether ARPO_SFT_STOP_TIMEOUT gives the ranks time to finish the step and save checkpoint-N on SIGTERM.

torchrun kills ranks still running that long after SIGTERM (train/topology.py); a checkpoint cut short is
set aside on the relaunch, which then resumes from an older one. The time is estimated, not measured, so
the row only warns.
"""

from __future__ import annotations

import math

from ...errors import UserError
from ..topology import topology_from_env
from .rows import OK, SKIP, WARN, Plan, Row

VARIABLE = "ARPO_SFT_STOP_TIMEOUT"
# The write speed assumed: 1 GB/s per node, each node writing its own ranks' files at once (a local NVMe
# disk, or a shared filesystem that keeps up with every node; one NFS server shared by all may not).
WRITE_BYTES_PER_S_PER_NODE = 1e9
# Time for the step in flight when SIGTERM arrives, on top of the save. An allowance, not a measurement:
# a run whose steps take longer needs that much more.
STEP_ALLOWANCE_S = 60


def checkpoint_write(params: int, alone: int, split: int, nnodes: int) -> tuple[float, float]:
    """(checkpoint bytes in all, bytes node 0 writes): global rank 0's own files (`alone` bytes per
    parameter) and its node's 1/nnodes of the ones the ranks split (`split`). Node 0 writes the most, so
    the job's save ends when its part does."""
    return params * (alone + split), params * (alone + split / nnodes)


def check_stop_timeout(plan: Plan) -> list[Row]:
    """One row: the checkpoint SIGTERM saves, the time to write it, against ARPO_SFT_STOP_TIMEOUT."""
    from ..estimate.terms import read_setup
    from .files import is_demo_model
    from .sizes import checkpoint_bytes

    try:
        topo = topology_from_env(plan.env, len(plan.gpus))
    except UserError:
        return [Row("stop_timeout", SKIP, "not checked: see the topology row")]
    timeout = f"{VARIABLE}={topo.stop_timeout} s"
    if is_demo_model(plan.cfg):
        return [Row("stop_timeout", OK, f"{timeout}; the tiny demo model saves in seconds")]
    try:
        s = read_setup(plan.cfg)
    except UserError as err:
        return [Row("stop_timeout", SKIP, f"not checked: {err.problems[0]}")]
    alone, split = checkpoint_bytes(s)
    params = s.shape.params()
    total, node0 = checkpoint_write(params, alone, split, topo.nnodes)
    seconds = node0 / WRITE_BYTES_PER_S_PER_NODE
    needed = seconds + STEP_ALLOWANCE_S
    weights = "16-bit" if s.elem_bytes == 2 else "fp32"
    size = (
        f"checkpoint on SIGTERM ~{total / 1e9:.0f} GB ({alone + split} bytes/param x {params / 1e9:.2f}B "
        f"params: {weights} weights + fp32 master weights, Adam m, v)"
    )
    rate = f"{WRITE_BYTES_PER_S_PER_NODE / 1e9:g} GB/s per node"
    where = f"node 0 writes ~{node0 / 1e9:.0f} GB of it" if topo.nnodes > 1 else "written"
    found = (
        f"{size}, {where} in ~{seconds:.0f} s at an assumed {rate}, + {STEP_ALLOWANCE_S} s to finish the step"
    )
    if needed <= topo.stop_timeout:
        return [Row("stop_timeout", OK, f"{found}: within {timeout}")]
    suggested = math.ceil(needed / 60) * 60
    return [
        Row(
            "stop_timeout",
            WARN,
            f"{found} = ~{needed:.0f} s, longer than {timeout}: torchrun would kill the ranks mid-save",
            f"set {VARIABLE}={suggested} (seconds) on every node, more for a slower disk",
        )
    ]
