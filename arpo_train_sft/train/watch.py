"""While a multi-node job trains, each launcher beats and listens on torchrun's store; a silent node ends it.

Ranks whose peer died wait inside a collective: gloo notices a closed connection at once, NCCL may wait
until `ddp_timeout` (an hour in the presets). So every launcher of a multi-node job runs this module in
a child process

    python -m arpo_train_sft.train.watch HOST PORT NAME TIMEOUT GRACE TORCHRUN_PID INTERVAL

that adds 1 to its own counter on the store torchrun's rendezvous runs on (node 0's, at
MASTER_ADDR:MASTER_PORT, or RDZV_ENDPOINT's) every INTERVAL seconds and reads everyone's. A counter
that stands still for TIMEOUT seconds (ARPO_SFT_HEARTBEAT_TIMEOUT, default 120), or a store that stays
unreachable that long once reached, means a node died or lost the network: the child prints why (its
one stdout line), kills this node's torchrun and ranks (they cannot save without the lost node) and exits
1. Counters are compared on each node's own clock, so no two clocks need agree. A child process, in its
own session: torch's store client logs a C++ stack trace for every failed call, which would bury the
training log, and a closed terminal must not stop the beat.

A node whose torchrun ended is not silent but done: its child marks its slot ended, with torchrun's exit
code (which the launcher writes to the child's stdin), and the others never call it dead, however long
their own tail work lasts (node 0's rank 0 writing the final model). A non-zero code is no proof of a
crash: torchrun exits 1 after SIGTERM even when its ranks saved and exited 0 (a preemption). So the
others give a node that ended non-zero GRACE seconds (ARPO_SFT_STOP_TIMEOUT, the time torchrun gives a
save after SIGTERM) before they stop their own ranks, which a crash there would leave waiting.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

HEARTBEAT_INTERVAL_S = 5.0
_PREFIX = "arpo-sft/watch/1"


class Watch:
    """The heartbeat child of one launcher; `lost` says why it stopped the job (empty while all is well)."""

    def __init__(
        self,
        host: str,
        port: int,
        name: str,
        timeout: float,
        grace: float,
        torchrun_pid: int,
        interval: float = HEARTBEAT_INTERVAL_S,
    ) -> None:
        cmd = [sys.executable, "-m", __name__, host, str(port), name, str(timeout), str(grace)]
        cmd += [str(torchrun_pid), str(interval)]
        env = {**os.environ, "TORCH_CPP_LOG_LEVEL": "FATAL"}
        self._child = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.lost = ""

    def stop(self, code: int | None = None) -> None:
        """Once torchrun has ended here with `code` (None: unknown): the child marks this node ended and
        exits; keep what it said."""
        try:
            out, _ = self._child.communicate(
                "" if code is None else f"{code}\n", timeout=2 * HEARTBEAT_INTERVAL_S
            )
        except subprocess.TimeoutExpired:
            self._child.kill()  # it ignores SIGTERM (see main)
            out, _ = self._child.communicate()
        self.lost = out.strip()


def watch_job(host: str, port: int, node: str, timeout: float, grace: float, torchrun_pid: int) -> Watch:
    """Start beating for `node` (e.g. "node 1") while torchrun `torchrun_pid` runs."""
    name = f"{node} ({socket.gethostname()}, launcher pid {os.getpid()})"
    return Watch(host, port, name, timeout, grace, torchrun_pid)


def beat(
    host: str,
    port: int,
    name: str,
    timeout: float,
    grace: float,
    torchrun_pid: int,
    interval: float = HEARTBEAT_INTERVAL_S,
    exit_code: Callable[[], int | None] = lambda: None,
) -> str:
    """Beat every `interval` seconds until torchrun ends (""), or until another node is lost (why).

    When torchrun has ended, this node's slot is marked ended with `exit_code()`.
    """
    from torch.distributed import TCPStore

    from .handshake import wait_for_port
    from .launch import alive

    store, slot = None, -1
    seen: dict[int, tuple[int, float]] = {}  # slot -> (its counter, when it last moved)
    ended: dict[int, tuple[int | None, float]] = {}  # slot -> (its torchrun's exit code, when seen ended)
    reached = next_beat = time.monotonic()
    while alive(torchrun_pid):
        time.sleep(min(1.0, interval))
        now = time.monotonic()
        if now < next_beat:
            continue
        next_beat = now + interval
        try:
            if store is None:
                # torchrun opens its store a few seconds after it starts; until then keep trying.
                if not wait_for_port(host, port, now + 1):
                    continue
                store = TCPStore(
                    host, port, is_master=False, timeout=datetime.timedelta(seconds=HEARTBEAT_INTERVAL_S)
                )
                slot = store.add(f"{_PREFIX}/members", 1)
                store.set(f"{_PREFIX}/name/{slot}", name)
            store.add(f"{_PREFIX}/beat/{slot}", 1)
            for other in range(1, store.add(f"{_PREFIX}/members", 0) + 1):
                if other not in ended and store.check([f"{_PREFIX}/ended/{other}"]):
                    mark = store.get(f"{_PREFIX}/ended/{other}").decode()
                    ended[other] = (int(mark) if mark else None, now)
                if other in ended:
                    code, since = ended[other]
                    if code != 0 and now - since > grace:
                        return _ended_badly(store.get(f"{_PREFIX}/name/{other}").decode(), code, grace)
                    continue
                count = store.add(f"{_PREFIX}/beat/{other}", 0)
                last = seen.get(other)
                if last is None or last[0] != count:
                    seen[other] = (count, now)
                elif now - last[1] > timeout:
                    who = store.get(f"{_PREFIX}/name/{other}").decode()
                    return (
                        f"{who} has sent no heartbeat for {timeout:.0f} s (ARPO_SFT_HEARTBEAT_TIMEOUT): it "
                        "died or lost the network"
                    )
            reached = now
        except Exception:  # noqa: BLE001  (any failure of the store is the same news: it did not answer)
            if slot < 0:
                store = None
            elif now - reached > timeout:
                return (
                    f"the job's store at {host}:{port} has not answered for {timeout:.0f} s "
                    "(ARPO_SFT_HEARTBEAT_TIMEOUT): the node that hosts it (node 0) died or this node lost "
                    "the network"
                )
    if store is not None:
        code = exit_code()
        with contextlib.suppress(Exception):  # node 0's store ends with node 0's torchrun: nobody to tell
            store.set(f"{_PREFIX}/ended/{slot}", "" if code is None else str(code))
    return ""


def _ended_badly(who: str, code: int | None, grace: float) -> str:
    how = f"exit code {code}" if code is not None else "an exit code its launcher did not report"
    return (
        f"{who} ended its ranks with {how} and this node's still ran {grace:.0f} s later "
        "(ARPO_SFT_STOP_TIMEOUT): they would wait for its ranks in a collective; its log says why it ended"
    )


def _read_exit_code() -> int | None:
    """torchrun's exit code, which the launcher writes on stdin right after torchrun ended; None when it
    does not within HEARTBEAT_INTERVAL_S (its stdin closes at once if the launcher died)."""
    ready, _, _ = select.select([sys.stdin], [], [], HEARTBEAT_INTERVAL_S)
    line = sys.stdin.readline().strip() if ready else ""
    return int(line) if line.lstrip("-").isdigit() else None


def main() -> None:
    host, port, name, timeout, grace, pid, interval = sys.argv[1:8]
    # SLURM signals every process of a job step on preemption: the beat must go on while the ranks save,
    # and ends by itself when torchrun does.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    why = beat(
        host, int(port), name, float(timeout), float(grace), int(pid), float(interval), _read_exit_code
    )
    if why:
        print(why, flush=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(pid), signal.SIGKILL)
        sys.exit(1)


if __name__ == "__main__":
    main()
