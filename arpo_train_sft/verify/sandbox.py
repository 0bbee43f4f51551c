"""Run model-written python the way ARPO's python tool does, in a fresh, limited, network-less subprocess.

Linux only. The parent starts `sandbox_child.py` as a script; the child applies the limits to itself,
then runs the snippet. No `preexec_fn`: forking a threaded parent (torch) and running Python
before exec can deadlock.
"""

from __future__ import annotations

import functools
import json
import os
import pwd
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import sandbox_child
from .sandbox_child import NO_NAMESPACE

OUTPUT_LIMIT = 4000  # characters kept of stdout and of stderr each
TRUNCATED = "\n... [output truncated after {limit} characters]"
NETWORK_MODES = ("auto", "namespace", "block")  # "block": make socket creation raise inside the child


@dataclass(frozen=True)
class SandboxResult:
    """What one snippet did; `network` says how it was cut off: "namespace" or "block" (sockets raise)."""

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool
    killed_reason: str | None
    network: str
    pid: int  # also its process group id

    def tool_output(self) -> str:
        """What ARPO's python tool shows the model: stdout, or stderr (and why it was stopped) on failure."""
        if self.exit_code == 0 and not self.timed_out:
            return self.stdout.strip()
        stopped = f"Execution stopped: {self.killed_reason}" if self.killed_reason else ""
        return "\n".join(part for part in (self.stderr.strip(), stopped) if part)


def run_python(
    code: str, timeout_s: float = 10, memory_mb: int = 1024, cpu_s: int = 10, network: str = "auto"
) -> SandboxResult:
    """Run `code` in a fresh interpreter and temporary directory; `network="auto"` means `default_network()`."""
    if network not in NETWORK_MODES:
        raise ValueError(f"network must be one of {NETWORK_MODES}, not {network!r}")
    mode = default_network() if network == "auto" else network
    return _launch(code, timeout_s, {"memory_mb": memory_mb, "cpu_s": cpu_s}, mode)


@functools.cache
def default_network() -> str:
    """Return "namespace" where this host lets the child make a network namespace, else "block" (asked once)."""
    probe = _launch("import math", 10, {"memory_mb": 1024, "cpu_s": 10}, "namespace")
    return "namespace" if probe.exit_code == 0 else "block"


def _launch(code: str, timeout_s: float, limits: dict[str, int], network: str) -> SandboxResult:
    root = Path(tempfile.mkdtemp(prefix="arpo-sandbox-"))
    try:
        work = root / "work"
        work.mkdir()
        (root / "snippet.py").write_text(code, encoding="utf-8")
        config = {**limits, "code": str(root / "snippet.py"), "network": network, "user": None}
        if os.geteuid() == 0:  # root ignores RLIMIT_NPROC and may write anywhere: run as nobody instead
            uid, gid = _nobody()
            config["user"] = {"uid": uid, "gid": gid, "keep_read": _interpreter_hidden()}
            os.chown(work, uid, gid)
            root.chmod(0o711)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work),
               "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "MPLBACKEND": "Agg",
               # BLAS pools would spend the task allowance on threads the snippet never asked for.
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # fmt: skip
        argv = [sys.executable, "-I", "-u", str(Path(sandbox_child.__file__).resolve()), json.dumps(config)]
        deadline = time.monotonic() + timeout_s
        with subprocess.Popen(
            argv, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,
        ) as proc:  # fmt: skip
            try:
                out, err, timed_out = _collect(proc, deadline)
            finally:
                _kill_group(proc.pid)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    status = proc.returncode
    if status == NO_NAMESPACE and network == "namespace":
        err = "sandbox: could not create a network namespace here; use network='block'\n" + err
    reason = _killed_reason(status, timed_out, timeout_s)
    return SandboxResult(out, err, status, timed_out, reason, network, proc.pid)


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


def _interpreter_hidden() -> bool:
    """Whether nobody lacks access to this interpreter's files (e.g. pyenv under a 0700 /root)."""
    for prefix in {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}:
        for folder in (prefix, *prefix.parents):
            if not folder.stat().st_mode & stat.S_IXOTH:
                return True
    return False
