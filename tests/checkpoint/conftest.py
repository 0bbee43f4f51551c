"""Checkpoint directories laid out file for file as DeepSpeed and the Trainer write them.

The file names come from 2-rank CPU runs of the demo under each shipped DeepSpeed config, in fp32 and
(with `use_cpu=true bf16=true`, past the launcher's GPU check) in bf16, plus a stage-1 config; the files
hold real torch.save / safetensors bytes, so the integrity checks see what a real save leaves.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from dataclasses import dataclass
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


def train(
    checkout: Path,
    output_dir: Path,
    config: str,
    max_steps: int,
    *flags: str,
    preflight: bool = False,
    **env: str,
):
    """`sft_train.sh yaml/demo_cpu.yaml` under examples/deepspeed/`config` with SHORT_RUN, in `checkout`."""
    import subprocess

    from ..conftest import SHORT_RUN, run_env

    # Preflight is not what most runs test, and it costs a CPU-bound child per launch.
    flags = (*flags, *(() if preflight or "--skip-preflight" in flags else ("--skip-preflight",)))
    command = [
        "bash",
        "sft_train.sh",
        "yaml/demo_cpu.yaml",
        f"deepspeed=examples/deepspeed/{config}",
        f"max_steps={max_steps}",
        *SHORT_RUN,
        f"output_dir={output_dir}",
        *flags,
    ]
    return subprocess.run(
        command, cwd=checkout, env=run_env(**env), capture_output=True, text=True, timeout=900
    )


def ok(result) -> bool:
    return result.returncode == 0 or print(result.stdout[-3000:], result.stderr[-3000:])


@pytest.fixture(scope="session")
def two_step_run(checkout: Path, request: pytest.FixtureRequest):
    """two_step_run(config) -> output_dir of a 2-step run on 2 ranks (checkpoint-1/, checkpoint-2/, final
    model), trained once per session; read-only (copy it to relaunch it). ZeRO-3's is the session's
    reference run (tests/train/test_multinode.py compares with it)."""
    from ..conftest import ZERO3

    runs: dict[str, Path] = {}

    def get(config: str) -> Path:
        if config not in runs:
            if config == ZERO3:
                runs[config] = request.getfixturevalue("zero3_reference")
            else:
                output_dir = checkout / "checkpoints" / f"two-step-{Path(config).stem}"
                assert ok(train(checkout, output_dir, config, max_steps=2)), config
                runs[config] = output_dir
        return runs[config]

    return get


COUNTED = "include_num_input_tokens_seen=true"


def digest(path: Path) -> dict[str, str]:
    return {
        str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file()
    }


def relaunch_from(
    checkpoint: Path, output_dir: Path, config: str, ranks: int, *flags: str, steps: int = 3, **kw
):
    """A new output_dir holding only `checkpoint`, relaunched to `steps` on `ranks` ranks."""
    shutil.copytree(checkpoint, output_dir / checkpoint.name)
    before = digest(output_dir / checkpoint.name)
    result = train(
        output_dir.parents[1], output_dir, config, steps, COUNTED, *flags, NPROC_PER_NODE=str(ranks), **kw
    )
    assert ok(result)
    assert digest(output_dir / checkpoint.name) == before  # the original is never changed
    assert_converted_weights_are_the_saved_ones(output_dir / f"universal-{checkpoint.name}", checkpoint)
    return result


def assert_converted_weights_are_the_saved_ones(universal: Path, checkpoint: Path) -> None:
    """Every parameter's fp32 master copy in the universal checkpoint equals the weights the Trainer saved
    (fp32 on CPU): a conversion that mislabels parameters fails here, whatever the losses say."""
    import torch
    from safetensors.torch import load_file

    saved = load_file(checkpoint / "model.safetensors")
    zero = next(universal.glob("global_step*_universal")) / "zero"
    compared = 0
    for name, tensor in saved.items():
        if (zero / name / "fp32.pt").is_file():
            value = torch.load(zero / name / "fp32.pt", weights_only=False)
            value = value["param"] if isinstance(value, dict) else value
            assert torch.equal(value.reshape(tensor.shape), tensor.float()), name
            compared += 1
    assert compared >= len(saved) - 1  # a tied lm_head is saved once


# (2-step run's config, the 2-rank leg's): the one-rank leg is ZeRO-2 or 3, the way back adds offload.
WORLD_PAIRS = [
    ("ds_z2_config.json", "ds_z2_offload_config.json"),
    ("ds_z3_config.json", "ds_z3_offload_config.json"),
]


@dataclass(frozen=True)
class WorldLegs:
    """A 2-rank run's checkpoint-1 relaunched on 1 rank (`one`: steps 2-3), then `one`'s checkpoint-2 on 2
    ranks under the offload config (`two`: steps 3-4, so checkpoint-3 and -4 are saved under it)."""

    one: Path
    one_said: str
    two: Path
    two_said: str


@pytest.fixture(scope="session")
def world_legs(two_step_run, checkout: Path):
    """world_legs(config, then) -> WorldLegs from two_step_run(config), `then` the 2-rank leg's config;
    trained once per session, read-only (tests/checkpoint/test_resume_world.py checks the legs;
    tests/checkpoint/test_resume_configs.py resumes a copy of `two` as its offload config's own run)."""
    from ..conftest import ZERO3

    legs: dict[tuple[str, str], WorldLegs] = {}

    def get(config: str, then: str) -> WorldLegs:
        if (config, then) not in legs:
            runs = checkout / "checkpoints"
            one, two = (
                runs / f"world-{Path(config).stem}-one-rank",
                runs / f"world-{Path(config).stem}-two-ranks",
            )
            source = two_step_run(config) / "checkpoint-1"
            said = relaunch_from(source, one, config, 1, preflight=config == ZERO3).stdout
            legs[config, then] = WorldLegs(
                one, said, two, relaunch_from(one / "checkpoint-2", two, then, 2, steps=4).stdout
            )
        return legs[config, then]

    return get
