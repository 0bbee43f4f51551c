"""One cache entry, `<cache>/<key>/`: its manifest, the check that it is complete, and how it is replaced."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from ...atomic import atomic_writer
from .key import change_reason, file_digest

FORMAT = "arpo-sft tokenized dataset 1"
MANIFEST = "manifest.json"
DATASET = "dataset"
# Names of work directories beside the entries: `<BUILDING><key>-<host>-<pid>` (a build in progress) and
# `<BUILDING><key>.old-<host>-<pid>` (an entry being deleted); a launcher removes its host's dead ones.
BUILDING = ".building-"


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
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return f"found an empty cache in {entry}; rebuilding"
    for name, (size, digest) in files.items():
        path = entry / name
        if not path.is_file() or path.stat().st_size != size or file_digest([path]) != digest:
            return f"found a corrupted cache in {entry} ({name} is missing or changed); rebuilding"
    return None


def identity(entry: Path) -> tuple[int, int] | None:
    """Which manifest file `entry` holds now (device, inode): a swap of the entry changes it."""
    try:
        info = os.stat(entry / MANIFEST)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def write_manifest(entry: Path, key: str, inputs: dict[str, Any], built: dict[str, Any]) -> None:
    """Record the key, its inputs, the build's rows and encoder, and the size and hash of every file."""
    files = {
        str(path.relative_to(entry)): [path.stat().st_size, file_digest([path])]
        for path in sorted((entry / DATASET).rglob("*"))
        if path.is_file()
    }
    manifest = {
        "format": FORMAT,
        "key": key,
        "inputs": inputs,
        "rows": built["rows"],
        "encoder": built.get("encoder"),
        "files": files,
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
    }
    with atomic_writer(entry / MANIFEST) as handle:
        json.dump(manifest, handle, indent=1, default=str)


def install(temp: Path, entry: Path) -> None:
    """Put the finished build `temp` at `entry`: two renames, then what was there before is handled.

    An entry of ours is renamed aside and deleted after the swap, so `entry` is missing only between two
    renames; a launcher killed while deleting leaves a `.old-` directory the next one on this host removes.
    Anything else found at `entry` is moved aside under `.not-ours-`, never deleted.
    """
    doomed = None
    if entry.exists():
        if (entry / MANIFEST).is_file():
            doomed = entry.with_name(f"{BUILDING}{entry.name}.old-{socket.gethostname()}-{os.getpid()}")
        else:
            doomed = entry.with_name(f"{entry.name}.not-ours-{time.strftime('%Y%m%d-%H%M%S')}")
        os.rename(entry, doomed)
    os.rename(temp, entry)
    if doomed is not None and doomed.name.startswith(BUILDING):
        shutil.rmtree(doomed, ignore_errors=True)
