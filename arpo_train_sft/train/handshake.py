"""Before torchrun, the launchers of a static multi-node job meet on MASTER_PORT and agree on one plan.

Node 0 hosts a store (torch's TCPStore) on MASTER_PORT for the seconds this takes. Every other node
connects, says who it is (NODE_RANK, NNODES, NPROC_PER_NODE, the config's keys, the package versions,
the key and rows of the tokenized data it built or reused: a node with another copy of a data file at the
same path would train on other rows and hang at the epoch's end) and waits for node 0's verdict: the job's
one resume decision (the overrides every node hands its ranks, made and carried out by node 0 only once
everyone has arrived) or the problem, which every node reports and exits on. Node 0 closes the store
before it starts torchrun, whose rendezvous then binds the port.

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
from pathlib import Path
from typing import Any

from ..errors import UserError
from .topology import Topology

PREFIX = "arpo-sft/handshake/1"
# After the verdict, how long node 0 waits for each node to confirm it read it before closing the store.
ACK_TIMEOUT_S = 30
_VERSIONED = ("arpo-train-sft", "llamafactory", "torch", "transformers", "deepspeed")


def node_info(topo: Topology, values: dict[str, Any], fresh: bool, data: dict[str, Any]) -> dict[str, Any]:
    """What this node tells node 0: its place in the job, a digest per config key, its versions, and what
    it tokenized (`data_info`)."""
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
        "data": data,
    }


def data_info(values: dict[str, Any], tokenized: tuple[str, ...]) -> dict[str, Any]:
    """What this node hands its ranks (`tokenized`: `tokenized_overrides`' answer): the cache key, or the
    config's tokenized_path, with its rows per split and the inputs the key hashes."""
    from .tokenized import MANIFEST

    if tokenized:
        path = Path(tokenized[0].split("=", 1)[1])
        manifest = json.loads((path.parent / MANIFEST).read_text(encoding="utf-8"))
        return {"path": str(path), **{name: manifest[name] for name in ("key", "rows", "inputs")}}
    written = str(values["tokenized_path"])  # as written: the nodes' working directories may differ
    path = Path(written).absolute()
    return {"key": written, "path": str(path), "rows": _saved_rows(path), "inputs": {}}


def _saved_rows(path: Path) -> dict[str, int]:
    """Rows per split of a dataset saved by `datasets` (no manifest holds them): only the Arrow files'
    batch headers are read, through a memory map; {} when it is not one."""
    import pyarrow as pa

    def rows(split: Path) -> int:
        state = json.loads((split / "state.json").read_text(encoding="utf-8"))
        total = 0
        for item in state["_data_files"]:
            with pa.memory_map(str(split / item["filename"])) as source:
                total += sum(batch.num_rows for batch in pa.ipc.open_stream(source))
        return total

    try:
        if (path / "dataset_dict.json").is_file():
            splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
            return {split: rows(path / split) for split in splits}
        return {"train": rows(path)}
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
        return {}  # LLaMA-Factory says what is wrong with it on every node


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
    return _data_mismatch(mine, other, node)


def _data_mismatch(mine: dict[str, Any], other: dict[str, Any], node: str) -> str:
    """How node `other` tokenized other rows than node 0 (a collective hang at the epoch's end), or ""."""
    from .tokenized.key import DATA_FILE, TOKENIZER, change_reason

    ours, theirs = mine["data"], other["data"]
    if (ours["key"], ours["rows"]) == (theirs["key"], theirs["rows"]):
        return ""
    names = sorted(set(ours["inputs"]) | set(theirs["inputs"]))
    differ = [name for name in names if ours["inputs"].get(name) != theirs["inputs"].get(name)]
    files = [name.removeprefix(DATA_FILE) for name in differ if name.startswith(DATA_FILE)]
    what, why, fix = "its data", "", "give every node the same tokenized data, e.g. on shared storage"
    if files:
        what, fix = ", ".join(files), "give every node the same data file, e.g. on shared storage"
    elif TOKENIZER in differ:
        why, fix = "; the tokenizer files differ", "give every node the same model_name_or_path files"
    elif differ:
        why = f"; {change_reason(ours['inputs'], theirs['inputs'])} (node 0 -> node {other['node_rank']})"
        fix = "install the same packages and arpo-train-sft on every node"
    return (
        f"{node} tokenized {what} into {theirs['path']} ({_rows(theirs['rows'])}), node 0 "
        f"({mine['host']}) into {ours['path']} ({_rows(ours['rows'])}){why}: {fix}"
    )


def _rows(rows: dict[str, int]) -> str:
    return f"{sum(rows.values()):,} rows" if rows else "rows unknown"
