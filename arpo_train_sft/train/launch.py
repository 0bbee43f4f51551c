"""Build the torchrun command as data, log it, and run it with its output teed to training.log."""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import importlib.util
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..atomic import disk_filled, disk_full
from ..config import ENTRY_MODULE
from ..console import MID_LINE, terminal_gone
from ..secrets import redact
from .topology import Topology

# How much of the ranks' output the launcher keeps to explain a failure (torchrun's summary is at the end).
TAIL_BYTES = 1 << 20


def torchrun_command(config: Path, overrides: tuple[str, ...], topo: Topology, python: str) -> list[str]:
    """The exact argv that starts every rank on our entry module (which registers, then trains)."""
    return [
        python,
        "-m",
        "torch.distributed.run",
        *topo.torchrun_args(),
        *_signal_args(topo.stop_timeout),
        "-m",
        ENTRY_MODULE,
        str(config),
        *overrides,
    ]


def _signal_args(stop_timeout: int) -> list[str]:
    """Time for the ranks to save on SIGTERM before torchrun kills them (torchrun's default is 30 s), where
    this torch's torchrun has the flag (older ones keep their 30 s)."""
    spec = importlib.util.find_spec("torch.distributed.run")
    source = Path(spec.origin).read_text(encoding="utf-8") if spec and spec.origin else ""
    return ["--shutdown_timeout", str(stop_timeout)] if "--shutdown-timeout" in source else []


def alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (one we may not signal counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def own_bin_first(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with this interpreter's bin dir first on PATH, for every process the launcher starts.

    DeepSpeed JIT-builds its CPU ops with whichever `ninja` PATH finds. pip's ninja (1.13, in the venv)
    and the system's (1.11) hash commands differently, so processes that alternate between them each
    see the other's build log as a changed command and recompile (~50 s of CPU per process, measured).
    """
    out = dict(env)
    own = str(Path(sys.executable).parent)
    if out.get("PATH", "").split(os.pathsep)[0] != own:
        out["PATH"] = os.pathsep.join(filter(None, (own, out.get("PATH", ""))))
    return out


def training_env(env: Mapping[str, str], on_cpu: bool) -> dict[str, str]:
    """The environment the ranks get: the caller's, plus allocator/backend settings they did not set."""
    out = own_bin_first(env)
    # Ranks write into a pipe (the tee); unbuffered output keeps the log in step with training.
    out.setdefault("PYTHONUNBUFFERED", "1")
    if not on_cpu:
        # Variable-length batches fragment the CUDA caching allocator; expandable segments avoid it.
        out.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
        out.setdefault("TORCH_NCCL_AVOID_RECORD_STREAMS", "1")
    return out


def run_teed(
    cmd: list[str],
    env: dict[str, str],
    log_path: Path,
    tail: bytearray | None = None,
    started: Callable[[int], Any] | None = None,
    notes: tuple[str, ...] = (),
    quiet_from: bytes = b"",
) -> int:
    """Run `cmd`, copying its output to the terminal and appending it to `log_path`; return its exit code.

    `tail`, when given, receives the output's last TAIL_BYTES (what `failure_lines` reads); `started`, when
    given, is called with the child's pid once it runs and returns something with `.stop()`, called when it
    ends (the heartbeat). `notes` go into the log's header under the command, one `# ` line each (the
    preflight checks this launch overrode). From the first `quiet_from` in the output on (a rank's
    out-of-memory marker), the terminal gets nothing more: the rest, tracebacks of every rank, goes to the
    log only. A log that cannot be written (its disk is full) stops being written; the terminal
    keeps getting everything. A terminal that goes away (a closed SSH session) stops being written; the log
    keeps getting everything and nothing stops: the child runs in its own session, out of the terminal's
    reach, and this launcher ignores SIGHUP. Ctrl-C and SIGTERM are passed on to it, and it gets SIGTERM
    if this launcher dies.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail = bytearray() if tail is None else tail
    with log_path.open("ab") as log:
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        try:
            log.write(f"\n===== {stamp} {redact(shlex.join(cmd))}\n".encode())
            log.write("".join(f"# {redact(note)}\n" for note in notes).encode())
            log.flush()
        except OSError as err:
            if disk_filled(err):
                raise disk_full(log_path, "training was not started") from None
            raise
        hangup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_term_when_parent_dies,
        )
        # torchrun turns SIGTERM into a clean stop of every rank (they save first); pass ours on (`kill`).
        previous = signal.signal(signal.SIGTERM, lambda signum, _frame: proc.send_signal(signum))
        watcher = started(proc.pid) if started else None
        sink = _Sink(log, log_path, tail, quiet_from)
        interrupts = 0
        try:
            while True:
                try:
                    sink.drain(proc)
                    return proc.wait()
                except KeyboardInterrupt:
                    # The terminal's Ctrl-C reaches only this process now: pass it on, as the terminal would
                    # have (torchrun stops the ranks); a second one kills them.
                    interrupts += 1
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGINT if interrupts == 1 else signal.SIGKILL)
        finally:
            if watcher is not None:
                watcher.stop(proc.returncode)
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGHUP, hangup)
            with contextlib.suppress(OSError):  # closing flushes; a full disk must not hide the run's result
                log.close()


def _term_when_parent_dies() -> None:
    """In the child, before exec (Linux): SIGTERM when this launcher dies, even by SIGKILL. Out of the
    terminal's session, torchrun would otherwise train on unseen; this way its ranks save and stop."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


class _Sink:
    """Where the child's output goes: the terminal while it is there, the log while it has room, the tail."""

    def __init__(self, log: Any, log_path: Path, tail: bytearray, quiet_from: bytes = b"") -> None:
        self.log, self.log_path, self.tail, self.quiet_from = log, log_path, tail, quiet_from
        self.logging = self.echo = True

    def drain(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            if self.echo and self.quiet_from and self.quiet_from in chunk:
                self._show(chunk[: chunk.index(self.quiet_from)])
                self.echo = False  # the log keeps the rest; the launcher says what happened in one line
            elif self.echo:
                self._show(chunk)
            self.tail += chunk
            del self.tail[:-TAIL_BYTES]
            if self.logging:
                try:
                    self.log.write(chunk)
                    self.log.flush()
                except OSError as err:
                    self.logging = False
                    self.tail += f"\n{self.log_path}: {err.strerror}\n".encode()

    def _show(self, chunk: bytes) -> None:
        if not chunk:
            return
        try:
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            MID_LINE[0] = not chunk.endswith(b"\n")
        except OSError:
            self.echo = False  # the terminal is gone; training goes on, into the log
            terminal_gone()


# torchrun's failure summary names each failed rank: "rank      : 1 (local_rank: 1)" then "exitcode  : -9".
_FAILED_RANK = re.compile(rb"rank\s*:\s*(\d+) \(local_rank: \d+\)\s+exitcode\s*:\s*(-?\d+)")
_DISK_FULL = (b"No space left on device", b"Disk quota exceeded")
# What a rank says when a rank on another node died under it (gloo; NCCL's socket transport).
_PEER_GONE = (
    b"Connection closed by peer",
    b"Connection reset by peer",
    b"remote process exited or there was a network error",
)


def failure_lines(text: bytes, output_dir: Path) -> list[str]:
    """What went wrong, from the end of a failed launch's output: a full disk, the ranks that failed."""
    from ..checkpoint.scan import list_checkpoints, scan

    failed = dict.fromkeys((int(rank), int(code)) for rank, code in _FAILED_RANK.findall(text))
    lines = [f"rank {rank} failed (exit code {code})" for rank, code in failed]
    if any(marker in text for marker in _PEER_GONE):
        lines.append(
            "a rank on another node went away first (its connection closed): that node's own log "
            "(training.node<K>.log in output_dir) says why"
        )
    if any(marker in text for marker in _DISK_FULL):
        free = shutil.disk_usage(output_dir).free / 2**20
        complete = [path for path in list_checkpoints(output_dir) if not scan(path).problems]
        last = complete[-1] if complete else "none"
        lines.insert(
            0,
            f"output_dir {output_dir}: the disk filled while saving ({free:.0f} MB free); "
            f"the last complete checkpoint is {last}",
        )
    return lines
