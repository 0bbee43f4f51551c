"""The heartbeat between the launchers of a multi-node job, on a real torch TCPStore on loopback."""

from __future__ import annotations

import datetime
import signal
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
def torchruns():
    """Starts stand-ins for torchrun: processes in their own session, as the launcher starts it."""
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        procs.append(subprocess.Popen(["sleep", "120"], start_new_session=True))
        return procs[-1]

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.fixture
def torchrun(torchruns):
    return torchruns()


SERVER = """
import datetime, sys, time
from torch.distributed import TCPStore
store = TCPStore("127.0.0.1", int(sys.argv[1]), is_master=True, wait_for_workers=False,
                 timeout=datetime.timedelta(seconds=5))
time.sleep(120)
"""


def joined(store: TCPStore, count: int) -> None:
    """Until `count` watches have beaten on `store` (each child imports torch first: seconds)."""
    deadline = time.monotonic() + 60
    while store.add(f"{_PREFIX}/members", 0) < count or not all(
        store.add(f"{_PREFIX}/beat/{slot}", 0) for slot in range(1, count + 1)
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def silent_member(store: TCPStore, name: str) -> None:
    slot = store.add(f"{_PREFIX}/members", 1)
    store.set(f"{_PREFIX}/name/{slot}", name)
    store.add(f"{_PREFIX}/beat/{slot}", 1)


def test_a_node_that_stops_beating_is_named(server, torchrun):
    store, port = server
    silent_member(store, "node 1 (far, launcher pid 7)")
    started = time.monotonic()
    why = beat("127.0.0.1", port, "node 0", 2, 2, torchrun.pid, interval=0.5)
    assert (
        why
        == "node 1 (far, launcher pid 7) has sent no heartbeat for 2 s (ARPO_SFT_HEARTBEAT_TIMEOUT): it died or lost the network"
    )
    assert time.monotonic() - started < 10


def test_nodes_that_beat_are_left_alone_until_torchrun_ends(server, torchrun):
    _, port = server
    results = []
    beaters = [
        threading.Thread(
            target=lambda n=n: results.append(
                beat("127.0.0.1", port, f"node {n}", 2, 2, torchrun.pid, interval=0.3)
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
        target=lambda: result.append(beat("127.0.0.1", port, "node 1", 2, 2, torchrun.pid, interval=0.3))
    )
    thread.start()
    time.sleep(4)
    host.kill()  # node 0 died, and its store with it
    host.wait()
    thread.join(timeout=30)
    assert result == [
        f"the job's store at 127.0.0.1:{port} has not answered for 2 s (ARPO_SFT_HEARTBEAT_TIMEOUT): the "
        "node that hosts it (node 0) died or this node lost the network"
    ]


def test_the_watch_child_kills_this_nodes_torchrun_when_a_node_is_lost(server, torchrun):
    store, port = server
    silent_member(store, "node 1 (far, launcher pid 7)")
    watch = Watch("127.0.0.1", port, "node 0", 2, 2, torchrun.pid, interval=0.5)
    assert torchrun.wait(timeout=60) == -9  # its whole process group was killed
    watch.stop()
    assert (
        watch.lost
        == "node 1 (far, launcher pid 7) has sent no heartbeat for 2 s (ARPO_SFT_HEARTBEAT_TIMEOUT): it died or lost the network"
    )


def test_a_watch_stopped_after_a_clean_end_reports_nothing(server, torchrun):
    _, port = server
    watch = Watch("127.0.0.1", port, "node 0", 30, 30, torchrun.pid, interval=0.5)
    time.sleep(2)
    torchrun.kill()
    torchrun.wait()
    watch.stop()
    assert watch.lost == ""


def test_a_node_whose_torchrun_ended_is_never_called_dead_while_another_works_on(server, torchruns):
    store, port = server
    saving, done = torchruns(), torchruns()  # node 0's rank 0 writes the final model; node 1 has finished
    node0 = Watch("127.0.0.1", port, "node 0", 1, 1, saving.pid, interval=0.2)
    node1 = Watch("127.0.0.1", port, "node 1", 1, 1, done.pid, interval=0.2)
    joined(store, 2)
    for watch in (node0, node1):  # SLURM's preemption signals every process of the step: both beat on
        watch._child.send_signal(signal.SIGTERM)
    time.sleep(2)
    done.kill()
    done.wait()
    node1.stop(0)
    time.sleep(3)  # node 0's tail work outlasts the heartbeat timeout (and the grace) three times
    assert saving.poll() is None and node1.lost == ""
    saving.kill()
    saving.wait()
    node0.stop(-9)
    assert node0.lost == ""


def test_a_node_that_ended_non_zero_stops_the_others_after_the_grace(server, torchruns):
    store, port = server
    working, failed = torchruns(), torchruns()
    node0 = Watch("127.0.0.1", port, "node 0", 1, 3, working.pid, interval=0.2)
    node1 = Watch("127.0.0.1", port, "node 1", 1, 3, failed.pid, interval=0.2)
    joined(store, 2)
    failed.kill()
    failed.wait()
    ended = time.monotonic()
    node1.stop(1)
    assert working.wait(timeout=30) == -9
    assert time.monotonic() - ended > 3  # a preempted node's torchrun exits 1 too: its peers may still save
    node0.stop(-9)
    assert node0.lost == (
        "node 1 ended its ranks with exit code 1 and this node's still ran 3 s later (ARPO_SFT_STOP_TIMEOUT): "
        "they would wait for its ranks in a collective; its log says why it ended"
    )


def test_a_node_whose_watch_was_killed_is_still_called_dead(server, torchruns):
    store, port = server
    mine = torchruns()
    node0 = Watch("127.0.0.1", port, "node 0", 1, 1, mine.pid, interval=0.2)
    node1 = Watch("127.0.0.1", port, "node 1", 1, 1, torchruns().pid, interval=0.2)
    joined(store, 2)
    node1._child.kill()  # SIGKILL: it marks nothing, as when the node dies
    assert mine.wait(timeout=30) == -9
    node0.stop(-9)
    assert node0.lost == (
        "node 1 has sent no heartbeat for 1 s (ARPO_SFT_HEARTBEAT_TIMEOUT): it died or lost the network"
    )
