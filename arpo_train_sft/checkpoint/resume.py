"""Which checkpoint a relaunch resumes from, and what happens to checkpoints a crash left half-written."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..console import say
from ..errors import UserError
from .reshape import Reshape
from .scan import FINAL_WEIGHTS, CheckpointScan, list_checkpoints, scan

if TYPE_CHECKING:
    from ..config import RunConfig

TRAINER_LOG = "trainer_log.jsonl"  # LLaMA-Factory's per-step log, appended to by every launch


@dataclass(frozen=True)
class ResumePlan:
    """The newest complete checkpoint (or None) and every newer one that is incomplete, with why."""

    resume_from: Path | None
    incomplete: list[tuple[Path, list[str]]]
    found: CheckpointScan | None = None  # resume_from's scan, for what a relaunch reads next


def plan_resume(output_dir: Path) -> ResumePlan:
    """Walk back from the newest checkpoint to the newest complete one."""
    incomplete = []
    for path in reversed(list_checkpoints(output_dir)):
        found = scan(path)
        if not (problems := found.describe()):
            return ResumePlan(path, incomplete, found)
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


@dataclass(frozen=True)
class Decision:
    """What a launch will do with output_dir, decided before anything is renamed or started."""

    action: str  # "resume", "fresh", "configured" (the config decides), or "refuse"
    summary: str  # one line for people: what will happen, or why it cannot
    fix: str = ""  # what to do about it, when something needs doing
    resume_from: Path | None = None
    incomplete: tuple[tuple[Path, list[str]], ...] = ()
    move_aside: Path | None = None  # --fresh: the earlier run to set aside
    reshape: Reshape | None = None  # resuming on another world size, stage or offload
    found: CheckpointScan | None = None  # resume_from's scan


def decide(cfg: RunConfig, fresh: bool, world: int | None = None) -> Decision:
    """The one resume decision for a launch on `world` ranks (None: as saved); reads, changes nothing."""
    out = cfg.output_dir
    if fresh:
        earlier = previous_run(out)
        moved = f"; the earlier run ({earlier}) is moved aside" if earlier else ""
        return Decision("fresh", f"--fresh: starts at step 0{moved}", move_aside=out if earlier else None)
    if "resume_from_checkpoint" in cfg.values:
        return Decision(
            "configured", f"resumes from {cfg.values['resume_from_checkpoint']} (set in the config)"
        )
    if cfg.values.get("overwrite_output_dir"):
        return Decision(
            "configured",
            "overwrite_output_dir is true, so a relaunch will not resume",
            "set overwrite_output_dir: false",
        )
    plan = plan_resume(out)
    incomplete = tuple(plan.incomplete)
    if plan.resume_from is not None:
        summary = f"resuming from {plan.resume_from}"
        try:
            reshape = _reshape(cfg, plan.found, world)
        except UserError as err:
            return Decision("refuse", "; ".join(err.problems), incomplete=incomplete)
        if reshape is not None:
            summary += "; " + "; ".join(reshape.lines())
        return Decision(
            "resume",
            summary,
            resume_from=plan.resume_from,
            incomplete=incomplete,
            reshape=reshape,
            found=plan.found,
        )
    if earlier := previous_run(out):
        return Decision(
            "refuse",
            f"{out}: holds an earlier run ({earlier}) but no complete checkpoint to resume from",
            "relaunch with --fresh to move it aside (nothing is deleted) and start at step 0, "
            "or set output_dir to a new directory",
            incomplete=incomplete,
        )
    return Decision("fresh", f"starts at step 0 (no checkpoint in {out})")


def _reshape(cfg: RunConfig, found: CheckpointScan, world: int | None) -> Reshape | None:
    """What a launch on `world` ranks must change to load `found`; one line when it cannot."""
    from .layout import planned_layout, saved_layout
    from .reshape import plan_reshape

    if world is None:
        return None
    _same_model(cfg, found.path)
    return plan_reshape(saved_layout(found), planned_layout(cfg.values, world), str(found.path))


# What a checkpoint's config.json must share with model_name_or_path's for its weights to fit the model.
_SHAPE_KEYS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
)


def _same_model(cfg: RunConfig, checkpoint: Path) -> None:
    """Refuse a checkpoint of another model than the config's (DeepSpeed would fail on every rank)."""
    model = Path(str(cfg.values.get("model_name_or_path", ""))) / "config.json"
    try:
        ours = json.loads(model.read_text(encoding="utf-8"))
        theirs = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # a hub id, or no config saved: nothing to compare here; LLaMA-Factory reads the model
    if not isinstance(ours, dict) or not isinstance(theirs, dict):
        return
    differ = [f"{k} {theirs.get(k)} vs {ours.get(k)}" for k in _SHAPE_KEYS if theirs.get(k) != ours.get(k)]
    if differ:
        raise UserError(
            f"{checkpoint}: holds another model than model_name_or_path {model.parent} ({'; '.join(differ)}); "
            "resume with the model this run started from, or set output_dir to a new directory"
        )


def resume_overrides(
    cfg: RunConfig, fresh: bool, first_node: bool, world: int | None = None
) -> tuple[str, ...]:
    """Carry out `decide`: set aside what it names (first node only), say so, and return the overrides."""
    decision = decide(cfg, fresh, world)
    for path, problems in decision.incomplete:
        note = f"warning: skipping incomplete checkpoint {path}: {'; '.join(problems)}"
        if first_node and decision.action != "refuse":
            note += f"; moved it to {set_aside(path, 'incomplete')}"
        say(note)
    if decision.action == "refuse":
        raise UserError(f"{decision.summary}; {decision.fix}" if decision.fix else decision.summary)
    if decision.move_aside is not None:
        if first_node:
            moved = set_aside(decision.move_aside, "previous")
            say(f"--fresh: moved the earlier run in {decision.move_aside} to {moved} (nothing was deleted)")
        return ()
    if decision.action == "configured":
        if cfg.values.get("overwrite_output_dir") and "resume_from_checkpoint" not in cfg.values:
            say(f"warning: {decision.summary}; {decision.fix}")
        return ()
    if decision.resume_from is None:
        return ()
    if decision.reshape is not None:
        return _reshaped(cfg, decision.found, decision.reshape)
    say(decision.summary)
    return (f"resume_from_checkpoint={decision.resume_from}",)


def _reshaped(cfg: RunConfig, found: CheckpointScan, reshape: Reshape) -> tuple[str, ...]:
    """Say what changes, convert when DeepSpeed needs it, and the overrides that resume on the new layout."""
    from .universal import CONFIG, prepare

    checkpoint = found.path
    say(f"resuming from {checkpoint}")
    for line in reshape.lines():
        say(line)
    overrides = [f"resume_from_checkpoint={checkpoint}"]
    if reshape.convert:
        converted = prepare(found, reshape.planned, cfg.values["deepspeed"])
        say(f"universal checkpoint: resuming from {converted} ({checkpoint} is unchanged)")
        overrides = [f"resume_from_checkpoint={converted}", f"deepspeed={converted / CONFIG}"]
    if reshape.planned.accumulation != cfg.values.get("gradient_accumulation_steps", 1):
        overrides.append(f"gradient_accumulation_steps={reshape.planned.accumulation}")
    return tuple(overrides)
