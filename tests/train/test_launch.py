"""The torchrun command is data: assert the exact argv and topology without launching anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from arpo_train_sft.errors import UserError
from arpo_train_sft.train.launch import torchrun_command, training_env
from arpo_train_sft.train.topology import (
    CPU_RANKS,
    DEFAULT_MULTINODE_PORT,
    Topology,
    free_port,
    topology_from_env,
)


def test_torchrun_command_is_exact_and_keeps_overrides_whole():
    topo = Topology(nproc_per_node=8, nnodes=2, node_rank=1, master_addr="10.1.2.3", master_port=29999)
    cmd = torchrun_command(
        Path("yaml/sft_config.yaml"), ("learning_rate=5e-6", "run_name=two words"), topo, "/venv/bin/python"
    )
    assert cmd == [
        "/venv/bin/python", "-m", "torch.distributed.run",
        "--nnodes", "2", "--node_rank", "1", "--nproc_per_node", "8",
        "--master_addr", "10.1.2.3", "--master_port", "29999", "--rdzv_conf", "timeout=600",
        "--shutdown_timeout", "900",
        "-m", "arpo_train_sft.entry",
        "yaml/sft_config.yaml", "learning_rate=5e-6", "run_name=two words",
    ]  # fmt: skip


def test_single_node_defaults_use_every_gpu_and_a_free_port():
    topo = topology_from_env({}, gpus=4)
    assert (topo.nproc_per_node, topo.nnodes, topo.node_rank, topo.master_addr) == (4, 1, 0, "127.0.0.1")
    assert 0 < topo.master_port < 65536


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
    assert topology_from_env({**env, "RDZV_TIMEOUT": "30"}, gpus=8).rdzv_timeout == 30


def test_multinode_uses_a_fixed_port_every_node_agrees_on():
    topo = topology_from_env({"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "node0"}, gpus=8)
    assert topo.master_port == DEFAULT_MULTINODE_PORT


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NPROC_PER_NODE": "eight"}, "NPROC_PER_NODE='eight': expected a whole number"),
        ({"NPROC_PER_NODE": "0"}, "NPROC_PER_NODE must be at least 1"),
        ({"NNODES": "2", "NODE_RANK": "2", "MASTER_ADDR": "n0"}, "NODE_RANK=2 must be below NNODES=2"),
        ({"NNODES": "2"}, "set MASTER_ADDR to the address of node 0"),
    ],
)
def test_bad_topology_is_a_user_error(env: dict[str, str], message: str):
    with pytest.raises(UserError) as err:
        topology_from_env(env, gpus=8)
    assert any(message in line for line in err.value.problems)


def test_free_port_is_bindable():
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_training_env_keeps_user_settings_and_adds_gpu_allocator_hints():
    env = training_env({"PYTORCH_CUDA_ALLOC_CONF": "mine"}, on_cpu=False)
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "mine"
    assert env["TORCH_NCCL_AVOID_RECORD_STREAMS"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert "TORCH_NCCL_AVOID_RECORD_STREAMS" not in training_env({}, on_cpu=True)


def test_every_started_process_finds_this_environments_tools_first():
    import os
    import sys
    from pathlib import Path

    from arpo_train_sft.train.launch import own_bin_first, training_env

    own = str(Path(sys.executable).parent)
    env = training_env({"PATH": "/usr/bin:/bin"}, on_cpu=True)
    assert env["PATH"].split(os.pathsep) == [own, "/usr/bin", "/bin"]
    assert own_bin_first(env)["PATH"] == env["PATH"]  # not added twice
    assert own_bin_first({})["PATH"] == own
