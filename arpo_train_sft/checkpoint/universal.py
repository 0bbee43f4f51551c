"""A ZeRO checkpoint converted to DeepSpeed's universal format, beside the original, which is never changed.

    <output_dir>/universal-checkpoint-N/
        global_stepN_universal/   DeepSpeed's ds_to_universal output: each parameter whole, with its Adam state
        latest_universal          names it (DeepSpeed's loader reads this file under `load_universal`)
        ds_config.json            the launch's DeepSpeed config with checkpoint.load_universal = true
        trainer_state.json, scheduler.pt, rng_state_<r>.pth, ...   the Trainer's own files, copied
        source.json               written last: which checkpoint this came from (its trainer_state digest)

The name does not start with `checkpoint-`, so neither the Trainer's save_total_limit rotation nor a
resume scan takes it for a checkpoint. A relaunch that needs the same conversion again reuses it; the
RNG files and ds_config.json are written for each launch's world size and config. Ranks the saving run
did not have get the RNG state of rank r mod (saved world size): the sampler's order does not depend on it
(it is seeded by `seed` and the epoch), dropout would.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..atomic import atomic_writer, disk_filled, disk_full
from ..console import say
from ..errors import UserError
from .layout import Layout, deepspeed_json, deepspeed_record
from .scan import FINAL_WEIGHTS, MODEL_STATES, CheckpointScan

PREFIX = "universal-"
SOURCE = "source.json"
CONFIG = "ds_config.json"
_SKIPPED = {"latest", "zero_to_fp32.py", "zero_to_torch.py", *FINAL_WEIGHTS}
ZERO3_MODEL_STATES = "zero_pp_rank_0_mp_rank_00_model_states.pt"
_WORKERS_MAX = 8  # ds_to_universal's pools: one process per worker, each holding a shard in memory


def universal_dir(checkpoint: Path) -> Path:
    return checkpoint.with_name(PREFIX + checkpoint.name)


def prepare(found: CheckpointScan, planned: Layout, deepspeed: Any) -> Path:
    """The universal copy of `found` ready for a launch of `planned` (converting it once); its path."""
    target = universal_dir(found.path)
    digest = _digest(found.path / "trainer_state.json")
    if _source_digest(target) != digest:
        _convert(found, target, digest)
    else:
        say(f"universal checkpoint: reusing {target} (converted from {found.path.name} before)")
    _write_rng_states(found, target, planned.world)
    _name_model_states_for(planned, target)
    _fit_optimizer_state(next(target.glob("global_step*_universal")), planned.stage)
    config = json.loads(json.dumps(deepspeed_json(deepspeed)))  # a copy: the config's own stays as it is
    config.setdefault("checkpoint", {})["load_universal"] = True
    zero = config.get("zero_optimization")
    if isinstance(zero, dict) and zero.get("stage") in (1, 2):
        # With it on, on more than one rank, DeepSpeed 0.19's ZeRO-1/2 universal loader puts values in
        # the wrong parameters (measured: a 2 -> 1 rank resume's loss 11.96 against 11.74). It reorders
        # gradient partitions for offload's copies and does not change the math.
        zero["round_robin_gradients"] = False
    with atomic_writer(target / CONFIG) as handle:
        json.dump(config, handle, indent=1)
    return target


def _convert(found: CheckpointScan, target: Path, digest: str) -> None:
    assert found.tag_dir is not None
    work = target.with_name(f"{target.name}.partial-{os.getpid()}")
    log = target.with_name(f"{target.name}.convert.log")
    size = sum(f.stat().st_size for f in found.tag_dir.iterdir() if f.is_file())
    free = shutil.disk_usage(found.path.parent).free
    if free < size * 1.1:
        raise disk_full(
            target, f"the universal copy needs about {size / 2**30:.1f} GiB; nothing was converted"
        )
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    workers = str(max(1, min(os.cpu_count() or 1, _WORKERS_MAX)))
    cmd = [
        sys.executable,
        "-m",
        "deepspeed.checkpoint.ds_to_universal",
        "--input_folder",
        str(found.tag_dir),
        "--output_folder",
        str(work / f"{found.tag_dir.name}_universal"),
        "--num_extract_workers",
        workers,
        "--num_merge_workers",
        workers,
        "--inject_missing_state",  # ZeRO-1/2 engines do not record universal_checkpoint_info themselves
    ]
    say(
        f"universal checkpoint: converting {found.tag_dir} ({size / 2**30:.2f} GiB) into {target} with "
        f"DeepSpeed's ds_to_universal; log: {log}"
    )
    with log.open("wb") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    if code:
        shutil.rmtree(work, ignore_errors=True)
        raise UserError(
            f"{found.path}: DeepSpeed's universal conversion failed ({_last_line(log)}); nothing was renamed "
            f"or deleted (log: {log}); relaunch on the world size and ZeRO stage that saved it to resume it "
            "as saved"
        )
    try:
        for file in found.path.iterdir():
            if file.is_file() and file.name not in _SKIPPED and not file.name.startswith("rng_state"):
                shutil.copy2(file, work / file.name)
        with atomic_writer(work / SOURCE) as handle:
            json.dump({"source": str(found.path), "trainer_state_sha256": digest}, handle, indent=1)
        shutil.rmtree(target, ignore_errors=True)  # an older conversion of another checkpoint-N
        work.rename(target)
    except OSError as err:
        shutil.rmtree(work, ignore_errors=True)
        if disk_filled(err):
            raise disk_full(target, "nothing was converted") from None
        raise


def _name_model_states_for(planned: Layout, target: Path) -> None:
    """Give the model-states file the name the relaunch's stage reads, as a hard link (no copy).

    Under `load_universal` DeepSpeed reads only metadata (step, scheduler, world size) from it, the
    weights coming from zero/; but it opens it by its stage's name: ZeRO-3's first rank file, or
    ZeRO-1/2's one file. A conversion between the stages has the other name.
    """
    tag_dir = next(target.glob("global_step*_universal"))
    wanted = tag_dir / (ZERO3_MODEL_STATES if planned.stage == 3 else MODEL_STATES)
    if wanted.is_file():
        return
    source = next(iter(sorted(tag_dir.glob("*model_states.pt"))), None)
    if source is None:
        raise UserError(f"{tag_dir}: holds no model states; delete {target} and relaunch to convert again")
    try:
        os.link(source, wanted)
    except OSError:
        shutil.copy2(source, wanted)


def _fit_optimizer_state(tag_dir: Path, stage: int | None) -> None:
    """Add what `stage`'s universal loader reads to zero/ when the conversion came from the other stages.

    ds_to_universal writes zero/ in two formats. From ZeRO-1/2: optimizer_state.pt holds the engine's
    globals (ds_version, clip_grad, loss scaler) and param_groups, and each zero/<param>/ holds
    {"param": tensor} files (fp32, exp_avg, exp_avg_sq) and step.pt. From ZeRO-3: optimizer_state.pt
    holds param_groups and the saving rank's own `optimizer_state_dict` (whose state[i]["step"] is the
    step), and each zero/<param>/ holds bare tensors, no step. Both hold each parameter whole, flattened
    in the same order. ZeRO-3's loader reads `optimizer_state_dict`'s step and param_groups, and a bare
    tensor or a dict's "param"; ZeRO-1/2's reads ds_version, param_groups, dicts and step.pt. Adding
    the missing keys and files (the step is the one Adam step every parameter shares) leaves a copy
    both loaders read; the optimizer_state.pt written last marks it done.
    """
    import torch

    zero = tag_dir / "zero"
    state = torch.load(zero / "optimizer_state.pt", map_location="cpu", weights_only=False)
    if stage == 3 and "optimizer_state_dict" not in state:
        step = torch.load(next(zero.glob("*/step.pt")), weights_only=False)
        groups = state["param_groups"]
        state["optimizer_state_dict"] = {
            "state": {i: {"step": step} for i in range(len(groups))},
            "param_groups": groups,
        }
    elif stage != 3 and "ds_version" not in state:
        step = state["optimizer_state_dict"]["state"][0]["step"]
        for param in (p for p in zero.iterdir() if p.is_dir()):
            for file in param.glob("*.pt"):
                value = torch.load(file, map_location="cpu", weights_only=False)
                if torch.is_tensor(value):
                    with atomic_writer(file, binary=True) as handle:
                        torch.save({"param": value}, handle)
            with atomic_writer(param / "step.pt", binary=True) as handle:
                torch.save(step, handle)
        state["ds_version"] = deepspeed_record(tag_dir)["ds_version"]
    else:
        return
    with atomic_writer(zero / "optimizer_state.pt", binary=True) as handle:
        torch.save(state, handle)


def _write_rng_states(found: CheckpointScan, target: Path, world: int) -> None:
    """Rank r of the relaunch gets the saved rank r mod (saved world)'s RNG state."""
    for old in target.glob("rng_state*.pth"):
        old.unlink()
    saved = sorted(found.path.glob("rng_state_*.pth"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    saved = saved or sorted(found.path.glob("rng_state.pth"))
    if not saved:
        return
    names = ["rng_state.pth"] if world == 1 else [f"rng_state_{r}.pth" for r in range(world)]
    for rank, name in enumerate(names):
        shutil.copy2(saved[rank % len(saved)], target / name)


def _source_digest(target: Path) -> str:
    try:
        return str(json.loads((target / SOURCE).read_text(encoding="utf-8")).get("trainer_state_sha256"))
    except (OSError, ValueError, AttributeError):
        return ""


def _digest(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


def _last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1][:300] if lines else "no output"
