"""bench/gpu_throughput.py off a GPU: its plan, its arithmetic, and a tiny real run on CPU."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_throughput"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_the_plan_starts_with_the_presets_and_changes_one_setting_per_run(bench):
    runs = bench.plan(["7b", "3b"], [15000, 4096], ["sdpa", "fa2"], smoke=False)
    assert runs[0] == bench.Run("7b", 15000) and len(runs) == len(set(runs)) == 16
    presets = [r for r in runs if r == bench.Run(r.model, r.cutoff)]
    assert runs[:4] == presets  # every preset is measured before any variation
    for run in runs:
        base = bench.Run(run.model, run.cutoff)
        changed = [f for f in ("attn", "liger", "checkpointing") if getattr(run, f) != getattr(base, f)]
        assert len(changed) <= 1, run


def test_missing_packages_skip_their_runs(bench, monkeypatch):
    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name: None)
    assert bench.missing_package(bench.Run("7b", 4096)) == "flash-attn is not installed"
    assert bench.missing_package(bench.Run("7b", 4096, attn="sdpa")) == "liger-kernel is not installed"
    assert bench.missing_package(bench.Run("7b", 4096, attn="sdpa", liger=False)) is None


def test_model_flops_match_the_published_parameter_counts(bench):
    # 6 FLOPs per parameter per token: Qwen2.5-7B has 7.6e9 parameters, 6.5e9 of them outside the embedding.
    per_token = bench.model_flops_per_token(bench.SHAPES["7b"], 0)
    assert 6 * 7.0e9 < per_token < 6 * 7.7e9
    assert bench.model_flops_per_token(bench.SHAPES["7b"], 15000) > per_token


def test_dry_run_lists_the_plan(bench, capsys):
    assert bench.main(["--dry-run", "--models", "3b", "--cutoffs", "4096"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("3b cutoff 4096 fa2 liger-on gc") and len(lines) == 4


@pytest.mark.integration
def test_smoke_path_trains_through_the_launcher_on_cpu(bench, tmp_path, capsys):
    assert bench.main(["--smoke", "--steps", "2", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "bf16 matmul peak measured here: n/a (no GPU)" in out
    assert "tiny cutoff 64 sdpa liger-off gc: " in out and "tokens/s/GPU, MFU n/a" in out
