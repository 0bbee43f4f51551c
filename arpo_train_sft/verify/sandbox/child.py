"""The sandbox's child: `python -I -u child.py CONFIG` isolates and limits a snippet, then runs it.

Three processes. This one (the supervisor) stays outside the namespaces, enforces the wall clock and writes
one JSON status line to the parent. Isolated mode: it forks an init (PID 1 of a new PID namespace) that
builds the root, drops every privilege, installs the seccomp filter, applies the limits and forks the
snippet; when init exits the kernel kills everything left in the namespace. Weak mode (no namespaces): it
forks the snippet itself as a child subreaper, patches the socket module, refuses every socket family by
seccomp where the kernel allows it, and kills every descendant afterwards.
Run as a script with `python -I`, so it imports nothing from the package but its siblings jail.py and
seccomp.py; what the parent needs of it (limits) it imports from here.
"""

from __future__ import annotations

import ast
import contextlib
import json
import linecache
import os
import resource
import signal
import sys
import time
import traceback
from pathlib import Path
from types import CodeType, ModuleType
from typing import NoReturn

FILE_LIMIT_MB = 32  # the largest file the snippet may write
OPEN_FILES = 64
EXTRA_TASKS = 32  # processes/threads the snippet may add to what its user already runs: a fork bomb fails
SNIPPET = "<python>"  # the file name tracebacks show
KILL_GIVE_UP_S = 5
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_CHILD_SUBREAPER = 1, 4, 36


def main(config: dict) -> None:
    # Sibling files (this script runs with -I, see the bottom), imported now: the jail cannot see them.
    import jail
    import seccomp

    code = Path(config["code"]).read_text(encoding="utf-8")
    as_root = os.geteuid() == 0
    status = os.fdopen(config["status_fd"], "w")
    tasks = _tasks_of(config["uid"]) + EXTRA_TASKS
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})  # so _wait() can sleep on it
    if config["isolate"]:
        last_cap = _last_cap()  # read now: the jail has no /proc
        try:
            jail.enter(as_root)
        except jail.SetupError as err:
            _report(status, {"setup": str(err)})
            return
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:
            status.close()
            os.close(reader)
            _init(jail, seccomp, config, code, tasks, last_cap, writer)
        os.close(writer)
    else:
        _call_prctl(_PR_SET_CHILD_SUBREAPER, 1)  # orphans of a setsid()ed grandchild come back here
        _call_prctl(_PR_SET_DUMPABLE, 0)  # a same-user snippet must not ptrace its way around the kill
        pid = os.fork()
        if pid == 0:
            status.close()
            _weak_snippet(jail, seccomp, config, code, tasks, as_root)
    outcome = _wait(pid, time.monotonic() + config["timeout_s"])
    if outcome is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        message = {"timeout": True}
    elif config["isolate"]:
        with os.fdopen(reader) as report:
            text = report.read()  # empty when init itself was killed, and the namespace with it
        message = json.loads(text) if text else {"exit": os.waitstatus_to_exitcode(outcome)}
    else:
        message = {"exit": os.waitstatus_to_exitcode(outcome)}
    if not config["isolate"]:
        _kill_descendants()
    _report(status, message)


def _init(
    jail: ModuleType, seccomp: ModuleType, config: dict, code: str, tasks: int, last_cap: int, writer: int
) -> NoReturn:
    """PID 1 of the sandbox: build the jail, become nobody, fork the snippet and report how it ended."""
    report = os.fdopen(writer, "w")
    try:
        uid, gid, root = config["uid"], config["gid"], Path(config["root"])
        jail.build_root(root, config["visible"], config["scratch_mb"], uid, gid)
        jail.pivot(root)
        jail.drop_privileges(uid, gid, os.geteuid() == 0, last_cap)
        seccomp.install(seccomp.ISOLATED_FAMILIES)  # after no_new_privs, which an unprivileged filter needs
    except (jail.SetupError, seccomp.FilterError, OSError) as err:
        report.write(json.dumps({"setup": str(err)}))
        report.close()
        os._exit(1)
    _call_prctl(_PR_SET_DUMPABLE, 0)  # the snippet (same uid) cannot ptrace init to escape its limits
    _call_prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # the supervisor gone, the whole namespace goes
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # PID 1 ignores signals it has no handler for
    _limit(config, tasks)
    pid = os.fork()
    if pid == 0:
        report.close()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        os.environ.update(HOME="/tmp", TMPDIR="/tmp")
        _run_snippet(code)
    _, wait_status = os.waitpid(pid, 0)
    report.write(json.dumps({"exit": os.waitstatus_to_exitcode(wait_status)}))
    report.close()
    os._exit(0)


