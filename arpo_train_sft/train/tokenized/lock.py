"""Who may build or replace a cache entry: POSIX record locks on two files per key, next to the entry.

- `.KEY.build.lock`, exclusive while one launcher builds and installs the key; a second builder of the
  same key waits there, then takes the entry the first one installed instead of building its own.
- `.KEY.use.lock`, shared by every launcher that handed the entry to its ranks, for the launcher's whole
  life (it outlives torchrun, and the ranks die with it); a builder replaces an entry only while it holds
  this lock exclusively, so an entry in use is never deleted.

`fcntl.lockf` (POSIX locks) rather than `flock`: they work on NFS, turn shared into exclusive and back
atomically, and never conflict within one process (tests call the launcher's code many times in one).
A filesystem without locks (NFS mounted `nolock`) leaves only the re-check before every swap.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

# One descriptor per lock file while this process holds a lock on it: closing any descriptor of a file drops
# every POSIX lock this process holds on it, so a second open-and-close would silently release the first.
# It is closed once nothing is held, so a launcher leaves no descriptor on a cache it no longer uses.
_OPEN: dict[Path, int | None] = {}
# Errors that mean "this filesystem keeps no locks" or "this cache is read-only to us": proceed unlocked.
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.EROFS, errno.EACCES, errno.EPERM)
# How long a builder retries to hold the use lock alone: a reuser holds it for microseconds between its
# check and its own lock, while one that handed the entry out holds it for hours.
_SWAP_PATIENCE_S = 2.0


def build_lock(root: Path, key: str) -> Path:
    """The lock file held by the one launcher building `key`."""
    return root / f".{key}.build.lock"


def use_lock(root: Path, key: str) -> Path:
    """The lock file shared by every launcher whose ranks use `key`'s entry."""
    return root / f".{key}.use.lock"


def _descriptor(path: Path) -> int | None:
    """This process's descriptor of `path`, opened once; None where locks cannot be kept there."""
    if path not in _OPEN:
        try:
            _OPEN[path] = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            if err.errno not in _NO_LOCKS:
                raise  # a full disk, for one: the caller says so
            _OPEN[path] = None
    return _OPEN[path]


def _lock(path: Path, operation: int) -> bool:
    """Apply `operation` to `path`'s lock; False only when a non-blocking request would have to wait."""
    fd = _descriptor(path)
    if fd is None:
        return True
    try:
        fcntl.lockf(fd, operation)
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES) and operation & fcntl.LOCK_NB:
            return False
        if err.errno not in _NO_LOCKS:
            raise
    return True


def _unlock(path: Path) -> None:
    """Hold nothing on `path` any more, and close its descriptor."""
    fd = _OPEN.pop(path, None)
    if fd is not None:
        with contextlib.suppress(OSError):
            fcntl.lockf(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def building(root: Path, key: str, waiting: str) -> Iterator[None]:
    """Be the one launcher building `key`; print `waiting` first when another one is at it."""
    path = build_lock(root, key)
    if not _lock(path, fcntl.LOCK_EX | fcntl.LOCK_NB):
        from ...console import say

        say(waiting)
        _lock(path, fcntl.LOCK_EX)
    try:
        yield
    finally:
        _unlock(path)


def share(root: Path, key: str) -> None:
    """Mark `key`'s entry as in use by this process until it exits; waits out a swap in progress."""
    _lock(use_lock(root, key), fcntl.LOCK_SH)


def release(root: Path, key: str) -> None:
    """This process no longer uses `key`'s entry (it did not check out, so it was never handed out)."""
    _unlock(use_lock(root, key))


def hold_alone(root: Path, key: str) -> bool:
    """Hold `key`'s use lock exclusively, so the entry can be replaced; False while another launcher uses it."""
    deadline = time.monotonic() + _SWAP_PATIENCE_S
    while not _lock(use_lock(root, key), fcntl.LOCK_EX | fcntl.LOCK_NB):
        if time.monotonic() > deadline:
            release(root, key)
            return False
        time.sleep(0.05)
    return True
