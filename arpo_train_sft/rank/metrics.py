"""Throughput, MFU and peak memory of every logged step in metrics.jsonl, a summary line at the end, and
after this process's first step the measured peak memory beside `arpo-sft estimate`'s.

Tokens: a forward pre-hook on the model adds each training micro-batch's tokens where `attention_mask != 0`,
per row: every token the model computes on, prompt and tool results included, since those cost FLOPs as
much as the answer does (`labels != -100` would count only the tokens in the loss). It also adds the
squares of the row lengths, the causal attention term of the FLOPs. Both stay in a tensor on the device, so
the hook never waits for the device, and nothing is exchanged per micro-batch: each logging step runs one
all_gather of [tokens, squares, peak bytes] per rank (the first step and the end of training one more).

Time: rank 0's wall clock from the start of this process's first step, so a resumed run is timed from the
resumed step (LLaMA-Factory 0.9.5 times its throughput from step 0 after a resume: its open PR #10739).
Each record covers the steps since the previous record, saves and data loading included, as a day-long
run spends them. Peak memory is torch.cuda.max_memory_allocated, which counts from this process's start.
Limits: under `neat_packing` a packed row counts as one sequence in the attention term (an overcount), and
where LLaMA-Factory builds a 4-D mask (neat_packing without FlashAttention) padding counts as tokens too.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from ..config import load_run_config
from ..errors import UserError
from ..family import ModelShape, UnknownFamily, shape_from_config
from ..train.estimate import estimate
from ..train.shapes import training_flops

METRICS = "metrics.jsonl"
PEAK_ENV = "ARPO_SFT_PEAK_TFLOPS"
GIB = 1024**3
# Dense (no structured sparsity) bf16 tensor-core TFLOP/s of one GPU, from NVIDIA's datasheets (H100, H200,
# A100, L40S, L4, A10) and the Ada Lovelace architecture whitepaper (RTX 4090, FP32 accumulate), keyed by
# the words of torch.cuda.get_device_name(). The first row whose words all appear wins, so the PCIe and NVL
# cards come before their SXM namesakes ("NVIDIA H100 80GB HBM3" is the SXM card). Words, not substrings:
# "A10" must not match "NVIDIA A100-SXM4-80GB".
PEAK_TFLOPS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("H100", "PCIE"), 756.0),
    (("H100", "NVL"), 835.0),
    (("H200", "NVL"), 835.0),
    (("H100",), 989.4),
    (("H200",), 989.4),
    (("GH200",), 989.4),
    (("A100",), 312.0),
    (("L40S",), 362.05),
    (("RTX", "4090"), 165.2),
    (("A10",), 125.0),
    (("L4",), 121.0),
)


def say(message: str, after_bar: bool = False) -> None:
    """One line in training.log (the launcher tees the ranks' stdout into it)."""
    # The Trainer's progress bar, still open when training ends, leaves its line without a newline.
    prefix = "\n" if after_bar else ""
    print(f"{prefix}[arpo-sft] {message}", flush=True)


@dataclass(frozen=True)
class Peak:
    """The dense bf16 TFLOP/s MFU divides by, or None and the one warning that says why there is none."""

    tflops: float | None
    warning: str | None = None


def peak_tflops(device_name: str, env: Mapping[str, str] = os.environ) -> Peak:
    """PEAK_ENV when set, else the table's figure for this GPU; never a guess for a GPU it does not know."""
    fix = f"set {PEAK_ENV}=<dense bf16 TFLOP/s of one GPU> to compute it"
    if PEAK_ENV in env:
        try:
            value = float(env[PEAK_ENV])
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value > 0:
            return Peak(value)
        return Peak(None, f"{PEAK_ENV}={env[PEAK_ENV]!r} is not a positive number; mfu is null: {fix}")
    words = set(re.findall(r"[A-Z0-9]+", device_name.upper()))
    for needed, tflops in PEAK_TFLOPS:
        if words.issuperset(needed):
            return Peak(tflops)
    return Peak(None, f"no dense bf16 peak known for GPU {device_name!r}; mfu is null: {fix}")


@dataclass(frozen=True)
class Reading:
    """Every rank's counts since this process's first step began, at one moment of rank 0's clock."""

    seconds: float
    tokens: float  # non-padding tokens, all ranks
    squares: float  # sum of squared row lengths, all ranks
    peak_bytes: float | None  # the largest max_memory_allocated over ranks; None without a GPU
    ranks: int


def reading(rows: list[list[float]], seconds: float) -> Reading:
    """Combine each rank's [tokens, squares, peak bytes or -1 without a GPU] into one Reading."""
    peak = max(row[2] for row in rows)
    return Reading(
        seconds, sum(r[0] for r in rows), sum(r[1] for r in rows), peak if peak >= 0 else None, len(rows)
    )


@dataclass(frozen=True)
class Rates:
    """What the steps between two readings achieved, per GPU."""

    tokens_per_second_per_gpu: float
    mfu: float | None
    peak_memory_gib: float | None


def rates(start: Reading, end: Reading, shape: ModelShape | None, peak: float | None) -> Rates:
    """Tokens/s/GPU and MFU between start and end; the peak memory as of end."""
    seconds = max(end.seconds - start.seconds, 1e-9)
    tokens = (end.tokens - start.tokens) / seconds / end.ranks
    mfu = None
    if shape is not None and peak is not None:
        flops = training_flops(shape, end.tokens - start.tokens, end.squares - start.squares)
        mfu = flops / seconds / end.ranks / (peak * 1e12)
    memory = end.peak_bytes / GIB if end.peak_bytes is not None else None
    return Rates(tokens, mfu, memory)


def record(step: int, start: Reading, end: Reading, shape: ModelShape | None, peak: float | None) -> dict:
    """One metrics.jsonl line: the rates of the steps after start up to `step`, and what they came from."""
    r = rates(start, end, shape, peak)
    return {
        "step": step,
        "tokens_per_second_per_gpu": round(r.tokens_per_second_per_gpu, 2),
        "mfu": round(r.mfu, 5) if r.mfu is not None else None,
        "peak_memory_gib": round(r.peak_memory_gib, 3) if r.peak_memory_gib is not None else None,
        "tokens": int(end.tokens - start.tokens),  # all ranks
        "seconds": round(end.seconds - start.seconds, 4),
    }


def summary_line(r: Rates) -> str:
    """The line rank 0 prints when training ends."""
    mfu = f"{r.mfu:.1%}" if r.mfu is not None else "n/a"
    memory = f"{r.peak_memory_gib:.1f} GiB" if r.peak_memory_gib is not None else "n/a"
    return f"throughput: {r.tokens_per_second_per_gpu:,.0f} tokens/s/GPU, MFU {mfu}, peak memory {memory}"


def memory_line(step: int, measured_gib: float | None, estimated: float | str) -> str:
    """The calibration line: the measured peak beside the estimate (GiB), or why either is missing."""
    measured = (
        f"peak {measured_gib:.1f} GiB per GPU measured"
        if measured_gib is not None
        else "not measured on CPU (torch.cuda.max_memory_allocated needs a GPU)"
    )
    if isinstance(estimated, str):
        return f"memory after step {step}: {measured}; no estimate: {estimated}"
    line = f"memory after step {step}: {measured}, {estimated:.1f} GiB estimated (arpo-sft estimate)"
    return line + (f", ratio {measured_gib / estimated:.2f}" if measured_gib is not None else "")


def estimated_gib(argv: list[str], gpus: int, gpu_mem_gib: float) -> float | str:
    """`arpo-sft estimate`'s per-GPU total for the rank's CONFIG and overrides, or why it cannot be made."""
    try:
        return estimate(
            load_run_config(Path(argv[0]), argv[1:]), gpus=gpus, gpu_mem_gib=gpu_mem_gib
        ).total_gib
    except UserError as err:
        return "; ".join(err.problems)


def device_memory_gib(device: torch.device) -> float:
    """The device's total memory; a CPU rank's device is the host's RAM."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / GIB
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB


@dataclass
class RecordWriter:
    """Appends metrics.jsonl lines; one that cannot be written warns once and never stops training."""

    path: Path
    warned: bool = False

    def write(self, line: dict) -> None:
        try:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")
        except OSError as err:
            if not self.warned:
                self.warned = True
                say(f"warning: cannot write {self.path} ({err}); training goes on without per-step records")


class StepMetrics(TrainerCallback):
    """Count tokens per micro-batch on the device; at logging steps agree on the rates; rank 0 reports."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv  # CONFIG and key=value overrides, as the rank got them: for the estimate
        self.counts = torch.zeros(2, dtype=torch.float64)
        self.hook: torch.utils.hooks.RemovableHandle | None = None
        self.started: float | None = None
        self.last: Reading | None = None
        self.calibrated = False
        self.shape: ModelShape | None = None
        self.peak: float | None = None
        self.estimated: float | str = "not computed on this rank"
        self.writer: RecordWriter | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.counts = torch.zeros(2, dtype=torch.float64, device=args.device)
        self.hook = model.register_forward_pre_hook(self._count, with_kwargs=True)
        if not state.is_world_process_zero:
            return
        self.writer = RecordWriter(Path(args.output_dir) / METRICS)
        try:
            self.shape = shape_from_config(model.config.to_dict())
        except UnknownFamily as err:  # no Qwen2 FLOPs for another family: training goes on without MFU
            say(f"warning: mfu is null: {err}")
        except (KeyError, TypeError, ValueError) as err:
            say(f"warning: mfu is null: no model shape in {type(model.config).__name__} ({err!r})")
        if args.device.type == "cuda":
            peak = peak_tflops(torch.cuda.get_device_name(args.device))
            self.peak = peak.tflops
            if peak.warning:
                say(f"warning: {peak.warning}")
        # Before the clock starts: reading the config and the model's shape is not training time.
        self.estimated = estimated_gib(self.argv, args.world_size, device_memory_gib(args.device))

    def _count(self, module: torch.nn.Module, _args: tuple, kwargs: dict) -> None:
        if not module.training:
            return
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() == 2:
            lengths = mask.ne(0).sum(dim=-1)
        else:  # no mask or a 4-D one: every position is a token
            ids = kwargs["input_ids"]
            lengths = torch.full(ids.shape[:1], ids.shape[-1], device=ids.device)
        self.counts[0] += lengths.sum()
        self.counts[1] += lengths.pow(2).sum()

    def _read(self, args) -> Reading:
        """One all_gather: every rank must call it at the same point."""
        memory = torch.cuda.max_memory_allocated(args.device) if args.device.type == "cuda" else -1.0
        mine = torch.cat(
            [self.counts, torch.tensor([float(memory)], dtype=torch.float64, device=args.device)]
        )
        rows = [mine]
        if dist.is_available() and dist.is_initialized():
            rows = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
            dist.all_gather(rows, mine)
        values = [row.tolist() for row in rows]  # waits for the device: the clock below is after the step
        return reading(values, time.perf_counter() - self.started)

    def on_step_begin(self, args, state, control, **kwargs):
        if self.started is None:
            self.started = time.perf_counter()
            self.last = Reading(0.0, 0.0, 0.0, None, args.world_size)

    def on_step_end(self, args, state, control, **kwargs):
        if self.calibrated:
            return
        self.calibrated = True
        now = self._read(args)
        if state.is_world_process_zero:
            measured = now.peak_bytes / GIB if now.peak_bytes is not None else None
            say(memory_line(state.global_step, measured, self.estimated))

    def on_log(self, args, state, control, logs=None, **kwargs):
        # Step logs carry the loss; the closing summary and evaluations do not, and are not steps.
        if self.started is None or "loss" not in (logs or {}):
            return
        now = self._read(args)
        if self.writer is not None:
            self.writer.write(record(state.global_step, self.last, now, self.shape, self.peak))
        self.last = now

    def on_train_end(self, args, state, control, **kwargs):
        if self.hook is not None:
            self.hook.remove()
        if self.started is None:
            return
        end = self._read(args)
        if state.is_world_process_zero:
            zero = Reading(0.0, 0.0, 0.0, None, end.ranks)
            say(summary_line(rates(zero, end, self.shape, self.peak)), after_bar=True)
