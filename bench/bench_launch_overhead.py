"""The plugin's launch path vs bare `llamafactory-cli train`, on the CPU demo, alternating in one run.

    python bench/bench_launch_overhead.py --rounds 2 --steps 10

Plugin: `arpo-sft train yaml/demo_cpu.yaml` (config checks, the tokenized-cache key check, resume scan,
torchrun on our entry module, output teed to training.log). Bare: `FORCE_TORCHRUN=1 NPROC_PER_NODE=2
llamafactory-cli train yaml/demo_cpu.yaml` (its ranks load the datasets cache it made in round 0). Both
train the same steps with 2 ranks on the same cores, after one warm-up launch each, so both find their
caches warm; the figure is wall seconds from start to exit, the overhead is plugin / bare - 1.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from launch_timing import bench_env, first_step_seconds, load_note, scratch_checkout  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/arpo-bench-launch"))
    args = parser.parse_args()

    checkout = scratch_checkout(args.workdir)
    env = bench_env(HF_DATASETS_CACHE=str(args.workdir / "hf-datasets"))
    common = [f"max_steps={args.steps}", "logging_steps=1", "save_steps=100000"]
    sides = {
        "plugin": (["arpo-sft", "train", "yaml/demo_cpu.yaml"], {}),
        "bare": (
            ["llamafactory-cli", "train", "yaml/demo_cpu.yaml"],
            {"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2"},
        ),
    }
    times: dict[str, list[float]] = {side: [] for side in sides}
    for round_ in range(args.rounds + 1):  # round 0 warms both caches and is not counted
        for side, (cmd, extra_env) in sides.items():
            out = checkout / "checkpoints" / f"overhead-{side}"
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            _, total, _ = first_step_seconds(
                [*cmd, *common, f"output_dir={out}"], checkout, {**env, **extra_env}
            )
            label = "warm-up" if round_ == 0 else f"round {round_}"
            print(f"{label:8s} {side:6s} {total:6.1f} s", flush=True)
            if round_:
                times[side].append(time.perf_counter() - start)

    plugin, bare = (statistics.median(times[side]) for side in sides)
    print(f"\nCPU demo, {args.steps} steps, 2 ranks, {args.rounds} rounds, {load_note()}")
    print(f"plugin {plugin:.1f} s, bare llamafactory-cli {bare:.1f} s (medians, start to exit)")
    print(
        f"overhead plugin / bare - 1: {plugin / bare - 1:+.1%} (medians); "
        f"{min(times['plugin']) / min(times['bare']) - 1:+.1%} (fastest of each, the least disturbed by load)"
    )


if __name__ == "__main__":
    main()
