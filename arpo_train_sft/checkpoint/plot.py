"""`arpo-sft plot`: loss, learning rate and grad norm of a run as one PNG, epochs marked; throughput, MFU
and peak memory below them when the run wrote metrics.jsonl (arpo_train_sft/rank/metrics.py)."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_writer, check_outputs
from ..errors import UserError
from .scan import list_checkpoints

TRAINER_LOG = "trainer_log.jsonl"
TRAINER_STATE = "trainer_state.json"
METRICS = "metrics.jsonl"  # the name rank/metrics.py writes; not imported from there, which needs torch
RATE = "tokens_per_second_per_gpu"
DEFAULT_PNG = "training_curves.png"
FIGSIZE_IN = (10.0, 9.0)
DPI = 100  # with FIGSIZE_IN: a 1000 x 900 pixel image
FIGSIZE_METRICS_IN = (10.0, 14.0)  # five panels: the three above, throughput and memory


@dataclass
class TrainerLog:
    """The loss and learning-rate series of trainer_log.jsonl, one point per logged step."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float | None] = field(default_factory=list)
    epoch: list[float | None] = field(default_factory=list)
    malformed: int = 0
    first_malformed: int | None = None  # 1-based line number
    repeated: int = 0  # steps logged again after a resume; the later value wins


@dataclass
class GradNorm:
    """grad_norm per step from a trainer_state.json, or why there is none."""

    steps: list[int]
    values: list[float]
    source: Path | None
    note: str = ""


@dataclass(frozen=True)
class MetricsLog:
    """metrics.jsonl's series, one point per logged step; None where the run measured nothing (no GPU)."""

    steps: list[int]
    tokens_per_second: list[float | None]
    mfu: list[float | None]
    memory_gib: list[float | None]


def _number(value: object) -> bool:
    # NaN and inf stay in: a diverged loss is data, drawn as a gap, not a malformed line.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_trainer_log(path: Path) -> TrainerLog:
    """Parse LLaMA-Factory's trainer_log.jsonl; lines without a loss (the closing summary) are not points."""
    points: dict[int, tuple[float, float | None, float | None]] = {}
    log = TrainerLog()
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            entry = None
        step = entry.get("current_steps") if isinstance(entry, dict) else None
        ok = isinstance(step, int) and not isinstance(step, bool)
        if ok and "loss" not in entry:
            continue
        if not ok or not _number(entry["loss"]):
            log.malformed += 1
            log.first_malformed = log.first_malformed or number
            continue
        log.repeated += step in points
        finite = {k: v for k in ("lr", "epoch") if _number(v := entry.get(k)) and math.isfinite(v)}
        points[step] = (float(entry["loss"]), finite.get("lr"), finite.get("epoch"))
    for step in sorted(points):
        loss, lr, epoch = points[step]
        log.steps.append(step)
        log.loss.append(loss)
        log.lr.append(lr)
        log.epoch.append(epoch)
    return log


def read_metrics(path: Path) -> MetricsLog:
    """Parse metrics.jsonl, if there is one: a repeated step (a resumed run) keeps its later line, and a line
    that is not a record (one torn by a full disk, which the writer only warns about) is left out."""
    records: dict[int, dict] = {}
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and type(entry.get("step")) is int and _number(entry.get(RATE)):
            records[entry["step"]] = entry
    steps = sorted(records)
    keys = (RATE, "mfu", "peak_memory_gib")
    series = [[float(v) if _number(v := records[s].get(k)) else None for s in steps] for k in keys]
    return MetricsLog(steps, *series)


def newest_state(output_dir: Path) -> Path | None:
    """The trainer_state.json with the highest global_step: the final one or the newest checkpoint's."""
    candidates = [output_dir / TRAINER_STATE] + [c / TRAINER_STATE for c in list_checkpoints(output_dir)]
    best: tuple[int, Path] | None = None
    for path in candidates:
        try:
            step = json.loads(path.read_text(encoding="utf-8")).get("global_step", -1)
        except (OSError, ValueError, AttributeError):
            continue
        if _number(step) and (best is None or step > best[0]):  # ties: the final one
            best = (int(step), path)
    return best[1] if best else None


