"""Preflight's serving child: each answer is a fresh process's answer, and a crash or hang costs one request."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from arpo_train_sft.train.preflight import server
from arpo_train_sft.train.topology import free_port

from ..conftest import REPO, run_env

ONE_RANK = {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "GROUP_RANK": "0"}
DS_Z3 = str(REPO / "examples" / "deepspeed" / "ds_z3_config.json")
BASE = {
    "stage": "sft",
    "do_train": True,
    "model_name_or_path": "Qwen/Qwen2.5-7B-Instruct",
    "dataset": "arpo_sft_54k",
    "template": "qwen",
    "finetuning_type": "full",
    "output_dir": "saves/x",
}
# In this order on purpose: a request under DeepSpeed ZeRO-3 (which sets transformers' global DeepSpeed
# config and a process group) is followed by requests that must not see what it set up.
REQUESTS = [
    {"values": {**BASE, "deepspeed": DS_Z3}, "parse": {**BASE, "deepspeed": DS_Z3}, "deepspeed": DS_Z3},
    {"values": BASE, "parse": BASE, "deepspeed": None},
    {"values": {**BASE, "learning_rat": 1e-5}, "parse": None, "deepspeed": None},
    {
        "values": {**BASE, "deepspeed": DS_Z3, "gradient_accumulation_steps": 4},
        "parse": {**BASE, "deepspeed": DS_Z3, "gradient_accumulation_steps": 4},
        "deepspeed": DS_Z3,
        "job": {"world_size": 8},
    },
]


def _env() -> dict[str, str]:
    return {**run_env(), **ONE_RANK, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}


@pytest.mark.integration
def test_answers_in_forks_equal_a_fresh_process_each(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    served = [server.ask(_env(), request, 600, fork=True) for request in REQUESTS]
    fresh = [server.ask(_env(), request, 600, fork=False) for request in REQUESTS]
    assert served == fresh
    assert served[1]["llamafactory"] is None and served[1]["deepspeed"] == []
    assert served[2]["keys"] and not served[2]["parsed"]  # the typo'd key is named, nothing parsed
    assert len(server._servers) == 1  # every request above went to the same serving child
    (pid,) = [s.proc.pid for s in server._servers.values()]
    other_test = {**_env(), "PYTEST_CURRENT_TEST": "another test (call)"}  # pytest sets it for every test
    assert server.ask(other_test, REQUESTS[2], 600, fork=True) == served[2]
    assert [s.proc.pid for s in server._servers.values()] == [pid]


@pytest.mark.integration
def test_a_crash_costs_its_own_request_and_a_hang_its_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    env = _env()
    with pytest.raises(server.NoAnswer, match=r"^the check itself crashed \(exit 1\): KeyError: 'values'$"):
        server.ask(env, {"no": "values"}, 600, fork=True)
    (pid,) = [s.proc.pid for s in server._servers.values()]
    assert server.ask(env, REQUESTS[2], 600, fork=True)["keys"]  # the same server answers the next one
    assert [s.proc.pid for s in server._servers.values()] == [pid]
    with pytest.raises(server.NoAnswer, match=r"did not answer in 0\.001 s"):
        server.ask(env, REQUESTS[0], 0.001, fork=True)
    assert not server._servers
    with pytest.raises(ProcessLookupError):  # killed with its group, not left behind
        os.kill(pid, 0)


def test_a_child_that_cannot_start_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    failing = tmp_path / "python"
    failing.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named torch' >&2\nexit 1\n")
    failing.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(failing))
    for fork in (True, False):
        with pytest.raises(server.NoAnswer) as err:
            server.ask(_env(), REQUESTS[2], 60, fork=fork)
        assert (
            str(err.value) == "the check itself crashed (exit 1): ModuleNotFoundError: No module named torch"
        )
