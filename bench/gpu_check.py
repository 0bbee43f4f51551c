"""GPU acceptance check: the demo, Liger's loss, memory estimate vs measured, throughput; one JSON of figures.

    bash bench/gpu_check.sh                    # installs .whl/*.whl if there are any, then runs this
    python bench/gpu_check.py --out DIR        # figures into DIR (default: $OUT, else /tmp/gpu-check-out)
    python bench/gpu_check.py --plan           # the steps and their time limits; runs nothing

Each step has a time limit and all end within TOTAL_S (450 s) of the start: under 8 minutes on one
H200 with the wheels' install before. A failed step does not stop the next; the exit code is 1 if any
failed. Each step's output goes to OUT/<step>.log and every figure to OUT/gpu_check.json
(bench/gpu_check_verdicts.py writes it): {"schema": 1, "started", "total_s", "budget_s", "device":
{name, count, memory_gib, matmul_tflops}, "passed", "failed": [names], "steps": [{"name", "ok",
"seconds", "detail", "figures"}]}.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check_verdicts import (  # noqa: E402
    LOSS_RTOL,
    StepResult,
    check_demo,
    compare_first_loss,
    estimate_comparisons,
    read_rows,
    write_summary,
)
from gpu_throughput import Device, probe_device  # noqa: E402
from throughput_launch import kill_tree  # noqa: E402
from throughput_setup import REPO, child_env, estimate  # noqa: E402

TOTAL_S = 450
DEMO_STEPS = 30
DEMO_CONFIG = Path("yaml/demo_cpu.yaml")
DEMO_OVERRIDES = ("bf16=true", "flash_attn=fa2", "enable_liger_kernel=true")
LOSS_OVERRIDES = {
    "loss-liger-on": ("enable_liger_kernel=true", "bf16=true", "flash_attn=fa2"),
    "loss-liger-off": ("enable_liger_kernel=false", "bf16=true", "flash_attn=fa2"),
}
VERSIONS = """
import importlib.metadata as md, json, sys, torch
names = ("transformers", "tokenizers", "accelerate", "peft", "trl", "datasets", "llamafactory", "deepspeed",
         "liger-kernel", "flash-attn", "triton", "pydantic", "numpy")
found = {}
for name in names:
    try:
        found[name] = md.version(name)
    except md.PackageNotFoundError:
        found[name] = None
print(json.dumps(dict(python=sys.version.split()[0], torch=torch.__version__, cuda=torch.version.cuda,
                      packages=found)))
"""


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of the check: its name, time limit, what it does, and the Check method that does it."""

    name: str
    limit_s: int  # 0: whatever the others leave
    what: str
    action: str


STEPS = (
    Step("versions", 30, "python, torch, CUDA and package versions", "versions"),
    Step("demo", 90, f"arpo-sft train {DEMO_CONFIG} {' '.join(DEMO_OVERRIDES)}, {DEMO_STEPS} steps", "demo"),
    Step("loss-liger-on", 100, f"bench/loss_check.py {' '.join(LOSS_OVERRIDES['loss-liger-on'])}", "loss"),
    Step("loss-liger-off", 100, f"bench/loss_check.py {' '.join(LOSS_OVERRIDES['loss-liger-off'])}", "loss"),
    Step(
        "liger-same-loss", 1, f"first loss with Liger on vs off, within {LOSS_RTOL:g} relative", "same_loss"
    ),
    Step(
        "throughput", 0, "bench/gpu_throughput.py: 7B, 3B presets at 15000, 4096; then variants", "throughput"
    ),
    Step("estimate", 5, "arpo-sft estimate vs measured peak: the demo and each throughput run", "estimate"),
)


