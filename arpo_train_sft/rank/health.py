"""Stop every rank at the first optimizer step whose loss or gradient norm is not finite, before any save.

Why: transformers' `logging_nan_inf_filter` logs a non-finite loss as the mean of the earlier ones (0 right
after a log), and DeepSpeed skips such a step while the Trainer still saves, so a diverged run used to save
non-finite checkpoints and a final model and exit 0. This watches the raw values:
- the loss of every micro-batch, from a forward hook on the model (`outputs["loss"]`, training mode only),
  kept on the device as a code (0 finite, 1 -inf, 2 inf, 3 nan) so the hook never waits for the device;
- the gradient norm DeepSpeed computed in its step: the `_global_grad_norm` its ZeRO-1/2/3, bf16 and fp16
  optimizers keep and `engine.get_global_grad_norm()` returns. Callbacks are handed the optimizer (accelerate's
  `DeepSpeedOptimizerWrapper` around `engine.optimizer`), never the engine. Not watched without DeepSpeed
  or under ZeRO-0 in fp32 (nothing a callback can reach computes it), nor under fp16, where an overflowing
  step is part of dynamic loss scaling (DeepSpeed skips it, lowers the scale, and stops at its minimum).
Both codes ride in preempt's one MAX all-reduce per step, so all ranks reach the same verdict at the same
step. The Trainer calls on_step_end before `_maybe_log_save_evaluate`, so exiting there means neither
checkpoint-<step> nor the final model is written; global rank 0 first leaves `diverged.json`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow.compute as pc
import torch
import torch.distributed as dist
from accelerate.utils.deepspeed import DeepSpeedOptimizerWrapper
from deepspeed.runtime.bf16_optimizer import BF16_Optimizer
from deepspeed.runtime.fp16.fused_optimizer import FP16_Optimizer
from deepspeed.runtime.fp16.unfused_optimizer import FP16_UnfusedOptimizer
from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3
from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer
from transformers import TrainerCallback
from transformers.utils import ModelOutput

from ..checkpoint.diverged import NOTE, Facts, write_note

# DeepSpeed optimizers that store the step's global gradient norm (inf when it overflowed) as `_global_grad_norm`.
NORMED = (
    DeepSpeedZeroOptimizer_Stage3,
    DeepSpeedZeroOptimizer,
    BF16_Optimizer,
    FP16_Optimizer,
    FP16_UnfusedOptimizer,
)
CODE_NAMES = {1: "-inf", 2: "inf", 3: "nan"}


def code(value: torch.Tensor) -> torch.Tensor:
    """0 for finite, 1 for -inf, 2 for inf, 3 for nan (the worst element), as a float on value's device."""
    value = value.detach()
    return (value.isnan() * 3 + value.isposinf() * 2 + value.isneginf()).max().float()


def grad_norm(optimizer: object) -> torch.Tensor | float | None:
    """The global gradient norm of the step DeepSpeed just took, or None where none is computed."""
    if isinstance(optimizer, DeepSpeedOptimizerWrapper) and isinstance(optimizer.optimizer, NORMED):
        return optimizer.optimizer._global_grad_norm
    return None


@dataclass
class MicroBatch:
    """One forward of the step: its loss code, and its tokens, to name the row if it alone went bad."""

    code: torch.Tensor
    input_ids: torch.Tensor | None
    attention_mask: torch.Tensor | None


class StopOnNonFinite(TrainerCallback):
    """Record each micro-batch's loss code; after preempt's all-reduce, stop every rank if a step went bad."""

    def __init__(self) -> None:
        self.batches: list[MicroBatch] = []
        self._hook: torch.utils.hooks.RemovableHandle | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._hook = model.register_forward_hook(self._record, with_kwargs=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self._hook is not None:
            self._hook.remove()

    def on_step_begin(self, args, state, control, **kwargs):
        self.batches = []

    def _record(self, module: torch.nn.Module, _args: tuple, kwargs: dict, output: object) -> None:
        loss = output.get("loss") if isinstance(output, ModelOutput) else None
        if module.training and isinstance(loss, torch.Tensor):
            self.batches.append(MicroBatch(code(loss), kwargs.get("input_ids"), kwargs.get("attention_mask")))

    def codes(self, args, optimizer: object) -> torch.Tensor:
        """[loss code, grad_norm code] of this rank's step, on args.device, without waiting for the device."""
        loss = torch.stack([b.code for b in self.batches]).max() if self.batches else torch.zeros(())
        norm = None if args.fp16 else grad_norm(optimizer)
        grad = code(torch.as_tensor(norm if norm is not None else 0.0, dtype=torch.float32))
        return torch.stack([loss.to(args.device), grad.to(args.device)])

    def stop_if_not_finite(self, agreed: list[float], args, state, model, train_dataloader) -> None:
        """Exit every rank when any rank's step was not finite; global rank 0 first leaves the note."""
        loss, grad = (CODE_NAMES.get(int(c)) for c in agreed)
        if loss is None and grad is None:
            return
        row = self._suspect_row(train_dataloader.dataset if train_dataloader is not None else None)
        if state.is_world_process_zero:
            facts = Facts(
                learning_rate=args.learning_rate,
                attention=str(model.config._attn_implementation),
                deepspeed=args.deepspeed is not None,
                fp16=args.fp16,
                row=row,
            )
            write_note(Path(args.output_dir), state.global_step, loss, grad, facts)
            seen = f"loss {loss or 'finite'}, grad_norm {grad or 'finite'}"
            print(
                f"step {state.global_step} not finite ({seen}): every rank stops, saving nothing; see {NOTE}"
            )
        sys.stdout.flush()
        sys.exit(0)

    def _suspect_row(self, dataset: object) -> int | None:
        """The training row of the one bad micro-batch, when the step's other micro-batches on every rank
        stayed finite; None otherwise. Collective: every rank calls it."""
        local = [int(b.code.item()) for b in self.batches]
        every = _gather(local)
        codes = [c for rank in every for c in rank]
        if not codes or all(codes) or not any(codes):
            return None  # all bad: the weights, not one row
        found = [_find_row(b, dataset) for b, c in zip(self.batches, local, strict=True) if c]
        rows = [r for rank in _gather(found) for r in rank if r is not None]
        return rows[0] if rows else None


def _gather(value: list) -> list[list]:
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def _find_row(batch: MicroBatch, dataset: object) -> int | None:
    """The index in `dataset` whose input_ids are the micro-batch's one row (padding dropped), or None."""
    ids = batch.input_ids
    if ids is None or ids.shape[0] != 1 or not isinstance(dataset, datasets.Dataset):
        return None
    row = ids[0][batch.attention_mask[0] != 0] if batch.attention_mask is not None else ids[0]
    wanted = row.tolist()
    column = dataset.with_format("arrow")["input_ids"]
    # Compare lengths in Arrow first: a long training set is scanned without materializing its rows.
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    for index in (lengths == len(wanted)).nonzero()[0]:
        if column[int(index)].as_py() == wanted:
            return int(index)
    return None
