"""Resume on another world size and ZeRO layout, through the real stack on CPU ranks (gloo).

2 ranks -> 1 under ZeRO-2 and ZeRO-3 (from the session's 2-step runs), then 1 -> 2 with offload switched
on (the change an out-of-memory error calls for; the session's `world_legs`, whose last leg
tests/checkpoint/test_resume_configs.py also resumes); and ZeRO-2 <-> 3 on the same world size, where even
the losses must equal the source run's. Every resumed step must train the same rows
as the run it continues: the tokens each step trained (metrics.jsonl, all ranks, padding excluded) and
num_input_tokens_seen are compared, and the learning rate shows the scheduler's place.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ..conftest import ZERO3
from .conftest import WORLD_PAIRS, digest, relaunch_from, train

pytestmark = pytest.mark.integration


def tokens_per_step(output_dir: Path) -> dict[int, int]:
    lines = (output_dir / "metrics.jsonl").read_text().splitlines()
    return {entry["step"]: entry["tokens"] for entry in map(json.loads, lines)}


def learning_rates(output_dir: Path) -> dict[int, float]:
    lines = (output_dir / "trainer_log.jsonl").read_text().splitlines()
    return {e["current_steps"]: e["lr"] for e in map(json.loads, lines) if "lr" in e}


def tokens_seen(output_dir: Path) -> int:
    return json.loads((output_dir / "trainer_state.json").read_text())["num_input_tokens_seen"]


def losses(output_dir: Path) -> dict[int, float]:
    lines = (output_dir / "trainer_log.jsonl").read_text().splitlines()
    return {e["current_steps"]: e["loss"] for e in map(json.loads, lines) if "loss" in e}


@pytest.mark.parametrize(("config", "then"), WORLD_PAIRS)
def test_two_ranks_to_one_and_back_train_the_same_rows_at_every_step(
    two_step_run, world_legs, config: str, then: str
):
    source = two_step_run(config)  # 2 ranks, 2 x 1 per rank, checkpoint-1 and -2
    legs = world_legs(config, then)
    one, two, said = legs.one, legs.two, legs.one_said
    assert (
        "global batch kept at 4: gradient_accumulation_steps 1 -> 2 (2 -> 1 ranks, 2 per micro-batch)" in said
    )
    assert (
        f"universal checkpoint: resuming from {one}/universal-checkpoint-1 ({one}/checkpoint-1 is unchanged)"
        in said
    )
    if config == ZERO3:  # preflight said it first, in its resume row
        assert said.index("relaunching on 1 rank, ZeRO-3") < said.index("torch.distributed.run")
    assert tokens_per_step(one)[2] == tokens_per_step(source)[2]
    assert learning_rates(one)[2] == learning_rates(source)[2]

    assert "gradient_accumulation_steps 2 -> 1 (1 -> 2 ranks, 2 per micro-batch)" in legs.two_said
    assert (two / "universal-checkpoint-2" / "global_step2_universal").is_dir()
    assert sorted(tokens_per_step(two)) == [3, 4] and tokens_per_step(two)[3] == tokens_per_step(one)[3]
    assert learning_rates(two)[3] == learning_rates(one)[3]
    # `one` counted steps 2 and 3 (the source run did not count); `two` resumed its count after step 2.
    assert tokens_seen(two / "checkpoint-3") == tokens_seen(one) > 0
    assert json.loads((two / "trainer_state.json").read_text())["global_step"] == 4


def test_a_checkpoint_deepspeed_cannot_convert_is_named_and_left_as_it_was(two_step_run, checkout: Path):
    run = checkout / "checkpoints" / "world-unconvertible"
    shutil.copytree(two_step_run(ZERO3) / "checkpoint-1", run / "checkpoint-1")
    # A whole PyTorch file (the scan passes it) that holds no optimizer state.
    import torch

    shard = run / "checkpoint-1" / "global_step1" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    torch.save({"not": "an optimizer"}, shard)
    before = digest(run)
    result = train(checkout, run, ZERO3, 3, NPROC_PER_NODE="1")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"arpo-sft: error: {run}/checkpoint-1: DeepSpeed's universal conversion failed (")
    assert line.endswith(
        f"nothing was renamed or deleted (log: {run}/universal-checkpoint-1.convert.log); relaunch on "
        "the world size and ZeRO stage that saved it to resume it as saved"
    )
    after = digest(run)
    assert after.pop("universal-checkpoint-1.convert.log") and after == before
    assert "torch.distributed.run" not in result.stdout


def test_a_global_batch_the_relaunch_cannot_keep_is_refused_before_torchrun(two_step_run, checkout: Path):
    run = checkout / "checkpoints" / "world-impossible-batch"
    shutil.copytree(two_step_run(ZERO3) / "checkpoint-1", run / "checkpoint-1")
    before = digest(run)
    result = train(checkout, run, ZERO3, 3, "per_device_train_batch_size=3", NPROC_PER_NODE="1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"arpo-sft: error: {run}/checkpoint-1: its global batch 4 (2 ranks x 2 x 1) cannot be kept on 1 rank "
        "with per_device_train_batch_size=3: set one of per_device_train_batch_size=1, "
        "per_device_train_batch_size=2, per_device_train_batch_size=4 (the accumulation follows)"
    ]
    assert digest(run) == before and "torch.distributed.run" not in result.stdout


def test_a_checkpoint_of_another_model_is_named_before_torchrun(two_step_run, checkout: Path):
    run = checkout / "checkpoints" / "world-another-model"
    shutil.copytree(two_step_run(ZERO3) / "checkpoint-1", run / "checkpoint-1")
    config = run / "checkpoint-1" / "config.json"
    shape = json.loads(config.read_text())
    config.write_text(json.dumps({**shape, "hidden_size": shape["hidden_size"] * 2}))
    before = digest(run)
    result = train(checkout, run, ZERO3, 3)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"arpo-sft: error: {run}/checkpoint-1: holds another model than model_name_or_path "
        f"models/arpo-sft-tiny-qwen2 (hidden_size {shape['hidden_size'] * 2} vs {shape['hidden_size']}); "
        "resume with the model this run started from, or set output_dir to a new directory"
    ]
    assert digest(run) == before and "torch.distributed.run" not in result.stdout


@pytest.mark.parametrize(
    ("config", "then"), [("ds_z2_config.json", ZERO3), (ZERO3, "ds_z2_offload_config.json")]
)
def test_a_stage_change_on_the_same_world_size_trains_the_same_losses(
    two_step_run, checkout: Path, config: str, then: str
):
    """Same ranks, same grouping of rows over them: step 2 after a ZeRO-2 <-> 3 resume equals the source
    run's step 2 (Adam's moments and step restored; a wrong step would move the loss far more)."""
    source = two_step_run(config)
    run = checkout / "checkpoints" / f"stage-{Path(config).stem}-to-{Path(then).stem}"
    result = relaunch_from(source / "checkpoint-1", run, then, 2, steps=2)
    assert "DeepSpeed's partitions do not fit the new layout: converting to a universal checkpoint" in (
        result.stdout
    )
    assert tokens_per_step(run)[2] == tokens_per_step(source)[2]
    assert losses(run)[2] == pytest.approx(losses(source)[2], rel=1e-6)
