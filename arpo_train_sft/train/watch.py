"""While a multi-node job trains, each launcher beats and listens on torchrun's store; a silent node ends it.

Ranks whose peer died wait inside a collective: gloo notices a closed connection at once, NCCL may wait
until `ddp_timeout` (an hour in the presets). So every launcher of a multi-node job runs this module in
a child process

    python -m arpo_train_sft.train.watch HOST PORT NAME TIMEOUT TORCHRUN_PID [INTERVAL]

that adds 1 to its own counter on the store torchrun's rendezvous runs on (node 0's, at
MASTER_ADDR:MASTER_PORT, or RDZV_ENDPOINT's) every HEARTBEAT_INTERVAL_S and reads everyone's. A counter
that stands still for TIMEOUT seconds (ARPO_SFT_HEARTBEAT_TIMEOUT, default 120), or a store that stays
unreachable that long once reached, means a node died or lost the network: the child prints why (its
one stdout line), kills this node's torchrun and ranks (they cannot save without the lost node) and exits
1. Counters are compared on each node's own clock, so no two clocks need agree. A child process, in its
own session: torch's store client logs a C++ stack trace for every failed call, which would bury the
training log, and a closed terminal must not stop the beat.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import socket
import subprocess
import sys
import time

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
        torchrun_pid: int,
        interval: float = HEARTBEAT_INTERVAL_S,
    ) -> None:
        cmd = [
            sys.executable,
            "-m",
            __name__,
            host,
            str(port),
            name,
            str(timeout),
            str(torchrun_pid),
            str(interval),
        ]
        env = {**os.environ, "TORCH_CPP_LOG_LEVEL": "FATAL"}
        self._child = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.lost = ""

    def stop(self) -> None:
        """Once torchrun has ended here: the child sees it within a second and exits; keep what it said."""
        try:
            out, _ = self._child.communicate(timeout=HEARTBEAT_INTERVAL_S)
        except subprocess.TimeoutExpired:
            self._child.terminate()
            out, _ = self._child.communicate()
        self.lost = out.strip()


def watch_job(host: str, port: int, node: str, timeout: float, torchrun_pid: int) -> Watch:
    """Start beating for `node` (e.g. "node 1") while torchrun `torchrun_pid` runs."""
    name = f"{node} ({socket.gethostname()}, launcher pid {os.getpid()})"
    return Watch(host, port, name, timeout, torchrun_pid)


def beat(
    host: str, port: int, name: str, timeout: float, torchrun_pid: int, interval: float = HEARTBEAT_INTERVAL_S
) -> str:
    """Beat every `interval` seconds until torchrun ends (""), or until a node goes silent (why)."""
    from torch.distributed import TCPStore

    from .handshake import wait_for_port
    from .launch import alive

    store, slot = None, -1
    seen: dict[int, tuple[int, float]] = {}  # slot -> (its counter, when it last moved)
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
                count = store.add(f"{_PREFIX}/beat/{other}", 0)
                last = seen.get(other)
                if last is None or last[0] != count:
                    seen[other] = (count, now)
                elif now - last[1] > timeout:
                    who = store.get(f"{_PREFIX}/name/{other}").decode()
                    return f"{who} has sent no heartbeat for {timeout:.0f} s: it died or lost the network"
            reached = now
        except Exception:  # noqa: BLE001  (any failure of the store is the same news: it did not answer)
            if slot < 0:
                store = None
            elif now - reached > timeout:
                return (
                    f"the job's store at {host}:{port} has not answered for {timeout:.0f} s: the node that "
                    "hosts it (node 0) died or this node lost the network"
                )
    return ""


def main() -> None:
    host, port, name, timeout, pid = sys.argv[1:6]
    interval = float(sys.argv[6]) if len(sys.argv) > 6 else HEARTBEAT_INTERVAL_S
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    why = beat(host, int(port), name, float(timeout), int(pid), interval)
    if why:
        print(why, flush=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(pid), signal.SIGKILL)
        sys.exit(1)


if __name__ == "__main__":
    main()
