"""Build the torchrun command as data, log it, and run it with its output teed to training.log."""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..secrets import redact

ENTRY_MODULE = "arpo_train_sft.entry"
# The CPU demo is sized for two ranks: enough to exercise ZeRO-3 sharding on a 2-core machine.
CPU_RANKS = 2
# torchrun's own default: every node of a multi-node job must agree on it, so no random port there.
DEFAULT_MULTINODE_PORT = 29500
# How much of the ranks' output the launcher keeps to explain a failure (torchrun's summary is at the end).
TAIL_BYTES = 1 << 20


@dataclass(frozen=True)
class Topology:
    """Where this node sits in the job: torchrun's rendezvous settings."""

    nproc_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_MULTINODE_PORT


def say(message: str) -> None:
    """One launcher line on stdout, before the ranks' own output."""
    print(f"[arpo-sft] {redact(message)}", flush=True)


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, "")
    if not value:
        return default
    if not value.isdigit():
        raise UserError(f"environment variable {name}={value!r}: expected a whole number")
    return int(value)


def topology_from_env(env: Mapping[str, str], gpus: int) -> Topology:
    """Read NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR and MASTER_PORT; fill in what is unset."""
    nproc = _int_env(env, "NPROC_PER_NODE", gpus or CPU_RANKS)
    nnodes = _int_env(env, "NNODES", 1)
    node_rank = _int_env(env, "NODE_RANK", 0)
    problems = []
    if nproc < 1:
        problems.append("NPROC_PER_NODE must be at least 1")
    if node_rank >= nnodes:
        problems.append(f"NODE_RANK={node_rank} must be below NNODES={nnodes}")
    if nnodes > 1 and not env.get("MASTER_ADDR"):
        problems.append(f"NNODES={nnodes}: set MASTER_ADDR to the address of node 0 on every node")
    port = _int_env(env, "MASTER_PORT", 0)
    if env.get("MASTER_PORT") and not 1 <= port <= 65535:
        problems.append(f"environment variable MASTER_PORT={port}: expected a TCP port between 1 and 65535")
    if problems:
        raise UserError(problems)
    single_node_port = free_port() if nnodes == 1 else DEFAULT_MULTINODE_PORT
    return Topology(
        nproc_per_node=nproc,
        nnodes=nnodes,
        node_rank=node_rank,
        master_addr=env.get("MASTER_ADDR") or "127.0.0.1",
        master_port=port or single_node_port,
    )


def torchrun_command(config: Path, overrides: tuple[str, ...], topo: Topology, python: str) -> list[str]:
    """The exact argv that starts every rank on our entry module (which registers, then trains)."""
    return [
        python, "-m", "torch.distributed.run",
        "--nnodes", str(topo.nnodes),
        "--node_rank", str(topo.node_rank),
        "--nproc_per_node", str(topo.nproc_per_node),
        "--master_addr", topo.master_addr,
        "--master_port", str(topo.master_port),
        "-m", ENTRY_MODULE,
        str(config), *overrides,
    ]  # fmt: skip


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


def run_teed(cmd: list[str], env: dict[str, str], log_path: Path, tail: bytearray | None = None) -> int:
    """Run `cmd`, copying its output to the terminal and appending it to `log_path`; return its exit code.

    `tail`, when given, receives the output's last TAIL_BYTES (what `failure_lines` reads). A log that cannot
    be written (its disk is full) stops being written; the terminal keeps getting everything.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail = bytearray() if tail is None else tail
    with log_path.open("ab") as log:
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        log.write(f"\n===== {stamp} {redact(shlex.join(cmd))}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        # torchrun turns SIGTERM into a clean stop of every rank; pass ours on (SLURM, `kill`).
        previous = signal.signal(signal.SIGTERM, lambda signum, _frame: proc.send_signal(signum))
        logging = True
        try:
            assert proc.stdout is not None
            for chunk in iter(lambda: proc.stdout.read1(65536), b""):
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
                tail += chunk
                del tail[:-TAIL_BYTES]
                if logging:
                    try:
                        log.write(chunk)
                        log.flush()
                    except OSError as err:
                        logging = False
                        tail += f"\n{log_path}: {err.strerror}\n".encode()
            return proc.wait()
        except KeyboardInterrupt:
            # Ctrl-C already reached torchrun (same process group); wait for it to stop the ranks.
            return proc.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)
            with contextlib.suppress(OSError):  # closing flushes; a full disk must not hide the run's result
                log.close()


# torchrun's failure summary names each failed rank: "rank      : 1 (local_rank: 1)" then "exitcode  : -9".
_FAILED_RANK = re.compile(rb"rank\s*:\s*(\d+) \(local_rank: \d+\)\s+exitcode\s*:\s*(-?\d+)")
_DISK_FULL = (b"No space left on device", b"Disk quota exceeded")


def failure_lines(text: bytes, output_dir: Path) -> list[str]:
    """What went wrong, from the end of a failed launch's output: a full disk, the ranks that failed."""
    from ..checkpoint.scan import list_checkpoints, scan

    failed = dict.fromkeys((int(rank), int(code)) for rank, code in _FAILED_RANK.findall(text))
    lines = [f"rank {rank} failed (exit code {code})" for rank, code in failed]
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