def read_grad_norm(output_dir: Path) -> GradNorm:
    """grad_norm from the newest trainer_state.json's log_history; an explanatory note when there is none."""
    source = newest_state(output_dir)
    if source is None:
        return GradNorm([], [], None, f"no readable {TRAINER_STATE} in {output_dir} or its checkpoint-*/")
    history = json.loads(source.read_text(encoding="utf-8")).get("log_history") or []
    points = {
        e["step"]: float(e["grad_norm"])
        for e in history
        if isinstance(e, dict) and isinstance(e.get("step"), int) and _number(e.get("grad_norm"))
    }
    note = "" if points else f"no grad_norm in the log_history of {source}"
    return GradNorm(sorted(points), [points[s] for s in sorted(points)], source, note)


def epoch_boundaries(steps: list[int], epochs: list[float | None]) -> list[tuple[int, int]]:
    """(step, epoch number) for each epoch that starts inside the run: the first step past a whole epoch."""
    known = [(s, e) for s, e in zip(steps, epochs, strict=True) if e is not None]
    boundaries = []
    if not known:
        return boundaries
    # The Trainer logs the fraction of epochs done, so epoch k + 1 starts where that reaches k; the end of
    # the final epoch is the end of the run, not a boundary.
    for k in range(1, math.ceil(known[-1][1] - 1e-6)):
        boundaries.append((next(s for s, e in known if e >= k - 1e-6), k + 1))
    return boundaries


def ema(values: list[float], span: int) -> list[float]:
    """Exponential moving average with the usual alpha = 2 / (span + 1), started at the first value."""
    alpha = 2.0 / (span + 1)
    smoothed: list[float] = []
    for value in values:
        if not smoothed or not math.isfinite(smoothed[-1]):
            smoothed.append(value)
        elif not math.isfinite(value):
            smoothed.append(smoothed[-1])  # one diverged step should not blank the trend from here on
        else:
            smoothed.append(alpha * value + (1 - alpha) * smoothed[-1])
    return smoothed


def note(ax, text: str) -> None:
    """Say in the middle of an empty panel why it is empty."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", wrap=True)
    ax.set_yticks([])


def draw_metrics(metrics: MetricsLog, ax_rate, ax_memory) -> None:
    """Tokens/s/GPU with MFU on a second axis, and the peak memory; a note where nothing was measured."""
    ax_rate.plot(metrics.steps, metrics.tokens_per_second, color="tab:purple", linewidth=1)
    ax_rate.set_ylabel("tokens/s/GPU")
    if any(v is not None for v in metrics.mfu):
        ax_mfu = ax_rate.twinx()
        percent = [v * 100 if v is not None else None for v in metrics.mfu]  # a None is a gap
        ax_mfu.plot(metrics.steps, percent, color="tab:red", linewidth=1)
        ax_mfu.set_ylabel("MFU %", color="tab:red")
    if any(v is not None for v in metrics.memory_gib):
        ax_memory.plot(metrics.steps, metrics.memory_gib, color="tab:brown")
    else:
        note(ax_memory, "peak memory not measured (no GPU)")
    ax_memory.set_ylabel("peak memory GiB")


def draw(log: TrainerLog, grad: GradNorm, title: str, out: Path, metrics: MetricsLog | None = None) -> None:
    """Stacked panels sharing the step axis (three, five with metrics), written atomically to out as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels, size = (5, FIGSIZE_METRICS_IN) if metrics and metrics.steps else (3, FIGSIZE_IN)
    fig, axes = plt.subplots(panels, 1, sharex=True, figsize=size, dpi=DPI)
    ax_loss, ax_lr, ax_grad = axes[:3]
    fig.suptitle(title)
    # Short runs are readable as they are; long noisy ones need the trend drawn over the raw points.
    span = max(2, len(log.loss) // 25)
    ax_loss.plot(log.steps, log.loss, ".", markersize=3, alpha=0.35, color="tab:blue", label="loss")
    if len(log.loss) >= 10:
        ax_loss.plot(log.steps, ema(log.loss, span), color="tab:blue", label=f"EMA (span {span})")
    ax_loss.set_ylabel("training loss")
    ax_loss.legend(loc="upper right")

    ax_lr.plot(log.steps, log.lr, color="tab:orange")  # a None is a gap
    ax_lr.set_ylabel("learning rate")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))

    if grad.steps:
        ax_grad.plot(grad.steps, grad.values, color="tab:green", linewidth=1)
    else:
        note(ax_grad, grad.note)
    ax_grad.set_ylabel("grad norm")
    if panels == 5:
        draw_metrics(metrics, *axes[3:])
    axes[-1].set_xlabel("global step")

    for step, number in epoch_boundaries(log.steps, log.epoch):
        for ax in axes:
            ax.axvline(step, color="gray", linestyle="--", linewidth=0.8)
        ax_loss.annotate(
            f" epoch {number}", (step, 1.0), xycoords=("data", "axes fraction"), va="top", color="gray"
        )
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_writer(out, binary=True) as handle:
            fig.savefig(handle, format="png", dpi=DPI)
    finally:
        plt.close(fig)


