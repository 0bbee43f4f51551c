"""SIGTERM on a rank (SLURM preemption, `scancel`, `--signal`, `kill` on the launcher): save, then stop.

The handler only raises a flag. At the end of each optimizer step every rank contributes its flag to one
all-reduce (MAX over a one-element tensor, microseconds next to a step), so all ranks see the same answer
at the same step even when the signal reached them at different moments; then the Trainer saves
checkpoint-<step> (every rank writes its shards), and once every rank has saved, global rank 0 leaves
`stopped.json` in output_dir and each node's local rank 0 leaves it in its launcher's own directory
(checkpoint/stopped.py: a node whose output_dir is not shared learns of the stop from its own ranks); every
rank exits 0 without writing a final model: the run is not finished, and a relaunch resumes from that
checkpoint. The train DataLoader's workers take SIGTERM from their rank only (rank/workers.py): torchrun
signals them too, and a dead worker would fail the rank before the agreed save.

The same all-reduce carries `health`'s loss and gradient-norm codes when a StopOnNonFinite is given, so
watching for divergence adds no collective: a step that is not finite stops every rank before any save,
SIGTERM or not. Attached by `arpo_train_sft.entry` to LLaMA-Factory's `run_exp(callbacks=...)`;
`llamafactory-cli train` runs without it.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from ..checkpoint.stopped import DIR_ENV, write_note
from .health import StopOnNonFinite
from .workers import start_worker


class SaveOnSigterm(TrainerCallback):
    """Turn a SIGTERM into checkpoint-<step> and a clean exit, agreed by every rank."""

    def __init__(self, health: StopOnNonFinite | None = None) -> None:
        self.requested = False
        self.stopping = False
        self.health = health
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.requested = True

    def on_train_begin(self, args, state, control, *, train_dataloader, **kwargs):
        # accelerate's DataLoaderShard iterates the DataLoader it wraps; its workers start on the first
        # batch, after this. skip_first_batches (a resume) copies worker_init_fn into the loader it makes.
        loader = train_dataloader.base_dataloader
        loader.worker_init_fn = functools.partial(start_worker, loader.worker_init_fn)
        return control

    def _agreed(self, flags: torch.Tensor) -> list[float]:
        """Every rank's flags, MAX over ranks: the one collective of the step."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return flags.tolist()

    def on_step_end(self, args, state, control, **kwargs):
        if self.stopping:
            return control
        flags = torch.tensor([1.0 if self.requested else 0.0], device=args.device)
        if self.health is not None:
            flags = torch.cat([flags, self.health.codes(args, kwargs.get("optimizer"))])
        agreed = self._agreed(flags)
        if self.health is not None:  # before the SIGTERM save: a non-finite step must not be saved
            self.health.stop_if_not_finite(
                agreed[1:], args, state, kwargs.get("model"), kwargs.get("train_dataloader")
            )
        if agreed[0]:
            self.stopping = True
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_save(self, args, state, control, **kwargs):
        if not self.stopping:
            return control
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # rank 0 writes trainer_state.json last: a note must mean the whole checkpoint
        output_dir, launcher_dir = Path(args.output_dir), os.environ.get(DIR_ENV)
        if state.is_local_process_zero and launcher_dir:
            write_note(output_dir, state.global_step, state.max_steps, "SIGTERM", to=Path(launcher_dir))
        if state.is_world_process_zero:
            note = write_note(output_dir, state.global_step, state.max_steps, "SIGTERM")
            print(
                f"[arpo-sft] SIGTERM: saved {note['checkpoint']} at step {state.global_step} of "
                f"{state.max_steps}; relaunch the same command to resume from it",
                flush=True,
            )
        sys.stdout.flush()
        sys.exit(0)
