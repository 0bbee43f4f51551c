"""Which checkpoint a relaunch resumes from, and what happens to checkpoints a crash left half-written."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..train.launch import say
from .scan import FINAL_WEIGHTS, list_checkpoints, scan

if TYPE_CHECKING:
    from ..train.config import RunConfig

TRAINER_LOG = "trainer_log.jsonl"  # LLaMA-Factory's per-step log, appended to by every launch


@dataclass(frozen=True)
class ResumePlan:
    """The newest complete checkpoint (or None) and every newer one that is incomplete, with why."""

    resume_from: Path | None
    incomplete: list[tuple[Path, list[str]]]


def plan_resume(output_dir: Path) -> ResumePlan:
    """Walk back from the newest checkpoint to the newest complete one."""
    incomplete = []
    for path in reversed(list_checkpoints(output_dir)):
        problems = scan(path).describe()
        if not problems:
            return ResumePlan(path, incomplete)
        incomplete.append((path, problems))
    return ResumePlan(None, incomplete)


def _stamp() -> str:
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def set_aside(path: Path, label: str) -> Path:
    """Rename `path` so nothing loads it again, keeping every byte: `<name>.<label>-<time>`."""
    target = path.with_name(f"{path.name}.{label}-{_stamp()}")
    path.rename(target)
    return target


def previous_run(output_dir: Path) -> str:
    """What in `output_dir` shows an earlier run trained there (empty when nothing does).

    A superset of LLaMA-Factory's own refusal (a final model file and no checkpoint-N/): checkpoints,
    even incomplete ones, and a step log also mean that starting over would mix two runs in one dir.
    """
    if checkpoints := list_checkpoints(output_dir):
        return f"{checkpoints[-1].name}/"
    found = [name for name in (*FINAL_WEIGHTS, TRAINER_LOG) if (output_dir / name).is_file()]
    return found[0] if found else ""


def resume_overrides(cfg: RunConfig, fresh: bool, first_node: bool) -> tuple[str, ...]:
    """Resume from the newest complete checkpoint; set aside incomplete ones and, with --fresh, the old run."""
    if fresh:
        if first_node and previous_run(cfg.output_dir):
            moved = set_aside(cfg.output_dir, "previous")
            say(f"--fresh: moved the earlier run in {cfg.output_dir} to {moved} (nothing was deleted)")
        return ()
    if "resume_from_checkpoint" in cfg.values:
        return ()
    if cfg.values.get("overwrite_output_dir"):
        say("warning: overwrite_output_dir is true, so a relaunch will not resume; set it to false")
        return ()
    plan = plan_resume(cfg.output_dir)
    earlier = previous_run(cfg.output_dir) if plan.resume_from is None else ""
    for path, problems in plan.incomplete:
        note = f"warning: skipping incomplete checkpoint {path}: {'; '.join(problems)}"
        if first_node and not earlier:
            note += f"; moved it to {set_aside(path, 'incomplete')}"
        say(note)
    if earlier:
        raise UserError(
            f"{cfg.output_dir}: holds an earlier run ({earlier}) but no complete checkpoint to resume from; "
            "relaunch with --fresh to move it aside (nothing is deleted) and start at step 0, "
            "or set output_dir to a new directory"
        )
    if plan.resume_from is None:
        return ()
    say(f"resuming from {plan.resume_from}")
    return (f"resume_from_checkpoint={plan.resume_from}",)
