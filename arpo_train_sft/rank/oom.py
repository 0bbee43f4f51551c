"""A CUDA out-of-memory error on this rank: the traceback into the training log, one note for the launcher.

`OomWatch` records the step and the tokens of each micro-batch (a forward pre-hook reading the input ids'
shape: padding counts, since it takes memory); `run_guarded` runs training and, on
`torch.OutOfMemoryError`, appends the traceback to the node's log (train/oom.LOG_ENV, set by the
launcher; stderr without it), writes the note, prints the marker line and leaves with EXIT_OOM at once:
the other ranks are stopped by torchrun, and nothing that would need this rank's memory runs again.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import TrainerCallback

from ..errors import EXIT_OOM
from ..train.oom import LOG_ENV, MARKER, write_note


class OomWatch(TrainerCallback):
    """What an out-of-memory report names: the step in progress and its current micro-batch's tokens."""

    def __init__(self) -> None:
        self.step = 0
        self.tokens: int | None = None
        self.output_dir: Path | None = None

    def _record(self, _module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if isinstance(ids, torch.Tensor):
            self.tokens = ids.numel()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.output_dir = Path(args.output_dir)
        if model is not None:
            model.register_forward_pre_hook(self._record, with_kwargs=True)
        return control

    def on_step_begin(self, args, state, control, **kwargs):
        self.step = state.global_step + 1
        return control


def run_guarded(train: Callable[[], None], watch: OomWatch) -> None:
    """Run `train`; turn an out-of-memory error into the log's traceback, the note, and EXIT_OOM."""
    try:
        train()
    except torch.OutOfMemoryError:
        rank = int(os.environ.get("RANK", "0"))
        text = f"[arpo-sft] rank {rank}: CUDA out of memory\n{traceback.format_exc()}"
        log = os.environ.get(LOG_ENV)
        try:
            if not log:
                raise OSError("no log named")
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(text)
        except OSError:
            log = None
            sys.stderr.write(text)
        if watch.output_dir is not None:
            write_note(watch.output_dir, rank, watch.step, watch.tokens)
        print(f"{MARKER} {rank} at step {watch.step}; traceback in {log or 'stderr'}", flush=True)
        sys.stderr.flush()
        os._exit(EXIT_OOM)  # no interpreter teardown: it would wait on collectives the others never join
