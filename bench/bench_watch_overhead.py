"""What the rank-side watching costs per step: the plugin's callbacks vs SIGTERM's save alone, on the CPU demo.

    python bench/bench_watch_overhead.py --rounds 3 --steps 40

"With" is the package as it is: the divergence watch (rank/health.py), per-step metrics (rank/metrics.py) and
the out-of-memory watch (rank/oom.py) beside the SIGTERM save. "Without" is a copy of the package, first on
PYTHONPATH, whose entry.py attaches only the SIGTERM save (its per-step all-reduce of one flag, as before
these callbacks). Both train the demo through the launcher on 2 CPU ranks (ZeRO-3, cutoff 256), in turn,
A B A B ...; a step's time is the difference of consecutive `elapsed_time` in trainer_log.jsonl, the first
5 steps (warm-up) left out. Printed: each round's median step, and the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WARMUP_STEPS = 5
ENTRY_CALL = "run_guarded(lambda: train(callbacks), oom)"


def without_copy(root: Path) -> Path:
    """A copy of the package whose ranks attach only the SIGTERM save."""
    copy = root / "without"
    shutil.copytree(
        REPO / "arpo_train_sft", copy / "arpo_train_sft", ignore=shutil.ignore_patterns("__pycache__")
    )
    entry = copy / "arpo_train_sft" / "entry.py"
    text = entry.read_text(encoding="utf-8")
    if ENTRY_CALL not in text:
        raise SystemExit(f"{entry}: no `{ENTRY_CALL}` to replace; update this benchmark")
    entry.write_text(text.replace(ENTRY_CALL, "train([SaveOnSigterm()])"), encoding="utf-8")
    return copy


def step_times(output_dir: Path) -> list[float]:
    """Seconds per optimizer step after the warm-up, from LLaMA-Factory's trainer_log.jsonl.

    Its `elapsed_time` is text rounded to whole seconds; with `include_num_input_tokens_seen` each row also
    has `total_tokens` and `throughput` (tokens per second since training began, to 0.01), whose quotient is
    the time at the end of that step.
    """
    rows = [json.loads(line) for line in (output_dir / "trainer_log.jsonl").read_text().splitlines()]
    elapsed = [row["total_tokens"] / row["throughput"] for row in rows if "loss" in row][WARMUP_STEPS:]
    return [b - a for a, b in zip(elapsed, elapsed[1:], strict=False)]


def run(steps: int, output_dir: Path, pythonpath: str | None) -> float:
    """Train the demo for `steps` steps; the median step time."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    cmd = [
        "bash",
        "sft_train.sh",
        "yaml/demo_cpu.yaml",
        f"max_steps={steps}",
        "logging_steps=1",
        f"save_steps={steps * 10}",
        "include_num_input_tokens_seen=non_padding",
        "cutoff_len=256",
        f"output_dir={output_dir}",
        "--skip-preflight",
    ]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"run failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return statistics.median(step_times(output_dir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="watch-overhead-") as tmp:
        root = Path(tmp)
        copy = without_copy(root)
        ratios = []
        for round_ in range(args.rounds):
            with_s = run(args.steps, root / f"with-{round_}", None)
            without_s = run(args.steps, root / f"without-{round_}", str(copy))
            ratios.append(with_s / without_s)
            print(
                f"round {round_ + 1}: with {with_s:.3f} s/step, without {without_s:.3f} s/step, "
                f"ratio {ratios[-1]:.4f}",
                flush=True,
            )
    print(f"median ratio with/without: {statistics.median(ratios):.4f} over {args.rounds} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
