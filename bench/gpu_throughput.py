"""Training throughput on one GPU machine: Qwen2.5-3B/7B shapes, random weights, through our launcher.

    python bench/gpu_throughput.py                      # the planned matrix, stops before --budget seconds
    python bench/gpu_throughput.py --models 7b --cutoffs 15000 --attn sdpa fa2 --json out.json
    python bench/gpu_throughput.py --smoke              # CPU: tiny model, 2 ranks (what the tests run)

No download: each model directory holds the architecture's config.json and the real Qwen2.5 tokenizer
rebuilt offline; `train_from_scratch: true` builds random weights. Every run is `arpo-sft train` on the
shipped preset (yaml/qwen2.5-3b.yaml or -7b.yaml: ZeRO-3, bf16, Liger, gradient checkpointing): first
each preset on one rank, then on every visible GPU when there are several, then one setting changed
per run (sdpa, Liger off, checkpointing off) while the budget lasts. One row per GPU per step, in a
fixed order: a warm-up step, --steps steps of rows longer than the cutoff (exactly cutoff_len tokens
each), then --arpo-steps steps of ARPO-shaped rows (bench_prepare.synthetic_rows, fixed seed: the
long-tailed lengths of ARPO-SFT-54K) cut at the cutoff. Figures come from the run's trainer_log.jsonl
(bench/throughput_log.py): non-padding tokens/s per GPU and MFU for each kind of row, rank 0's peak
torch.cuda.max_memory_allocated, and `arpo-sft estimate` for the same config beside it. MFU divides
by the card's published dense bf16 peak when it is in the table, else by the 8192^2 matmul rate
measured here first; both are printed.
No checkpoint: save_strategy "no", max_steps far beyond the last timed step, and once that step is
logged every process of the launch is stopped, then SIGKILLed; the ranks never see SIGTERM (on which
they save). A run that leaves weights in output_dir counts as failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput_launch import launch, weights_in  # noqa: E402
from throughput_log import Rate, peak_gib, published_peak, rate, read_log  # noqa: E402
from throughput_setup import (  # noqa: E402
    SEED,
    SHAPES,
    Run,
    child_env,
    estimate,
    prepare_data,
    run_config,
)

WARMUP_STEPS = 1  # allocator, kernels and ZeRO-3 set-up; not timed
LAUNCH_ESTIMATE_S = 75  # start, random init, ZeRO-3 set-up of a 7B model before its first step
DEVICE_PROBE = """
import json, time, torch
props = torch.cuda.get_device_properties(0)
a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
for _ in range(3):
    a @ b
torch.cuda.synchronize()
start = time.perf_counter()
for _ in range(30):
    a @ b
torch.cuda.synchronize()
tflops = 30 * 2 * 8192**3 / (time.perf_counter() - start) / 1e12
print(json.dumps(dict(name=props.name, count=torch.cuda.device_count(), memory_gib=props.total_memory / 2**30,
                      matmul_tflops=tflops)))
"""


@dataclasses.dataclass(frozen=True)
class Device:
    """The GPUs here, probed in a child process so that this one holds no GPU memory during the runs."""

    name: str = "cpu"
    count: int = 0
    memory_gib: float = 0.0
    matmul_tflops: float | None = None  # bf16 8192 x 8192 products on GPU 0


@dataclasses.dataclass
class Result:
    """What one run measured, or why it did not."""

    run: Run
    status: str  # "ok", "failed" or "skipped"
    reason: str = ""
    cutoff_rows: Rate | None = None
    arpo_rows: Rate | None = None
    peak_allocated_gib: float | None = None
    peak_reserved_gib: float | None = None
    estimate_gib: float | None = None


def plan(models: list[str], cutoffs: list[int], attns: list[str], gpus: int, smoke: bool) -> list[Run]:
    """Every preset on one rank, then on all GPUs when there are several, then each one-setting change."""
    if smoke:
        return [Run("tiny", 60, ranks=2, attn="sdpa", liger=False)]
    presets = [Run(model, cutoff, attn=attns[-1]) for model in models for cutoff in cutoffs]
    wide = [dataclasses.replace(run, ranks=gpus) for run in presets] if gpus > 1 else []
    variants = []
    for base in presets:
        variants += [dataclasses.replace(base, attn=a) for a in attns if a != base.attn]
        variants += [dataclasses.replace(base, liger=False), dataclasses.replace(base, checkpointing=False)]
    return presets + wide + variants


def missing_package(run: Run) -> str | None:
    """Why this run cannot happen here, or None."""
    if run.attn == "fa2" and importlib.util.find_spec("flash_attn") is None:
        return "flash-attn is not installed"
    if run.liger and importlib.util.find_spec("liger_kernel") is None:
        return "liger-kernel is not installed"
    return None


def probe_device() -> Device:
    """Name, count and memory of the GPUs and GPU 0's bf16 matmul rate; the CPU Device without CUDA."""
    probe = subprocess.run(
        [sys.executable, "-c", DEVICE_PROBE], capture_output=True, text=True, env=child_env()
    )
    return Device(**json.loads(probe.stdout)) if probe.returncode == 0 else Device()


