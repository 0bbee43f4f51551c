"""How a run is laid out over its ranks: world size, ZeRO stage, offload, micro-batch and accumulation.

A checkpoint's layout is what DeepSpeed recorded in it: every model-states file holds the DeepSpeed config
the engine ran with ("auto" already filled in by transformers) and the data-parallel world size. A launch's
layout is the config's DeepSpeed JSON and batch keys on the world size it is about to start. Comparing the
two says whether a relaunch can load the checkpoint as saved (checkpoint/reshape.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import batch_sizes
from ..errors import UserError
from .scan import MODEL_STATES, CheckpointScan

ARGS_FILE = "training_args.bin"  # the Trainer's pickled TrainingArguments, in every checkpoint


@dataclass(frozen=True)
class Layout:
    """One run's shape on its ranks; `stage` is None without DeepSpeed."""

    world: int
    stage: int | None
    offload: bool
    micro_batch: int
    accumulation: int
    # ZeRO-1/2's round_robin_gradients: its flat buffer order, which ds_to_universal 0.19 misreads.
    round_robin: bool = False

    @property
    def global_batch(self) -> int:
        return self.world * self.micro_batch * self.accumulation

    @property
    def zero(self) -> str:
        """`ZeRO-3 + offload`, `ZeRO-2`, `no DeepSpeed`."""
        if self.stage is None:
            return "no DeepSpeed"
        return f"ZeRO-{self.stage}" + (" + offload" if self.offload else "")

    def describe(self) -> str:
        """`2 ranks, ZeRO-3, global batch 4 (2 x 1 per rank)`."""
        ranks = f"{self.world} rank{'s' if self.world != 1 else ''}"
        per_rank = f"{self.micro_batch} x {self.accumulation} per rank"
        return f"{ranks}, {self.zero}, global batch {self.global_batch} ({per_rank})"


def deepspeed_record(tag_dir: Path) -> dict[str, Any]:
    """What DeepSpeed wrote into the first model-states file of `tag_dir` (tensors memory-mapped, not read)."""
    import torch

    files = sorted(tag_dir.glob("*model_states.pt"))
    first = tag_dir / MODEL_STATES if (tag_dir / MODEL_STATES).is_file() else files[0]
    record = torch.load(first, map_location="cpu", mmap=True, weights_only=False)
    return record if isinstance(record, dict) else {}


def saved_layout(found: CheckpointScan) -> Layout:
    """The layout `found` was saved with; one line naming the file when it does not say."""
    if found.tag_dir is not None:
        record = deepspeed_record(found.tag_dir)
        ds = record.get("ds_config") or {}
        zero = ds.get("zero_optimization") or {}
        try:
            return Layout(
                world=int(record.get("dp_world_size") or found.world),
                stage=int(zero.get("stage", 0)),
                offload=_offloaded(zero),
                micro_batch=int(ds["train_micro_batch_size_per_gpu"]),
                accumulation=int(ds["gradient_accumulation_steps"]),
                round_robin=zero.get("round_robin_gradients") is True,
            )
        except (KeyError, TypeError, ValueError):
            raise UserError(
                f"{found.tag_dir}: its model states hold no DeepSpeed batch sizes; relaunch on the ranks that "
                "saved it"
            ) from None
    args_file = found.path / ARGS_FILE
    try:
        import torch

        args = torch.load(args_file, map_location="cpu", weights_only=False)
        micro, accumulation = int(args.per_device_train_batch_size), int(args.gradient_accumulation_steps)
    except (OSError, AttributeError, TypeError, ValueError, RuntimeError, ImportError) as err:
        raise UserError(
            f"{args_file}: cannot be read ({type(err).__name__}), so the checkpoint's batch sizes are unknown; "
            "relaunch on the ranks that saved it"
        ) from None
    return Layout(found.world, None, False, micro, accumulation)


def planned_layout(values: dict[str, Any], world: int) -> Layout:
    """The layout a launch of `values` on `world` ranks will have (the config's accumulation, unchanged)."""
    micro, accumulation = batch_sizes(values)
    ds = values.get("deepspeed")
    if not ds:
        return Layout(world, None, False, int(micro), int(accumulation))
    zero = deepspeed_json(ds).get("zero_optimization") or {}
    stage = zero.get("stage", 0)
    round_robin = zero.get("round_robin_gradients") is True
    return Layout(world, int(stage), _offloaded(zero), int(micro), int(accumulation), round_robin)


def deepspeed_json(ds: Any) -> dict[str, Any]:
    """The config's `deepspeed` value as a dict: inline, or read from the JSON file it names."""
    if isinstance(ds, dict):
        return ds
    try:
        config = json.loads(Path(str(ds)).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"deepspeed: {ds} cannot be read ({err}); fix the path") from None
    return config if isinstance(config, dict) else {}


def _offloaded(zero: dict[str, Any]) -> bool:
    sections = (zero.get("offload_optimizer"), zero.get("offload_param"))
    return any(isinstance(s, dict) and str(s.get("device", "none")) in ("cpu", "nvme") for s in sections)
