"""A relaunch on another world size, ZeRO stage or offload: what it keeps, and whether DeepSpeed must convert.

The global batch (sequences per optimizer step) is the checkpoint's: with the same sequences per step,
the Trainer's data skip and the sampler's order put every step on the same rows as an uninterrupted run
(accelerate hands rank r the micro-batches r, r + W, r + 2W, ... of one seeded order, so step k always
takes that order's rows k*G to (k+1)*G - 1). Only the micro-batch per rank is the config's; the
accumulation is rescaled to fit. What still changes is which rank holds which rows, and so ARPO's loss,
a mean per rank (README: "Resume on another world size").

DeepSpeed loads ZeRO-1/2/3 optimizer partitions only on the world size, stage and offload setting that
wrote them; its universal checkpoint (ds_to_universal) stores each parameter whole and loads on any
(across ZeRO-1/2 and ZeRO-3 once universal.py fits the optimizer state to the loader). ZeRO-0 keeps the
whole optimizer in one file, which loads on any world size as is, and which ds_to_universal cannot read.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from .layout import Layout

# Stages whose optimizer state is partitioned alike on disk (scan.py cannot tell ZeRO-1 from 2 either).
_PARTITIONED = {1: "1/2", 2: "1/2", 3: "3"}
_DEEPSPEED_TESTED = "0.19"  # the version whose conversion bugs the refusals below were measured on


@dataclass(frozen=True)
class Reshape:
    """From the checkpoint's layout to the relaunch's, with the accumulation that keeps the global batch."""

    saved: Layout
    planned: Layout  # accumulation already rescaled
    convert: bool  # through DeepSpeed's universal checkpoint

    def lines(self) -> list[str]:
        """What the relaunch does about it, one line each."""
        s, p = self.saved, self.planned
        out = [f"saved on {s.describe()}; relaunching on {p.describe()}"]
        if s.accumulation != p.accumulation or s.micro_batch != p.micro_batch:
            out.append(
                f"global batch kept at {s.global_batch}: gradient_accumulation_steps {s.accumulation} -> "
                f"{p.accumulation} ({s.world} -> {p.world} ranks, {p.micro_batch} per micro-batch)"
            )
        if self.convert:
            out.append(
                "DeepSpeed's partitions do not fit the new layout: converting to a universal checkpoint"
            )
        return out


def plan_reshape(saved: Layout, planned: Layout, where: str) -> Reshape | None:
    """None when the checkpoint loads as saved; else the reshape, or one line naming what cannot be kept."""
    world_changed = saved.world != planned.world
    stage_changed = _PARTITIONED.get(saved.stage or 0) != _PARTITIONED.get(planned.stage or 0)
    if not world_changed and not stage_changed and saved.offload == planned.offload:
        return None
    if (saved.stage is None) != (planned.stage is None):
        raise UserError(
            f"{where}: saved with {saved.zero}, relaunched with {planned.zero}: a checkpoint resumes only "
            "with DeepSpeed on both sides or on neither; set deepspeed as the run that saved it had it"
        )
    if stage_changed and not (saved.stage and planned.stage):
        raise UserError(
            f"{where}: saved with {saved.zero}, relaunched with {planned.zero}: DeepSpeed's universal "
            "checkpoint converts only ZeRO-1, 2 and 3; relaunch with the stage that saved it "
            f"(zero_optimization.stage {saved.stage})"
        )
    if saved.stage in (1, 2) and saved.round_robin and saved.world > 1:  # every change here converts
        raise UserError(
            f"{where}: saved under {saved.zero} with round_robin_gradients on {saved.world} ranks, whose "
            f"parameters DeepSpeed {_DEEPSPEED_TESTED}'s universal conversion mislabels (measured: 24 of 26 "
            f"wrong in a 2-rank demo checkpoint); relaunch on {saved.world} ranks with {saved.zero} to resume "
            "it as saved (the shipped ZeRO-2 configs now set round_robin_gradients false, whose "
            "checkpoints convert)"
        )
    # A plain load of another offload setting hands the new optimizer the old one's param groups
    # (DeepSpeed's CPU Adam then misses its `bias_correction`, measured); the universal loader does not.
    convert = bool(saved.stage)
    # Without a world change the config's batch keys are what the user asked for, and are kept.
    accumulation = _accumulation(saved, planned, where) if world_changed else planned.accumulation
    # The relaunch loads with round_robin_gradients off (universal.py): DeepSpeed's ZeRO-1/2 universal
    # loader misplaces values in a round-robin buffer on more than one rank (measured).
    rescaled = Layout(planned.world, planned.stage, planned.offload, planned.micro_batch, accumulation)
    return Reshape(saved, rescaled, convert)


def _accumulation(saved: Layout, planned: Layout, where: str) -> int:
    """The accumulation that keeps the saved global batch; one line naming the overrides that would work."""
    total, world, micro = saved.global_batch, planned.world, planned.micro_batch
    if total % (world * micro) == 0:
        return total // (world * micro)
    head = (
        f"{where}: its global batch {total} ({saved.world} ranks x {saved.micro_batch} x {saved.accumulation}) "
        f"cannot be kept on {world} rank{'s' if world != 1 else ''} with per_device_train_batch_size={micro}"
    )
    if total % world == 0:
        micros = [m for m in range(1, total // world + 1) if (total // world) % m == 0]
        options = ", ".join(f"per_device_train_batch_size={m}" for m in micros)
        one_of = "one of " if len(micros) > 1 else ""
        return _refuse(f"{head}: set {one_of}{options} (the accumulation follows)")
    worlds = [w for w in range(1, total + 1) if total % w == 0]
    return _refuse(
        f"{head}: {total} is not a multiple of {world}; launch on a world size that divides it "
        f"({', '.join(map(str, worlds))} ranks in all: NPROC_PER_NODE x NNODES)"
    )


def _refuse(line: str) -> int:
    raise UserError(line)
