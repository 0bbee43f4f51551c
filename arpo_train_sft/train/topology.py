"""Where this node sits in the job, from the environment, and the torchrun flags that say so.

Two ways to form a job, as torchrun has them:

- static: NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT. Every node knows its rank; node 0 hosts the
  rendezvous on MASTER_PORT. Before torchrun the launchers shake hands there (train/handshake.py), so a
  wrong NNODES or an unreachable master is one clear line instead of a hang.
- c10d: RDZV_ENDPOINT (host:port), RDZV_ID, MIN_NNODES/MAX_NNODES (or NNODES). Nodes may start in any
  order and get their ranks from torchrun's rendezvous.

RDZV_TIMEOUT (seconds, default 600, torchrun's own default) bounds every wait for the other nodes.
ARPO_SFT_STOP_TIMEOUT (seconds, default 300) is how long torchrun lets the ranks save after SIGTERM;
ARPO_SFT_HEARTBEAT_TIMEOUT (seconds, default 120) how long a silent node may stay silent (train/watch.py).
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import UserError
from .hardware import cpu_cores
from .values import NODES_MAX, PORT, RANKS_PER_NODE_MAX, SECONDS, Bound, parse_number

# The CPU demo is sized for two ranks: enough to exercise ZeRO-3 sharding on a 2-core machine.
CPU_RANKS = 2
# torchrun's own default: every node of a multi-node job must agree on it, so no random port there.
DEFAULT_MULTINODE_PORT = 29500
# How long any node waits for the others (handshake, torchrun's rendezvous): torchrun's own default.
DEFAULT_RDZV_TIMEOUT_S = 600
# How long torchrun lets the ranks stop after SIGTERM before it kills them: they finish the step, save a
# checkpoint and exit (rank/preempt.py). It also bounds a teardown after a rank crashed: torchrun SIGTERMs
# the others too, and a rank stuck in an NCCL collective with the dead one cannot tell the two apart. Five
# minutes covers a step and a 14B ZeRO-3 checkpoint on a disk writing 1 GB/s; raise it for slower disks.
DEFAULT_STOP_TIMEOUT_S = 300
# How long a node of a multi-node job may send no heartbeat before the others stop (train/watch.py).
DEFAULT_HEARTBEAT_TIMEOUT_S = 120
# The names a user sets; every error about the topology names one of these.
ENV_NAMES = (
    "NPROC_PER_NODE",
    "NNODES",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "RDZV_ENDPOINT",
    "RDZV_ID",
    "MIN_NNODES",
    "MAX_NNODES",
    "RDZV_TIMEOUT",
    "ARPO_SFT_STOP_TIMEOUT",
    "ARPO_SFT_HEARTBEAT_TIMEOUT",
)


@dataclass(frozen=True)
class Topology:
    """torchrun's rendezvous settings for this node. `rdzv_endpoint` set means c10d (node_rank unknown)."""

    nproc_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_MULTINODE_PORT
    rdzv_endpoint: str = ""
    rdzv_id: str = ""
    min_nnodes: int = 0  # c10d only: the job starts once this many nodes joined (0: nnodes)
    rdzv_timeout: int = DEFAULT_RDZV_TIMEOUT_S
    stop_timeout: int = DEFAULT_STOP_TIMEOUT_S
    heartbeat_timeout: int = DEFAULT_HEARTBEAT_TIMEOUT_S

    @property
    def elastic(self) -> bool:
        return bool(self.rdzv_endpoint)

    @property
    def meets(self) -> bool:
        """Whether the launchers meet before torchrun (train/handshake.py): a static job of several nodes."""
        return self.nnodes > 1 and not self.elastic

    @property
    def first_node(self) -> bool:
        """Whether this launcher acts for the job (moves output_dir aside, decides the resume)."""
        return not self.elastic and self.node_rank == 0

    @property
    def store_address(self) -> tuple[str, int]:
        """Where torchrun's rendezvous store listens: node 0's MASTER_PORT, or RDZV_ENDPOINT."""
        if self.elastic:
            host, _, port = self.rdzv_endpoint.rpartition(":")
            return host, int(port)
        return self.master_addr, self.master_port

    @property
    def log_name(self) -> str:
        """This node's log under output_dir: node 0 (or a single node) keeps training.log."""
        if self.elastic:
            return f"training.{socket.gethostname()}.log"
        return "training.log" if self.node_rank == 0 else f"training.node{self.node_rank}.log"

    def torchrun_args(self) -> list[str]:
        """The rendezvous part of the torchrun command."""
        if self.elastic:
            nodes = f"{self.min_nnodes or self.nnodes}:{self.nnodes}"
            return [
                "--nnodes",
                nodes,
                "--nproc_per_node",
                str(self.nproc_per_node),
                "--rdzv_backend",
                "c10d",
                "--rdzv_endpoint",
                self.rdzv_endpoint,
                "--rdzv_id",
                self.rdzv_id,
                "--rdzv_conf",
                f"join_timeout={self.rdzv_timeout}",
            ]
        args = [
            "--nnodes",
            str(self.nnodes),
            "--node_rank",
            str(self.node_rank),
            "--nproc_per_node",
            str(self.nproc_per_node),
            "--master_addr",
            self.master_addr,
            "--master_port",
            str(self.master_port),
        ]
        if self.nnodes > 1:
            args += ["--rdzv_conf", f"timeout={self.rdzv_timeout}"]
        return args


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _int_env(env: Mapping[str, str], name: str, default: int, problems: list[str], bound: Bound) -> int:
    """The variable read by the one numeric reader (train/values.py); `default` when unset or wrong."""
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        return int(parse_number(name, value, bound))
    except UserError as err:
        problems += err.problems
        return default


