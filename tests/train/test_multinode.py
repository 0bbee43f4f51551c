"""Two "nodes" on one machine: two launchers with NNODES=2, NODE_RANK=0/1, one CPU rank each, loopback.

One job, relaunched three times, as a preempted multi-node run lives: it trains to the end (while node
0's terminal goes away) and matches one node with two ranks; relaunched, it resumes together and SIGTERM
makes it save and stop (DataLoader workers included) with exit 143 on both nodes; relaunched again, it
resumes from that save, and killing one node ends the other.
Then the bad input a multi-node launch can get, each named in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from arpo_train_sft.checkpoint.scan import scan
from arpo_train_sft.errors import EXIT_PREEMPTED, EXIT_USER_ERROR
from arpo_train_sft.train.topology import free_port

from ..conftest import SHORT_RUN, ZERO3, kill_tree, run_env

# A dead node must end the other this fast: gloo sees the closed connection, the heartbeat backs it up.
KILL_BOUND_S = 120
HEARTBEAT_S = 30
WORKERS = "dataloader_num_workers=2"


def launch(
    checkout: Path,
    output_dir: Path,
    node: int,
    port: int,
    max_steps: int,
    *args: str,
    nnodes: int = 2,
    stdout=None,
    preflight: bool = False,
    **env: str,
) -> subprocess.Popen:
    """One node's `bash sft_train.sh`, in its own session as a node's shell would be. Only node 0's first
    launch runs preflight: it costs a CPU-bound child per launch and is not what these runs test."""
    skip = () if preflight else ("--skip-preflight",)
    command = [
        "bash",
        "sft_train.sh",
        "yaml/demo_cpu.yaml",
        f"deepspeed=examples/deepspeed/{ZERO3}",
        f"max_steps={max_steps}",
        *SHORT_RUN,
        f"output_dir={output_dir}",
        *args,
        *skip,
    ]
    # OMP_NUM_THREADS=1: torchrun sets it itself only for 2+ ranks per node, as the reference had; left to
    # its default here, each rank's matmuls split over every core and sum in another order (CI, stop 14:
    # k_proj.bias off by 5e-8 after two steps).
    env = run_env(
        **{
            "OMP_NUM_THREADS": "1",
            "NPROC_PER_NODE": "1",
            "NNODES": str(nnodes),
            "NODE_RANK": str(node),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RDZV_TIMEOUT": "180",
            "ARPO_SFT_HEARTBEAT_TIMEOUT": str(HEARTBEAT_S),
            **env,
        }
    )
    path = output_dir.parent / f"{output_dir.name}.node{node}.{time.monotonic_ns()}.out"
    with path.open("w") as out:
        proc = subprocess.Popen(
            command,
            cwd=checkout,
            env=env,
            stdout=stdout or out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    proc.out_path = path  # type: ignore[attr-defined]
    return proc


def output(proc: subprocess.Popen) -> str:
    """What the node's launcher printed (empty for node 0 of the first launch: its stdout was a pipe)."""
    return proc.out_path.read_text()  # type: ignore[attr-defined]


def steps(output_dir: Path) -> list[int]:
    path = output_dir / "trainer_log.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [json.loads(line)["current_steps"] for line in lines if '"loss"' in line]


def wait_for_steps(output_dir: Path, count: int, procs: list[subprocess.Popen], limit: float = 600) -> None:
    """Until trainer_log.jsonl holds `count` logged steps (both nodes still running)."""
    deadline = time.monotonic() + limit
    while len(steps(output_dir)) < count:
        assert all(p.poll() is None for p in procs), [output(p)[-3000:] for p in procs]
        assert time.monotonic() < deadline
        time.sleep(1)


def finish(procs: list[subprocess.Popen], limit: float = 900) -> list[int]:
    return [p.wait(timeout=limit) for p in procs]


def assert_same_weights(ours: Path, reference: Path) -> None:
    """model.safetensors in both directories: the same tensors, within fp32 reduction-order noise."""
    import torch
    from safetensors.torch import load_file

    weights, expected = load_file(ours / "model.safetensors"), load_file(reference / "model.safetensors")
    assert weights.keys() == expected.keys()
    for name, tensor in weights.items():
        assert torch.allclose(tensor, expected[name], rtol=1e-5, atol=1e-6), name


