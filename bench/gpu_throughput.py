"""Training throughput on one GPU machine: Qwen2.5-3B/7B shapes, random weights, through our launcher.

    python bench/gpu_throughput.py                      # the planned matrix, stops before 8 minutes
    python bench/gpu_throughput.py --models 7b --cutoffs 15000 --attn sdpa fa2
    python bench/gpu_throughput.py --smoke              # CPU: tiny model, a few steps (what the tests run)

No download: each model directory holds only the architecture's config.json (Qwen2.5-3B or -7B shapes)
and the real Qwen2.5 tokenizer rebuilt offline; `train_from_scratch: true` makes LLaMA-Factory build
random weights. Every run is `arpo-sft train` on the shipped preset (yaml/qwen2.5-3b.yaml or -7b.yaml:
ZeRO-3, bf16, Liger, gradient checkpointing) with one variable changed: attention (sdpa or
FlashAttention-2, skipped when flash-attn is missing), Liger on/off (skipped when liger-kernel is
missing), gradient checkpointing on/off. Rows are longer than the cutoff, so every step trains exactly
cutoff_len tokens per GPU. Step times come from the arrival of rank 0's per-step loss lines (the first
step is warm-up and not counted); the run is stopped after its last timed step, before the final save.
Printed per run: tokens/s/GPU, MFU against the bf16 matmul peak measured here first, peak GPU memory
(nvidia-smi, what the allocator reserved). A run that fails (out of memory) prints why and the next
one starts; runs that would not finish inside --budget seconds are skipped and listed.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# Qwen2.5 shapes from the published config.json files (hidden, intermediate, layers, heads, kv heads, vocab, tied).
SHAPES = {
    "3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
               num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
}  # fmt: skip
PRESETS = {"3b": "yaml/qwen2.5-3b.yaml", "7b": "yaml/qwen2.5-7b.yaml", "tiny": "yaml/demo_cpu.yaml"}
LAUNCH_ESTIMATE_S = 75  # start, random init, ZeRO-3 set-up of a 7B model before its first step


@dataclasses.dataclass(frozen=True)
class Run:
    """One launch: a model shape at a cutoff with one setting changed from the preset."""

    model: str
    cutoff: int
    attn: str = "fa2"
    liger: bool = True
    checkpointing: bool = True

    @property
    def name(self) -> str:
        gc = "gc" if self.checkpointing else "no-gc"
        return f"{self.model} cutoff {self.cutoff} {self.attn} liger-{'on' if self.liger else 'off'} {gc}"


def plan(models: list[str], cutoffs: list[int], attns: list[str], smoke: bool) -> list[Run]:
    """Preset runs first (largest model, longest cutoff), then each one-setting change at the same size."""
    if smoke:
        return [Run("tiny", 64, attn="sdpa", liger=False)]
    runs = []
    for model in models:
        for cutoff in cutoffs:
            base = Run(model, cutoff, attn=attns[-1])
            runs.append(base)
            runs += [dataclasses.replace(base, attn=a) for a in attns if a != base.attn]
            runs.append(dataclasses.replace(base, liger=False))
            runs.append(dataclasses.replace(base, checkpointing=False))
    return sorted(
        runs, key=lambda r: (r != Run(r.model, r.cutoff, attn=attns[-1]), -int(r.model != "3b"), -r.cutoff)
    )


def missing_package(run: Run) -> str | None:
    """Why this run cannot happen here, or None."""
    if run.attn == "fa2" and importlib.util.find_spec("flash_attn") is None:
        return "flash-attn is not installed"
    if run.liger and importlib.util.find_spec("liger_kernel") is None:
        return "liger-kernel is not installed"
    return None


def model_flops_per_token(shape: dict, cutoff: int) -> float:
    """Training FLOPs per token: 6 x parameters in matmuls, plus causal attention (6 x layers x hidden x seq)."""
    h, inter, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = h * shape["num_key_value_heads"] // shape["num_attention_heads"]
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * inter  # q, o, k, v projections and the SwiGLU MLP
    matmul_params = layers * per_layer + h * shape["vocab_size"]  # the lm_head
    return 6 * matmul_params + 6 * layers * h * cutoff


def bf16_peak_tflops() -> float | None:
    """The bf16 matmul rate this GPU reaches on 8192-square products, in TFLOP/s."""
    import torch

    if not torch.cuda.is_available():
        return None
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, reps = time.perf_counter(), 30
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    rate = reps * 2 * 8192**3 / (time.perf_counter() - start) / 1e12
    del a, b
    torch.cuda.empty_cache()
    return rate


def prepare_model(work: Path, model: str) -> Path:
    """A model directory with the architecture's config and the real Qwen2.5 tokenizer, no weights."""
    from arpo_train_sft.demo.model import build_tiny_model

    tiny = work / "tiny-model"
    if not (tiny / "config.json").exists():
        build_tiny_model(tiny)
    folder = work / f"qwen2.5-{model}-random"
    if model == "tiny":
        return tiny
    folder.mkdir(parents=True, exist_ok=True)
    for item in tiny.iterdir():
        if item.name.startswith(("tokenizer", "chat_template", "generation_config")):
            shutil.copy2(item, folder / item.name)
    config = json.loads((tiny / "config.json").read_text())
    config.update(SHAPES[model], max_position_embeddings=32768, torch_dtype="bfloat16")
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    return folder


