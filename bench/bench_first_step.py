"""Time to the first training step: a relaunch that reuses the tokenized cache vs a first launch.

    python bench/bench_first_step.py                  # the CPU demo (300 rows), 2 rounds
    python bench/bench_first_step.py --rows 5000      # the demo model on 5,000 long synthetic rows

Each round launches `arpo-sft train yaml/demo_cpu.yaml max_steps=1` twice in a scratch checkout: first
with no tokenized cache (and a fresh datasets cache), then again (the cache is reused). The figure is
the seconds from starting the launcher to the first logged loss; the ratio is relaunch / first launch.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from launch_timing import bench_env, first_step_seconds, load_note, scratch_checkout  # noqa: E402


def synthetic_dataset(checkout: Path, rows: int) -> str:
    """Register `rows` long synthetic rows as dataset `bench_long` in the checkout; its name."""
    from bench_prepare import synthetic_rows

    path = checkout / "dataset_info" / f"bench_long_{rows}.jsonl"
    if not path.exists():
        with path.open("w", encoding="utf-8") as handle:
            for row in synthetic_rows(rows, seed=0):
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    info_path = checkout / "dataset_info" / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["bench_long"] = {**info["arpo_sft_demo"], "file_name": path.name}
    info_path.write_text(json.dumps(info, indent=1))
    return "bench_long"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=0, help="long synthetic rows instead of the demo's 300")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/arpo-bench-first-step"))
    args = parser.parse_args()

    checkout = scratch_checkout(args.workdir)
    extra = [f"dataset={synthetic_dataset(checkout, args.rows)}"] if args.rows else []
    cache = checkout / "dataset_info" / ".tokenized"
    times: dict[str, list[float]] = {"first launch": [], "relaunch": []}
    for round_ in range(args.rounds):
        shutil.rmtree(cache, ignore_errors=True)
        hf_cache = args.workdir / f"hf-datasets-{round_}"
        shutil.rmtree(hf_cache, ignore_errors=True)
        env = bench_env(HF_DATASETS_CACHE=str(hf_cache))
        for side in times:
            out = checkout / "checkpoints" / f"first-step-{round_}-{side.replace(' ', '-')}"
            shutil.rmtree(out, ignore_errors=True)
            cmd = [
                "arpo-sft",
                "train",
                "yaml/demo_cpu.yaml",
                "max_steps=1",
                "logging_steps=1",
                "save_steps=1000",
                f"output_dir={out}",
                *extra,
            ]
            first, total, output = first_step_seconds(cmd, checkout, env)
            line = next(x for x in output.splitlines() if "tokenized dataset:" in x)
            expected = "built" if side == "first launch" else "reused"
            assert f"tokenized dataset: {expected} " in line, line
            times[side].append(first)
            print(
                f"round {round_ + 1} {side:12s} first step after {first:6.1f} s (exit {total:.1f} s)",
                flush=True,
            )

    rows = args.rows or 300
    first, again = (statistics.median(times[side]) for side in times)
    print(f"\n{rows} rows, demo model, {args.rounds} rounds, {load_note()}")
    print(f"first launch {first:.1f} s, relaunch {again:.1f} s to the first step (medians)")
    print(f"ratio relaunch / first launch: {again / first:.1%}")


if __name__ == "__main__":
    main()
