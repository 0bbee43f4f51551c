"""Kill -9 a CPU run (2 ranks, ZeRO-3) after a checkpoint, relaunch the same command, and check the steps."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ..conftest import DEMO_OVERRIDES, DEMO_SAVE_STEPS, DEMO_STEPS, kill_tree, run_env

pytestmark = pytest.mark.integration


def logged_runs(output_dir: Path) -> list[list[dict]]:
    """trainer_log.jsonl split into one list per launch (a launch starts where the step count drops)."""
    runs: list[list[dict]] = []
    for line in (output_dir / "trainer_log.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if "loss" not in entry:
            continue
        if not runs or entry["current_steps"] <= runs[-1][-1]["current_steps"]:
            runs.append([])
        runs[-1].append(entry)
    return runs


# The run is killed once it logged step KILLED_AFTER, past checkpoint-SAVED; a torn checkpoint-TORN (a
# crash while saving, between the two) must be skipped and SAVED resumed.
SAVED = DEMO_SAVE_STEPS
KILLED_AFTER = SAVED + 2
TORN = SAVED + 1


def command(output_dir: Path) -> list[str]:
    return [
        "bash",
        "sft_train.sh",
        "yaml/demo_cpu.yaml",
        *DEMO_OVERRIDES,
        f"output_dir={output_dir}",
        "--skip-preflight",
    ]


def wait_for(predicate, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"training ended early with {proc.returncode}"
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.5)


def last_step(output_dir: Path) -> int:
    log = output_dir / "trainer_log.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    return json.loads(lines[-1])["current_steps"] if lines else 0


@pytest.fixture(scope="module")
def resumed(checkout: Path, demo_run) -> tuple[subprocess.CompletedProcess, Path]:
    output_dir = checkout / "checkpoints" / "demo-resume"
    proc = subprocess.Popen(
        command(output_dir),
        cwd=checkout,
        env=run_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: (output_dir / f"checkpoint-{SAVED}" / "trainer_state.json").exists(), proc, 600)
        wait_for(lambda: last_step(output_dir) >= KILLED_AFTER, proc, 300)
    finally:
        kill_tree(proc.pid)  # the launcher, torchrun and both ranks, mid-step
        proc.wait()
    # A crash while writing checkpoint-TORN: shards of one rank and trainer_state.json never landed.
    torn = output_dir / f"checkpoint-{TORN}"
    shutil.copytree(output_dir / f"checkpoint-{SAVED}", torn)
    (torn / "trainer_state.json").unlink()
    (torn / "latest").write_text(f"global_step{TORN}")
    (torn / f"global_step{SAVED}").rename(torn / f"global_step{TORN}")
    for shard in (torn / f"global_step{TORN}").glob("zero_pp_rank_1_*"):
        shard.unlink()

    result = subprocess.run(
        command(output_dir), cwd=checkout, env=run_env(), capture_output=True, text=True, timeout=900
    )
    return result, output_dir


def test_relaunch_skips_the_incomplete_checkpoint_and_says_so(resumed):
    result, output_dir = resumed
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    warning = next(line for line in result.stdout.splitlines() if "skipping incomplete checkpoint" in line)
    assert f"{output_dir}/checkpoint-{TORN}: " in warning and "trainer_state.json: missing" in warning
    assert f"global_step{TORN}/zero_pp_rank_1_mp_rank_00_model_states.pt: missing (2 ranks" in warning
    assert not (output_dir / f"checkpoint-{TORN}").exists()
    assert len(list(output_dir.glob(f"checkpoint-{TORN}.incomplete-*"))) == 1
    assert f"resuming from {output_dir}/checkpoint-{SAVED}" in result.stdout


def test_resumed_run_continues_at_the_next_step_and_finishes(resumed):
    _, output_dir = resumed
    first, second = logged_runs(output_dir)
    assert first[0]["current_steps"] == 1 and first[-1]["current_steps"] >= KILLED_AFTER
    assert [entry["current_steps"] for entry in second] == list(range(SAVED + 1, DEMO_STEPS + 1))
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == DEMO_STEPS


def test_no_step_trained_twice_or_skipped(resumed, demo_run):
    """After resuming, each step sees the same batch and weights as the uninterrupted run: same losses."""
    _, output_dir = resumed
    _, reference_dir = demo_run
    (reference,) = logged_runs(reference_dir)
    _, second = logged_runs(output_dir)
    expected = {entry["current_steps"]: entry["loss"] for entry in reference}
    for entry in second:
        assert math.isclose(entry["loss"], expected[entry["current_steps"]], rel_tol=1e-4), entry
    # and before the crash, too: the two launches really ran the same recipe
    first, _ = logged_runs(output_dir)
    for entry in first[:15]:
        assert math.isclose(entry["loss"], expected[entry["current_steps"]], rel_tol=1e-4), entry
