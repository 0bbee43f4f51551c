"""Tokenize once, before torchrun: a cache of LLaMA-Factory's tokenized dataset that is never stale.

The launcher computes the key of the run's tokenized dataset (train/tokenized/key.py), reuses
`<cache>/<key>/` when its manifest and every file in it check out, and otherwise builds it with
LLaMA-Factory's own preprocessing in one child process (lf/tokenize.py; text is encoded through tiktoken
where lf/fastbpe.py proves the ids equal, and the manifest's `encoder` says which ran) into a temporary
directory that is renamed into place only when complete (train/tokenized/build.py). The ranks get
`tokenized_path=<cache>/<key>/dataset`, which LLaMA-Factory loads without tokenizing. Exactly one line says
what happened (after a line saying it waits, when another launcher is building the same key):

    tokenized dataset: reused PATH
    tokenized dataset: built PATH (REASON)

The cache is `$ARPO_SFT_CACHE/tokenized` when that is set, else `<dataset_dir>/.tokenized`: on a
multi-node job each node's launcher builds or reuses its own copy under the same key. Launchers that
build one key at once take turns, and an entry a launcher handed to its ranks is never replaced while that
launcher runs (train/tokenized/lock.py).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ...atomic import atomic_writer
from ...config import RunConfig
from ...console import say
from . import lock
from .build import build_entry, run_build, work_dir, write_error
from .entry import DATASET, MANIFEST, check_entry, identity, write_manifest
from .key import build_args, cache_key, change_reason, key_inputs

__all__ = ["DATASET", "MANIFEST", "cache_root", "check_entry", "tokenized_overrides", "write_manifest"]

_LAST_USED = "last-used.json"


def tokenized_overrides(cfg: RunConfig) -> tuple[str, ...]:
    """Reuse or build the run's tokenized dataset; the `tokenized_path=` override that hands it to the ranks."""
    from ...lf.tokenize import data_arg_names

    args = build_args(cfg, data_arg_names())
    if cfg.values.get("tokenized_path"):
        return _user_path(Path(str(cfg.values["tokenized_path"])), args)
    inputs = key_inputs(cfg, args)
    key = cache_key(inputs)
    root = cache_root(cfg)
    entry = root / key
    try:
        root.mkdir(parents=True, exist_ok=True)
        reason = _reuse_or_build(root, key, inputs, args, cfg)
    except OSError as err:
        raise write_error(entry, err) from None
    _remember(root, cfg, key)
    did = "reused" if reason is None else "built"
    say(f"tokenized dataset: {did} {entry / DATASET}" + ("" if reason is None else f" ({reason})"))
    return (f"tokenized_path={entry / DATASET}",)


def _reuse_or_build(
    root: Path, key: str, inputs: dict[str, Any], args: dict[str, Any], cfg: RunConfig
) -> str | None:
    """Leave this launcher using a complete entry for `key`: None when one was there, else why it was built."""
    if _take(root, key, inputs) is None:
        return None
    with lock.building(root, key, f"tokenized dataset: waiting for another launcher building {root / key}"):
        found = _take(root, key, inputs)  # the launcher we waited for has built it, unless it failed
        if found is None:
            return None
        previous = _previous_inputs(root, cfg) if found == "absent" else {}
        reason = (
            found if found != "absent" else change_reason(previous, inputs) if previous else "first build"
        )
        build_entry(root, key, inputs, args)
    return reason


def _take(root: Path, key: str, inputs: dict[str, Any]) -> str | None:
    """None when the entry checks out and this launcher now uses it; else what check_entry found."""
    while True:
        before = identity(root / key)
        found = check_entry(root / key, key, inputs)
        if found is not None:
            return found
        lock.share(root, key)  # from here no builder can replace it
        if identity(root / key) == before:
            return None
        lock.release(root, key)  # swapped between the check and the lock: check the new one


def cache_root(cfg: RunConfig) -> Path:
    """Where tokenized datasets live: $ARPO_SFT_CACHE/tokenized, else <dataset_dir>/.tokenized."""
    if os.environ.get("ARPO_SFT_CACHE"):
        return Path(os.environ["ARPO_SFT_CACHE"]).absolute() / "tokenized"
    return Path(str(cfg.values.get("dataset_dir", "data"))).absolute() / ".tokenized"


def _user_path(path: Path, args: dict[str, Any]) -> tuple[str, ...]:
    if path.is_dir() and any(path.iterdir()):
        say(
            f"tokenized dataset: using tokenized_path {path} from the config as is; it is NOT checked for "
            "staleness (remove the key to let the launcher key and check the cache)"
        )
        return ()
    temp = work_dir(path.parent, path.name)
    try:
        run_build(temp / DATASET, args)
        if path.is_dir():
            path.rmdir()  # empty: LLaMA-Factory would have tokenized into it
        os.rename(temp / DATASET, path)
    except OSError as err:
        raise write_error(path, err) from None
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    say(
        f"tokenized dataset: built {path} (tokenized_path from the config did not exist; it is not "
        "checked for staleness on later launches)"
    )
    return ()


def _remember(root: Path, cfg: RunConfig, key: str) -> None:
    """Record which key this output_dir used last, so the next rebuild can say what changed."""
    path = root / _LAST_USED
    try:
        last = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError:
        last = {}
    last[str(cfg.output_dir.absolute())] = key
    try:
        with atomic_writer(path) as handle:
            json.dump(last, handle, indent=1)
    except OSError:
        pass  # only the wording of a later reason depends on it


def _previous_inputs(root: Path, cfg: RunConfig) -> dict[str, Any]:
    try:
        last = json.loads((root / _LAST_USED).read_text(encoding="utf-8"))
        manifest = json.loads((root / str(last[str(cfg.output_dir.absolute())]) / MANIFEST).read_text())
        return manifest["inputs"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
