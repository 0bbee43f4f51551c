"""Run model-written python the way ARPO's python tool does, isolated from the host.

Linux only. The parent starts `child.py` as a script (no `preexec_fn`: forking a threaded parent,
torch, and running Python before exec can deadlock); the child isolates and limits itself. Isolated mode:
new mount, PID, network, IPC and UTS namespaces, a root holding only `visible_paths()` read-only and a
size-limited scratch /tmp, no capability, resource limits, and a seccomp filter (seccomp.py) for the socket
families and keyrings no namespace isolates. Weak mode, where the host allows no namespaces, only when asked
for (`allow_weak=True`): resource limits, nobody, no socket at all, descendants killed.
"""

from __future__ import annotations

import functools
import json
import os
import pwd
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...errors import EXIT_ENVIRONMENT, UserError
from . import child

OUTPUT_LIMIT = 4000  # characters kept of stdout and of stderr each
TRUNCATED = "\n... [output truncated after {limit} characters]"
SCRATCH_MB = 64  # the snippet's whole writable disk (a tmpfs, so host memory), files included
BACKSTOP_S = 5  # after the child's own wall-clock limit, the parent kills its process group itself
SETUP_FAILED = 87  # SandboxResult.exit_code when the sandbox could not be built, or failed itself
NOT_RUN = 86  # SandboxResult.exit_code when the code was refused before running (too large)
# The largest snippet it runs: a tool call is a few lines, and parsing grows with the source.
CODE_LIMIT_BYTES = 1 << 20
TIMEOUT_LIMIT_S = 3600.0  # the longest wall clock one call may be given
# Control characters a terminal would act on (C0 but newline and tab, DEL, C1): escaped on a terminal only.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# What the sandbox sees of the host besides this interpreter's prefixes: programs and shared libraries.
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache")
WEAK_FLAG = "--allow-weak-sandbox"


class IsolationUnavailable(UserError):
    """This host cannot isolate model-written code, and the caller did not accept the weaker mode."""

    exit_code = EXIT_ENVIRONMENT


@dataclass(frozen=True)
class SandboxResult:
    """What one snippet did; `mode` is "isolated", or "weak" (no namespaces: see the module docstring)."""

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool
    killed_reason: str | None
    mode: str
    pid: int  # the child's, also its process group id

    def tool_output(self) -> str:
        """What ARPO's python tool shows the model: stdout, or stderr (and why it was stopped) on failure."""
        if self.exit_code == 0 and not self.timed_out:
            return self.stdout.strip()
        stopped = f"Execution stopped: {self.killed_reason}" if self.killed_reason else ""
        return "\n".join(part for part in (self.stderr.strip(), stopped) if part)


@functools.cache
def isolation_problem() -> str | None:
    """None where this host lets the sandbox isolate code, else the step that failed and why (asked once)."""
    probe = _launch("print('ok')", 10, {"memory_mb": 1024, "cpu_s": 10, "scratch_mb": 1}, isolate=True)
    if probe.stdout == "ok\n":
        return None
    return (probe.stderr.strip() or probe.killed_reason or f"exit status {probe.exit_code}").splitlines()[-1]


def run_python(
    code: str,
    timeout_s: float = 10,
    memory_mb: int = 1024,
    cpu_s: int = 10,
    scratch_mb: int = SCRATCH_MB,
    *,
    allow_weak: bool = False,
    probe: Callable[[], str | None] | None = None,
) -> SandboxResult:
    """Run `code` in a fresh sandbox; raise IsolationUnavailable where isolation is unavailable.

    `allow_weak=True` runs it in weak mode there instead. `probe` (default `isolation_problem`) is
    injectable so that the refusal and the weak mode can be exercised on a host that isolates.
    """
    if not 0 < timeout_s <= TIMEOUT_LIMIT_S:  # NaN fails this too
        raise ValueError(f"timeout_s must be above 0 and at most {TIMEOUT_LIMIT_S:g}, not {timeout_s!r}")
    problem = (probe or isolation_problem)()
    if problem and not allow_weak:
        raise IsolationUnavailable(
            f"the python sandbox cannot isolate model-written code on this host ({problem}); let this process "
            "create namespaces (root: CAP_SYS_ADMIN and seccomp/AppArmor profiles that permit unshare, mount and "
            f"pivot_root; others: unprivileged user namespaces), or pass {WEAK_FLAG} to accept a weaker sandbox "
            "(resource limits, no root, no socket where the kernel allows a seccomp filter; but the files its "
            "user can read are readable)"
        )
    mode = "weak" if problem else "isolated"
    size = len(code.encode("utf-8", errors="surrogatepass"))
    if size > CODE_LIMIT_BYTES:
        why = f"sandbox: the code is {size:,} bytes, over the {CODE_LIMIT_BYTES:,}-byte limit; nothing was run\n"
        return SandboxResult("", why, NOT_RUN, False, None, mode, 0)
    limits = {"memory_mb": memory_mb, "cpu_s": cpu_s, "scratch_mb": scratch_mb}
    return _launch(code, timeout_s, limits, isolate=problem is None)


def terminal_safe(text: str) -> str:
    """`text` with each control character but newline and tab written as `\\x1b`, so a terminal acts on none."""
    return CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


