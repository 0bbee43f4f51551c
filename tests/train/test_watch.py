"""The heartbeat between the launchers of a multi-node job, on a real torch TCPStore on loopback."""

from __future__ import annotations

import datetime
import subprocess
import sys
import threading
import time

import pytest
from torch.distributed import TCPStore

from arpo_train_sft.train.topology import free_port
from arpo_train_sft.train.watch import _PREFIX, Watch, beat


@pytest.fixture
def server():
    port = free_port()
    store = TCPStore(
        "127.0.0.1", port, is_master=True, wait_for_workers=False, timeout=datetime.timedelta(seconds=5)
    )
    yield store, port


@pytest.fixture
def torchrun():
    """A stand-in for torchrun: a process in its own session, as the launcher starts it."""
    proc = subprocess.Popen(["sleep", "120"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


SERVER = """
import datetime, sys, time
from torch.distributed import TCPStore
store = TCPStore("127.0.0.1", int(sys.argv[1]), is_master=True, wait_for_workers=False,
                 timeout=datetime.timedelta(seconds=5))
time.sleep(120)
"""


def silent_member(store: TCPStore, name: str) -> None:
    slot = store.add(f"{_PREFIX}/members", 1)
    store.set(f"{_PREFIX}/name/{slot}", name)
    store.add(f"{_PREFIX}/beat/{slot}", 1)


def test_a_node_that_stops_beating_is_named(server, torchrun):
    store, port = server
    silent_member(store, "node 1 (far, launcher pid 7)")
    started = time.monotonic()
    why = beat("127.0.0.1", port, "node 0", timeout=2, torchrun_pid=torchrun.pid, interval=0.5)
    assert why == "node 1 (far, launcher pid 7) has sent no heartbeat for 2 s: it died or lost the network"
    assert time.monotonic() - started < 10


def test_nodes_that_beat_are_left_alone_until_torchrun_ends(server, torchrun):
    _, port = server
    results = []
    beaters = [
        threading.Thread(
            target=lambda n=n: results.append(
                beat("127.0.0.1", port, f"node {n}", timeout=2, torchrun_pid=torchrun.pid, interval=0.3)
            )
        )
        for n in (0, 1)
    ]
    for thread in beaters:
        thread.start()
    time.sleep(4)  # twice the timeout: both beat, nobody is called silent
    torchrun.kill()
    torchrun.wait()
    for thread in beaters:
        thread.join(timeout=20)
    assert results == ["", ""]


def test_a_store_that_goes_away_is_named(torchrun):
    port = free_port()
    host = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])  # node 0, hosting the store
    result = []
    thread = threading.Thread(
        target=lambda: result.append(
            beat("127.0.0.1", port, "node 1", timeout=2, torchrun_pid=torchrun.pid, interval=0.3)
        )
    )
    thread.start()
    time.sleep(4)
    host.kill()  # node 0 died, and its store with it
    host.wait()
    thread.join(timeout=30)
    assert result == [
        f"the job's store at 127.0.0.1:{port} has not answered for 2 s: the node that hosts it "
        "(node 0) died or this node lost the network"
    ]


def test_the_watch_child_kills_this_nodes_torchrun_when_a_node_is_lost(server, torchrun):
    store, port = server
    silent_member(store, "node 1 (far, launcher pid 7)")
    watch = Watch("127.0.0.1", port, "node 0", timeout=2, torchrun_pid=torchrun.pid, interval=0.5)
    assert torchrun.wait(timeout=60) == -9  # its whole process group was killed
    watch.stop()
    assert (
        watch.lost
        == "node 1 (far, launcher pid 7) has sent no heartbeat for 2 s: it died or lost the network"
    )


def test_a_watch_stopped_after_a_clean_end_reports_nothing(server, torchrun):
    _, port = server
    watch = Watch("127.0.0.1", port, "node 0", timeout=30, torchrun_pid=torchrun.pid, interval=0.5)
    time.sleep(2)
    torchrun.kill()
    torchrun.wait()
    watch.stop()
    assert watch.lost == ""
