"""Checkpoint directories laid out file for file as DeepSpeed and the Trainer write them.

The file names come from 2-rank CPU runs of the demo under each shipped DeepSpeed config, in fp32 and
(with `use_cpu=true bf16=true`, past the launcher's GPU check) in bf16, plus a stage-1 config; the files
hold real torch.save / safetensors bytes, so the integrity checks see what a real save leaves.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

TAG = "global_step{step}"
MODEL = "mp_rank_00_model_states.pt"
SHARD = "{prefix}zero_pp_rank_{rank}_mp_rank_00_{kind}_states.pt"
# What global_step<N>/ holds, per layout: (stage the scan reports, per-rank shard kinds, optim prefix)
ZERO_LAYOUTS = {
    "zero0": (0, (), ""),  # ds_z0_config.json, fp32 or bf16: one file that holds the optimizer too
    "zero2": (2, ("optim",), ""),  # ds_z2_config.json and ds_z2_offload_config.json
    "zero2-bf16": (2, ("optim",), "bf16_"),  # and bf16 ZeRO-1 (DeepSpeed's BF16_Optimizer): same names
    "zero3": (3, ("model", "optim"), ""),  # ds_z3_config.json and ds_z3_offload_config.json
    "zero3-bf16": (3, ("model", "optim"), "bf16_"),  # measured on 1 rank: 2 CPU ranks fail under bf16
}
# Next to global_step<N>/ in every DeepSpeed checkpoint the Trainer writes.
TRAINER_FILES = ("scheduler.pt", "training_args.bin")


@pytest.fixture(scope="module")
def torch_bytes() -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save({"weights": torch.arange(64.0)}, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def safetensors_bytes() -> bytes:
    import torch
    from safetensors.torch import save

    return save({"model.embed_tokens.weight": torch.zeros(4, 8)})


@pytest.fixture
def make(tmp_path: Path, torch_bytes: bytes, safetensors_bytes: bytes):
    """make(layout, step, world) -> a checkpoint-<step>/ dir laid out as that layout's save leaves it."""

    def build(layout: str, step: int = 4, world: int = 2, root: Path | None = None) -> Path:
        path = (root or tmp_path) / f"checkpoint-{step}"
        path.mkdir(parents=True)
        if layout == "hf":
            files = ["model.safetensors", "optimizer.pt", "scheduler.pt", "training_args.bin"]
        else:
            _, kinds, prefix = ZERO_LAYOUTS[layout]
            tag = TAG.format(step=step)
            (path / tag).mkdir()
            (path / "latest").write_text(tag)
            (path / "zero_to_fp32.py").write_text("# DeepSpeed's recovery script\n")
            files = [*TRAINER_FILES, "model.safetensors"]
            files += [] if "model" in kinds else [f"{tag}/{MODEL}"]
            files += [
                f"{tag}/" + SHARD.format(prefix=prefix if kind == "optim" else "", rank=r, kind=kind)
                for kind in kinds
                for r in range(world)
            ]
        files += [f"rng_state_{r}.pth" for r in range(world)] if world > 1 else ["rng_state.pth"]
        for name in files:
            (path / name).write_bytes(safetensors_bytes if name.endswith(".safetensors") else torch_bytes)
        (path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
        return path

    return build
