"""metrics.jsonl, the summary line and the memory calibration line through the real stack on CPU.

Read from the session's runs (tests/conftest.py), as every launch writes them: the demo (2 ranks, ZeRO-3,
DEMO_STEPS steps) and the kill-and-resume drill, whose relaunch resumes from checkpoint-SAVED: its
records must start at step SAVED + 1 and count only the steps since.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ..conftest import DEMO_STEPS, KILLED_AFTER, SAVED, ResumedRun

pytestmark = pytest.mark.integration

# Every demo row is longer than 256 tokens, so each of the 2 rows per rank is cut to exactly 256: a step
# trains 2 ranks x 2 rows x 256 = 1,024 non-padding tokens, all ranks together.
CUTOFF, ROWS_PER_RANK, RANKS = 256, 2, 2
STEP_TOKENS = CUTOFF * ROWS_PER_RANK * RANKS
FIELDS = {"step", "tokens_per_second_per_gpu", "mfu", "peak_memory_gib", "tokens", "seconds"}
SUMMARY = re.compile(r"^\[arpo-sft\] throughput: ([\d,]+) tokens/s/GPU, MFU n/a, peak memory n/a$", re.M)
CALIBRATION = re.compile(
    r"^\[arpo-sft\] memory after step (\d+): not measured on CPU \(torch\.cuda\.max_memory_allocated "
    r"needs a GPU\), ([\d.]+) GiB estimated \(arpo-sft estimate\)$",
    re.M,
)


def records(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def launches(output_dir: Path) -> list[str]:
    """training.log, one string per launch."""
    return (output_dir / "training.log").read_text(encoding="utf-8").split("\n===== ")[1:]


@pytest.fixture(scope="module")
def runs(demo_run, resumed_run: ResumedRun) -> tuple[list[dict], list[dict], list[str]]:
    """(records of the demo's one launch, records of the drill's relaunch, training.log of each launch)."""
    result, demo_dir = demo_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    relaunch, output_dir = resumed_run.relaunch, resumed_run.output_dir
    assert relaunch.returncode == 0, relaunch.stdout[-3000:] + relaunch.stderr[-3000:]
    assert f"resuming from {output_dir}/checkpoint-{SAVED}\n" in relaunch.stdout
    every = [r["step"] for r in records(output_dir)]
    # appended, as trainer_log.jsonl is: the killed launch's records are still there, then the relaunch's
    killed = every.index(SAVED + 1, KILLED_AFTER)
    assert every[:killed] == list(range(1, killed + 1)) and killed >= KILLED_AFTER
    (demo_launch,) = launches(demo_dir)
    _, resumed_launch = launches(output_dir)
    return records(demo_dir), records(output_dir)[killed:], [demo_launch, resumed_launch]


def test_every_logged_step_has_the_fields(runs):
    first, _, _ = runs
    assert [r["step"] for r in first] == list(range(1, DEMO_STEPS + 1))
    for record in first:
        assert set(record) == FIELDS
        assert record["tokens"] == STEP_TOKENS
        assert record["tokens_per_second_per_gpu"] > 0
        assert record["mfu"] is None and record["peak_memory_gib"] is None  # no GPU
        rate = record["tokens"] / record["seconds"] / RANKS
        assert record["tokens_per_second_per_gpu"] == pytest.approx(rate, rel=1e-3)


def test_a_resumed_run_is_counted_from_the_resumed_step(runs):
    first, resumed, _ = runs
    assert [r["step"] for r in resumed] == list(range(SAVED + 1, DEMO_STEPS + 1))
    # One step's tokens over one step's time: neither the tokens nor the clock start at step 0.
    assert [r["tokens"] for r in resumed] == [STEP_TOKENS] * len(resumed)
    assert resumed[0]["seconds"] < sum(r["seconds"] for r in first[:SAVED])
    for record in resumed:
        assert set(record) == FIELDS
        rate = record["tokens"] / record["seconds"] / RANKS
        assert record["tokens_per_second_per_gpu"] == pytest.approx(rate, rel=1e-3)


def test_each_launch_logs_one_calibration_line_and_one_summary(runs):
    first, resumed, launches = runs
    assert len(launches) == 2
    for launch, records, first_step in zip(launches, (first, resumed), (1, SAVED + 1), strict=True):
        (calibration,) = CALIBRATION.findall(launch)
        assert int(calibration[0]) == first_step
        # The demo's estimate (tests/train/test_estimate_measured.py checks it against a measured step).
        assert 0.5 < float(calibration[1]) < 10
        (summary,) = SUMMARY.findall(launch)
        tokens = STEP_TOKENS * len(records)
        # The summary is over this launch only: its tokens over at least the time its records cover.
        assert 0 < int(summary.replace(",", "")) <= tokens / sum(r["seconds"] for r in records) / RANKS + 1
