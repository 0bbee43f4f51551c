"""What a checkpoint directory holds, and whether each file a resume or an export reads is there and whole.

Layouts, as DeepSpeed 0.19 and the Trainer write them (measured: the demo on 2 CPU ranks under each
shipped config, in fp32 and in bf16):
- every checkpoint: trainer_state.json (written last), rng_state_<rank>.pth (rng_state.pth on one rank);
- DeepSpeed: `latest` naming global_step<N>/, scheduler.pt (the Trainer loads it unconditionally), and in
  global_step<N>/: ZeRO-3 one zero_pp_rank_<r>_mp_rank_00_model_states.pt and one ..._optim_states.pt per
  rank; ZeRO-1/2 one mp_rank_00_model_states.pt and the per-rank optim shards; ZeRO-0 only
  mp_rank_00_model_states.pt (it holds the optimizer too). bf16 prefixes the optim shards with `bf16_`;
  CPU offload of optimizer or parameters changes no name.
- without DeepSpeed: model.safetensors (or an index and its shards), optimizer.pt, scheduler.pt.
The integrity checks read headers and directories only, never a tensor.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_SHARD = re.compile(r"^(bf16_)?zero_pp_rank_(\d+)_mp_rank_00_(model|optim)_states\.pt$")
_RNG = re.compile(r"^rng_state_(\d+)\.pth$")
MODEL_STATES = "mp_rank_00_model_states.pt"
TRAINER_STATE = "trainer_state.json"
TORCH_SUFFIXES = (".pt", ".pth", ".bin")  # torch.save zips
CHECKED = (*TORCH_SUFFIXES, ".safetensors")
SAFETENSORS_INDEX = "model.safetensors.index.json"
# LLaMA-Factory refuses an output_dir with one of these and no checkpoint-N/ (its CHECKPOINT_NAMES).
FINAL_WEIGHTS = (
    "model.safetensors",
    SAFETENSORS_INDEX,
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
)


@dataclass(frozen=True)
class Problem:
    """One file that is missing or not whole, and why; `fix` when the generic advice does not apply."""

    file: Path
    reason: str
    fix: str = ""


@dataclass(frozen=True)
class CheckpointScan:
    """Everything known about a checkpoint without loading it."""

    path: Path
    step: int | None  # trainer_state.json's global_step
    # 3 (per-rank model states), 2 (one model file + per-rank optim shards: ZeRO-1 or 2, alike on disk),
    # 0 (one model file only), None (no DeepSpeed)
    stage: int | None
    world: int  # ranks that wrote it, as far as the file names tell
    tag_dir: Path | None
    files: tuple[Path, ...]  # every file that was checked
    weight_problems: tuple[Problem, ...]  # what stops an export
    state_problems: tuple[Problem, ...]  # what else stops a resume

    @property
    def problems(self) -> tuple[Problem, ...]:
        """What stops a resume: an export's problems and the Trainer's own state."""
        return self.weight_problems + self.state_problems

    def describe(self) -> list[str]:
        """The problems as `file: reason`, files relative to the checkpoint."""
        return [f"{_relative(p.file, self.path)}: {p.reason}" for p in self.problems]


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


def scan(path: Path, world: int | None = None, stage: int | None = None) -> CheckpointScan:
    """Check path's files; `world` and `stage`, when known from elsewhere, add what the names cannot show."""
    top = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else []
    names = {f.name for f in top}
    rng = {int(m.group(1)) for m in filter(None, map(_RNG.match, names))}
    world = max(world or 1, max(rng, default=-1) + 1)
    tag_dir, found_stage, shard_files, weight = None, None, [], []
    tags = sorted((p.name for p in path.glob("global_step*") if p.is_dir()), key=_tag_step)
    latest = path / "latest"
    deepspeed = latest.is_file() or bool(tags)
    if latest.is_file():
        tag = latest.read_text(encoding="utf-8", errors="replace").strip()
        if tag and (path / tag).is_dir():
            tag_dir = path / tag
            found_stage, world, shard_files, weight = _zero(tag_dir, world, stage)
        else:
            weight.append(Problem(latest, f"names {tag + '/' if tag else 'nothing'}, which does not exist"))
    elif tags:
        weight.append(
            Problem(latest, f"missing, though {tags[-1]}/ is there", f"write it: echo {tags[-1]} > {latest}")
        )
    else:
        weight = _hf_weights(path, names)
    state = _state(path, names, rng, world, deepspeed)
    named = {p.file for p in weight + state}
    for file in top:  # the rest must be whole too; tokenizer files are left out (tens of MB of JSON)
        if file.suffix in CHECKED and file not in named and (reason := whole(file)):
            is_weight = not deepspeed and file.name.startswith(("model", "pytorch_model"))
            (weight if is_weight else state).append(Problem(file, reason))
    return CheckpointScan(
        path,
        _global_step(path / TRAINER_STATE),
        found_stage,
        world,
        tag_dir,
        tuple(top + shard_files),
        tuple(weight),
        tuple(state),
    )


