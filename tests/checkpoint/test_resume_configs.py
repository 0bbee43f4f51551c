"""Every shipped DeepSpeed config, 2 CPU ranks: save, tear the newest checkpoint, relaunch, resume from the other.

And an output_dir holding a finished run with nothing to resume: the launcher stops before torchrun.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ..conftest import REPO, ZERO3
from .conftest import ok, train
from .test_resume import logged_runs

pytestmark = pytest.mark.integration

CONFIGS = sorted(p.name for p in (REPO / "examples" / "deepspeed").glob("*.json"))


@pytest.fixture(scope="module")
def finished_run(two_step_run, checkout: Path):
    """finished_run(config) -> a copy of the session's 2-step run under `config`, this module's to tear."""
    runs: dict[str, Path] = {}

    def get(config: str) -> Path:
        if config not in runs:
            runs[config] = checkout / "checkpoints" / f"resume-{Path(config).stem}"
            shutil.copytree(two_step_run(config), runs[config])
        return runs[config]

    return get


@pytest.mark.parametrize("config", CONFIGS)
def test_relaunch_resumes_from_the_newest_complete_checkpoint(finished_run, checkout: Path, config: str):
    output_dir = finished_run(config)
    torn = output_dir / "checkpoint-2"
    # a crash while writing the last file of the newest checkpoint's DeepSpeed shards
    shard = sorted((torn / "global_step2").iterdir())[-1]
    torn_bytes = shard.read_bytes()[: shard.stat().st_size // 2]
    shard.write_bytes(torn_bytes)

    result = train(checkout, output_dir, config, max_steps=3)
    assert ok(result)
    (warning,) = [line for line in result.stdout.splitlines() if "skipping incomplete checkpoint" in line]
    assert f"incomplete checkpoint {torn}: global_step2/{shard.name}: not a readable PyTorch file" in warning
    assert f"resuming from {output_dir}/checkpoint-1\n" in result.stdout
    first, second = logged_runs(output_dir)
    assert [e["current_steps"] for e in first] == [1, 2] and [e["current_steps"] for e in second] == [2, 3]
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 3
    (moved,) = output_dir.glob("checkpoint-2.incomplete-*")  # set aside, not deleted
    assert (moved / "global_step2" / shard.name).read_bytes() == torn_bytes


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
