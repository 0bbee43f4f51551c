"""`arpo-sft verify RUN_DIR`: every checkpoint of a run (or those `--steps` names) on the same prompts,
one report entry per step, and the metrics drawn against step."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..atomic import atomic_writer
from ..checkpoint.scan import checkpoint_step, list_checkpoints, scan
from ..errors import UserError
from .batch import Engine
from .report import METRICS, PromptReport, summarize

FIGSIZE_IN = (10.0, 7.0)
DPI = 100


def is_run(path: Path) -> bool:
    """A training output_dir: it holds checkpoint-N/ folders."""
    return bool(list_checkpoints(path))


def select_checkpoints(run_dir: Path, steps: str | None) -> list[Path]:
    """The run's checkpoints, oldest first, or those `--steps 2000,4000` names; each missing step is an error."""
    found = list_checkpoints(run_dir)
    if not found:
        raise UserError(
            f"{run_dir}: no checkpoint-N/ folders and no config.json; pass a run's output_dir or a model directory"
        )
    if steps is None:
        return found
    by_step = {checkpoint_step(p): p for p in found}
    there = ", ".join(str(s) for s in by_step)
    wanted = []
    for part in steps.split(","):
        if not part.strip().isdigit():
            raise UserError(f"--steps {steps}: {part.strip()!r} is not a step; fix: --steps 2000,4000")
        wanted.append(int(part))
    missing = [s for s in dict.fromkeys(wanted) if s not in by_step]
    if missing:
        raise UserError(
            f"--steps: no checkpoint-{', checkpoint-'.join(map(str, missing))}/ in {run_dir}; steps there: {there}"
        )
    return [by_step[s] for s in sorted(set(wanted))]


def _torn(checkpoint: Path) -> str | None:
    """One line naming the step and the file when the checkpoint's weights are not all there and whole."""
    problems = scan(checkpoint).weight_problems  # the project's one idea of a complete checkpoint
    if not problems:
        return None
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"step {checkpoint_step(checkpoint)}: skipped: {first.file}: {first.reason}{more}"


def verify_run(
    checkpoints: list[Path],
    open_engine: Callable[[Path], contextlib.AbstractContextManager[Engine]],
    evaluate: Callable[[Engine], list[PromptReport]],
) -> list[dict[str, Any]]:
    """One entry per checkpoint: its metrics, summary and prompts, or why it was skipped (also on stderr)."""
    entries = []
    for checkpoint in checkpoints:
        step = checkpoint_step(checkpoint)
        skipped = _torn(checkpoint)
        if skipped is None:
            try:
                with open_engine(checkpoint) as engine:
                    reports = evaluate(engine)
            except UserError as err:  # e.g. shards DeepSpeed cannot read although their zips are whole
                skipped = f"step {step}: skipped: {err.problems[0]}"
        if skipped is not None:
            print(f"arpo-sft: {skipped}", file=sys.stderr)
            entries.append({"step": step, "checkpoint": str(checkpoint), "skipped": skipped})
            continue
        summary = summarize(reports)
        found = {key: summary[key] for key in (*METRICS, "accuracy") if summary.get(key) is not None}
        entries.append(
            {"step": step, "checkpoint": str(checkpoint), **found, "summary": summary}
            | {"prompts": [asdict(r) for r in reports]}
        )
    return entries


@contextlib.contextmanager
def hf_checkpoint(checkpoint: Path) -> Iterator[Engine]:
    """The checkpoint's weights consolidated in memory, never written anywhere."""
    from .engine import load_checkpoint

    yield load_checkpoint(checkpoint)


def plot_path(report: Path) -> Path:
    """FILE.png beside FILE.json (or beside FILE, whatever its suffix)."""
    return report.with_suffix(".png") if report.suffix == ".json" else report.with_name(report.name + ".png")


def draw(entries: list[dict[str, Any]], title: str, out: Path) -> None:
    """Rates (0-1) against step above, tool calls per prompt below; skipped steps are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ran = [e for e in entries if "skipped" not in e]
    steps = [e["step"] for e in ran]
    fig, (rates, calls) = plt.subplots(2, 1, figsize=FIGSIZE_IN, sharex=True)
    try:
        for key in (*METRICS[:3], "accuracy"):
            points = [(e["step"], e[key]) for e in ran if key in e]
            if points:
                rates.plot(*zip(*points, strict=True), marker="o", label=key)
        rates.set_ylim(-0.05, 1.05)
        rates.set_ylabel("share of prompts")
        rates.legend(loc="best")
        rates.set_title(title)
        calls.plot(steps, [e["tool_calls_per_prompt"] for e in ran], marker="o", color="tab:purple")
        calls.set_ylabel("tool calls per prompt")
        calls.set_xlabel("step")
        calls.xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in (rates, calls):
            ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_writer(out, binary=True) as handle:
            fig.savefig(handle, format="png", dpi=DPI)
    finally:
        plt.close(fig)
