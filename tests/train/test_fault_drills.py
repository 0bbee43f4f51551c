"""Fault drills on CPU (2 ranks, ZeRO-3): a rank killed mid-step, the disk full while saving, `data prepare` killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arpo_train_sft.checkpoint.scan import scan
from arpo_train_sft.errors import EXIT_ENVIRONMENT

from ..conftest import DEMO_DATA, descendants, run_env

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "arpo_train_sft.cli"]
# A dead rank must end the job this fast (torchrun's agent notices a child exit within seconds).
KILL_BOUND_S = 120


def rank_pids(launcher: int) -> list[int]:
    found = []
    for pid in descendants(launcher):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"arpo_train_sft.entry" in argv and b"torch.distributed.run" not in argv:
            found.append(pid)
    return sorted(found)


def last_step(output_dir: Path) -> int:
    log = output_dir / "trainer_log.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    return json.loads(lines[-1])["current_steps"] if lines else 0


def wait_for(predicate, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"ended early with {proc.returncode}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def train(output_dir: Path, *extra: str) -> list[str]:
    return [
        *CLI,
        "train",
        "--skip-preflight",
        "yaml/demo_cpu.yaml",
        "max_steps=6",
        "save_steps=2",
        "logging_steps=1",
        f"output_dir={output_dir}",
        *extra,
    ]


def test_a_rank_killed_mid_step_ends_the_job_and_the_relaunch_resumes(checkout: Path, tmp_path: Path):
    output_dir = tmp_path / "killed"
    log = tmp_path / "launcher.txt"
    with log.open("wb") as out:
        proc = subprocess.Popen(train(output_dir), cwd=checkout, env=run_env(), stdout=out, stderr=out)
        try:
            wait_for(lambda: (output_dir / "checkpoint-2" / "trainer_state.json").exists(), proc, 900)
            wait_for(lambda: last_step(output_dir) >= 3, proc, 300)
            victim = rank_pids(proc.pid)[-1]
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            code = proc.wait(timeout=KILL_BOUND_S)
        finally:
            if proc.poll() is None:
                for pid in [proc.pid, *descendants(proc.pid)]:
                    os.kill(pid, signal.SIGKILL)
    assert time.monotonic() - killed_at < KILL_BOUND_S
    said = log.read_text(errors="replace")
    assert code != 0 and "Traceback" not in said.split("[arpo-sft] rank")[-1]
    assert "[arpo-sft] rank " in said and "failed (exit code -9)" in said, said[-3000:]
    assert scan(output_dir / "checkpoint-2").problems == ()
    result = subprocess.run(
        train(output_dir), cwd=checkout, env=run_env(), capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert (
        "resuming from" in result.stdout
        and json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 6
    )


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


def test_an_interrupted_data_prepare_leaves_nothing_under_the_final_name(checkout: Path, tmp_path: Path):
    from arpo_train_sft.demo.model import build_tiny_model

    model = build_tiny_model(tmp_path / "model")
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
