"""Fault drills on CPU (2 ranks, ZeRO-3): the disk full while saving, `data prepare` killed.

A rank killed mid-step, and the relaunch that resumes: tests/checkpoint/test_resume.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from arpo_train_sft.checkpoint.scan import scan
from arpo_train_sft.errors import EXIT_ENVIRONMENT

from ..conftest import DEMO_DATA, run_env, wait_for

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "arpo_train_sft.cli"]


def train(output_dir: Path, *extra: str) -> list[str]:
    return [
        *CLI,
        "train",
        "--skip-preflight",
        "yaml/demo_cpu.yaml",
        "max_steps=6",
        "save_steps=2",
        "logging_steps=1",
        "cutoff_len=256",  # the other runs' cutoff: their tokenized cache, and shorter steps
        f"output_dir={output_dir}",
        *extra,
    ]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 250 MB tmpfs: one tiny-model ZeRO-3 checkpoint (~170 MB) fits, a second does not."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=250m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_while_saving_keeps_the_last_checkpoint_and_names_the_disk(
    checkout: Path, small_disk: Path
):
    output_dir = small_disk / "run"
    result = subprocess.run(
        train(output_dir, "save_total_limit=null"),
        cwd=checkout,
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == EXIT_ENVIRONMENT, result.stdout[-3000:] + result.stderr[-3000:]
    line, *ranks = [line for line in result.stderr.splitlines() if line.startswith("arpo-sft: error:")]
    assert all(" failed (exit code " in rank for rank in ranks)
    assert f"output_dir {output_dir}: the disk filled while saving (" in line
    assert f"the last complete checkpoint is {output_dir / 'checkpoint-2'}" in line
    assert scan(output_dir / "checkpoint-2").problems == ()


def test_an_interrupted_data_prepare_leaves_nothing_under_the_final_name(tiny_model: Path, tmp_path: Path):
    model = tiny_model
    rows = DEMO_DATA.read_bytes()
    big = tmp_path / "big.jsonl"
    big.write_bytes(rows * 40)
    final = tmp_path / "out" / "prepared.jsonl"
    final.parent.mkdir()
    proc = subprocess.Popen(
        [*CLI, "data", "prepare", "--input", str(big), "--output", str(final), "--model", str(model)],
        env=run_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: any(final.parent.glob(".prepared.jsonl.*.partial")), proc, 300)
    time.sleep(0.5)
    proc.kill()
    proc.wait()
    assert not final.exists()
    assert [p.name for p in final.parent.iterdir() if not p.name.endswith(".partial")] == []
