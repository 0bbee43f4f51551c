"""bench/gpu_throughput.py off a GPU: its plan, its verdicts on a recorded log, the kill, a real CPU run."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Hand-written 7B log, one rank, cutoff 4096 (tests/bench/test_throughput_log.py says what is in it).
GPU_LOG = FIXTURES / "trainer_log_7b_one_rank_synthetic.jsonl"


@pytest.fixture(scope="module")
def tsetup(bench):
    return sys.modules["throughput_setup"]


@pytest.fixture(scope="module")
def tlaunch(bench):
    return sys.modules["throughput_launch"]


def test_the_plan_measures_every_preset_first_then_all_gpus_then_one_change_per_run(bench):
    runs = bench.plan(["7b", "3b"], [15000, 4096], ["sdpa", "fa2"], gpus=8, smoke=False)
    assert len(runs) == len(set(runs)) == 4 + 4 + 12
    assert runs[:4] == [bench.Run(m, c) for m in ("7b", "3b") for c in (15000, 4096)]
    assert [r.ranks for r in runs[4:8]] == [8] * 4 and all(r.ranks == 1 for r in runs[8:])
    for run in runs:
        base = bench.Run(run.model, run.cutoff, ranks=run.ranks)
        changed = [f for f in ("attn", "liger", "checkpointing") if getattr(run, f) != getattr(base, f)]
        assert len(changed) <= 1, run
    assert all(r.ranks == 1 for r in bench.plan(["7b"], [4096], ["fa2"], gpus=1, smoke=False))


def test_missing_packages_skip_their_runs(bench, monkeypatch):
    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name: None)
    assert bench.missing_package(bench.Run("7b", 4096)) == "flash-attn is not installed"
    assert bench.missing_package(bench.Run("7b", 4096, attn="sdpa")) == "liger-kernel is not installed"
    assert bench.missing_package(bench.Run("7b", 4096, attn="sdpa", liger=False)) is None


def test_the_run_config_saves_nothing_and_logs_every_step(bench, tsetup, tmp_path):
    config = bench.run_config(bench.Run("7b", 4096), tmp_path, tmp_path / "data", 16, gpu=True)
    values = __import__("yaml").safe_load(config.read_text())
    assert values["save_strategy"] == "no" and values["max_steps"] == tsetup.NEVER
    assert values["max_steps"] // values["save_steps"] == 0  # what preflight counts as checkpoints
    assert values["logging_steps"] == 1 and values["disable_shuffling"] is True
    assert values["include_num_input_tokens_seen"] == "non_padding"
    assert values["flash_attn"] == "fa2" and values["enable_liger_kernel"] is True and values["bf16"] is True
    assert json.loads((Path(values["model_name_or_path"]) / "config.json").read_text())["hidden_size"] == 3584
    total, fits = bench.estimate(config, 1, 139.0)
    assert 60 < total < 139 and fits
    assert bench.estimate(config, 1, 40.0) == (total, False)


def test_weights_are_found_wherever_a_save_puts_them(bench, tmp_path):
    for name in (
        "trainer_log.jsonl",
        "training.log",
        "checkpoint-3/global_step3/zero_pp_rank_0_mp_rank_00_model_states.pt",
        "model.safetensors",
        "pytorch_model.bin",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    found = {str(p.relative_to(tmp_path)) for p in bench.weights_in(tmp_path)}
    assert found == {
        "checkpoint-3",
        "checkpoint-3/global_step3",
        "checkpoint-3/global_step3/zero_pp_rank_0_mp_rank_00_model_states.pt",
        "model.safetensors",
        "pytorch_model.bin",
    }


def test_kill_tree_ends_a_launch_without_any_process_seeing_sigterm(tlaunch, tmp_path):
    # A parent like torchrun (forwards SIGTERM) over a rank in its own session that saves on SIGTERM and
    # gets SIGTERM when its parent dies, as torchrun does from our launcher.
    rank = textwrap.dedent(f"""
        import ctypes, signal, time, pathlib
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)
        signal.signal(signal.SIGTERM, lambda *_: pathlib.Path({str(tmp_path / "saved")!r}).write_text("x"))
        pathlib.Path({str(tmp_path / "ready")!r}).write_text("x")
        while True:
            time.sleep(0.01)
    """)
    parent = textwrap.dedent(f"""
        import signal, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", {rank!r}], start_new_session=True)
        signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
        print(child.pid, flush=True)
        while True:
            time.sleep(0.01)
    """)
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    while not (tmp_path / "ready").exists():
        time.sleep(0.05)
    tlaunch.kill_tree(proc.pid)
    proc.wait(timeout=10)  # kill_tree has reaped it already
    time.sleep(0.5)
    for pid in (proc.pid, child):  # gone, or a zombie nobody reaped yet
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    assert not (tmp_path / "saved").exists()


@pytest.mark.parametrize(
    ("outcome", "saved", "status", "measured"),
    [
        ((8,), [], "ok", ("cutoff", "arpo")),
        ((5, "stopped at its time limit", True), [], "skipped", ("cutoff",)),
        ((0, "stopped at its time limit", True), [], "failed", ()),
        ((2, "out of memory at step 3"), [], "failed", ()),
        ((8,), ["checkpoint-8"], "failed", ("cutoff", "arpo")),
    ],
)
def test_a_gpu_run_is_judged_from_its_log_and_what_it_left(
    bench, tlaunch, tmp_path, monkeypatch, outcome, saved, status, measured
):
    def fake_launch(config, ranks, output_dir, last, limit_s, log):
        output_dir.mkdir(parents=True)
        lines = GPU_LOG.read_text().splitlines()[: outcome[0]]
        (output_dir / "trainer_log.jsonl").write_text("".join(line + "\n" for line in lines))
        return tlaunch.Outcome(*outcome)

    monkeypatch.setattr(bench, "launch", fake_launch)
    monkeypatch.setattr(bench, "weights_in", lambda output_dir: saved)
    monkeypatch.setattr(bench, "missing_package", lambda run: None)
    monkeypatch.setattr(bench, "prepare_data", lambda work, long_rows, arpo_rows: tmp_path / "data")
    monkeypatch.setattr(bench, "run_config", lambda run, work, data, rows, gpu: tmp_path / "run.yaml")
    monkeypatch.setattr(bench, "estimate", lambda config, ranks, gpu_mem: (124.8, True))
    args = argparse.Namespace(smoke=False, steps=3, arpo_steps=4, workdir=tmp_path)
    device = bench.Device("NVIDIA H200", 1, 140.4, 700.0)
    result = bench.measure(bench.Run("7b", 4096), args, device, 989.0, left=300)
    assert result.status == status and result.estimate_gib == 124.8
    assert (result.cutoff_rows is not None, result.arpo_rows is not None) == (
        "cutoff" in measured,
        "arpo" in measured,
    )
    if "cutoff" in measured:
        assert result.cutoff_rows.tokens_per_s_per_gpu == pytest.approx(2048, rel=1e-4)
        assert result.peak_allocated_gib == (121.08 if outcome[0] == 5 else 121.1)
    if saved:
        assert "checkpoint-8" in result.reason
    assert status in bench.describe(result)


def test_runs_that_would_not_fit_or_finish_are_skipped_before_launching(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "launch", lambda *a: pytest.fail("launched"))
    monkeypatch.setattr(bench, "missing_package", lambda run: None)
    monkeypatch.setattr(bench, "prepare_data", lambda work, long_rows, arpo_rows: tmp_path / "data")
    monkeypatch.setattr(bench, "run_config", lambda run, work, data, rows, gpu: tmp_path / "run.yaml")
    monkeypatch.setattr(bench, "estimate", lambda config, ranks, gpu_mem: (124.8, False))
    args = argparse.Namespace(smoke=False, steps=3, arpo_steps=12, workdir=tmp_path)
    device = bench.Device("NVIDIA H100 80GB HBM3", 1, 79.1, 700.0)
    result = bench.measure(bench.Run("7b", 4096), args, device, 989.0, left=300)
    assert result.status == "skipped" and result.reason == "arpo-sft estimate 124.8 GiB > 79 GiB"
    result = bench.measure(bench.Run("3b", 4096), args, device, 989.0, left=60)
    assert result.status == "skipped" and result.reason == "out of time budget"


def test_dry_run_lists_the_plan(bench, capsys):
    assert bench.main(["--dry-run", "--models", "3b", "--cutoffs", "4096"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0].strip() for line in lines] == [
        "3b cutoff 4096 x1 fa2 liger-on gc",
        "3b cutoff 4096 x1 sdpa liger-on gc",
        "3b cutoff 4096 x1 fa2 liger-off gc",
        "3b cutoff 4096 x1 fa2 liger-on no-gc",
    ]


@pytest.mark.integration
def test_smoke_run_trains_through_the_launcher_and_writes_no_checkpoint(bench, tmp_path, capsys):
    report = tmp_path / "throughput.json"
    args = ["--smoke", "--steps", "2", "--arpo-steps", "3", "--workdir", str(tmp_path), "--json", str(report)]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    assert "tiny cutoff 60 x2 sdpa liger-off gc: ok; cutoff rows " in out and "MFU n/a" in out
    output_dir = tmp_path / "out" / "tiny_cutoff_60_x2_sdpa_liger-off_gc"
    left = sorted(p.name for p in output_dir.iterdir())
    # Logs only (metrics.jsonl is the plugin's per-step record): no checkpoint-*, global_step*, weights.
    assert left == ["metrics.jsonl", "trainer_log.jsonl", "training.log"]
    assert not [
        p
        for pattern in ("checkpoint-*", "global_step*", "*.safetensors")
        for p in (tmp_path / "out").rglob(pattern)
    ]
    rows = bench.read_log(output_dir / "trainer_log.jsonl")
    assert max(r.step for r in rows) >= 1 + 2 + 3
    assert "SIGTERM" not in (output_dir / "training.log").read_text()
    assert not (output_dir / "stopped.json").exists()
    figures = json.loads(report.read_text())
    (run,) = figures["runs"]
    assert run["status"] == "ok" and run["run"]["ranks"] == 2
    assert run["cutoff_rows"]["mean_row_tokens"] == run["arpo_rows"]["mean_row_tokens"] == 60
    assert run["cutoff_rows"]["tokens_per_s_per_gpu"] > 0 and run["arpo_rows"]["steps"] == 3
    # The launch is gone: no process still runs its config.
    time.sleep(1)
    config = str(tmp_path / "configs")
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and config in _cmdline(pid)]
    # The ARPO-shaped rows are bench_prepare's, after the 3 x 2 cutoff-length ones.
    data = next(tmp_path.glob("data-*")) / "bench.jsonl"
    written = [json.loads(line) for line in data.read_text().splitlines()]
    assert written[6:] == sys.modules["bench_prepare"].synthetic_rows(6, seed=bench.SEED)


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
