"""Building an entry: LLaMA-Factory's preprocessing in a child process (lf/tokenize.py), then a swap into place."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from ...errors import EnvironmentProblem, UserError
from ...secrets import redact, remember, split_secret_args
from ..launch import alive, own_bin_first
from . import lock
from .entry import BUILDING, DATASET, check_entry, install, write_manifest

# What a write fails with when the disk (or the user's quota on it) is full: exit 3, like every command.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def write_error(path: Path, err: OSError) -> UserError:
    """The one line for a failed write to the cache: exit 3 when the disk is full, 2 otherwise."""
    reason = err.strerror or str(err)
    if err.errno in _DISK_FULL:
        return EnvironmentProblem(
            f"tokenized dataset: cannot write {path}: {reason}; free space there or set ARPO_SFT_CACHE to a "
            "directory on a disk with room"
        )
    return UserError(
        f"tokenized dataset: cannot write {path}: {reason}; set ARPO_SFT_CACHE to a directory you can write"
    )


def work_dir(parent: Path, name: str) -> Path:
    """A directory of this launcher's own beside `parent / name`, for a build that is not finished yet."""
    return parent / f"{BUILDING}{name}-{socket.gethostname()}-{os.getpid()}"


def build_entry(root: Path, key: str, inputs: dict[str, Any], args: dict[str, Any]) -> None:
    """Build `key` in a work directory and swap it into `root / key`; the caller holds the key's build lock."""
    remove_dead_builds(root)
    temp = work_dir(root, key)
    shutil.rmtree(temp, ignore_errors=True)
    try:
        write_manifest(temp, key, inputs, run_build(temp / DATASET, args))
        _swap(temp, root / key, key, inputs)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _swap(temp: Path, entry: Path, key: str, inputs: dict[str, Any]) -> None:
    """Install `temp` at `entry` unless a complete entry is there by now; leave this launcher using it."""
    root = entry.parent
    if not lock.hold_alone(root, key):
        found = check_entry(entry, key, inputs)
        if found is None:  # another node on shared storage without locks finished it first: use theirs
            lock.share(root, key)
            return
        raise UserError(
            f"tokenized dataset: {entry} is in use by another launcher's ranks and does not check out "
            f"({found.removesuffix('; rebuilding')}); it was left as it is; relaunch when that run ends, or "
            "set ARPO_SFT_CACHE to another directory"
        )
    try:
        if check_entry(entry, key, inputs) is not None:  # a complete entry that appeared meanwhile stays
            install(temp, entry)
    except BaseException:
        lock.release(root, key)
        raise
    lock.share(root, key)  # from exclusive to shared in one step: no builder can slip in before the ranks


def run_build(path: Path, args: dict[str, Any]) -> dict[str, Any]:
    """Run lf/tokenize.py in a child without GPUs or distributed settings; its rows per split and encoder.

    The child reads its arguments on stdin and the secret ones (hub tokens) from its environment, so no
    file holds a token at any moment, not even one a `kill -9` leaves behind.
    """
    remember(args)  # build.log and the lines below are masked even for a config built without load_run_config
    path.parent.mkdir(parents=True, exist_ok=True)
    plain, secret_env = split_secret_args(args)
    env = {
        k: v for k, v in own_bin_first(os.environ).items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")
    }
    env |= secret_env
    env["CUDA_VISIBLE_DEVICES"] = ""  # tokenizing needs no GPU; a CUDA context would pin memory on GPU 0
    spec = json.dumps({"args": plain, "path": str(path)}, default=str)
    cmd = [sys.executable, "-m", "arpo_train_sft.lf.tokenize"]
    proc = subprocess.run(cmd, input=spec, env=env, stdout=subprocess.PIPE, text=True, check=False)
    (path.parent / "build.log").write_text(redact(proc.stdout), encoding="utf-8")
    lines = proc.stdout.strip().splitlines()
    result = _last_json(lines)
    if "errno" in result:
        raise OSError(result["errno"], result["error"])
    if proc.returncode != 0 or "rows" not in result:
        sys.stderr.write(redact("".join(f"  {line}\n" for line in lines[-20:])))
        raise UserError(
            f"tokenized dataset: LLaMA-Factory's preprocessing failed (exit {proc.returncode}); its traceback "
            "and last log lines are above"
        )
    return result


def _last_json(lines: list[str]) -> dict[str, Any]:
    try:
        value = json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def remove_dead_builds(root: Path) -> None:
    """Delete the work directories that launchers on this host left when they died."""
    host = socket.gethostname()
    for temp in root.glob(f"{BUILDING}*-{host}-*"):
        pid = temp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(temp, ignore_errors=True)
