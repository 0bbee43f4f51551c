"""The launchers' handshake on MASTER_PORT, with real torch TCPStores on loopback: one thread per "node"."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from typing import Any

import pytest

from arpo_train_sft.errors import UserError
from arpo_train_sft.train.handshake import agree, node_info
from arpo_train_sft.train.topology import Topology, free_port

VALUES = {"model_name_or_path": "m", "learning_rate": 1e-5}


def nodes(nnodes: int, port: int, timeout: int = 20) -> list[Topology]:
    return [Topology(1, nnodes, rank, "127.0.0.1", port, rdzv_timeout=timeout) for rank in range(nnodes)]


def run_nodes(
    plans: list[tuple[Topology, dict[str, Any]]], decide=lambda: ("resume_from_checkpoint=out/c-8",)
):
    """Run agree() for every (topology, info) at once; each node's result or the UserError it raised."""
    results: dict[int, Any] = {}

    def one(index: int, topo: Topology, info: dict[str, Any]) -> None:
        try:
            results[index] = agree(topo, info, decide)
        except UserError as err:
            results[index] = err

    threads = [threading.Thread(target=one, args=(i, *plan)) for i, plan in enumerate(plans)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return [results[i] for i in range(len(plans))]


def test_every_node_gets_node_0s_decision_which_node_0_alone_makes():
    calls = []

    def decide():
        calls.append(threading.current_thread().name)
        return ("resume_from_checkpoint=out/checkpoint-8",)

    topos = nodes(3, free_port())
    results = run_nodes([(t, node_info(t, VALUES, False)) for t in topos], decide)
    assert results == [("resume_from_checkpoint=out/checkpoint-8",)] * 3
    assert len(calls) == 1


def test_a_single_node_decides_alone_without_a_store():
    assert agree(Topology(2), {}, lambda: ("x=1",)) == ("x=1",)


def test_mismatched_nnodes_stops_both_nodes_naming_nnodes():
    port = free_port()
    node0 = nodes(2, port)[0]
    node1 = dataclasses.replace(nodes(3, port)[1])
    started = time.monotonic()
    results = run_nodes([(node0, node_info(node0, VALUES, False)), (node1, node_info(node1, VALUES, False))])
    assert time.monotonic() - started < 15  # named as soon as node 1 arrives, not at RDZV_TIMEOUT
    for result in results:
        assert isinstance(result, UserError)
        assert "NNODES differs between nodes: node 0" in str(result) and "NNODES=2" in str(result)
        assert "NNODES=3: set the same NNODES on every node" in str(result)


def test_two_nodes_with_one_node_rank_are_named():
    port = free_port()
    topos = nodes(3, port)
    twice = [topos[0], topos[1], topos[1]]
    results = run_nodes([(t, node_info(t, VALUES, False)) for t in twice])
    assert all(isinstance(r, UserError) and "NODE_RANK=1 is set on two nodes" in str(r) for r in results)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda info: info["config"].update(learning_rate="other"),
            "the config differs between node 0 and node 1",
        ),
        (lambda info: info.update(fresh=True), "--fresh is given on node 1 ("),
        (lambda info: info.update(nproc_per_node=4), "NPROC_PER_NODE differs between nodes"),
        (lambda info: info["versions"].update(torch="0.0"), "package versions differ"),
    ],
)
def test_a_node_that_differs_from_node_0_is_named(change, message: str):
    topos = nodes(2, free_port())
    infos = [node_info(t, VALUES, False) for t in topos]
    change(infos[1])
    results = run_nodes(list(zip(topos, infos, strict=True)))
    assert all(isinstance(r, UserError) and message in str(r) for r in results), results
    if "config" in message:
        assert "in learning_rate:" in str(results[0])


def test_node_0_refusing_the_resume_stops_every_node_with_its_reason():
    def refuse():
        raise UserError("out: holds an earlier run; relaunch with --fresh")

    topos = nodes(2, free_port())
    results = run_nodes([(t, node_info(t, VALUES, False)) for t in topos], refuse)
    assert str(results[0]) == "out: holds an earlier run; relaunch with --fresh"
    assert str(results[1]) == "node 0 stopped the job: out: holds an earlier run; relaunch with --fresh"


def test_an_unreachable_master_is_named_within_rdzv_timeout():
    node1 = nodes(2, free_port(), timeout=2)[1]
    started = time.monotonic()
    with pytest.raises(UserError) as err:
        agree(node1, node_info(node1, VALUES, False), lambda: ())
    assert time.monotonic() - started < 10
    assert str(err.value).startswith(
        f"NODE_RANK=1: could not reach node 0 at MASTER_ADDR=127.0.0.1 MASTER_PORT={node1.master_port} within RDZV_TIMEOUT=2 s"
    )


def test_a_master_name_that_does_not_resolve_fails_at_once():
    node1 = dataclasses.replace(nodes(2, free_port())[1], master_addr="no-such-host.invalid")
    with pytest.raises(
        UserError, match="MASTER_ADDR=no-such-host.invalid: this node cannot resolve that name"
    ):
        agree(node1, node_info(node1, VALUES, False), lambda: ())


def test_node_0_waiting_for_a_node_that_never_comes_names_it():
    node0 = nodes(3, free_port(), timeout=2)[0]
    with pytest.raises(
        UserError,
        match=r"NNODES=3: node 0 heard from 1 of 3 nodes within RDZV_TIMEOUT=2 s \(no NODE_RANK 1, 2\)",
    ):
        agree(node0, node_info(node0, VALUES, False), lambda: ())


def test_a_taken_master_port_is_named():
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        node0 = nodes(2, sock.getsockname()[1])[0]
        with pytest.raises(
            UserError,
            match=rf"MASTER_PORT={node0.master_port}: node 0 cannot listen there \(it is already in use\)",
        ):
            agree(node0, node_info(node0, VALUES, False), lambda: ())
