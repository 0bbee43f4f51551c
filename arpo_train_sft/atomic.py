"""Files that appear whole or not at all, and never over an input: every command writes its outputs through this."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .data.inputs import STDIN
from .errors import UserError


class Discard(Exception):
    """Raised inside an `atomic_writer` block: leave its file as it was, without an error."""


def check_outputs(inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> None:
    """Refuse, before anything is written, an output that is an input, is another output, or is a directory.

    Keys name each path for the message (a flag, or how a default was derived). Paths are compared as files:
    symlinks and hard links to the same file count as the same; `-` (stdin) matches nothing.
    """
    problems = []
    seen: dict[tuple[Any, ...], str] = {}
    for name, path in inputs.items():
        if str(path) != STDIN:
            seen.setdefault(_identity(path), f"the input {name} {path}")
    for name, path in outputs.items():
        if path.is_dir():
            problems.append(f"{name} {path} is a directory; nothing was written; fix: name a file to write")
            continue
        folder = next(p for p in (path.parent, *path.parents) if p.exists())
        if not folder.is_dir():
            problem = f"{name} {path}: {folder} is a file, not a folder; nothing was written"
            if not any(f" {folder} is a file" in line for line in problems):  # once per folder
                problems.append(problem)
            continue
        other = seen.setdefault(_identity(path), f"{name} {path}")
        if other != f"{name} {path}":
            problems.append(
                f"{name} {path} is the same file as {other}; nothing was written; fix: give each output "
                "its own path, apart from the inputs"
            )
    if problems:
        raise UserError(problems)


def _identity(path: Path) -> tuple[Any, ...]:
    """What makes two paths one file: device and inode when it exists, else the path with symlinks resolved."""
    try:
        info = os.stat(path)
    except OSError:
        return ("path", os.path.realpath(path))
    return ("inode", info.st_dev, info.st_ino)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_writer(path: Path, binary: bool = False) -> Iterator[IO[Any]]:
    """A file handle whose contents replace `path` only when the block succeeds; readers never see half."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    except OSError as err:
        raise UserError(
            f"{path}: cannot be written ({err.strerror}); fix: check the folder's permissions, or write elsewhere"
        ) from None
    # mkstemp makes the file private (0600); the finished file should get the usual permissions.
    os.fchmod(fd, 0o666 & ~_umask())
    try:
        with os.fdopen(
            fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": "\n"})
        ) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except Discard:
        Path(tmp).unlink(missing_ok=True)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
