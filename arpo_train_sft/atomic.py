"""Every path a command writes: checked before any work starts, then written whole or not at all, never over
an input, a device or through a symbolic link. Every writer goes through `check_outputs` and `atomic_writer`."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .errors import EnvironmentProblem, UserError

# The input path that means stdin (data/inputs.py reads it): not a file, so it is the same as no output.
STDIN = "-"

# A full disk or quota is the host's problem (exit 3); every other OSError on an output is the user's to fix.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_KINDS = {
    stat.S_ISCHR: "character device",
    stat.S_ISBLK: "block device",
    stat.S_ISFIFO: "FIFO",
    stat.S_ISSOCK: "socket",
}


_NOT_A_FOLDER = " is a file, not a folder; nothing was written; fix: name a path in a folder"


class Discard(Exception):
    """Raised inside an `atomic_writer` block: leave its file as it was, without an error."""


def check_outputs(
    inputs: Mapping[str, Path], outputs: Mapping[str, Path], folders: Mapping[str, Path] | None = None
) -> None:
    """Refuse, before anything is written, every output that cannot be written safely, one line each.

    `outputs` are files: each must be a regular file or not exist yet. `folders` are directories a command
    fills: each must be an empty directory or not exist yet. Either is refused when it is a symbolic link
    (never written through: the link could point anywhere, /dev/null or another user's file included), a
    device, FIFO or socket, inside a file, or the same file as an input or another output (symlinks and
    hard links count as the same). Keys name each path for the message; `-` (stdin) matches nothing.
    """
    problems: list[str] = []
    seen: dict[tuple[Any, ...], str] = {}
    for name, path in inputs.items():
        if str(path) != STDIN:
            seen.setdefault(_identity(path), f"the input {name} {path}")
    named = [(name, path, False) for name, path in outputs.items()]
    named += [(name, path, True) for name, path in (folders or {}).items()]
    for name, path, folder in named:
        label = f"{name} {path}"
        other = seen.setdefault(_identity(path), label)
        same = None if other == label else other
        problem = output_problem(label, path, folder, same)
        if problem is None and same is not None:
            problem = (
                f"{label} is the same file as {same}; nothing was written; fix: give each output its own path, "
                "apart from the inputs"
            )
        tail = problem[len(label) :] if problem else ""
        if problem and not (tail.endswith(_NOT_A_FOLDER) and any(p.endswith(tail) for p in problems)):
            problems.append(problem)  # a file in place of a folder is said once, not once per output in it
    if problems:
        raise UserError(problems)


def output_problem(label: str, path: Path, folder: bool = False, same: str | None = None) -> str | None:
    """Why `path` cannot be an output (a file, or a directory to fill when `folder`), as one line; None if it can."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return _parent_problem(label, path)
    except ValueError:  # a NUL byte, which no system call accepts
        return f"{label!r} holds a NUL byte; nothing was written; fix: name a path without it"
    except OSError as err:  # ENOTDIR, ENAMETOOLONG, ELOOP, EACCES: the path itself cannot be looked up
        if err.errno == errno.ENOTDIR:
            return _parent_problem(label, path)
        return f"{label}: {err.strerror}; nothing was written; fix: name another path"
    if stat.S_ISLNK(info.st_mode):
        target = os.path.realpath(path)
        also = f" (the same file as {same})" if same else ""
        return (
            f"{label} is a symbolic link to {target}{also}; outputs are never written through a link, and "
            "nothing was written; fix: name the target itself, or remove the link"
        )
    kind = next((kind for test, kind in _KINDS.items() if test(info.st_mode)), None)
    if kind is not None:
        return f"{label} is a {kind}, not a regular file; nothing was written; fix: name a file to write"
    if folder and not stat.S_ISDIR(info.st_mode):
        return f"{label} is a file, not a directory; nothing was written; fix: name a new directory"
    if folder and any(path.iterdir()):
        return f"{label} already exists and is not empty; nothing was written; fix: name a new directory"
    if not folder and stat.S_ISDIR(info.st_mode):
        return f"{label} is a directory; nothing was written; fix: name a file to write"
    return None


def _parent_problem(label: str, path: Path) -> str | None:
    """Why the missing `path` cannot be created: the nearest existing ancestor must be a directory."""
    folder = next((p for p in (path.parent, *path.parents) if os.path.lexists(p)), Path("."))
    if folder.is_dir():
        return None
    return f"{label}: {folder}{_NOT_A_FOLDER}"


def _identity(path: Path) -> tuple[Any, ...]:
    """What makes two paths one file: device and inode when it exists, else the path with symlinks resolved."""
    try:
        info = os.stat(path)
    except ValueError:  # a NUL byte: output_problem refuses it, and it names no other file
        return ("path", str(path))
    except OSError:
        return ("path", os.path.realpath(path))
    return ("inode", info.st_dev, info.st_ino)


def disk_filled(err: BaseException) -> bool:
    """Whether `err` says the disk or the quota is full (OSError, or a library that wraps errno 28 as text)."""
    if isinstance(err, UserError):  # already said, in its own words
        return False
    if isinstance(err, OSError):
        return err.errno in DISK_FULL_ERRNOS
    text = str(err)
    return "No space left on device" in text or "Disk quota exceeded" in text  # safetensors' Rust IoError


def disk_full(path: Path, what: str = "nothing was replaced") -> EnvironmentProblem:
    """The one line for a write that ran out of disk: exit 3, naming the path and the free space."""
    folder = next((p for p in (path.parent, *path.parents) if p.is_dir()), Path("."))
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return EnvironmentProblem(
        f"{path}: the disk filled up while writing it ({free} on {folder}); {what}; fix: free space on that "
        "filesystem, or write elsewhere"
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _refuse(path: Path) -> None:
    problem = output_problem(str(path), path)
    if problem is not None:
        raise UserError(problem)


@contextmanager
def atomic_writer(path: Path, binary: bool = False) -> Iterator[IO[Any]]:
    """A file handle whose contents replace `path` only when the block succeeds; readers never see half.

    The path is checked as `check_outputs` checks it when the block starts and again just before the rename,
    so no writer can replace a link, a device or a directory; a full disk is one EnvironmentProblem (exit 3).
    """
    _refuse(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    except OSError as err:
        if disk_filled(err):
            raise disk_full(path) from None
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
        _refuse(path)  # something may have taken the name while the block ran
        os.replace(tmp, path)
    except Discard:
        Path(tmp).unlink(missing_ok=True)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if disk_filled(err):
            raise disk_full(path) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
