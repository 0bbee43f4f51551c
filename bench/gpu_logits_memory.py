"""What Qwen2.5's 151,936-token vocabulary costs in GPU memory at long sequence lengths, with and without Liger.

    python3 bench/gpu_logits_memory.py                          # needs a CUDA GPU; about a minute
    python3 bench/gpu_logits_memory.py --seq-lens 15000 --json out.json

One forward+backward of batch 1 in bf16 per sequence length, on the tiny demo model (random-init Qwen2,
hidden 64, 2 layers, real vocabulary): its layers are negligible, so the step's memory is the logits.
"plain" is transformers' own loss (bf16 logits, then an fp32 copy for the cross-entropy); "liger" patches
Qwen2 as LLaMA-Factory's `enable_liger_kernel: true` does for SFT (fused linear cross-entropy: the logits
are computed a chunk at a time and never held whole). Liger sizes its chunk of logits to about
seq_len x hidden elements: a few MB here, a few hundred MB for a 7B model, so its figure here is a floor.
Figures: peak = torch.cuda.max_memory_allocated during the step; step = peak minus what was allocated
before it (weights); both in GiB, from the second of two repeats (the first compiles Liger's kernels).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

GIB = 1024**3
FIRST_ADDED_ID = 151643  # ids at and above this are special or padding rows: keep inputs to real BPE tokens
# Random weights give a loss near ln(vocab); both losses come from the same weights and inputs, so they agree
# to bf16 rounding. A larger gap means the patched forward computes something else.
LOSS_TOLERANCE = 1e-2


@dataclass
class Measurement:
    """One configuration at one sequence length."""

    mode: str
    seq_len: int
    peak_gib: float | None
    step_gib: float | None
    loss: float | None
    ms: float | None
    error: str | None = None


def one_step(model, ids) -> tuple[float, float, float, float]:
    """Forward+backward once; return (peak GiB, step GiB, loss, milliseconds)."""
    import torch

    model.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    start = time.perf_counter()
    out = model(input_ids=ids, labels=ids, use_cache=False)
    out.loss.backward()
    torch.cuda.synchronize()
    ms = (time.perf_counter() - start) * 1000
    peak = torch.cuda.max_memory_allocated()
    loss = out.loss.item()
    del out
    return peak / GIB, (peak - before) / GIB, loss, ms


def measure(model_dir: Path, mode: str, seq_lens: list[int]) -> list[Measurement]:
    """Load the model fresh (after any patching) and measure each sequence length, twice."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda().train()
    gen = torch.Generator(device="cuda").manual_seed(0)
    results = []
    for seq_len in seq_lens:
        ids = torch.randint(0, FIRST_ADDED_ID, (1, seq_len), device="cuda", generator=gen)
        try:
            one_step(model, ids)
            peak, step, loss, ms = one_step(model, ids)
            results.append(Measurement(mode, seq_len, peak, step, loss, ms))
        except torch.cuda.OutOfMemoryError as err:
            results.append(Measurement(mode, seq_len, None, None, None, None, f"out of memory: {err}"[:300]))
        print(f"  {mode:5} {seq_len:6}: {_fmt(results[-1].peak_gib)} GiB peak", flush=True)
    del model
    torch.cuda.empty_cache()
    return results


def _fmt(value: float | None, digits: int = 2) -> str:
    return "OOM" if value is None else f"{value:.{digits}f}"


def table(plain: list[Measurement], liger: list[Measurement], vocab: int) -> str:
    """Side-by-side rows: the arithmetic logits sizes, then what each mode actually peaked at."""
    head = (
        f"{'seq_len':>7} | {'bf16 logits':>11} | {'fp32 copy':>9} | {'plain peak':>10} | {'plain step':>10} "
        f"| {'liger peak':>10} | {'liger step':>10} | {'plain ms':>8} | {'liger ms':>8} | {'plain loss':>10} "
        f"| {'liger loss':>10}"
    )
    lines = [head, "-" * len(head)]
    for p, g in zip(plain, liger, strict=True):
        lines.append(
            f"{p.seq_len:>7} | {p.seq_len * vocab * 2 / GIB:>11.2f} | {p.seq_len * vocab * 4 / GIB:>9.2f} "
            f"| {_fmt(p.peak_gib):>10} | {_fmt(p.step_gib):>10} | {_fmt(g.peak_gib):>10} | {_fmt(g.step_gib):>10} "
            f"| {_fmt(p.ms, 1):>8} | {_fmt(g.ms, 1):>8} | {_fmt(p.loss, 4):>10} | {_fmt(g.loss, 4):>10}"
        )
    lines.append("(GiB; 'bf16 logits' and 'fp32 copy' are seq_len x vocab x 2 or 4 bytes, for scale)")
    return "\n".join(lines)


def loss_mismatches(plain: list[Measurement], liger: list[Measurement]) -> list[str]:
    """Sequence lengths where the two losses disagree beyond bf16 rounding."""
    problems = []
    for p, g in zip(plain, liger, strict=True):
        if p.loss is None or g.loss is None:
            continue
        finite = math.isfinite(p.loss) and math.isfinite(g.loss)
        if not finite or abs(p.loss - g.loss) > LOSS_TOLERANCE * abs(p.loss):
            problems.append(f"seq_len {p.seq_len}: plain loss {p.loss:.5f} vs liger loss {g.loss:.5f}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Measure plain then Liger, print the table, write JSON; exit 1 if a loss disagrees or a step failed."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[4096, 8192, 15000])
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(
            "gpu_logits_memory: error: no CUDA device is visible; run this on a GPU machine", file=sys.stderr
        )
        return 2

    from importlib.metadata import version

    import transformers
    from liger_kernel.transformers import apply_liger_kernel_to_qwen2

    from arpo_train_sft.demo.model import build_tiny_model
    from arpo_train_sft.family import QWEN25_VOCAB_SIZE

    transformers.utils.logging.disable_progress_bar()

    device = torch.cuda.get_device_name()
    print(
        f"{device}; torch {torch.__version__}; transformers {transformers.__version__}; "
        f"liger-kernel {version('liger-kernel')}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(Path(tmp) / "tiny")
        plain = measure(model_dir, "plain", args.seq_lens)
        # The same call LLaMA-Factory makes for stage sft (no arguments: fused linear cross-entropy, RMSNorm,
        # SwiGLU and RoPE kernels). It patches the classes, so the model is loaded again after it.
        apply_liger_kernel_to_qwen2()
        liger = measure(model_dir, "liger", args.seq_lens)

    print(table(plain, liger, QWEN25_VOCAB_SIZE), flush=True)
    problems = loss_mismatches(plain, liger)
    problems += [f"{m.mode} seq_len {m.seq_len}: {m.error}" for m in plain + liger if m.error]
    for line in problems:
        print(f"gpu_logits_memory: error: {line}", file=sys.stderr)
    if args.json:
        report = {
            "device": device,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "liger_kernel": version("liger-kernel"),
            "vocab_size": QWEN25_VOCAB_SIZE,
            "measurements": [asdict(m) for m in plain + liger],
            "problems": problems,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
