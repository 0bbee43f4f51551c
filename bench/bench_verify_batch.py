"""What batching buys `arpo-sft verify` on CPU: the same prompts at several --batch-size, side by side.

    python bench/bench_verify_batch.py --prompts 32 --tokens 64 --sizes 1,4,8,16 --rounds 2

The tiny demo model (random weights, the real Qwen2.5 tokenizer, fp32) is built in a temporary folder;
each prompt is one of the demo-style questions with a number appended, in ARPO's chat prompt. Every
size runs the same prompts through verify's own loop (`run_prompts`), sizes in turn within each round
(1 4 8 16 1 4 8 16 ...), so drift on a shared box lands on every size alike. The random model never writes
a stop tag, so every prompt generates exactly --tokens tokens: a uniform load, no tool calls. Printed: the
wall time of each run, the median per size, its speedup over --batch-size 1, and whether every size's
trajectories equal batch size 1's token for token.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from arpo_train_sft.demo.model import build_tiny_model
from arpo_train_sft.verify.batch import run_prompts
from arpo_train_sft.verify.engine import load_model_dir
from arpo_train_sft.verify.loop import RESULT_FORMATS, Limits
from arpo_train_sft.verify.prompts import DEFAULT_PROMPTS, Prompt
from arpo_train_sft.verify.search import LocalCorpusSearch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per prompt")
    parser.add_argument("--sizes", default="1,4,8,16")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    import torch

    print(f"date: {subprocess.run(['date'], capture_output=True, text=True).stdout.strip()}")
    print(f"nproc: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, torch {torch.__version__}")
    prompts = [
        Prompt(f"{DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)].question} ({i})") for i in range(args.prompts)
    ]
    limits = Limits(max_new_tokens=args.tokens, max_total_tokens=args.tokens, time_limit_s=3600)
    with tempfile.TemporaryDirectory() as scratch:
        engine = load_model_dir(build_tiny_model(Path(scratch) / "tiny"))
        times: dict[int, list[float]] = {s: [] for s in sizes}
        texts: dict[int, list[str]] = {}
        for round_ in range(1, args.rounds + 1):
            for size in sizes:
                start = time.perf_counter()
                reports = run_prompts(
                    engine, prompts, LocalCorpusSearch.demo(), limits, RESULT_FORMATS["eval"], size
                )
                seconds = time.perf_counter() - start
                times[size].append(seconds)
                texts[size] = [r.trajectory for r in reports]
                tokens = sum(r.new_tokens for r in reports)
                print(f"round {round_} batch {size:3d}: {seconds:7.2f} s, {tokens / seconds:7.1f} tokens/s")
    base = statistics.median(times[sizes[0]])
    print(f"\n{args.prompts} prompts x {args.tokens} tokens; median of {args.rounds} rounds")
    print("| --batch-size | wall time | prompts/s | speedup | equal to batch 1 |")
    print("| ---: | ---: | ---: | ---: | --- |")
    for size in sizes:
        median = statistics.median(times[size])
        same = "yes" if texts[size] == texts[sizes[0]] else "NO"
        print(f"| {size} | {median:.2f} s | {args.prompts / median:.2f} | {base / median:.2f}x | {same} |")


if __name__ == "__main__":
    main()
