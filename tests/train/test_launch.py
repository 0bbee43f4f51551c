"""The torchrun command is data: assert the exact argv and topology without launching anything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arpo_train_sft.train.launch import torchrun_command, training_env
from arpo_train_sft.train.topology import Topology

from ..conftest import REPO


def test_torchrun_command_is_exact_and_keeps_overrides_whole():
    topo = Topology(nproc_per_node=8, nnodes=2, node_rank=1, master_addr="10.1.2.3", master_port=29999)
    cmd = torchrun_command(
        Path("yaml/sft_config.yaml"), ("learning_rate=5e-6", "run_name=two words"), topo, "/venv/bin/python"
    )
    assert cmd == [
        "/venv/bin/python",
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--node_rank",
        "1",
        "--nproc_per_node",
        "8",
        "--master_addr",
        "10.1.2.3",
        "--master_port",
        "29999",
        "--rdzv_conf",
        "timeout=600",
        "--shutdown_timeout",
        "300",
        "-m",
        "arpo_train_sft.entry",
        "yaml/sft_config.yaml",
        "learning_rate=5e-6",
        "run_name=two words",
    ]


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


LAUNCHER = """
import sys
from pathlib import Path
from arpo_train_sft.train.launch import run_teed
sys.exit(run_teed([sys.executable, "-c", sys.argv[1]], {}, Path(sys.argv[2])))
"""
# Stands in for torchrun: prints a numbered line every 0.1 s, and writes a file when SIGTERM reaches it.
CHILD = """
import signal, sys, time
from pathlib import Path
signal.signal(signal.SIGTERM, lambda *_: (Path(sys.argv[1]).write_text("SIGTERM"), sys.exit(0)))
for i in range(int(sys.argv[2])):
    print(f"line {i}", flush=True)
    time.sleep(0.1)
"""


def start_launcher(tmp_path: Path, lines: int) -> subprocess.Popen:
    child = f"import sys; sys.argv = ['child', {str(tmp_path / 'got')!r}, '{lines}']\n{CHILD}"
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, child, str(tmp_path / "run.log")],
        stdout=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_a_terminal_that_goes_away_stops_nothing_and_the_log_gets_everything(tmp_path: Path):
    launcher = start_launcher(tmp_path, lines=30)
    assert launcher.stdout.readline().startswith(b"line 0")
    launcher.stdout.close()  # the terminal is gone ...
    os.killpg(launcher.pid, signal.SIGHUP)  # ... and hangs up its session
    assert launcher.wait(timeout=60) == 0
    log = (tmp_path / "run.log").read_text().splitlines()
    assert log[-1] == "line 29" and len([line for line in log if line.startswith("line ")]) == 30


def test_the_child_gets_sigterm_when_the_launcher_is_killed(tmp_path: Path):
    launcher = start_launcher(tmp_path, lines=600)
    assert launcher.stdout.readline().startswith(b"line 0")
    launcher.kill()  # SIGKILL: no handler of ours runs
    launcher.wait()
    deadline = time.monotonic() + 20
    while not (tmp_path / "got").exists():
        assert time.monotonic() < deadline, "the child never got SIGTERM"
        time.sleep(0.1)
    assert (tmp_path / "got").read_text() == "SIGTERM"


@pytest.mark.parametrize(
    "said",
    [
        b"gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:1457.",
        b"gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:41128: Connection reset by peer.",
        b"NCCL error: remote process exited or there was a network error",
    ],
)
def test_a_peer_that_went_away_is_named_among_the_failure_lines(tmp_path: Path, said: bytes):
    from arpo_train_sft.train.launch import failure_lines

    text = b"[rank0]: RuntimeError: " + said + b"\n  rank      : 0 (local_rank: 0)\n  exitcode  : 1\n"
    lines = failure_lines(text, tmp_path)
    assert lines[0] == "rank 0 failed (exit code 1)"
    assert lines[1].startswith("a rank on another node went away first (its connection closed)")


# One of node 1's ranks at an agreed SIGTERM stop: its node's local rank 0, not global rank 0, so it leaves
# no note in output_dir (a node-local output_dir would never get global rank 0's there either).
RANK_ON_NODE_1 = """
import sys
from transformers import TrainerControl, TrainerState, TrainingArguments
from arpo_train_sft.rank.preempt import SaveOnSigterm

args = TrainingArguments(output_dir=sys.argv[1], report_to="none", use_cpu=True)
state = TrainerState(global_step=5, max_steps=40, is_world_process_zero=False, is_local_process_zero=True)
callback = SaveOnSigterm()
callback.requested = True
callback.on_step_end(args, state, TrainerControl())
callback.on_save(args, state, TrainerControl())
"""


def test_a_node_that_cannot_see_rank_0s_note_still_exits_143(in_checkout, tmp_path, monkeypatch, capsys):
    from arpo_train_sft.checkpoint.stopped import DIR_ENV, NOTE
    from arpo_train_sft.cli import main
    from arpo_train_sft.errors import EXIT_PREEMPTED
    from arpo_train_sft.train import launch

    out, seen = tmp_path / "out", []

    def torchrun_on_node_1(cmd, env, log_path, tail=None, started=None, notes=(), quiet_from=b""):
        seen.append(Path(env[DIR_ENV]))
        return subprocess.run([sys.executable, "-c", RANK_ON_NODE_1, str(out)], env=env).returncode

    monkeypatch.setattr(launch, "run_teed", torchrun_on_node_1)
    assert main(["train", "yaml/demo_cpu.yaml", f"output_dir={out}", "--skip-preflight"]) == EXIT_PREEMPTED
    assert not (out / NOTE).exists()
    said = capsys.readouterr().out
    assert f"stopped by SIGTERM at step 5 of 40 after saving {out}/checkpoint-5; the same command" in said
    assert not seen[0].exists()  # the launcher's own directory is removed
