"""The sandbox's child: `python -I -u sandbox_child.py CONFIG` limits itself, then runs the snippet.

Run as a script in isolated mode, so it imports nothing from the package: what the parent needs of it
(limits, exit statuses) it imports from here.
"""

from __future__ import annotations

import ast
import ctypes
import json
import linecache
import os
import resource
import signal
import sys
import traceback
from pathlib import Path

FILE_LIMIT_MB = 32  # the largest file the snippet may write
OPEN_FILES = 64
EXTRA_TASKS = 32  # processes/threads the snippet may add to what its user already runs: a fork bomb fails
SNIPPET = "<python>"  # the file name tracebacks show
NO_NAMESPACE = 86  # the exit status when told to make a network namespace and it could not
SETUP_FAILED = 87  # ... and when it could not drop root
_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000
_PR_SET_KEEPCAPS, _PR_SET_NO_NEW_PRIVS = 8, 38
_CAP_V3, _CAP_DAC_READ_SEARCH = 0x20080522, 2


def main(config: dict) -> None:
    code = Path(config["code"]).read_text(encoding="utf-8")
    libc = ctypes.CDLL(None, use_errno=True)
    user = config["user"]
    uid = user["uid"] if user else os.getuid()
    megabyte = 1024 * 1024
    for limit, value in (
        (resource.RLIMIT_AS, config["memory_mb"] * megabyte),
        (resource.RLIMIT_FSIZE, FILE_LIMIT_MB * megabyte),
        (resource.RLIMIT_NOFILE, OPEN_FILES),
        (resource.RLIMIT_NPROC, _tasks_of(uid) + EXTRA_TASKS),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(limit, (value, value))
    # SIGXCPU at the soft limit reports itself; the hard limit one second later is SIGKILL.
    resource.setrlimit(resource.RLIMIT_CPU, (config["cpu_s"], config["cpu_s"] + 1))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write raises OSError instead of killing
    if config["network"] == "namespace" and not _new_network_namespace(libc, as_root=bool(user)):
        os._exit(NO_NAMESPACE)
    if user:
        try:
            _drop_root(libc, uid, user["gid"], keep_read=user["keep_read"])
        except OSError as err:
            sys.stderr.write(
                f"sandbox: cannot switch from root to uid {uid} ({err}); run as a non-root user\n"
            )
            os._exit(SETUP_FAILED)
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # no setuid binary can hand root back
    if config["network"] == "block":
        _block_sockets()
    _run_snippet(code)


def _new_network_namespace(libc: ctypes.CDLL, as_root: bool) -> bool:
    if libc.unshare(_CLONE_NEWNET) == 0:
        return True
    # An unprivileged user may still make one inside a user namespace of its own; root is about to drop to
    # nobody, which an unmapped user namespace would refuse.
    return not as_root and libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0


def _tasks_of(uid: int) -> int:
    """Processes and threads `uid` runs now: RLIMIT_NPROC counts them all."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"{entry.path}/task"))
            except OSError:
                continue
    return count


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _drop_root(libc: ctypes.CDLL, uid: int, gid: int, keep_read: bool) -> None:
    """Become `uid`; keep only the right to read files, and only if the interpreter needs it."""
    header, caps = _CapHeader(_CAP_V3, 0), (_CapData * 2)()
    libc.capget(ctypes.byref(header), caps)
    keep = caps[0].permitted & (1 << _CAP_DAC_READ_SEARCH) if keep_read else 0
    libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    caps[0].effective = caps[0].permitted = keep
    caps[0].inheritable = caps[1].effective = caps[1].permitted = caps[1].inheritable = 0
    if libc.capset(ctypes.byref(header), caps) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _block_sockets() -> None:
    """The fallback when no namespace is allowed: every way the stdlib makes a socket raises."""
    import _socket
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError("network access is disabled in this sandbox")

    blocked = type("socket", (_socket.socket,), {"__init__": refuse})
    socket.socket = socket.SocketType = _socket.socket = blocked
    socket.socketpair = socket.fromfd = _socket.socketpair = refuse


def _run_snippet(code: str) -> None:
    """Run `code` as __main__; if it never calls print, print its last bare expression, as ARPO's tool does."""
    linecache.cache[SNIPPET] = (len(code), None, code.splitlines(keepends=True), SNIPPET)
    sys.argv = [SNIPPET]
    try:
        tree = ast.parse(code, SNIPPET)
    except SyntaxError as err:
        traceback.print_exception(type(err), err, None)
        sys.exit(1)
    prints = any(isinstance(n, ast.Name) and n.id == "print" for n in ast.walk(tree))
    if tree.body and isinstance(tree.body[-1], ast.Expr) and not prints:
        last = tree.body[-1]
        call = ast.Call(func=ast.Name(id="print", ctx=ast.Load()), args=[last.value], keywords=[])
        tree.body[-1] = ast.fix_missing_locations(ast.copy_location(ast.Expr(value=call), last))
    try:
        exec(compile(tree, SNIPPET, "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit:
        raise
    except BaseException as err:
        assert err.__traceback__ is not None
        traceback.print_exception(type(err), err, err.__traceback__.tb_next)  # drop this function's frame
        sys.exit(1)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
