"""Every shipped DeepSpeed config, 2 CPU ranks: save, tear the newest checkpoint, relaunch, resume from the other.

ZeRO-0 and ZeRO-2 relaunch their 2-step runs. The offload configs relaunch the 2-rank leg of the
world-size round trip (tests/checkpoint/test_resume_world.py), which saved two checkpoints under them.
ZeRO-3, the demo's config, is the kill-and-resume drill (tests/checkpoint/test_resume.py), whose torn
checkpoint also holds a shard cut in half.

And an output_dir holding a finished run with nothing to resume: the launcher stops before torchrun.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from arpo_train_sft.checkpoint.scan import checkpoint_step, list_checkpoints

from ..conftest import ZERO3, cut_in_half
from .conftest import COUNTED, WORLD_PAIRS, ok, train
from .test_resume import logged_runs

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("config", ["ds_z0_config.json", "ds_z2_config.json"])
def test_relaunch_resumes_from_the_newest_complete_checkpoint(two_step_run, checkout: Path, config: str):
    output_dir = checkout / "checkpoints" / f"resume-{Path(config).stem}"
    shutil.copytree(two_step_run(config), output_dir)
    assert_resumes_past_a_torn_checkpoint(checkout, output_dir, config)


@pytest.mark.parametrize(("config", "then"), WORLD_PAIRS, ids=lambda name: Path(name).stem)
def test_an_offload_relaunch_resumes_from_the_newest_complete_checkpoint(
    world_legs, checkout: Path, config: str, then: str
):
    output_dir = checkout / "checkpoints" / f"resume-{Path(then).stem}"
    shutil.copytree(world_legs(config, then).two, output_dir)  # checkpoint-3 and -4 saved under `then`
    assert_resumes_past_a_torn_checkpoint(checkout, output_dir, then, COUNTED)


def assert_resumes_past_a_torn_checkpoint(checkout: Path, output_dir: Path, config: str, *flags: str) -> None:
    """Cut the newest checkpoint's last DeepSpeed shard in half, relaunch one step further under `config`:
    the torn one is set aside and named, the one before it resumed, and the next steps trained."""
    newest = checkpoint_step(list_checkpoints(output_dir)[-1])
    torn = output_dir / f"checkpoint-{newest}"
    # a crash while writing the last file of the newest checkpoint's DeepSpeed shards
    shard = sorted((torn / f"global_step{newest}").iterdir())[-1]
    torn_bytes = cut_in_half(shard)

    result = train(checkout, output_dir, config, newest + 1, *flags)
    assert ok(result)
    (warning,) = [line for line in result.stdout.splitlines() if "skipping incomplete checkpoint" in line]
    assert (
        f"incomplete checkpoint {torn}: global_step{newest}/{shard.name}: not a readable PyTorch file"
        in warning
    )
    assert f"resuming from {output_dir}/checkpoint-{newest - 1}\n" in result.stdout
    *_, before, after = logged_runs(output_dir)
    assert before[-1]["current_steps"] == newest and [e["current_steps"] for e in after] == [
        newest,
        newest + 1,
    ]
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == newest + 1
    (moved,) = output_dir.glob(f"checkpoint-{newest}.incomplete-*")  # set aside, not deleted
    assert (moved / f"global_step{newest}" / shard.name).read_bytes() == torn_bytes


def test_a_finished_run_without_checkpoints_stops_before_torchrun(two_step_run, checkout: Path):
    """What LLaMA-Factory would refuse on every rank with a traceback: weights in output_dir, no checkpoint-N/."""
    source = two_step_run(ZERO3)  # read only: its files are copied
    output_dir = checkout / "checkpoints" / "finished-no-checkpoints"
    output_dir.mkdir()
    for file in source.iterdir():
        if file.is_file() and file.name != "training.log":
            shutil.copy2(file, output_dir / file.name)
    before = sorted(p.name for p in output_dir.iterdir())

    found = (
        f"{output_dir}: holds an earlier run (model.safetensors) but no complete checkpoint to resume from"
    )
    fix = (
        "relaunch with --fresh to move it aside (nothing is deleted) and start at step 0, "
        "or set output_dir to a new directory"
    )
    # Preflight says it first, in its table's form (config: what was found: the fix) ...
    result = train(checkout, output_dir, ZERO3, 3, preflight=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"arpo-sft: error: {checkout / 'yaml' / 'demo_cpu.yaml'}: {found}: {fix}",
        "arpo-sft: error: preflight failed, so torchrun was not started: fix the above, "
        "or pass --skip-preflight to launch anyway (or --allow CHECK to launch despite that one check, "
        "CHECK as named in the table)",
    ]
    # ... and the launcher, which makes the same decision, still stops when preflight is skipped.
    result = train(checkout, output_dir, ZERO3, 3, "--skip-preflight")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"arpo-sft: error: {found}; {fix}"]
    assert "torch.distributed.run" not in result.stdout
    assert sorted(p.name for p in output_dir.iterdir()) == before  # no training.log: torchrun never ran