def run_logged(cmd: list[str], log: Path, limit_s: float, **env: str) -> int:
    """Run cmd with its output in log; its exit code, or 124 once SIGKILLed at the limit."""
    with log.open("w") as handle:
        handle.write(f"$ {' '.join(cmd)}\n")
        handle.flush()
        env_ = child_env(**env)
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env_, stdin=subprocess.DEVNULL, stdout=handle, stderr=handle
        )
        try:
            return proc.wait(timeout=max(limit_s, 1))
        except subprocess.TimeoutExpired:
            kill_tree(proc.pid)  # not SIGTERM: on that the ranks save a checkpoint first
            proc.wait()
            return 124


def read_json(path: Path) -> dict:
    """A report a step's command wrote, {} if it wrote none."""
    return json.loads(path.read_text()) if path.is_file() else {}


class Check:
    """The steps, run in order against one deadline; each returns its StepResult."""

    def __init__(self, out: Path, work: Path, device: Device, deadline: float) -> None:
        self.out, self.work, self.device, self.deadline = out, work, device, deadline
        self.figures: dict[str, dict] = {}  # what earlier steps measured, for the later ones

    def limit(self, step: Step, keep: float = 0.0) -> float:
        """The step's own limit, or less where the deadline (minus `keep` for later steps) comes first."""
        left = self.deadline - time.monotonic() - keep
        return min(step.limit_s, left) if step.limit_s else left

    def versions(self, step: Step) -> StepResult:
        cmd = [sys.executable, "-c", VERSIONS]
        out = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=self.limit(step))
        if out.returncode != 0:
            return StepResult(step.name, False, detail=out.stderr.strip()[-500:])
        found = json.loads(out.stdout)
        return StepResult(
            step.name, True, detail=f"torch {found['torch']}, CUDA {found['cuda']}", figures=found
        )

    def demo(self, step: Step) -> StepResult:
        output_dir, log = self.work / "demo", self.out / f"{step.name}.log"
        shutil.rmtree(output_dir, ignore_errors=True)  # a rerun starts afresh, not from this one's checkpoint
        cmd = [sys.executable, "-m", "arpo_train_sft.cli", "train", str(DEMO_CONFIG), *DEMO_OVERRIDES]
        cmd += [
            f"max_steps={DEMO_STEPS}",
            f"save_steps={DEMO_STEPS}",
            "logging_steps=5",
            f"output_dir={output_dir}",
        ]
        # NPROC_PER_NODE unset: the launcher starts one rank per visible GPU.
        code = run_logged(cmd, log, self.limit(step), RECORD_VRAM="1")
        rows = read_rows(output_dir / "trainer_log.jsonl")
        problems, figures = check_demo(log.read_text(errors="replace"), rows, DEMO_STEPS)
        if code != 0:
            problems.insert(0, f"exit code {code}")
        figures["ranks"] = self.device.count
        figures["estimate_gib"] = estimate(
            DEMO_CONFIG, self.device.count, self.device.memory_gib, DEMO_OVERRIDES
        )[0]
        self.figures["demo"] = figures
        detail = "; ".join(problems) or "ZeRO-3, FlashAttention-2 and Liger in the log; every loss finite"
        return StepResult(step.name, not problems, detail=detail, figures=figures)

    def loss(self, step: Step) -> StepResult:
        report = self.out / f"{step.name}.json"
        report.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "bench/loss_check.py",
            "--workdir",
            str(self.work / step.name),
            "--json",
            str(report),
        ]
        code = run_logged([*cmd, *LOSS_OVERRIDES[step.name]], self.out / f"{step.name}.log", self.limit(step))
        figures = read_json(report)
        figures.pop("rows", None)  # per-row sums; the log has them
        self.figures[step.name] = figures
        if not figures:
            return StepResult(step.name, False, detail=f"exit code {code}, no report")
        detail = (
            f"exit code {code}; first loss {figures['first_loss']:.4f}, ARPO's {figures['arpo_loss']:.4f}"
        )
        return StepResult(step.name, code == 0, detail=detail, figures=figures)

    def same_loss(self, step: Step) -> StepResult:
        on, off = self.figures.get("loss-liger-on"), self.figures.get("loss-liger-off")
        if not (on and off):
            return StepResult(step.name, False, detail="a loss check left no first loss to compare")
        return compare_first_loss(on, off)

    def throughput(self, step: Step) -> StepResult:
        report = self.out / "throughput.json"
        report.unlink(missing_ok=True)
        limit = self.limit(step, keep=STEPS[-1].limit_s)
        # The script stops starting runs at its budget; the margin lets it write its JSON before the limit.
        cmd = [
            sys.executable,
            "bench/gpu_throughput.py",
            "--json",
            str(report),
            "--budget",
            f"{limit - 15:.0f}",
        ]
        code = run_logged(
            [*cmd, "--workdir", str(self.work / "throughput")], self.out / f"{step.name}.log", limit
        )
        figures = read_json(report)
        self.figures["throughput"] = figures
        runs = figures.get("runs", [])
        counts = ", ".join(f"{sum(r['status'] == s for r in runs)} {s}" for s in ("ok", "failed", "skipped"))
        return StepResult(step.name, code == 0, detail=f"exit code {code}; runs: {counts}", figures=figures)

    def estimate(self, step: Step) -> StepResult:
        found = estimate_comparisons(self.figures.get("demo"), self.figures.get("throughput"))
        lines = [f"{c['config']}: {c['estimate_gib']:.1f} vs {c['measured_gib']:.1f} GiB" for c in found]
        detail = "; ".join(lines) if len(found) >= 2 else f"{len(found)} config(s) measured, 2 needed"
        return StepResult(step.name, len(found) >= 2, detail=detail, figures=dict(comparisons=found))

    def run(self, step: Step) -> StepResult:
        """One step, timed; a bug in it fails this step only."""
        start = time.monotonic()
        try:
            result = getattr(self, step.action)(step)
        except Exception as err:  # a broken step must not stop the others
            traceback.print_exc()
            result = StepResult(step.name, False, detail=f"{type(err).__name__}: {err}")
        result.seconds = round(time.monotonic() - start, 1)
        return result