def visible_paths() -> list[str]:
    """The host paths the sandbox sees, all read-only: system programs and libraries, and this interpreter."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths = {*SYSTEM_PATHS, *map(os.path.abspath, prefixes), *map(os.path.realpath, prefixes)}
    existing = sorted(p for p in paths if os.path.lexists(p))
    dirs = [p for p in existing if os.path.isdir(p) and not os.path.islink(p)]
    return [p for p in existing if not any(p.startswith(d + "/") for d in dirs)]  # inside one: no own mount


def _launch(code: str, timeout_s: float, limits: dict[str, int], isolate: bool) -> SandboxResult:
    base = Path(tempfile.mkdtemp(prefix="arpo-sandbox-"))
    status_read, status_write = os.pipe()
    try:
        work, root = base / "work", base / "root"
        work.mkdir()
        root.mkdir()
        (base / "snippet.py").write_text(code, encoding="utf-8")
        uid, gid = _nobody() if os.geteuid() == 0 else (os.getuid(), os.getgid())
        if os.geteuid() == 0:  # the weak mode's snippet runs as nobody in `work`
            os.chown(work, uid, gid)
            base.chmod(0o711)
        home = "/tmp" if isolate else str(work)
        config = {
            **limits,
            "code": str(base / "snippet.py"),
            "isolate": isolate,
            "timeout_s": timeout_s,
            "uid": uid,
            "gid": gid,
            "root": str(root),
            "work": str(work),
            "visible": visible_paths(),
            "status_fd": status_write,
        }
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": home,
            "TMPDIR": home,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "MPLBACKEND": "Agg",
            # BLAS pools would spend the task allowance on threads the snippet never asked for.
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        argv = [sys.executable, "-I", "-u", str(Path(child.__file__).resolve()), json.dumps(config)]
        with subprocess.Popen(
            argv,
            cwd=base,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            pass_fds=(status_write,),
        ) as proc:
            os.close(status_write)
            status_write = -1
            try:
                out, err, backstop = _collect(proc, time.monotonic() + timeout_s + BACKSTOP_S)
            finally:
                _kill_group(proc.pid)
        with os.fdopen(status_read) as status_file:
            status_read = -1
            text = status_file.read()
    finally:
        for fd in (status_read, status_write):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(base, ignore_errors=True)
    mode = "isolated" if isolate else "weak"
    status = _status(text, backstop, proc.returncode, err)
    if "failed" in status:  # the supervisor's own traceback is not the snippet's output: one line instead
        return SandboxResult(
            out, f"sandbox: failed: {status['failed']}\n", SETUP_FAILED, False, None, mode, proc.pid
        )
    if "setup" in status:
        err = f"sandbox: could not be built: {status['setup']}\n" + err
        return SandboxResult(out, err, SETUP_FAILED, False, None, mode, proc.pid)
    timed_out = "timeout" in status
    exit_code = -signal.SIGKILL if timed_out else status["exit"]
    reason = _killed_reason(exit_code, timed_out, timeout_s)
    return SandboxResult(out, err, exit_code, timed_out, reason, mode, proc.pid)


def _status(text: str, backstop: bool, returncode: int, err: str) -> dict:
    """The supervisor's status line; {"failed": its last line of stderr} where it died without one."""
    if backstop and not text:
        return {"timeout": True}
    try:
        status = json.loads(text)
    except ValueError:
        status = None
    if isinstance(status, dict):
        return status
    last = err.strip().splitlines()[-1:] or [f"exit status {returncode}"]
    return {"failed": last[0]}


def _collect(proc: subprocess.Popen, deadline: float) -> tuple[str, str, bool]:
    """Read stdout/stderr until both close and the child exits, keeping a bounded prefix of each."""
    assert proc.stdout and proc.stderr
    keep = OUTPUT_LIMIT * 4  # bytes: enough for OUTPUT_LIMIT characters of any UTF-8
    raw = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    cut = dict.fromkeys(raw, False)
    timed_out = False
    with selectors.DefaultSelector() as sel:
        for pipe in raw:
            sel.register(pipe, selectors.EVENT_READ)
        while sel.get_map() and not timed_out:
            for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                room = keep - len(raw[key.fileobj])
                raw[key.fileobj] += chunk[:room]
                cut[key.fileobj] |= len(chunk) > room  # the rest is read and dropped: memory stays bounded
            timed_out = time.monotonic() >= deadline and bool(sel.get_map())
    if not timed_out:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
    out, err = (_clip(raw[p], cut[p]) for p in (proc.stdout, proc.stderr))
    return out, err, timed_out


def _clip(raw: bytes, cut: bool) -> str:
    text = raw.decode("utf-8", errors="replace")
    if cut or len(text) > OUTPUT_LIMIT:
        return text[:OUTPUT_LIMIT] + TRUNCATED.format(limit=OUTPUT_LIMIT)
    return text


def _kill_group(pgid: int) -> None:
    """SIGKILL the whole process group until none of it is left (forked children included), for 5 s at most."""
    give_up = time.monotonic() + 5
    while _group_alive(pgid) and time.monotonic() < give_up:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.01)


def _group_alive(pgid: int) -> bool:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # the process ended while we looked
            if fields[0] != "Z" and int(fields[2]) == pgid:  # zombies are dead, only not yet reaped
                return True
    return False


def _killed_reason(code: int, timed_out: bool, timeout_s: float) -> str | None:
    if timed_out:
        return f"wall-clock timeout after {timeout_s:g} s"
    if code == -signal.SIGXCPU:
        return "CPU time limit exceeded"
    if code < 0:
        return f"killed by {signal.Signals(-code).name} (CPU time or memory limit)"
    return None


def _nobody() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return 65534, 65534  # the overflow id every Linux reserves for it
    return entry.pw_uid, entry.pw_gid