def plot_run(output_dir: Path, out: Path) -> tuple[TrainerLog, GradNorm, MetricsLog]:
    """Read the run in output_dir and write its curves to out."""
    log_path = output_dir / TRAINER_LOG
    if not log_path.is_file():
        raise UserError(
            f"{log_path} not found: pass the run's output_dir (the `output_dir` of its YAML, e.g. "
            "checkpoints/demo-cpu), where LLaMA-Factory writes trainer_log.jsonl from the first logged step"
        )
    # Every file the plot reads is an input the PNG must not replace (`--out RUN/trainer_log.jsonl`).
    read = [log_path, output_dir / METRICS, output_dir / TRAINER_STATE]
    read += [c / TRAINER_STATE for c in list_checkpoints(output_dir)]
    check_outputs({f"OUTPUT_DIR's {p.relative_to(output_dir)}": p for p in read}, {"--out": out})
    log = read_trainer_log(log_path)
    if not log.steps:
        raise UserError(
            f"{log_path} has no line with a loss yet: wait for the first `logging_steps` steps, "
            "or lower logging_steps in the YAML"
        )
    epochs = [e for e in log.epoch if e is not None]
    title = f"{output_dir.name}: steps {log.steps[0]}-{log.steps[-1]}"
    if epochs:
        title += f", {epochs[-1]:.2f} epochs"
    grad = read_grad_norm(output_dir)
    metrics = read_metrics(output_dir / METRICS)
    draw(log, grad, title, out, metrics)
    return log, grad, metrics


def run(args: argparse.Namespace) -> int:
    """Write the PNG and say what went into it."""
    output_dir = Path(args.output_dir)
    out = Path(args.out) if args.out else output_dir / DEFAULT_PNG
    log, grad, metrics = plot_run(output_dir, out)
    print(f"wrote {out}: {len(log.steps)} loss points, steps {log.steps[0]}-{log.steps[-1]}")
    if log.malformed:
        print(
            f"warning: skipped {log.malformed} malformed line(s) of {output_dir / TRAINER_LOG} "
            f"(first: line {log.first_malformed})"
        )
    if log.repeated:
        print(f"note: {log.repeated} step(s) were logged twice (a resumed run); the later values are drawn")
    print(f"grad norm: {len(grad.steps)} points from {grad.source}" if grad.steps else f"note: {grad.note}")
    if metrics.steps:
        print(f"throughput: {len(metrics.steps)} points from {output_dir / METRICS}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `plot` to the command tree."""
    parser = subparsers.add_parser(
        "plot",
        help="draw loss, learning rate and grad norm of a run (finished or still training) as one PNG",
        description="Read OUTPUT_DIR/trainer_log.jsonl (loss, lr, epoch) and the newest trainer_state.json "
        "(grad_norm; the final one or the newest checkpoint-*/ while training runs) and draw three "
        "panels over the global step, with an EMA over the raw loss and dashed lines where epochs start. "
        "When OUTPUT_DIR/metrics.jsonl exists, two more: tokens/s per GPU with MFU, and peak GPU memory.",
        epilog="example:\n  arpo-sft plot checkpoints/qwen2.5-7b-sft --out curves.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("output_dir", help="the run's output_dir, e.g. checkpoints/demo-cpu")
    parser.add_argument("--out", help=f"PNG to write (default: OUTPUT_DIR/{DEFAULT_PNG})")
    parser.set_defaults(func=run)