def measure(run: Run, args: argparse.Namespace, device: Device, peak: float | None, left: float) -> Result:
    """Launch one run, and read its rates, peak memory and estimate; a Result whatever happens."""
    gpu = not args.smoke
    why = missing_package(run) if gpu else None
    need = LAUNCH_ESTIMATE_S + 5 * (args.steps + WARMUP_STEPS) + args.arpo_steps  # seconds, roughly
    if why is None and left < need:
        why = "out of time budget"
    if why:
        return Result(run, "skipped", why)
    timed = WARMUP_STEPS + args.steps
    last = timed + args.arpo_steps
    data = prepare_data(args.workdir, timed * run.ranks, args.arpo_steps * run.ranks)
    config = run_config(run, args.workdir, data, last * run.ranks, gpu)
    total, fits = estimate(config, run.ranks, device.memory_gib) if gpu else (None, True)
    if not fits:
        return Result(
            run, "skipped", f"arpo-sft estimate {total} GiB > {device.memory_gib:.0f} GiB", estimate_gib=total
        )
    output_dir = args.workdir / "out" / run.slug
    outcome = launch(config, run.ranks, output_dir, last, left, args.workdir / "logs" / f"{run.slug}.log")
    result = Result(run, "ok", outcome.why, estimate_gib=total)
    saved = weights_in(output_dir)
    if saved:
        result.status, result.reason = "failed", f"wrote weights, which it must never do: {saved[:3]}"
    elif outcome.why:
        # Out of budget is not broken: it trained (measured in part) or had under twice its rough need.
        budget_bound = outcome.timed_out and (outcome.step > 0 or left < 2 * need)
        result.status = "skipped" if budget_bound else "failed"
    rows, shape = read_log(output_dir / "trainer_log.jsonl") if outcome.step else [], SHAPES[run.model]
    if outcome.step >= timed:
        result.cutoff_rows = rate(rows, WARMUP_STEPS, timed, run.ranks, shape, peak)
        result.peak_allocated_gib, result.peak_reserved_gib = peak_gib(rows, outcome.step)
    if outcome.step >= last:
        result.arpo_rows = rate(rows, timed, last, run.ranks, shape, peak)
    return result


def describe(result: Result) -> str:
    """One line per run: both rates with MFU, peak memory and the estimate; or why it has none."""

    def shown(r: Rate | None) -> str:
        if r is None:
            return "not reached"
        mfu = f"MFU {r.mfu:.1%}" if r.mfu is not None else "MFU n/a"
        return f"{r.tokens_per_s_per_gpu:,.0f} tokens/s/GPU ({mfu}, {r.mean_row_tokens:,.0f} tokens/row)"

    line = f"{result.run.name}: {result.status}" + (f" ({result.reason})" if result.reason else "")
    if result.cutoff_rows is None:
        return line
    memory = "peak memory n/a (no GPU)"
    if result.peak_allocated_gib is not None:
        memory = (
            f"peak {result.peak_allocated_gib:.1f} GiB allocated, {result.peak_reserved_gib:.1f} reserved"
        )
    if result.estimate_gib and result.peak_allocated_gib:
        memory += f" (estimate {result.estimate_gib:.1f} GiB, x{result.estimate_gib / result.peak_allocated_gib:.2f})"
    return f"{line}; cutoff rows {shown(result.cutoff_rows)}; ARPO rows {shown(result.arpo_rows)}; {memory}"


def summary(
    device: Device, peak: float | None, source: str, args: argparse.Namespace, results: list[Result]
) -> dict:
    """Every figure of the runs, for --json: the device, the peak MFU divides by, each run's Result."""
    return dict(
        device=dataclasses.asdict(device),
        peak_tflops=peak,
        peak_source=source if peak else None,
        seed=SEED,
        warmup_steps=WARMUP_STEPS,
        steps=args.steps,
        arpo_steps=args.arpo_steps,
        runs=[dataclasses.asdict(result) for result in results],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", choices=("3b", "7b"), default=["7b", "3b"])
    parser.add_argument("--cutoffs", nargs="+", type=int, default=[15000, 4096])
    parser.add_argument(
        "--attn",
        nargs="+",
        choices=("sdpa", "fa2"),
        default=["sdpa", "fa2"],
        help="attention implementations to compare; the last one is the preset's",
    )
    parser.add_argument(
        "--steps", type=int, default=3, help="timed steps of cutoff-length rows, after 1 warm-up"
    )
    parser.add_argument(
        "--arpo-steps", type=int, default=12, help="timed steps of ARPO-shaped rows after those"
    )
    parser.add_argument("--budget", type=float, default=450, help="seconds for all runs together")
    parser.add_argument("--smoke", action="store_true", help="CPU: the tiny model at cutoff 60 on 2 ranks")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/arpo-gpu-throughput"))
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = parser.parse_args(argv)

    start = time.monotonic()
    device = Device() if args.smoke else probe_device()
    runs = plan(args.models, args.cutoffs, args.attn, device.count, args.smoke)
    if args.dry_run:
        for run in runs:
            why = missing_package(run)
            print(run.name, f"(skipped: {why})" if why else "")
        return 0
    peak = published_peak(device.name)
    source = "published dense bf16 peak" if peak else "measured matmul rate"
    peak = peak or device.matmul_tflops
    matmul = f"{device.matmul_tflops:.0f} TFLOP/s" if device.matmul_tflops else "n/a"
    print(
        f"{device.count} x {device.name}; bf16 8192^2 matmul measured here: {matmul}; "
        f"MFU against {f'{peak:.0f} TFLOP/s, the {source}' if peak else 'n/a (no GPU)'}",
        flush=True,
    )
    results = []
    for run in runs:
        results.append(measure(run, args, device, peak, args.budget - (time.monotonic() - start)))
        print(describe(results[-1]), flush=True)
        if args.json:  # after every run: a caller that stops this script early keeps what was measured
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(summary(device, peak, source, args, results), indent=1) + "\n")
    print(f"total {time.monotonic() - start:.0f} s")
    ok = [r for r in results if r.status == "ok"]
    return 0 if ok and not any(r.status == "failed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
