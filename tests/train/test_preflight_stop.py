"""Preflight's stop_timeout row: the checkpoint SIGTERM saves, the time to write it, ARPO_SFT_STOP_TIMEOUT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arpo_train_sft.config import RunConfig, load_run_config
from arpo_train_sft.train.estimate.terms import read_setup
from arpo_train_sft.train.preflight import report
from arpo_train_sft.train.preflight.rows import OK, WARN, Gpu, Plan
from arpo_train_sft.train.preflight.sizes import checkpoint_bytes
from arpo_train_sft.train.preflight.stop import check_stop_timeout

from ..conftest import REPO

EIGHT_H100 = [Gpu("NVIDIA H100 80GB HBM3", 79.2, (9, 0))] * 8
TWO_NODES = {"NNODES": "2", "NODE_RANK": "0", "MASTER_ADDR": "10.0.0.1"}


@pytest.fixture
def presets(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(REPO)  # the presets name their DeepSpeed JSON relative to the repo root
    return REPO / "yaml"


def row(config: str, env: dict[str, str], overrides: tuple[str, ...] = ()):
    cfg = load_run_config(Path(config), list(overrides))
    [found] = check_stop_timeout(Plan(cfg=cfg, gpus=EIGHT_H100, env=env))
    return found


def test_14b_on_one_node_saves_within_the_default_timeout(presets):
    found = row("yaml/qwen2.5-14b.yaml", {})
    assert found.status == OK
    assert found.found == (
        "checkpoint on SIGTERM ~207 GB (14 bytes/param x 14.77B params: 16-bit weights + fp32 master weights, "
        "Adam m, v), written in ~207 s at an assumed 1 GB/s per node, + 60 s to finish the step: within "
        "ARPO_SFT_STOP_TIMEOUT=300 s"
    )


def test_a_timeout_shorter_than_the_save_warns_with_the_value_to_set(presets, capsys):
    found = row("yaml/qwen2.5-14b.yaml", {"ARPO_SFT_STOP_TIMEOUT": "120"})
    assert found.status == WARN
    assert "~207 GB" in found.found and "1 GB/s per node" in found.found
    assert found.found.endswith(
        "= ~267 s, longer than ARPO_SFT_STOP_TIMEOUT=120 s: torchrun would kill the ranks mid-save"
    )
    assert found.fix == "set ARPO_SFT_STOP_TIMEOUT=300 (seconds) on every node, more for a slower disk"
    assert report([found], as_json=False, title="t") == []  # a warning: the launch goes on


def test_more_nodes_share_the_write_and_node_0_writes_the_most(presets):
    found = row("yaml/qwen2.5-14b.yaml", {**TWO_NODES, "ARPO_SFT_STOP_TIMEOUT": "120"})
    # rank 0's 2 bytes/param of model.safetensors, and half of the 12 of optimizer state: 8 x 14.77B
    assert "node 0 writes ~118 GB of it in ~118 s" in found.found
    assert found.fix.startswith("set ARPO_SFT_STOP_TIMEOUT=180 ")


def test_the_demo_model_saves_in_seconds(presets):
    found = row("yaml/demo_cpu.yaml", {"ARPO_SFT_STOP_TIMEOUT": "5"})
    assert (found.status, found.found) == (
        OK,
        "ARPO_SFT_STOP_TIMEOUT=5 s; the tiny demo model saves in seconds",
    )


def test_a_bad_topology_is_left_to_its_own_row(presets):
    assert (
        row("yaml/qwen2.5-14b.yaml", {"ARPO_SFT_STOP_TIMEOUT": "soon"}).found
        == "not checked: see the topology row"
    )


@pytest.mark.parametrize(
    ("stage", "precision", "expected"),
    [
        (3, {"bf16": True}, (2, 12)),  # model.safetensors; ZeRO-3's module states hold no weights
        (2, {"bf16": True}, (4, 12)),  # + DeepSpeed's module states: 16 in all
        (2, {}, (8, 12)),  # fp32 weights
        (0, {"fp16": True}, (16, 0)),  # ZeRO-0: rank 0 writes the optimizer state too
        (None, {}, (16, 0)),  # no DeepSpeed
    ],
)
def test_bytes_per_parameter_follow_the_precision_and_the_zero_stage(tmp_path, stage, precision, expected):
    values = {"model_name_or_path": "Qwen/Qwen2.5-7B-Instruct", **precision}
    if stage is not None:
        (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": stage}}))
        values["deepspeed"] = str(tmp_path / "ds.json")
    setup = read_setup(RunConfig(path=tmp_path / "x.yaml", overrides=(), values=values))
    assert checkpoint_bytes(setup) == expected