def whole(file: Path) -> str:
    """Why `file` is not a whole PyTorch zip, safetensors or JSON file; empty when it looks whole."""
    if not file.is_file():
        return "missing"
    if file.suffix in TORCH_SUFFIXES:
        return _torch_problem(file)
    if file.suffix == ".safetensors":
        return _safetensors_problem(file)
    if file.suffix == ".json":
        try:
            json.loads(file.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "not valid JSON (torn write)" if file.stat().st_size else "empty"
    return ""


def _torch_problem(file: Path) -> str:
    # torch.save writes a zip whose directory comes last: a cut-off file has none.
    if file.stat().st_size == 0:
        return "not a readable PyTorch file (empty)"
    try:
        with zipfile.ZipFile(file) as archive:
            if not any(name.endswith("data.pkl") for name in archive.namelist()):
                return "not a readable PyTorch file (a zip without data.pkl)"
    except (OSError, zipfile.BadZipFile):
        return "not a readable PyTorch file (truncated or overwritten: no zip directory at its end)"
    return ""


def _safetensors_problem(file: Path) -> str:
    # 8 bytes little-endian header length, a JSON header with each tensor's byte range, then the data.
    size = file.stat().st_size
    with file.open("rb") as stream:
        length = int.from_bytes(stream.read(8), "little")
        if size < 8 or 8 + length > size:
            return f"not a readable safetensors file (truncated: {size} bytes, cut inside its header)"
        try:
            header = json.loads(stream.read(length))
            end = (
                8
                + length
                + max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            )
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, IndexError, TypeError):
            return "not a readable safetensors file (its header is not a safetensors header)"
    if end != size:
        return f"not a readable safetensors file (truncated: {size} bytes, its header promises {end})"
    return ""


def _zero(tag_dir: Path, world: int, stage: int | None) -> tuple[int, int, list[Path], list[Problem]]:
    """Stage, world size, shard files and missing or broken ones of a DeepSpeed tag dir."""
    shards = {kind: {} for kind in ("model", "optim")}
    bf16 = ""
    for file in tag_dir.iterdir():
        if match := _SHARD.match(file.name):
            shards[match.group(3)][int(match.group(2))] = file
            bf16 = bf16 or (match.group(1) or "")
    if stage is None:
        stage = 3 if shards["model"] else 2 if shards["optim"] else 0
    world = max(world, max(shards["model"].keys() | shards["optim"].keys(), default=-1) + 1)
    expected = [] if stage == 3 else [tag_dir / MODEL_STATES]
    kinds = ("model", "optim") if stage == 3 else ("optim",) if stage in (1, 2) else ()
    for kind in kinds:
        prefix = bf16 if kind == "optim" else ""
        expected += [
            shards[kind].get(r, tag_dir / f"{prefix}zero_pp_rank_{r}_mp_rank_00_{kind}_states.pt")
            for r in range(world)
        ]
    problems = []
    for file in expected:
        if not file.is_file():
            problems.append(Problem(file, f"missing ({world} ranks saved this checkpoint)"))
        elif reason := _torch_problem(file):
            problems.append(Problem(file, reason))
    return stage, world, expected, problems


def _hf_weights(path: Path, names: set[str]) -> list[Problem]:
    """A saved model without DeepSpeed: model.safetensors, or an index naming its shards."""
    if SAFETENSORS_INDEX in names:
        index = path / SAFETENSORS_INDEX
        if whole(index):
            return [Problem(index, whole(index))]
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()))
        return [Problem(path / s, "missing (named by the index)") for s in shards if s not in names]
    if "model.safetensors" in names or "pytorch_model.bin" in names:
        return []
    reason = "not a checkpoint (no DeepSpeed `latest` file, no global_step*/, no model.safetensors)"
    return [Problem(path, reason, "pass a checkpoint-N/ dir or a finished run's output_dir")]


def _state(path: Path, names: set[str], rng: set[int], world: int, deepspeed: bool) -> list[Problem]:
    """The Trainer's own files a resume reads: trainer_state.json, RNG states, scheduler (and optimizer)."""
    if checkpoint_step(path) is None:
        return []  # a finished run's output_dir: exported, never resumed from
    problems = []
    state_file = path / TRAINER_STATE
    if TRAINER_STATE not in names:
        problems.append(Problem(state_file, "missing (the Trainer writes it last: the save was interrupted)"))
    elif reason := whole(state_file):
        problems.append(Problem(state_file, reason))
    elif (step := _global_step(state_file)) != checkpoint_step(path):
        problems.append(
            Problem(state_file, f"says global_step {step}, the directory name {checkpoint_step(path)}")
        )
    rng_files = [f"rng_state_{r}.pth" for r in range(world)] if world > 1 or rng else ["rng_state.pth"]
    needed = rng_files + ["scheduler.pt"] + ([] if deepspeed else ["optimizer.pt"])
    problems += [Problem(path / name, "missing") for name in needed if name not in names]
    return problems


def _global_step(state_file: Path) -> int | None:
    try:
        step = json.loads(state_file.read_bytes()).get("global_step")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
    return step if isinstance(step, int) else None


def _tag_step(name: str) -> int:
    digits = name.removeprefix("global_step")
    return int(digits) if digits.isdigit() else -1


def _relative(file: Path, root: Path) -> str:
    return str(file.relative_to(root)) if file.is_relative_to(root) and file != root else str(file)
