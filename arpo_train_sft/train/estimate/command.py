"""`arpo-sft estimate`: per-GPU peak memory of a config, whether it fits, and the cheapest fix if not."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ...errors import UserError


def run(args: argparse.Namespace) -> int:
    """Estimate, then print the breakdown (or the JSON); exit 0 whether or not it fits."""
    from ...config import load_run_config
    from ..hardware import gpu_count, gpu_memory
    from . import estimate

    problems, declared = [], {}
    for name, read in (("gpus", gpu_count), ("gpu_mem", gpu_memory)):
        text = getattr(args, name)
        try:
            declared[name] = None if text is None else read(text)
        except UserError as err:
            problems += err.problems
    if problems:
        raise UserError(problems)
    gpus, gpu_mem = declared["gpus"], declared["gpu_mem"]
    est = estimate(load_run_config(Path(args.config), args.overrides), gpus, gpu_mem)
    print(json.dumps(est.to_json(), indent=2) if args.json else render(args.config, est))
    return 0


def render(config: str, est) -> str:
    """The human-readable breakdown."""
    s = est.setup
    zero = f"ZeRO-{s.stage}" if s.deepspeed else "DDP (no DeepSpeed)"
    offload = [
        name for name, on in (("optimizer", s.offload_optimizer), ("parameters", s.offload_param)) if on
    ]
    lines = [
        f"{config}: {est.params / 1e9:.2f}B parameters, {zero}"
        + (f" offloading {' and '.join(offload)}" if offload else "")
        + f", {'bf16' if s.elem_bytes == 2 else 'fp32'}, {est.gpus} GPUs x {est.gpu_mem_gib:g} GiB",
        f"  micro-batch {s.micro_batch} x cutoff_len {s.cutoff} = {s.tokens:,} tokens; gradient checkpointing "
        f"{'on' if s.checkpointing else 'off'}; Liger {'on' if s.liger else 'off'}; attention {s.attention}",
    ]
    lines += [f"  {name:<12} {gib:7.2f} GiB" for name, gib in est.per_gpu_gib.items()]
    verdict = "fits" if est.fits else "does NOT fit"
    lines.append(f"  {'total':<12} {est.total_gib:7.2f} GiB per GPU of {est.gpu_mem_gib:g}: {verdict}")
    lines.append(f"  host RAM     {est.host_gib:7.1f} GiB per node")
    lines += [f"  advice: {line}" for line in est.advice]
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `estimate` to the command tree."""
    parser = subparsers.add_parser(
        "estimate",
        help="per-GPU peak memory of a config: fits or not, and the cheapest change that makes it fit",
        description="Estimate one rank's peak GPU memory for CONFIG: parameters, gradients, optimizer "
        "states, activations, logits and overhead, for its ZeRO stage, offload, dtype, cutoff_len and "
        "micro-batch. The model's shape comes from its config.json (or Qwen2.5's known shapes for a hub "
        "id). Without --gpus/--gpu-mem it uses the hardware the preset's 'Sized for:' header names.",
        epilog="examples:\n  arpo-sft estimate yaml/qwen2.5-7b-80gb-speed.yaml\n"
        "  arpo-sft estimate yaml/sft_config.yaml cutoff_len=32768 --gpus 8 --gpu-mem 80 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="training YAML, e.g. yaml/sft_config.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override a YAML key")
    parser.add_argument("--gpus", metavar="N", help="GPUs in the job (default: the preset's header)")
    parser.add_argument("--gpu-mem", metavar="GIB", help="memory of one GPU in GiB (default: the header)")
    parser.add_argument("--json", action="store_true", help="print the estimate as JSON")
    parser.set_defaults(func=run)
