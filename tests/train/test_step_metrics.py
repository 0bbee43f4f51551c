"""metrics.jsonl, the summary line and the memory calibration line through the real stack on CPU.

One 2-rank ZeRO-3 demo run of 4 steps (checkpoints at 2 and 4), then the same command with max_steps=6,
which resumes from checkpoint-4: its records must start at step 5 and count only the steps since.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from ..conftest import run_env

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


def train(checkout: Path, output_dir: Path, max_steps: int) -> subprocess.CompletedProcess:
    command = [
        "bash",
        "sft_train.sh",
        "yaml/demo_cpu.yaml",
        f"max_steps={max_steps}",
        "save_steps=2",
        "logging_steps=1",
        f"cutoff_len={CUTOFF}",
        f"output_dir={output_dir}",
    ]
    result = subprocess.run(command, cwd=checkout, env=run_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def runs(checkout: Path) -> tuple[Path, list[dict], list[dict], list[str]]:
    """(output_dir, records of the first launch, records of the resumed one, training.log per launch)."""
    output_dir = checkout / "checkpoints" / "step-metrics"
    train(checkout, output_dir, max_steps=4)
    first = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    result = train(checkout, output_dir, max_steps=6)
    assert f"resuming from {output_dir}/checkpoint-4\n" in result.stdout
    every = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    assert every[: len(first)] == first  # appended, as trainer_log.jsonl is
    launches = (output_dir / "training.log").read_text(encoding="utf-8").split("\n===== ")[1:]
    return output_dir, first, every[len(first) :], launches


def test_every_logged_step_has_the_fields(runs):
    _, first, _, _ = runs
    assert [r["step"] for r in first] == [1, 2, 3, 4]
    for record in first:
        assert set(record) == FIELDS
        assert record["tokens"] == STEP_TOKENS
        assert record["tokens_per_second_per_gpu"] > 0
        assert record["mfu"] is None and record["peak_memory_gib"] is None  # no GPU
        rate = record["tokens"] / record["seconds"] / RANKS
        assert record["tokens_per_second_per_gpu"] == pytest.approx(rate, rel=1e-3)


def test_a_resumed_run_is_counted_from_the_resumed_step(runs):
    _, first, resumed, _ = runs
    assert [r["step"] for r in resumed] == [5, 6]
    # One step's tokens over one step's time: neither the tokens nor the clock start at step 0.
    assert [r["tokens"] for r in resumed] == [STEP_TOKENS, STEP_TOKENS]
    assert resumed[0]["seconds"] < sum(r["seconds"] for r in first)
    for record in resumed:
        rate = record["tokens"] / record["seconds"] / RANKS
        assert record["tokens_per_second_per_gpu"] == pytest.approx(rate, rel=1e-3)


def test_each_launch_logs_one_calibration_line_and_one_summary(runs):
    _, first, resumed, launches = runs
    assert len(launches) == 2
    for launch, records, first_step in zip(launches, (first, resumed), (1, 5), strict=True):
        (calibration,) = CALIBRATION.findall(launch)
        assert int(calibration[0]) == first_step
        # The demo's estimate (tests/train/test_estimate_measured.py checks it against a measured step).
        assert 0.5 < float(calibration[1]) < 10
        (summary,) = SUMMARY.findall(launch)
        tokens = STEP_TOKENS * len(records)
        # The summary is over this launch only: its tokens over at least the time its records cover.
        assert 0 < int(summary.replace(",", "")) <= tokens / sum(r["seconds"] for r in records) / RANKS + 1
