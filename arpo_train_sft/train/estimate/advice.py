"""The cheapest change that makes a config fit its GPUs: kinds of change in order of what they cost."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from .terms import DS_MAX_LIVE, GIB, GPUS_PER_NODE, Setup, per_gpu_bytes

# One option: the overrides (or flag) a user passes, the changed setup, and the GPU count it assumes.
Option = tuple[str, Setup, int]
MAX_GPUS = 8 * GPUS_PER_NODE


def total_gib(s: Setup, gpus: int) -> float:
    """The estimate's per-GPU total."""
    return sum(per_gpu_bytes(s, gpus).values()) / GIB


def _shipped_ds(stage: int, offload: bool) -> str:
    return f"examples/deepspeed/ds_z{stage}{'_offload' if offload else ''}_config.json"


def _liger(s: Setup, gpus: int) -> list[Option]:
    # The same loss without the full-vocabulary logits, and faster: nothing to give up.
    return [] if s.liger else [("enable_liger_kernel=true", replace(s, liger=True), gpus)]


def _micro_batch(s: Setup, gpus: int) -> list[Option]:
    # The same global batch through accumulation: only a little slower per sample.
    options, batch = [], s.micro_batch // 2
    while batch >= 1:
        if s.micro_batch % batch == 0:
            acc = s.accumulation * s.micro_batch // batch
            overrides = f"per_device_train_batch_size={batch} gradient_accumulation_steps={acc}"
            options.append((overrides, replace(s, micro_batch=batch, accumulation=acc), gpus))
        batch //= 2
    return options


def _checkpointing(s: Setup, gpus: int) -> list[Option]:
    # Recomputes each layer's forward in the backward: about a third more compute.
    return (
        []
        if s.checkpointing
        else [("disable_gradient_checkpointing=false", replace(s, checkpointing=True), gpus)]
    )


def _zero3(s: Setup, gpus: int) -> list[Option]:
    # Shards the weights too: more all-gathers each step.
    if s.stage >= 3:
        return []
    ds = _shipped_ds(3, False)
    return [
        (f"deepspeed={ds}", replace(s, deepspeed=ds, stage=3, reduce_bucket=None, max_live=DS_MAX_LIVE), gpus)
    ]


def _offload(s: Setup, gpus: int) -> list[Option]:
    # Optimizer states (and at ZeRO-3 the weights) in host RAM: much slower steps, much host RAM.
    if s.offload_optimizer:
        return []
    stage = 2 if s.stage == 2 else 3
    ds = _shipped_ds(stage, True)
    changed = replace(s, deepspeed=ds, stage=stage, offload_optimizer=True, offload_param=stage == 3)
    return [(f"deepspeed={ds}", changed, gpus)]


def _cutoff(s: Setup, gpus: int) -> list[Option]:
    # Rows longer than the cutoff lose their tail (and ARPO's <answer> with it): changes the training data.
    top = s.cutoff - 1 if s.cutoff % 1024 == 0 else s.cutoff
    return [(f"cutoff_len={c}", replace(s, cutoff=c), gpus) for c in range(top - top % 1024, 0, -1024)]


def _more_gpus(s: Setup, gpus: int) -> list[Option]:
    # Needs more hardware; shrinks only the sharded terms.
    first = gpus + GPUS_PER_NODE - gpus % GPUS_PER_NODE
    return [(f"--gpus {n}", s, n) for n in range(first, MAX_GPUS + 1, GPUS_PER_NODE)]


KINDS: tuple[Callable[[Setup, int], list[Option]], ...] = (
    _liger,
    _micro_batch,
    _checkpointing,
    _zero3,
    _offload,
    _cutoff,
    _more_gpus,
)


def advise(s: Setup, gpus: int, gpu_mem_gib: float) -> list[str]:
    """The cheapest single change that fits, else the cheapest combination; empty when it already fits."""
    if total_gib(s, gpus) <= gpu_mem_gib:
        return []
    for kind in KINDS:
        for overrides, changed, n in kind(s, gpus):
            total = total_gib(changed, n)
            if total <= gpu_mem_gib:
                return [f"cheapest change that fits: {overrides} ({total:.1f} GiB per GPU)"]
    # No one change is enough: stack the kinds in order of cost, each at its mildest option that fits
    # together with the ones before it, else at its strongest, until the total fits.
    taken, current, n = [], s, gpus
    for kind in KINDS:
        options = kind(current, n)
        if not options:
            continue
        fitting = [opt for opt in options if total_gib(opt[1], opt[2]) <= gpu_mem_gib]
        overrides, current, n = fitting[0] if fitting else options[-1]
        taken.append(overrides)
        if fitting:
            total = total_gib(current, n)
            return [f"no single change fits; together: {' '.join(taken)} ({total:.1f} GiB per GPU)"]
    total = total_gib(current, n)
    return [f"does not fit even with {' '.join(taken)} ({total:.1f} GiB per GPU)"]
