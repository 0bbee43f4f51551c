"""Where a node sits in the job, read from the environment: static and c10d, and every bad value named."""

from __future__ import annotations

import socket

import pytest

from arpo_train_sft.errors import UserError
from arpo_train_sft.train.topology import (
    CPU_RANKS,
    DEFAULT_MULTINODE_PORT,
    DEFAULT_RDZV_TIMEOUT_S,
    Topology,
    free_port,
    topology_from_env,
)


def test_single_node_defaults_use_every_gpu_and_a_free_port():
    topo = topology_from_env({}, gpus=4)
    assert (topo.nproc_per_node, topo.nnodes, topo.node_rank, topo.master_addr) == (4, 1, 0, "127.0.0.1")
    assert 0 < topo.master_port < 65536
    assert topo.first_node and topo.log_name == "training.log"
    assert "--rdzv_conf" not in topo.torchrun_args()  # one node waits for nobody


def test_cpu_host_defaults_to_two_ranks():
    assert topology_from_env({}, gpus=0).nproc_per_node == CPU_RANKS == 2


def test_environment_overrides_win():
    env = {
        "NPROC_PER_NODE": "3",
        "NNODES": "4",
        "NODE_RANK": "2",
        "MASTER_ADDR": "node0",
        "MASTER_PORT": "1234",
    }
    assert topology_from_env(env, gpus=8) == Topology(3, 4, 2, "node0", 1234)
    topo = topology_from_env({**env, "RDZV_TIMEOUT": "30", "ARPO_SFT_HEARTBEAT_TIMEOUT": "7"}, gpus=8)
    assert (topo.rdzv_timeout, topo.heartbeat_timeout) == (30, 7)
    assert topo.torchrun_args()[-2:] == ["--rdzv_conf", "timeout=30"]
    assert not topo.first_node and topo.log_name == "training.node2.log"
    assert topo.store_address == ("node0", 1234)


def test_multinode_uses_a_fixed_port_every_node_agrees_on():
    topo = topology_from_env({"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "node0"}, gpus=8)
    assert topo.master_port == DEFAULT_MULTINODE_PORT
    assert topo.rdzv_timeout == DEFAULT_RDZV_TIMEOUT_S == 600


def test_c10d_rendezvous_from_the_environment():
    env = {"RDZV_ENDPOINT": "head:29400", "RDZV_ID": "job7", "MIN_NNODES": "2", "MAX_NNODES": "4"}
    topo = topology_from_env(env, gpus=8)
    assert topo.elastic and not topo.first_node
    assert topo.torchrun_args() == [
        "--nnodes",
        "2:4",
        "--nproc_per_node",
        "8",
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        "head:29400",
        "--rdzv_id",
        "job7",
        "--rdzv_conf",
        "join_timeout=600",
    ]
    assert topo.store_address == ("head", 29400)
    assert topo.log_name == f"training.{socket.gethostname()}.log"
    # NNODES alone is a fixed size; SLURM's job id stands in for RDZV_ID.
    fixed = topology_from_env({"RDZV_ENDPOINT": "head:29400", "NNODES": "3", "SLURM_JOB_ID": "991"}, gpus=8)
    assert fixed.torchrun_args()[:2] == ["--nnodes", "3:3"] and fixed.rdzv_id == "991"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NPROC_PER_NODE": "eight"}, "NPROC_PER_NODE='eight': expected a whole number"),
        ({"NPROC_PER_NODE": "0"}, "NPROC_PER_NODE=0: must be at least 1"),
        ({"NPROC_PER_NODE": "9"}, "NPROC_PER_NODE=9: must be at most 8 (one rank per GPU, 8 here)"),
        ({"NNODES": "0"}, "NNODES=0: must be at least 1"),
        ({"NNODES": "-1"}, "NNODES=-1: must be at least 1; expected a whole number from 1 to 100,000"),
        ({"NNODES": "2²"}, "NNODES='2²': expected a whole number from 1 to 100,000, in ASCII digits"),
        ({"NODE_RANK": "١"}, "NODE_RANK='١': expected a whole number"),
        ({"NPROC_PER_NODE": "²"}, "NPROC_PER_NODE='²': expected a whole number"),
        ({"MASTER_PORT": "8²"}, "MASTER_PORT='8²': expected a whole number from 1 to 65,535"),
        ({"RDZV_ENDPOINT": "head:2²", "RDZV_ID": "j"}, "RDZV_ENDPOINT='head:2²': expected HOST:PORT"),
        ({"NNODES": "1" * 5000}, "NNODES='111"),
        ({"NNODES": "2", "NODE_RANK": "2", "MASTER_ADDR": "n0"}, "NODE_RANK=2 must be below NNODES=2"),
        ({"NNODES": "2"}, "set MASTER_ADDR to the address of node 0"),
        ({"MASTER_PORT": "99999"}, "MASTER_PORT=99999: must be at most 65,535"),
        ({"RDZV_TIMEOUT": "0"}, "RDZV_TIMEOUT=0: must be at least 1"),
        ({"ARPO_SFT_HEARTBEAT_TIMEOUT": "soon"}, "ARPO_SFT_HEARTBEAT_TIMEOUT='soon'"),
        ({"RDZV_ID": "j"}, "RDZV_ID is set but RDZV_ENDPOINT is not"),
        ({"RDZV_ENDPOINT": "head"}, "RDZV_ENDPOINT='head': expected HOST:PORT"),
        ({"RDZV_ENDPOINT": "head:1"}, "RDZV_ID is not"),
        (
            {"RDZV_ENDPOINT": "head:1", "RDZV_ID": "j", "NODE_RANK": "1"},
            "NODE_RANK is set with RDZV_ENDPOINT",
        ),
        (
            {"RDZV_ENDPOINT": "h:1", "RDZV_ID": "j", "MIN_NNODES": "3", "MAX_NNODES": "2"},
            "MIN_NNODES=3, MAX_NNODES=2",
        ),
    ],
)
def test_bad_topology_is_a_user_error_naming_the_variable(env: dict[str, str], message: str):
    with pytest.raises(UserError) as err:
        topology_from_env(env, gpus=8)
    assert any(message in line for line in err.value.problems), err.value.problems


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_cpu_ranks_are_bounded_by_the_cores_but_never_below_the_demo():
    with pytest.raises(UserError) as err:
        topology_from_env({"NPROC_PER_NODE": "1000"}, gpus=0, cores=2)
    assert err.value.problems == [
        "NPROC_PER_NODE=1000: must be at most 2 (one rank per CPU core, 2 here); set it lower or unset it"
    ]
    assert topology_from_env({"NPROC_PER_NODE": "2"}, gpus=0, cores=1).nproc_per_node == CPU_RANKS
    assert topology_from_env({"NPROC_PER_NODE": "16"}, gpus=0, cores=16).nproc_per_node == 16
    # A GPU count declared for another machine (preflight --gpus 16) bounds the ranks instead.
    assert topology_from_env({"NPROC_PER_NODE": "16"}, gpus=16, cores=2).nproc_per_node == 16