def prepare_data(work: Path, rows: int = 64) -> Path:
    """Rows longer than any cutoff tried here, registered in their own dataset_info.json."""
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    thought = "Let me check this step once more before I use the tool. " * 2000  # ~24,000 tokens
    with (data / "long.jsonl").open("w", encoding="utf-8") as handle:
        for i in range(rows):
            row = {"system": "You are a careful solver.", "conversations": [{"from": "human", "value": f"Question {i}: what is {i} squared?"},
                                     {"from": "gpt", "value": f"<think>{thought}</think><answer>{i * i}</answer>"}]}  # fmt: skip
            handle.write(json.dumps(row) + "\n")
    registry = json.loads((REPO / "dataset_info" / "dataset_info.json").read_text())
    entry = {**registry["arpo_sft_demo"], "file_name": "long.jsonl"}
    (data / "dataset_info.json").write_text(json.dumps({"long": entry}))
    return data


def run_config(run: Run, work: Path, steps: int, gpu: bool) -> Path:
    """The shipped preset with this run's model, data and one changed setting."""
    values = yaml.safe_load((REPO / PRESETS[run.model]).read_text())
    values.update(
        model_name_or_path=str(prepare_model(work, run.model)), train_from_scratch=True,
        dataset_dir=str(prepare_data(work)), dataset="long", cutoff_len=run.cutoff, max_samples=64,
        preprocessing_num_workers=1, per_device_train_batch_size=1, gradient_accumulation_steps=1,
        max_steps=steps + 3, logging_steps=1, save_steps=100000, plot_loss=False, report_to="none",
        output_dir=str(work / "out" / run.name.replace(" ", "_")), overwrite_output_dir=True,
        deepspeed=str(REPO / values["deepspeed"]), enable_liger_kernel=run.liger and gpu,
        disable_gradient_checkpointing=not run.checkpointing,
    )  # fmt: skip
    values["flash_attn"] = run.attn if gpu else "auto"
    path = work / "configs" / f"{run.name.replace(' ', '_')}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values))
    return path


class MemorySampler(threading.Thread):
    """The highest `memory.used` nvidia-smi reports while a run lasts, in MiB."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        if shutil.which("nvidia-smi") is None:
            return
        while not self.stop.wait(0.5):
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True).stdout.split()  # fmt: skip
            self.peak = max([self.peak, *(int(x) for x in out if x.isdigit())])


def step_times(config: Path, steps: int, timeout: float) -> tuple[list[float], str]:
    """Seconds between consecutive loss lines after the first, and the launch's output tail."""
    env = {
        **os.environ,
        "NPROC_PER_NODE": "1",
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    cmd = [sys.executable, "-m", "arpo_train_sft.cli", "train", str(config), "--fresh"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    stamps: list[float] = []
    tail: list[str] = []
    timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGTERM))
    timer.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = (tail + [line])[-40:]
        if "'loss'" in line:
            stamps.append(time.perf_counter())
            if len(stamps) == steps + 1:
                os.killpg(proc.pid, signal.SIGTERM)  # measured enough; skip the final save
    proc.wait()
    timer.cancel()
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)], "".join(tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", choices=("3b", "7b"), default=["7b", "3b"])
    parser.add_argument("--cutoffs", nargs="+", type=int, default=[15000, 4096])
    parser.add_argument("--attn", nargs="+", choices=("sdpa", "fa2"), default=["sdpa", "fa2"],
                        help="attention implementations to compare; the last one is the preset's")  # fmt: skip
    parser.add_argument("--steps", type=int, default=4, help="timed steps per run (after one warm-up step)")
    parser.add_argument("--budget", type=float, default=450, help="seconds for all runs together")
    parser.add_argument(
        "--smoke", action="store_true", help="CPU: the tiny model, 64 tokens, no GPU settings"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/arpo-gpu-throughput"))
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = parser.parse_args(argv)

    runs = plan(args.models, args.cutoffs, args.attn, args.smoke)
    if args.dry_run:
        for run in runs:
            print(run.name, f"(skipped: {missing_package(run)})" if missing_package(run) else "")
        return 0
    start = time.perf_counter()
    peak = None if args.smoke else bf16_peak_tflops()
    print(f"bf16 matmul peak measured here: {f'{peak:.0f} TFLOP/s' if peak else 'n/a (no GPU)'}", flush=True)
    results, skipped = [], []
    for run in runs:
        why = None if args.smoke else missing_package(run)
        left = args.budget - (time.perf_counter() - start)
        if why is None and left < LAUNCH_ESTIMATE_S + 5 * args.steps:
            why = "out of time budget"
        if why:
            skipped.append(f"{run.name}: {why}")
            continue
        sampler = MemorySampler()
        sampler.start()
        times, tail = step_times(
            run_config(run, args.workdir, args.steps, gpu=not args.smoke), args.steps, left
        )
        sampler.stop.set()
        if not times:
            reason = "out of memory" if "out of memory" in tail.lower() else "no step finished"
            results.append((run, None, None, sampler.peak, reason))
            print(f"{run.name}: {reason}\n{tail[-1500:]}", flush=True)
            continue
        step = sorted(times)[len(times) // 2]
        rate = run.cutoff / step
        mfu = rate * model_flops_per_token(SHAPES[run.model], run.cutoff) / (peak * 1e12) if peak else None
        results.append((run, rate, mfu, sampler.peak, ""))
        print(f"{run.name}: {rate:,.0f} tokens/s/GPU, MFU {f'{mfu:.1%}' if mfu else 'n/a'}, "
              f"peak memory {sampler.peak / 1024:.1f} GiB", flush=True)  # fmt: skip

    print(f"\n{'run':40s} {'tokens/s/GPU':>12s} {'MFU':>6s} {'peak GiB':>8s}")
    for run, rate, mfu, mem, note in results:
        shown = f"{rate:12,.0f} {f'{mfu:.1%}' if mfu else 'n/a':>6s}" if rate else f"{note:>19s}"
        print(f"{run.name:40s} {shown} {mem / 1024:8.1f}")
    for line in skipped:
        print(f"skipped {line}")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0 if any(rate for _, rate, *_ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
