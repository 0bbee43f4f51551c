"""Kill -9 one rank of a CPU run (2 ranks, ZeRO-3) after a checkpoint, relaunch the same command, check the steps.

The run is the session's `resumed_run` (tests/conftest.py); tests/train/test_step_metrics.py reads it too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ..conftest import CUT_SHARD, DEMO_STEPS, KILL_BOUND_S, KILLED_AFTER, SAVED, TORN, ResumedRun

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


def test_a_rank_killed_mid_step_ends_the_job_and_names_the_rank(resumed_run: ResumedRun):
    said = resumed_run.killed_said
    assert resumed_run.killed_code is not None and resumed_run.killed_seconds < KILL_BOUND_S, said[-3000:]
    assert resumed_run.killed_code != 0 and "Traceback" not in said.split("[arpo-sft] rank")[-1]
    assert "[arpo-sft] rank " in said and "failed (exit code -9)" in said, said[-3000:]
    assert resumed_run.saved_problems == ()  # the checkpoint saved before the kill is intact


def test_relaunch_skips_the_incomplete_checkpoint_and_says_so(resumed_run: ResumedRun):
    result, output_dir = resumed_run.relaunch, resumed_run.output_dir
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    warning = next(line for line in result.stdout.splitlines() if "skipping incomplete checkpoint" in line)
    assert f"{output_dir}/checkpoint-{TORN}: " in warning and "trainer_state.json: missing" in warning
    assert f"global_step{TORN}/zero_pp_rank_1_mp_rank_00_model_states.pt: missing (2 ranks" in warning
    assert f"global_step{TORN}/{CUT_SHARD}: not a readable PyTorch file (truncated" in warning
    assert not (output_dir / f"checkpoint-{TORN}").exists()
    (moved,) = output_dir.glob(f"checkpoint-{TORN}.incomplete-*")  # set aside as it was, not deleted
    whole = output_dir / f"checkpoint-{SAVED}" / f"global_step{SAVED}" / CUT_SHARD
    assert (moved / f"global_step{TORN}" / CUT_SHARD).read_bytes() == whole.read_bytes()[
        : whole.stat().st_size // 2
    ]
    assert f"resuming from {output_dir}/checkpoint-{SAVED}" in result.stdout


def test_resumed_run_continues_at_the_next_step_and_finishes(resumed_run: ResumedRun):
    output_dir = resumed_run.output_dir
    first, second = logged_runs(output_dir)
    assert first[0]["current_steps"] == 1 and first[-1]["current_steps"] >= KILLED_AFTER
    assert [entry["current_steps"] for entry in second] == list(range(SAVED + 1, DEMO_STEPS + 1))
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == DEMO_STEPS


def test_no_step_trained_twice_or_skipped(resumed_run: ResumedRun, demo_run):
    """After resuming, each step sees the same batch and weights as the uninterrupted run: same losses."""
    output_dir = resumed_run.output_dir
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
