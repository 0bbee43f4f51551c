"""Whether the run fits in GPU memory, by `arpo-sft estimate`, for the GPUs preflight plans for."""

from __future__ import annotations

from ...errors import UserError
from .rows import FAIL, OK, SKIP, WARN, Plan, Row


def check_memory(plan: Plan) -> list[Row]:
    """One row: the estimated per-GPU peak for the config's ZeRO stage and offload against the GPUs' memory.

    It fails only beyond the estimate's error margin; over the GPU but inside the margin, it warns.
    """
    from ..estimate import MARGIN, estimate
    from .environment import world_size

    if not plan.gpus:
        hint = "`arpo-sft estimate CONFIG --gpus N --gpu-mem GIB` plans for GPUs"
        return [Row("memory", SKIP, f"no GPU: CPU ranks ({hint})")]
    try:
        est = estimate(plan.cfg, gpus=world_size(plan), gpu_mem_gib=min(gpu.mem_gib for gpu in plan.gpus))
    except UserError as err:  # the model's shape is unknown here: the model row says why
        return [Row("memory", SKIP, f"no estimate: {err.problems[0]}")]
    s = est.setup
    offload = " + offload" if s.offload_optimizer or s.offload_param else ""
    zero = f"ZeRO-{s.stage}{offload}" if s.deepspeed else "DDP"
    found = f"{est.total_gib:.1f} GiB per GPU estimated ({zero}, {est.gpus} GPUs) of {est.gpu_mem_gib:g} GiB"
    if est.fits:
        return [Row("memory", OK, found)]
    advice = "; ".join(est.advice) or "see `arpo-sft estimate` for the terms"
    over = est.total_gib / est.gpu_mem_gib - 1
    if over <= MARGIN:
        found = f"{found}: {over:.0%} over, inside the estimate's {MARGIN:.0%} margin, so it may fit"
        return [Row("memory", WARN, found, f"watch the first steps, or to be safe: {advice}", plan.where)]
    found = f"{found}: does not fit ({over:.0%} over, beyond the estimate's {MARGIN:.0%} margin)"
    return [Row("memory", FAIL, found, f"{advice}; or launch anyway with --allow memory", plan.where)]
