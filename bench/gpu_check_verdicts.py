"""What each gpu_check step's output means: its verdict, its figures, and the one JSON they all go into."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput_setup import Run  # noqa: E402

SCHEMA = 1
# bf16 weights and activations move a first loss of ~12 by up to ~1e-2 relative (bench/loss_check.py).
LOSS_RTOL = 1e-2
# What the demo's log must say: transformers on ZeRO-3's zero.init, LLaMA-Factory on attention and Liger.
DEMO_MARKERS = {
    "ZeRO-3": "Detected DeepSpeed ZeRO-3",
    "FlashAttention-2": "Using FlashAttention-2",
    "Liger": "Liger kernel has been applied",
}


@dataclasses.dataclass
class StepResult:
    """One step's verdict, a line saying why, and what it measured."""

    name: str
    ok: bool
    seconds: float = 0.0
    detail: str = ""
    figures: dict = dataclasses.field(default_factory=dict)


def read_rows(path: Path) -> list[dict]:
    """The rows of a trainer_log.jsonl, none if it is missing."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_demo(log_text: str, rows: list[dict], steps: int) -> tuple[list[str], dict]:
    """What is wrong with a finished demo run, from its output and trainer_log rows; and its figures."""
    problems = [
        f"the log never says {text!r} ({what})" for what, text in DEMO_MARKERS.items() if text not in log_text
    ]
    losses = [row["loss"] for row in rows if "loss" in row]
    done = max((row.get("current_steps", 0) for row in rows), default=0)
    if done != steps:
        problems.append(f"trained {done} of {steps} steps")
    if not losses or not all(math.isfinite(loss) for loss in losses):
        problems.append(f"losses not all finite: {losses}")
    figures = dict(
        steps=done,
        first_loss=losses[0] if losses else None,
        last_loss=losses[-1] if losses else None,
        # rank 0's torch.cuda.max_memory_allocated (RECORD_VRAM=1); LLaMA-Factory logs 0 without a GPU
        peak_allocated_gib=max((row.get("vram_allocated", 0.0) for row in rows), default=0.0) or None,
    )
    return problems, figures


def compare_first_loss(on: dict, off: dict, rtol: float = LOSS_RTOL) -> StepResult:
    """Liger on and off must give the same first loss within bf16's tolerance."""
    a, b = on["first_loss"], off["first_loss"]
    relative = abs(a - b) / max(abs(a), abs(b))
    ok = math.isfinite(relative) and relative <= rtol
    detail = f"first loss {a:.4f} with Liger, {b:.4f} without: {relative:.1e} relative ({'<=' if ok else '>'} {rtol:g})"
    figures = dict(liger_on=a, liger_off=b, relative=relative, rtol=rtol)
    return StepResult("liger-same-loss", ok, detail=detail, figures=figures)


def estimate_comparisons(demo: dict | None, throughput: dict | None) -> list[dict]:
    """Estimate, measured peak and estimate / measured for the demo and each throughput run that has both."""
    found = []
    if demo and demo.get("estimate_gib") and demo.get("peak_allocated_gib"):
        found.append(
            ("demo (its rows are shorter than cutoff_len)", demo["estimate_gib"], demo["peak_allocated_gib"])
        )
    for run in (throughput or {}).get("runs", []):
        if run["estimate_gib"] and run["peak_allocated_gib"]:
            found.append((Run(**run["run"]).name, run["estimate_gib"], run["peak_allocated_gib"]))
    return [
        dict(config=name, estimate_gib=est, measured_gib=got, ratio=est / got) for name, est, got in found
    ]


def write_summary(
    path: Path, started: str, total_s: float, budget_s: int, device: dict, results: list[StepResult]
) -> dict:
    """Write gpu_check.json: the device, every step's verdict and figures; return what was written."""
    failed = [result.name for result in results if not result.ok]
    summary = dict(
        schema=SCHEMA,
        started=started,
        total_s=round(total_s, 1),
        budget_s=budget_s,
        device=device,
        passed=not failed,
        failed=failed,
        steps=[dataclasses.asdict(result) for result in results],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1) + "\n")
    return summary