def topology_from_env(env: Mapping[str, str], gpus: int, cores: int | None = None) -> Topology:
    """Read the variables in ENV_NAMES; fill in what is unset; every problem names its variable.

    A node starts at most one rank per GPU, or with no GPU one per CPU core (`cores`, default: this
    machine's) and never fewer than the CPU demo's CPU_RANKS: `gpus` is the GPUs visible here, or the
    ones `--gpus` declares for another machine.
    """
    problems: list[str] = []
    most = gpus if gpus else min(max(cores or cpu_cores(), CPU_RANKS), RANKS_PER_NODE_MAX)
    per = f"one rank per GPU, {gpus} here" if gpus else f"one rank per CPU core, {most} here"
    nproc = _int_env(env, "NPROC_PER_NODE", gpus or CPU_RANKS, problems, Bound(1, RANKS_PER_NODE_MAX))
    if nproc > most:
        problems.append(f"NPROC_PER_NODE={nproc}: must be at most {most} ({per}); set it lower or unset it")
    nnodes = _int_env(env, "NNODES", 1, problems, Bound(1, NODES_MAX))
    timeout = _int_env(env, "RDZV_TIMEOUT", DEFAULT_RDZV_TIMEOUT_S, problems, SECONDS)
    stop = _int_env(env, "ARPO_SFT_STOP_TIMEOUT", DEFAULT_STOP_TIMEOUT_S, problems, SECONDS)
    heartbeat = _int_env(env, "ARPO_SFT_HEARTBEAT_TIMEOUT", DEFAULT_HEARTBEAT_TIMEOUT_S, problems, SECONDS)
    if env.get("RDZV_ENDPOINT", "").strip():
        topo = _elastic(env, nproc, nnodes, timeout, problems)
    else:
        topo = _static(env, nproc, nnodes, timeout, problems)
    if problems:
        raise UserError(problems)
    return dataclasses.replace(topo, stop_timeout=stop, heartbeat_timeout=heartbeat)


def _static(env: Mapping[str, str], nproc: int, nnodes: int, timeout: int, problems: list[str]) -> Topology:
    node_rank = _int_env(env, "NODE_RANK", 0, problems, Bound(0, NODES_MAX - 1))
    if node_rank >= nnodes:
        problems.append(f"NODE_RANK={node_rank} must be below NNODES={nnodes} (nodes count from 0)")
    if nnodes > 1 and not env.get("MASTER_ADDR"):
        problems.append(f"NNODES={nnodes}: set MASTER_ADDR to the address of node 0 on every node")
    for name in ("MIN_NNODES", "MAX_NNODES", "RDZV_ID"):
        if env.get(name):
            problems.append(
                f"{name} is set but RDZV_ENDPOINT is not: set RDZV_ENDPOINT (c10d) or unset {name}"
            )
    port = _int_env(env, "MASTER_PORT", 0, problems, PORT)
    single_node_port = free_port() if nnodes == 1 else DEFAULT_MULTINODE_PORT
    return Topology(
        nproc_per_node=nproc,
        nnodes=nnodes,
        node_rank=node_rank,
        master_addr=env.get("MASTER_ADDR") or "127.0.0.1",
        master_port=port or single_node_port,
        rdzv_timeout=timeout,
    )


def _elastic(env: Mapping[str, str], nproc: int, nnodes: int, timeout: int, problems: list[str]) -> Topology:
    endpoint = env["RDZV_ENDPOINT"].strip()
    host, _, port = endpoint.rpartition(":")
    try:
        parse_number("RDZV_ENDPOINT port", port, PORT)
    except UserError:
        host = ""
    if not host:
        problems.append(
            f"RDZV_ENDPOINT={endpoint!r}: expected HOST:PORT, PORT from 1 to 65535, e.g. node0:29400"
        )
    rdzv_id = env.get("RDZV_ID", "").strip() or env.get("SLURM_JOB_ID", "").strip()
    if not rdzv_id:
        problems.append(
            "RDZV_ENDPOINT is set but RDZV_ID is not: set the same RDZV_ID (any job name) on every node"
        )
    if env.get("NODE_RANK"):
        problems.append("NODE_RANK is set with RDZV_ENDPOINT: c10d assigns node ranks; unset NODE_RANK")
    most = _int_env(env, "MAX_NNODES", nnodes, problems, Bound(1, NODES_MAX))
    least = _int_env(
        env, "MIN_NNODES", most if env.get("MAX_NNODES") else nnodes, problems, Bound(1, NODES_MAX)
    )
    if least < 1 or least > most:
        problems.append(f"MIN_NNODES={least}, MAX_NNODES={most}: need 1 <= MIN_NNODES <= MAX_NNODES")
    return Topology(
        nproc_per_node=nproc,
        nnodes=most,
        node_rank=0,
        master_addr="",
        master_port=0,
        rdzv_endpoint=endpoint,
        rdzv_id=rdzv_id,
        min_nnodes=least,
        rdzv_timeout=timeout,
    )
