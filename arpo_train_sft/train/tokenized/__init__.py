"""Tokenize once, before torchrun: a cache of LLaMA-Factory's tokenized dataset that is never stale.

The launcher computes the key of the run's tokenized dataset (train/tokenized/key.py), reuses
`<cache>/<key>/` when its manifest and every file in it check out, and otherwise builds it with
LLaMA-Factory's own preprocessing in one child process (lf/tokenize.py; text is encoded through tiktoken
where lf/fastbpe.py proves the ids equal, and the manifest's `encoder` says which ran) into a temporary
directory that is renamed into place only when complete. The ranks get `tokenized_path=<cache>/<key>/dataset`, which
LLaMA-Factory loads without tokenizing. Exactly one line says what happened:

    tokenized dataset: reused PATH
    tokenized dataset: built PATH (REASON)

The cache is `$ARPO_SFT_CACHE/tokenized` when that is set, else `<dataset_dir>/.tokenized`: on a
multi-node job each node's launcher builds or reuses its own copy under the same key.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ...atomic import atomic_writer
from ...errors import UserError
from ..config import RunConfig
from ..launch import alive, own_bin_first, say
from .key import build_args, cache_key, change_reason, file_digest, key_inputs

FORMAT = "arpo-sft tokenized dataset 1"
MANIFEST = "manifest.json"
DATASET = "dataset"
_LAST_USED = "last-used.json"
_BUILDING = ".building-"


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
    found = check_entry(entry, key, inputs)
    if found is None:
        _remember(root, cfg, key)
        say(f"tokenized dataset: reused {entry / DATASET}")
        return (f"tokenized_path={entry / DATASET}",)
    previous = _previous_inputs(root, cfg)
    reason = found if found != "absent" else change_reason(previous, inputs) if previous else "first build"
    _build_entry(root, key, inputs, args)
    _remember(root, cfg, key)
    say(f"tokenized dataset: built {entry / DATASET} ({reason})")
    return (f"tokenized_path={entry / DATASET}",)


def cache_root(cfg: RunConfig) -> Path:
    """Where tokenized datasets live: $ARPO_SFT_CACHE/tokenized, else <dataset_dir>/.tokenized."""
    if os.environ.get("ARPO_SFT_CACHE"):
        return Path(os.environ["ARPO_SFT_CACHE"]).absolute() / "tokenized"
    return Path(str(cfg.values.get("dataset_dir", "data"))).absolute() / ".tokenized"


def check_entry(entry: Path, key: str, inputs: dict[str, Any]) -> str | None:
    """None when `entry` is a complete cache for these inputs; else "absent" or what was found instead."""
    if not entry.exists():
        return "absent"
    try:
        manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"found {entry} without {MANIFEST}, not a cache this plugin wrote; rebuilding"
    except (OSError, ValueError):
        return f"found an unreadable {MANIFEST} in {entry}; rebuilding"
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return f"found {entry} in another format than '{FORMAT}'; rebuilding"
    if manifest.get("key") != key or manifest.get("inputs") != json.loads(json.dumps(inputs, default=str)):
        old = manifest.get("inputs") if isinstance(manifest.get("inputs"), dict) else {}
        return f"found a cache for another key in {entry} ({change_reason(old, inputs)}); rebuilding"
    for name, (size, digest) in manifest.get("files", {}).items():
        path = entry / name
        if not path.is_file() or path.stat().st_size != size or file_digest([path]) != digest:
            return f"found a corrupted cache in {entry} ({name} is missing or changed); rebuilding"
    if not manifest.get("files"):
        return f"found an empty cache in {entry}; rebuilding"
    return None


def write_manifest(entry: Path, key: str, inputs: dict[str, Any], built: dict[str, Any]) -> None:
    """Record the key, its inputs, the build's rows and encoder, and the size and hash of every file."""
    files = {
        str(path.relative_to(entry)): [path.stat().st_size, file_digest([path])]
        for path in sorted((entry / DATASET).rglob("*"))
        if path.is_file()
    }
    manifest = {"format": FORMAT, "key": key, "inputs": inputs, "rows": built["rows"],
                "encoder": built.get("encoder"), "files": files,
                "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname()}  # fmt: skip
    with atomic_writer(entry / MANIFEST) as handle:
        json.dump(manifest, handle, indent=1, default=str)


def _user_path(path: Path, args: dict[str, Any]) -> tuple[str, ...]:
    if path.is_dir() and any(path.iterdir()):
        say(f"tokenized dataset: using tokenized_path {path} from the config as is; it is NOT checked for "
            "staleness (remove the key to let the launcher key and check the cache)")  # fmt: skip
        return ()
    temp = path.parent / f"{_BUILDING}{path.name}-{socket.gethostname()}-{os.getpid()}"
    try:
        _run_build(temp / DATASET, args)
        if path.is_dir():
            path.rmdir()  # empty: LLaMA-Factory would have tokenized into it
        os.rename(temp / DATASET, path)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    say(f"tokenized dataset: built {path} (tokenized_path from the config did not exist; it is not "
        "checked for staleness on later launches)")  # fmt: skip
    return ()


def _build_entry(root: Path, key: str, inputs: dict[str, Any], args: dict[str, Any]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    _remove_dead_builds(root)
    temp = root / f"{_BUILDING}{key}-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    try:
        write_manifest(temp, key, inputs, _run_build(temp / DATASET, args))
        _discard(root / key)
        try:
            os.rename(temp, root / key)
        except OSError:
            if check_entry(root / key, key, inputs) is not None:
                raise
            shutil.rmtree(temp)  # another launcher (shared storage) finished the same key first
    except OSError as err:
        shutil.rmtree(temp, ignore_errors=True)
        raise UserError(
            f"tokenized dataset: cannot write {root / key}: {err.strerror or err}; free space there or "
            "set ARPO_SFT_CACHE to a directory on a disk with room"
        ) from None
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def _run_build(path: Path, args: dict[str, Any]) -> dict[str, Any]:
    """Run lf/tokenize.py in a child without GPUs or distributed settings; its rows per split and encoder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = path.parent / "build-spec.json"
    spec.write_text(json.dumps({"args": args, "path": str(path)}, default=str), encoding="utf-8")
    env = {
        k: v for k, v in own_bin_first(os.environ).items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")
    }
    env["CUDA_VISIBLE_DEVICES"] = ""  # tokenizing needs no GPU; a CUDA context would pin memory on GPU 0
    cmd = [sys.executable, "-m", "arpo_train_sft.lf.tokenize", str(spec)]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=False)
    spec.unlink()
    (path.parent / "build.log").write_text(proc.stdout, encoding="utf-8")
    lines = proc.stdout.strip().splitlines()
    result = _last_json(lines)
    if "errno" in result:
        raise OSError(result["errno"], result["error"])
    if proc.returncode != 0 or "rows" not in result:
        sys.stderr.write("".join(f"  {line}\n" for line in lines[-20:]))
        raise UserError(f"tokenized dataset: LLaMA-Factory's preprocessing failed (exit {proc.returncode}); "
                        "its traceback and last log lines are above")  # fmt: skip
    return result


def _last_json(lines: list[str]) -> dict[str, Any]:
    try:
        value = json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _discard(entry: Path) -> None:
    """Clear the way for a fresh build: ours is deleted, anything else is moved aside, never deleted."""
    if not entry.exists():
        return
    if (entry / MANIFEST).is_file():
        shutil.rmtree(entry)
    else:
        os.rename(entry, entry.with_name(f"{entry.name}.not-ours-{time.strftime('%Y%m%d-%H%M%S')}"))


def _remove_dead_builds(root: Path) -> None:
    host = socket.gethostname()
    for temp in root.glob(f"{_BUILDING}*-{host}-*"):
        pid = temp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(temp, ignore_errors=True)


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