@pytest.fixture(scope="module")
def job(checkout: Path, zero3_reference: Path) -> dict:
    output_dir = checkout / "checkpoints" / "two-nodes"
    record: dict = {"output_dir": output_dir, "reference": zero3_reference}
    output_dir.parent.mkdir(parents=True, exist_ok=True)

    # 1. To the end, as the reference did; node 0's terminal (a pipe here) closes and hangs up mid-way.
    port = free_port()
    node0 = launch(checkout, output_dir, 0, port, 2, stdout=subprocess.PIPE, preflight=True)
    node1 = launch(checkout, output_dir, 1, port, 2)
    lines = iter(node0.stdout)
    assert any(line.startswith("[arpo-sft] log: ") for line in lines)
    next(lines)  # torchrun's own first line: the launcher is draining its output now
    node0.stdout.close()
    os.killpg(node0.pid, signal.SIGHUP)
    record["first"] = (finish([node0, node1]), output(node1))

    # 2. Relaunched for longer: resumes together from checkpoint-2; SIGTERM to node 0 once it trains on.
    # With DataLoader workers: torchrun's killpg reaches them too, and they must live until the save.
    port = free_port()
    pair = [launch(checkout, output_dir, n, port, 40, WORKERS) for n in (0, 1)]
    wait_for_steps(output_dir, 5, pair)
    os.kill(pair[0].pid, signal.SIGTERM)
    record["stopped"] = (finish(pair, limit=300), [output(p) for p in pair])
    record["stopped_note"] = json.loads((output_dir / "stopped.json").read_text())

    # 3. Relaunched again: resumes from that save (skipping batches, with workers); then node 1 dies.
    port = free_port()
    pair = [launch(checkout, output_dir, n, port, 40, WORKERS) for n in (0, 1)]
    record["logged_before_third"] = len(steps(output_dir))
    wait_for_steps(output_dir, record["logged_before_third"] + 2, pair)  # this launch has trained on
    kill_tree(pair[1].pid)  # node 1: its launcher, torchrun, rank and watch at once
    started = time.monotonic()
    code = pair[0].wait(timeout=KILL_BOUND_S + HEARTBEAT_S)
    record["killed"] = (code, time.monotonic() - started, output(pair[0]))
    return record


@pytest.mark.integration
def test_two_nodes_train_to_the_end_and_match_one_node_with_two_ranks(job):
    (codes, node1_out), output_dir = job["first"], job["output_dir"]
    assert codes == [0, 0], node1_out[-3000:]
    assert_same_weights(output_dir, job["reference"])
    assert "[arpo-sft] node 0 decided the resume for the job: none, start at step 0" in node1_out
    # one log per node, each headed by its own torchrun command; shared outputs written once
    node0_log, node1_log = ((output_dir / n).read_text() for n in ("training.log", "training.node1.log"))
    assert steps(output_dir)[:2] == [1, 2]  # rank 0 alone writes trainer_log.jsonl
    assert "--nnodes 2 --node_rank 0 " in node0_log.splitlines()[1]
    assert "--nnodes 2 --node_rank 1 " in node1_log.splitlines()[1]


@pytest.mark.integration
def test_a_closed_terminal_does_not_stop_training(job):
    (codes, _), output_dir = job["first"], job["output_dir"]
    assert codes[0] == 0  # node 0's launcher got SIGHUP and lost its stdout mid-run
    log = (output_dir / "training.log").read_text()
    assert "***** train metrics *****" in log  # written after the terminal was gone
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 2


@pytest.mark.integration
def test_the_relaunch_resumes_together_and_sigterm_saves_before_stopping(job):
    (codes, outs), output_dir = job["stopped"], job["output_dir"]
    assert codes == [EXIT_PREEMPTED, EXIT_PREEMPTED], [o[-3000:] for o in outs]
    assert f"[arpo-sft] resuming from {output_dir}/checkpoint-2\n" in outs[0]
    assert f"[arpo-sft] node 0 decided the resume for the job: {output_dir}/checkpoint-2\n" in outs[1]
    step = job["stopped_note"]["step"]
    assert step >= 4  # SIGTERM came after the 5th logged step, i.e. at step 4 or later of 40
    checkpoint = output_dir / f"checkpoint-{step}"
    assert not scan(checkpoint).problems
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == step
    for out in outs:
        assert (
            f"stopped by SIGTERM at step {step} of 40 after saving {checkpoint}; the same command resumes"
            in out
        )