def print_plan() -> None:
    """Each step with its time limit; the throughput step gets what the others leave."""
    fixed = sum(step.limit_s for step in STEPS)
    for step in STEPS:
        limit = f"{step.limit_s:4d} s" if step.limit_s else f">={TOTAL_S - fixed:3d} s"
        print(f"{step.name:16s} {limit}  {step.what}")
    print(f"{'total':16s} {TOTAL_S:4d} s  (after the .whl/ install in bench/gpu_check.sh)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("OUT") or "/tmp/gpu-check-out"),
        help="where gpu_check.json and the logs go (default: $OUT, else /tmp/gpu-check-out)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path("/tmp/gpu-check"), help="the runs' scratch space"
    )
    parser.add_argument(
        "--plan", action="store_true", help="print the steps and their time limits, run nothing"
    )
    args = parser.parse_args(argv)
    if args.plan:
        print_plan()
        return 0
    # No network on the GPU machine: fail at once rather than wait on the hub.
    os.environ.update(PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    started, start = datetime.datetime.now().isoformat(timespec="seconds"), time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    device = probe_device()
    print(f"[gpu_check] {device.count} x {device.name}; figures to {args.out}", flush=True)
    check = Check(args.out, args.workdir, device, start + TOTAL_S)
    results = []
    for step in STEPS:
        results.append(check.run(step))
        verdict = "ok" if results[-1].ok else "FAILED"
        print(
            f"[gpu_check] {step.name}: {verdict} ({results[-1].seconds:.0f} s) {results[-1].detail}",
            flush=True,
        )
    path = args.out / "gpu_check.json"
    summary = write_summary(
        path, started, time.monotonic() - start, TOTAL_S, dataclasses.asdict(device), results
    )
    verdict = "all steps passed" if summary["passed"] else f"FAILED: {', '.join(summary['failed'])}"
    print(f"[gpu_check] {verdict}; {summary['total_s']:.0f} s; {path}", flush=True)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
