"""Shared by the launch benchmarks: a scratch checkout of the CPU demo, and timing a launch to its first step."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARTS = ("sft_train.sh", "yaml", "dataset_info", "examples")


def scratch_checkout(workdir: Path) -> Path:
    """A copy of the runnable parts of the repo with the tiny demo model built once."""
    root = workdir / "checkout"
    if not (root / "models" / "arpo-sft-tiny-qwen2" / "config.json").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        for part in PARTS:
            src = REPO / part
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, root / part)
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from arpo_train_sft.demo.model import DEMO_MODEL_DIR, ensure_demo_model; "
                "ensure_demo_model(DEMO_MODEL_DIR)",
            ],
            cwd=root,
            check=True,
            env=bench_env(),
        )
    return root


def bench_env(**extra: str) -> dict[str, str]:
    """This interpreter's bin first on PATH (torchrun, llamafactory-cli, arpo-sft), the repo importable."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env.update(extra)
    return env


def first_step_seconds(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """(seconds to the first logged loss, seconds to exit, the output) of one launch."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    first = None
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if first is None and "'loss'" in line:
            first = time.perf_counter() - start
    code = proc.wait()
    total = time.perf_counter() - start
    output = "".join(lines)
    if code != 0 or first is None:
        raise SystemExit(f"launch failed ({code}): {' '.join(cmd)}\n{output[-3000:]}")
    return first, total, output


def load_note() -> str:
    """The machine's load while measuring: it is shared, so ratios matter more than seconds."""
    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {one:.1f} (1 min) / {five:.1f} (5 min)"
