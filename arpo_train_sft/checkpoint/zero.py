"""What a checkpoint directory holds and whether every file a resume or an export needs is there."""

from __future__ import annotations

import json
import re
from pathlib import Path

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_SHARD_FILE = re.compile(r"^(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_\d+_(model|optim)_states\.pt$")


def checkpoint_step(path: Path) -> int | None:
    """N for a directory named `checkpoint-N`, else None."""
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match else None


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Every `checkpoint-N` directory under `output_dir`, oldest step first."""
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


def checkpoint_problems(path: Path) -> list[str]:
    """Why `path` cannot be resumed from; empty when every file a resume needs is there."""
    state_file = path / "trainer_state.json"
    if not state_file.is_file():
        # The Trainer writes trainer_state.json after weights, optimizer and RNG states.
        return ["trainer_state.json is missing (the save was interrupted)"]
    try:
        step = json.loads(state_file.read_text(encoding="utf-8")).get("global_step")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ["trainer_state.json is not valid JSON (the save was interrupted)"]
    problems = []
    if step != checkpoint_step(path):
        problems.append(
            f"trainer_state.json says step {step}, the directory name says {checkpoint_step(path)}"
        )
    latest = path / "latest"
    if latest.is_file():
        problems += _deepspeed_problems(path, latest.read_text(encoding="utf-8").strip())
    elif not any(path.glob("*.safetensors")) and not (path / "pytorch_model.bin").is_file():
        problems.append("no model weights (*.safetensors) and no DeepSpeed `latest` file")
    return problems


def shard_files(tag_dir: Path) -> dict[str, dict[int, Path]]:
    """Per kind ("model", "optim"), the ZeRO shard file of each rank found in a `global_stepN/` dir."""
    found: dict[str, dict[int, Path]] = {"model": {}, "optim": {}}
    for file in tag_dir.iterdir():
        if match := _SHARD_FILE.match(file.name):
            found[match.group(2)][int(match.group(1))] = file
    return found


def _deepspeed_problems(path: Path, tag: str) -> list[str]:
    tag_dir = path / tag
    if not tag_dir.is_dir():
        return [f"`latest` names {tag}/, which does not exist"]
    ranks = {
        kind: {rank for rank, file in files.items() if file.stat().st_size > 0}
        for kind, files in shard_files(tag_dir).items()
    }
    world = max(ranks["model"] | ranks["optim"], default=-1) + 1
    problems = []
    for kind, present in ranks.items():
        missing = sorted(set(range(world)) - present)
        if world == 0 or missing:
            problems.append(f"{tag}/ lacks the {kind} states of rank(s) {missing or 'all'}")
    rng_files = list(path.glob("rng_state*.pth"))
    if world > 1 and len(rng_files) < world:
        problems.append(f"{len(rng_files)} of {world} rng_state files")
    return problems
