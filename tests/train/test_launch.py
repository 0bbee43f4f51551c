"""The torchrun command is data: assert the exact argv and topology without launching anything."""

from __future__ import annotations

from pathlib import Path

from arpo_train_sft.train.launch import torchrun_command, training_env
from arpo_train_sft.train.topology import Topology


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