def _weak_snippet(
    jail: ModuleType, seccomp: ModuleType, config: dict, code: str, tasks: int, as_root: bool
) -> NoReturn:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    _block_sockets()  # before dropping root: nobody may not be able to read the interpreter's files
    try:
        if as_root:
            jail.drop_privileges(config["uid"], config["gid"], True, _last_cap())
        else:
            jail.no_new_privileges()
    except jail.SetupError as err:
        sys.stderr.write(f"sandbox: {err}\n")
        os._exit(1)
    # No namespace here, so no socket of any family, where the kernel allows a filter (else README's limits).
    with contextlib.suppress(seccomp.FilterError):
        seccomp.install(())
    os.chdir(config["work"])
    _limit(config, tasks)
    _run_snippet(code)


def _limit(config: dict, tasks: int) -> None:
    megabyte = 1024 * 1024
    for limit, value in (
        (resource.RLIMIT_AS, config["memory_mb"] * megabyte),
        (resource.RLIMIT_FSIZE, FILE_LIMIT_MB * megabyte),
        (resource.RLIMIT_NOFILE, OPEN_FILES),
        (resource.RLIMIT_NPROC, tasks),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(limit, (value, value))
    # SIGXCPU at the soft limit reports itself; the hard limit one second later is SIGKILL.
    resource.setrlimit(resource.RLIMIT_CPU, (config["cpu_s"], config["cpu_s"] + 1))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write raises OSError instead of killing


def _wait(pid: int, deadline: float) -> int | None:
    """The wait status of child `pid`, or None once `deadline` passes first."""
    while True:
        done, wait_status = os.waitpid(pid, os.WNOHANG)
        if done:
            return wait_status
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        signal.sigtimedwait({signal.SIGCHLD}, min(left, 1.0))


def _kill_descendants() -> None:
    """SIGKILL every process left below this one (a subreaper, so orphans are its children) and reap them."""
    me, give_up = str(os.getpid()), time.monotonic() + KILL_GIVE_UP_S
    while time.monotonic() < give_up:
        for entry in os.scandir("/proc"):
            try:
                if entry.name.isdigit() and _parent_of(entry.path) == me:
                    os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, IndexError):
                continue  # it ended while we looked
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return  # no child left, not even a zombie
        time.sleep(0.01)


def _parent_of(proc_dir: str) -> str:
    return Path(proc_dir, "stat").read_text().rsplit(")", 1)[1].split()[1]


def _last_cap() -> int:
    return int(Path("/proc/sys/kernel/cap_last_cap").read_text())


def _call_prctl(option: int, value: int) -> None:
    import ctypes

    ctypes.CDLL(None).prctl(option, value, 0, 0, 0)


def _report(status, message: dict) -> None:
    status.write(json.dumps(message) + "\n")
    status.close()


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


def _block_sockets() -> None:
    """Weak mode's only network barrier: every way the socket module makes a socket raises (ctypes does not)."""
    import _socket
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError("network access is disabled in this sandbox")

    blocked = type("socket", (_socket.socket,), {"__init__": refuse})
    socket.socket = socket.SocketType = _socket.socket = blocked
    socket.socketpair = socket.fromfd = _socket.socketpair = refuse


def _run_snippet(code: str) -> NoReturn:
    """Run `code` as __main__ (see _compile), its exceptions shown as tracebacks of the snippet alone."""
    os.closerange(3, 1024)  # only stdin, stdout and stderr reach the snippet
    linecache.cache[SNIPPET] = (len(code), None, code.splitlines(keepends=True), SNIPPET)
    sys.argv = [SNIPPET]
    try:
        program = _compile(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        # Too deep or too large for the parser: one line, as for a syntax error, never this file's frames.
        traceback.print_exception(type(err), err, None)
        sys.exit(1)
    try:
        exec(program, {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit:
        raise
    except BaseException as err:
        assert err.__traceback__ is not None
        traceback.print_exception(type(err), err, err.__traceback__.tb_next)  # drop this function's frame
        sys.exit(1)
    sys.exit(0)  # up through the supervisor's frames to a normal interpreter exit: flush, atexit, threads


def _compile(code: str) -> CodeType:
    """The snippet compiled, its last bare expression printed if it never calls print, as ARPO's tool does."""
    tree = ast.parse(code, SNIPPET)
    prints = any(isinstance(n, ast.Name) and n.id == "print" for n in ast.walk(tree))
    if tree.body and isinstance(tree.body[-1], ast.Expr) and not prints:
        last = tree.body[-1]
        call = ast.Call(func=ast.Name(id="print", ctx=ast.Load()), args=[last.value], keywords=[])
        tree.body[-1] = ast.fix_missing_locations(ast.copy_location(ast.Expr(value=call), last))
    return compile(tree, SNIPPET, "exec")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main(json.loads(sys.argv[1]))