@pytest.mark.integration
def test_the_next_relaunch_resumes_from_the_sigterm_checkpoint_and_a_dead_node_ends_the_other(job):
    code, seconds, out = job["killed"]
    step = job["stopped_note"]["step"]
    assert f"[arpo-sft] resuming from {job['output_dir']}/checkpoint-{step}\n" in out
    third = steps(job["output_dir"])[job["logged_before_third"] :]
    assert third[:2] == [step + 1, step + 2]  # it went on from the step SIGTERM saved, not from the start
    assert code not in (0, EXIT_PREEMPTED) and seconds < KILL_BOUND_S
    assert ("a rank on another node went away first" in out) or ("has sent no heartbeat" in out), out[-3000:]


def bad_launch(checkout: Path, tmp_path: Path, node: int, port: int, nnodes: int = 2, **env: str):
    return launch(checkout, tmp_path / "out", node, port, 2, nnodes=nnodes, **env)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NNODES": "0"}, "arpo-sft: error: NNODES=0: must be at least 1"),
        ({"NNODES": "2", "NODE_RANK": "2"}, "arpo-sft: error: NODE_RANK=2 must be below NNODES=2"),
    ],
)
def test_impossible_node_numbers_are_named_before_anything_starts(checkout, tmp_path, env, message):
    result = subprocess.run(
        ["bash", "sft_train.sh", "yaml/demo_cpu.yaml", f"output_dir={tmp_path}", "--skip-preflight"],
        cwd=checkout,
        env=run_env(MASTER_ADDR="127.0.0.1", **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == EXIT_USER_ERROR and message in result.stderr.splitlines()[0], result.stderr


def test_mismatched_nnodes_stops_both_nodes_naming_it(checkout, tmp_path):
    port = free_port()
    started = time.monotonic()
    pair = [
        bad_launch(checkout, tmp_path, 0, port, nnodes=2),
        bad_launch(checkout, tmp_path, 1, port, nnodes=3),
    ]
    assert finish(pair, limit=120) == [EXIT_USER_ERROR, EXIT_USER_ERROR]
    assert time.monotonic() - started < 60
    for proc in pair:
        assert "arpo-sft: error: NNODES differs between nodes: node 0" in output(proc)
    assert not (tmp_path / "out").exists()  # nothing was started or moved


def test_an_unreachable_master_is_named_within_rdzv_timeout(checkout, tmp_path):
    port = free_port()
    started = time.monotonic()
    node1 = bad_launch(checkout, tmp_path, 1, port, RDZV_TIMEOUT="5")
    assert finish([node1], limit=120) == [EXIT_USER_ERROR]
    assert time.monotonic() - started < 60
    assert (
        f"arpo-sft: error: NODE_RANK=1: could not reach node 0 at MASTER_ADDR=127.0.0.1 MASTER_PORT={port} "
        "within RDZV_TIMEOUT=5 s"
    ) in output(node1)


def test_a_taken_master_port_is_named(checkout, tmp_path):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        node0 = bad_launch(checkout, tmp_path, 0, port)
        assert finish([node0], limit=120) == [EXIT_USER_ERROR]
    assert (
        f"arpo-sft: error: MASTER_PORT={port}: node 0 cannot listen there (it is already in use)"
        in output(node0)
    )


@pytest.mark.integration
def test_a_two_node_checkpoint_is_what_one_node_with_two_ranks_saves(job):
    """So it resumes on one node with one rank as tests/checkpoint/test_resume_world.py resumes the one-node
    run's checkpoint-1 (universal conversion, the same rows): the same files, ZeRO stage and world size,
    and the same weights."""
    ours, reference = job["output_dir"] / "checkpoint-1", job["reference"] / "checkpoint-1"
    found, expected = scan(ours), scan(reference)
    assert not found.problems and (found.stage, found.world) == (expected.stage, expected.world) == (3, 2)
    assert [f.relative_to(ours) for f in found.files] == [f.relative_to(reference) for f in expected.files]
    assert_same_weights(ours, reference)
