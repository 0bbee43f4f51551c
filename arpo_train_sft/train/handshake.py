"""Before torchrun, the launchers of a static multi-node job meet on MASTER_PORT and agree on one plan.

Node 0 hosts a store (torch's TCPStore) on MASTER_PORT for the seconds this takes. Every other node
connects, says who it is (NODE_RANK, NNODES, NPROC_PER_NODE, the config's keys, the package versions)
and waits for node 0's verdict: the job's one resume decision (the overrides every node hands its ranks,
made and carried out by node 0 only once everyone has arrived) or the problem, which every node reports
and exits on. Node 0 closes the store before it starts torchrun, whose rendezvous then binds the port.

Every wait is bounded by RDZV_TIMEOUT, and every problem names the variable to fix.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import socket
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

from ..errors import UserError
from .topology import Topology

PREFIX = "arpo-sft/handshake/1"
# After the verdict, how long node 0 waits for each node to confirm it read it before closing the store.
ACK_TIMEOUT_S = 30
_VERSIONED = ("arpo-train-sft", "llamafactory", "torch", "transformers", "deepspeed")


def node_info(topo: Topology, values: dict[str, Any], fresh: bool) -> dict[str, Any]:
    """What this node tells node 0: its place in the job, a digest per config key, its versions."""
    digests = {
        key: hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]
        for key, value in values.items()
    }
    versions = {}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "node_rank": topo.node_rank,
        "nnodes": topo.nnodes,
        "nproc_per_node": topo.nproc_per_node,
        "host": socket.gethostname(),
        "config": digests,
        "fresh": fresh,
        "versions": versions,
    }


def agree(topo: Topology, info: dict[str, Any], decide: Callable[[], tuple[str, ...]]) -> tuple[str, ...]:
    """The job's resume overrides: `decide()` on node 0 (or a single node), node 0's answer elsewhere."""
    if not topo.meets:
        return decide()
    if topo.node_rank == 0:
        return _host(topo, info, decide)
    return _join(topo, info)


def _timeout(seconds: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=max(seconds, 0.1))


def _host(topo: Topology, info: dict[str, Any], decide: Callable[[], tuple[str, ...]]) -> tuple[str, ...]:
    from torch.distributed import TCPStore

    port = topo.master_port
    try:
        store = TCPStore(
            topo.master_addr,
            port,
            is_master=True,
            wait_for_workers=False,
            timeout=_timeout(topo.rdzv_timeout),
        )
    except (RuntimeError, OSError) as err:
        why = "it is already in use" if "EADDRINUSE" in str(err) else str(err).splitlines()[0]
        raise UserError(
            f"MASTER_PORT={port}: node 0 cannot listen there ({why}): choose a free MASTER_PORT "
            "and set the same one on every node"
        ) from None
    deadline = time.monotonic() + topo.rdzv_timeout
    arrived: dict[int, dict[str, Any]] = {0: info}
    slots, problem = [], ""
    while len(arrived) < topo.nnodes and not problem:
        slot = len(slots) + 1
        try:
            store.wait([f"{PREFIX}/arrival/{slot}"], _timeout(deadline - time.monotonic()))
        except (RuntimeError, TimeoutError):
            missing = sorted(set(range(topo.nnodes)) - set(arrived))
            problem = (
                f"NNODES={topo.nnodes}: node 0 heard from {len(arrived)} of {topo.nnodes} nodes within "
                f"RDZV_TIMEOUT={topo.rdzv_timeout} s (no NODE_RANK {', '.join(map(str, missing))}): start "
                "the launcher on every node with the same NNODES, MASTER_ADDR and MASTER_PORT, or raise "
                "RDZV_TIMEOUT"
            )
            break
        slots.append(slot)
        other = json.loads(store.get(f"{PREFIX}/arrival/{slot}"))
        problem = mismatch(info, other, arrived)
        arrived[other["node_rank"]] = other
    verdict: dict[str, Any]
    if problem:
        verdict = {"error": problem}
    else:
        try:
            verdict = {"overrides": list(decide())}
        except UserError as err:
            verdict = {"error": "; ".join(err.problems), "from_node_0": True}
    for slot in slots:
        store.set(f"{PREFIX}/verdict/{slot}", json.dumps(verdict))
    for slot in slots:
        # A node that does not confirm is gone or slow; its own timeout ends it.
        with contextlib.suppress(RuntimeError, TimeoutError):
            store.wait([f"{PREFIX}/ack/{slot}"], _timeout(ACK_TIMEOUT_S))
    del store
    if "error" in verdict:
        raise UserError(verdict["error"])
    return tuple(verdict["overrides"])


def _join(topo: Topology, info: dict[str, Any]) -> tuple[str, ...]:
    from torch.distributed import TCPStore

    where = f"MASTER_ADDR={topo.master_addr} MASTER_PORT={topo.master_port}"
    unreachable = (
        f"NODE_RANK={topo.node_rank}: could not reach node 0 at {where} within "
        f"RDZV_TIMEOUT={topo.rdzv_timeout} s: check that MASTER_ADDR is node 0's address as this node "
        "sees it, that node 0's launcher is running with the same MASTER_PORT, and that no "
        "firewall blocks the port"
    )
    deadline = time.monotonic() + topo.rdzv_timeout
    if not wait_for_port(topo.master_addr, topo.master_port, deadline):
        raise UserError(unreachable)
    try:
        store = TCPStore(
            topo.master_addr, topo.master_port, is_master=False, timeout=_timeout(deadline - time.monotonic())
        )
        slot = store.add(f"{PREFIX}/arrivals", 1)
        store.set(f"{PREFIX}/arrival/{slot}", json.dumps(info))
    except (RuntimeError, OSError, TimeoutError):
        raise UserError(unreachable) from None
    if slot >= topo.nnodes:
        raise UserError(
            f"NODE_RANK={topo.node_rank}: {slot + 1} launchers reached node 0 for NNODES="
            f"{topo.nnodes}: set NNODES to the number of nodes, the same on every node"
        )
    try:
        store.wait([f"{PREFIX}/verdict/{slot}"], _timeout(deadline - time.monotonic()))
        verdict = json.loads(store.get(f"{PREFIX}/verdict/{slot}"))
        store.set(f"{PREFIX}/ack/{slot}", "1")
    except (RuntimeError, TimeoutError):
        raise UserError(
            f"NODE_RANK={topo.node_rank}: node 0 at {where} did not answer within RDZV_TIMEOUT="
            f"{topo.rdzv_timeout} s: it is waiting for other nodes (is NNODES the same on every "
            "node?), or it stopped; see node 0's output"
        ) from None
    del store
    if "error" in verdict:
        origin = "node 0 stopped the job: " if verdict.get("from_node_0") else ""
        raise UserError(f"{origin}{verdict['error']}")
    return tuple(verdict["overrides"])


def wait_for_port(host: str, port: int, deadline: float) -> bool:
    """Whether something accepts connections at host:port before `deadline` (time.monotonic()).

    A plain socket, tried every half second: torch's TCPStore client would wait too, but logs a C++
    stack trace at every failed try. A MASTER_ADDR that does not resolve fails at once.
    """
    while True:
        try:
            with socket.create_connection((host, port), timeout=2):
                return True
        except socket.gaierror:
            raise UserError(
                f"MASTER_ADDR={host}: this node cannot resolve that name: set MASTER_ADDR to node "
                "0's IP address or a hostname every node resolves"
            ) from None
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)


def mismatch(mine: dict[str, Any], other: dict[str, Any], arrived: dict[int, dict[str, Any]]) -> str:
    """The first way node `other` disagrees with node 0 (`mine`) or with the nodes already arrived."""
    rank, host = other["node_rank"], other["host"]
    node = f"node {rank} ({host})"
    if other["nnodes"] != mine["nnodes"]:
        return (
            f"NNODES differs between nodes: node 0 ({mine['host']}) has NNODES={mine['nnodes']}, {node} has "
            f"NNODES={other['nnodes']}: set the same NNODES on every node"
        )
    if rank in arrived:
        return (
            f"NODE_RANK={rank} is set on two nodes ({arrived[rank]['host']} and {host}): give every node "
            f"its own NODE_RANK from 0 to NNODES-1"
        )
    if other["nproc_per_node"] != mine["nproc_per_node"]:
        return (
            f"NPROC_PER_NODE differs between nodes: node 0 runs {mine['nproc_per_node']} ranks, {node} "
            f"runs {other['nproc_per_node']}: set NPROC_PER_NODE (or give every node the same GPUs)"
        )
    if other["fresh"] != mine["fresh"]:
        return f"--fresh is given on {'node 0' if mine['fresh'] else node} only: pass it on every node or on none"
    keys = sorted(set(mine["config"]) ^ set(other["config"]))
    keys += sorted(
        k for k in set(mine["config"]) & set(other["config"]) if mine["config"][k] != other["config"][k]
    )
    if keys:
        return (
            f"the config differs between node 0 and {node} in {', '.join(keys)}: launch every node with the "
            "same CONFIG and key=value overrides"
        )
    versions = [
        f"{name} {mine['versions'][name]} vs {other['versions'].get(name)}"
        for name in mine["versions"]
        if mine["versions"][name] != other["versions"].get(name)
    ]
    if versions:
        return f"package versions differ between node 0 and {node} ({'; '.join(versions)}): install the same on every node"
    return ""
