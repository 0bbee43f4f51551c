"""Launch `arpo-sft train` until rank 0 logs a given step, then end it without a save of any kind.

The ranks save a checkpoint on SIGTERM (arpo_train_sft/rank/preempt.py), and LLaMA-Factory saves the
final model once max_steps is reached; so the runs here get a max_steps they never reach and
save_strategy "no", and are ended by SIGSTOP then SIGKILL to every process, which nothing can catch.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from throughput_log import read_log
from throughput_setup import REPO, child_env

WEIGHT_PATTERNS = ("checkpoint-*", "global_step*", "*.safetensors", "*.bin", "*.pt", "*.pth")


def kill_tree(pid: int) -> None:
    """Stop the launcher and every process under it, then SIGKILL them all; never SIGTERM, on which ranks save.

    The launcher hands torchrun a SIGTERM when it dies and torchrun hands one to the ranks when a rank
    dies; a stopped process runs no code, so once all are stopped nothing passes a signal on.
    """
    stopped: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.NoSuchProcess):
        todo = [psutil.Process(pid)]
        while todo:  # stopped processes start no children, so this ends
            found = []
            for proc in todo:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.suspend()
                    stopped[proc.pid] = proc
                    found += [child for child in proc.children() if child.pid not in stopped]
            todo = found
    for proc in stopped.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    # Dead is enough: a zombie holds no GPU memory, and orphans wait on an init that may never reap them.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(map(_dead, stopped.values())):
        time.sleep(0.1)


def _dead(proc: psutil.Process) -> bool:
    """Whether a process has exited (a zombie has)."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def weights_in(output_dir: Path) -> list[Path]:
    """What a save writes under output_dir: checkpoint folders, DeepSpeed shards, weight files."""
    return sorted({path for pattern in WEIGHT_PATTERNS for path in output_dir.rglob(pattern)})


def logged_step(trainer_log: Path) -> int:
    """The last step rank 0 has logged so far, 0 before the first."""
    return max((row.step for row in read_log(trainer_log)), default=0) if trainer_log.exists() else 0


@dataclass(frozen=True)
class Outcome:
    """How a launch ended: the last step rank 0 logged, and why that is short of the target ('' if it is not)."""

    step: int
    why: str = ""
    timed_out: bool = False


def launch(config: Path, ranks: int, output_dir: Path, last_step: int, limit_s: float, log: Path) -> Outcome:
    """Train until rank 0 has logged `last_step` or limit_s has passed, then kill every process of the launch."""
    shutil.rmtree(output_dir, ignore_errors=True)
    trainer_log = output_dir / "trainer_log.jsonl"
    cmd = [sys.executable, "-m", "arpo_train_sft.cli", "train", str(config), "--fresh"]
    env = child_env(NPROC_PER_NODE=str(ranks), RECORD_VRAM="1")
    deadline = time.monotonic() + limit_s
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=handle, stderr=handle
        )
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                if logged_step(trainer_log) >= last_step:
                    break
                time.sleep(0.5)
            exited = proc.poll() is not None
        finally:
            kill_tree(proc.pid)
            proc.wait()
    step = logged_step(trainer_log)
    if step >= last_step:
        return Outcome(step)
    if not exited:
        return Outcome(
            step, f"stopped at its time limit, {limit_s:.0f} s, at step {step} of {last_step}", True
        )
    if "out of memory" in log.read_text(errors="replace")[-20000:].lower():
        return Outcome(step, f"out of memory at step {step + 1}")
    return Outcome(step, f"launcher exited with code {proc.returncode} at step {step} of {last_step} ({log})")
