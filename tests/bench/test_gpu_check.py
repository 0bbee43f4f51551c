"""bench/gpu_check.sh and gpu_check.py off a GPU: the plan, the verdicts on recorded reports, the JSON, the shim."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import load

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Recorded from `python bench/loss_check.py` on 2 CPU ranks (fp32, no Liger): the report's real shape.
LOSS_REPORT = FIXTURES / "loss_check_cpu.json"


@pytest.fixture(scope="module")
def check():
    return load("gpu_check")


@pytest.fixture(scope="module")
def throughput(check):
    return sys.modules["gpu_throughput"]


@pytest.fixture(scope="module")
def verdicts(check):
    return sys.modules["gpu_check_verdicts"]


def test_the_plan_lists_every_step_and_fits_eight_minutes(check, capsys):
    assert check.main(["--plan"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [step.name for step in check.STEPS]
    assert [line.split()[0] for line in lines] == [*names, "total"]
    assert names == [
        "versions",
        "demo",
        "loss-liger-on",
        "loss-liger-off",
        "liger-same-loss",
        "throughput",
        "estimate",
    ]
    fixed = sum(step.limit_s for step in check.STEPS)
    throughput = next(line for line in lines if line.startswith("throughput"))
    assert f">={check.TOTAL_S - fixed} s" in throughput and check.TOTAL_S - fixed >= 100
    assert check.TOTAL_S <= 8 * 60 - 30  # the wheels' install before it gets the rest
    assert all(hasattr(check.Check, step.action) for step in check.STEPS)


def test_liger_on_and_off_agree_within_bf16_tolerance(check):
    off = json.loads(LOSS_REPORT.read_text())
    assert {"first_loss", "arpo_loss", "global_mean_loss", "matches_arpo"} <= off.keys()
    near = {**off, "first_loss": off["first_loss"] * (1 + 0.004)}
    result = check.compare_first_loss(near, off)
    assert result.ok and result.figures["relative"] == pytest.approx(0.004 / 1.004)  # of the larger
    far = {**off, "first_loss": off["first_loss"] * (1 + 0.03)}
    result = check.compare_first_loss(far, off)
    assert not result.ok and "> 0.01" in result.detail
    assert not check.compare_first_loss({**off, "first_loss": float("nan")}, off).ok


def test_a_missing_loss_report_fails_the_comparison(check, tmp_path):
    runner = check.Check(tmp_path, tmp_path, check.Device(), deadline=0)
    runner.figures["loss-liger-on"] = json.loads(LOSS_REPORT.read_text())
    step = next(step for step in check.STEPS if step.name == "liger-same-loss")
    result = runner.same_loss(step)
    assert not result.ok and "no first loss" in result.detail


def test_the_demo_markers_are_printed_by_the_installed_stack(verdicts):
    sources = ""
    for package in ("transformers", "llamafactory"):
        root = Path(importlib.util.find_spec(package).origin).parent
        sources += "".join(path.read_text(errors="replace") for path in root.rglob("*.py"))
    for text in verdicts.DEMO_MARKERS.values():
        assert text in sources, text


def test_the_demo_verdict_names_what_is_missing(verdicts):
    log = "\n".join(f"[INFO] {text} ..." for text in verdicts.DEMO_MARKERS.values())
    rows = [
        {"current_steps": s, "loss": 12.0 - s / 10, "vram_allocated": 0.5 + s / 100} for s in range(5, 31, 5)
    ]
    problems, figures = verdicts.check_demo(log, rows, 30)
    assert problems == [] and figures["steps"] == 30 and figures["peak_allocated_gib"] == 0.8
    assert figures["first_loss"] == 11.5 and figures["last_loss"] == 9.0
    no_liger = log.replace(verdicts.DEMO_MARKERS["Liger"], "")
    problems, _ = verdicts.check_demo(no_liger, [*rows[:-1], {**rows[-1], "loss": float("nan")}], 30)
    assert len(problems) == 2 and "(Liger)" in problems[0] and "finite" in problems[1]
    problems, figures = verdicts.check_demo(log, rows[:2], 30)
    assert problems == ["trained 10 of 30 steps"]


def test_estimates_are_compared_with_what_the_runs_measured(check, throughput):
    run = throughput.Run("7b", 4096)
    results = [
        throughput.Result(run, "ok", peak_allocated_gib=110.0, estimate_gib=124.8),
        throughput.Result(throughput.Run("3b", 4096), "skipped", "out of time budget"),
        throughput.Result(
            throughput.Run("3b", 15000), "failed", "out of memory at step 1", estimate_gib=60.0
        ),
    ]
    args = type("Args", (), {"steps": 3, "arpo_steps": 12})
    figures = json.loads(json.dumps(throughput.summary(throughput.Device(), None, "", args, results)))
    demo = {"estimate_gib": 3.0, "peak_allocated_gib": 2.0}
    found = check.estimate_comparisons(demo, figures)
    assert [c["config"] for c in found] == ["demo (its rows are shorter than cutoff_len)", run.name]
    assert found[1]["ratio"] == pytest.approx(124.8 / 110.0) and found[0]["measured_gib"] == 2.0
    step = check.STEPS[-1]
    runner = check.Check(Path("."), Path("."), check.Device(), deadline=0)
    runner.figures.update(demo=demo, throughput=figures)
    assert runner.estimate(step).ok
    runner.figures.pop("demo")
    assert not runner.estimate(step).ok


def validate(summary: dict, steps: list[str]) -> None:
    """gpu_check.json's schema, as BENCHMARKS.md cites it."""
    assert summary["schema"] == 1
    assert {
        "schema",
        "started",
        "total_s",
        "budget_s",
        "device",
        "passed",
        "failed",
        "steps",
    } == summary.keys()
    assert set(summary["device"]) == {"name", "count", "memory_gib", "matmul_tflops"}
    assert [step["name"] for step in summary["steps"]] == steps
    for step in summary["steps"]:
        assert step.keys() == {"name", "ok", "seconds", "detail", "figures"}
        assert isinstance(step["ok"], bool) and isinstance(step["figures"], dict)
        assert isinstance(step["seconds"], float) and isinstance(step["detail"], str)
    assert summary["failed"] == [step["name"] for step in summary["steps"] if not step["ok"]]
    assert summary["passed"] is (not summary["failed"])


def test_the_summary_writer_keeps_every_step_and_names_the_failed_ones(check, tmp_path):
    results = [
        check.StepResult("demo", True, 31.2, "ZeRO-3, FlashAttention-2 and Liger", {"steps": 30}),
        check.StepResult(
            "liger-same-loss", False, 0.0, "first loss 11.9 with Liger, 12.3 without", {"relative": 0.03}
        ),
    ]
    device = dataclasses.asdict(check.Device("NVIDIA H200", 1, 139.8, 760.0))
    summary = check.write_summary(
        tmp_path / "gpu_check.json", "2026-12-05T10:00:00", 300.04, 450, device, results
    )
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == summary
    validate(summary, ["demo", "liger-same-loss"])
    assert summary["failed"] == ["liger-same-loss"] and summary["total_s"] == 300.0


def test_a_failed_step_does_not_stop_the_next_and_the_exit_code_says_so(check, tmp_path, monkeypatch, capsys):
    ran = []

    def action(self, step):
        ran.append(step.name)
        if step.name == "demo":
            raise RuntimeError("the launcher crashed")
        return check.StepResult(step.name, step.name != "loss-liger-off", detail="recorded")

    for step in check.STEPS:
        monkeypatch.setattr(check.Check, step.action, action)
    monkeypatch.setattr(check, "probe_device", lambda: check.Device())
    assert check.main(["--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "work")]) == 1
    assert ran == [step.name for step in check.STEPS]
    summary = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    validate(summary, ran)
    assert summary["failed"] == ["demo", "loss-liger-off"]
    assert "RuntimeError: the launcher crashed" in summary["steps"][1]["detail"]
    assert "FAILED: demo, loss-liger-off" in capsys.readouterr().out


def test_out_defaults_to_the_out_variable(check, tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path / "from-env"))
    monkeypatch.setattr(check.Check, "run", lambda self, step: check.StepResult(step.name, True))
    monkeypatch.setattr(check, "probe_device", lambda: check.Device())
    assert check.main(["--workdir", str(tmp_path / "work")]) == 0
    assert json.loads((tmp_path / "from-env" / "gpu_check.json").read_text())["passed"] is True


def shim_checkout(tmp_path: Path, wheels: list[str]) -> tuple[Path, Path, dict[str, str]]:
    """A copy of the shim with a python3 on PATH that records its arguments instead of running."""
    (tmp_path / "repo" / "bench").mkdir(parents=True)
    shutil.copy2(REPO / "bench" / "gpu_check.sh", tmp_path / "repo" / "bench" / "gpu_check.sh")
    for name in wheels:
        (tmp_path / "repo" / ".whl").mkdir(exist_ok=True)
        (tmp_path / "repo" / ".whl" / name).write_text("")
    fake = tmp_path / "bin" / "python3"
    fake.parent.mkdir()
    calls = tmp_path / "calls"
    fake.write_text(f'#!/bin/sh\necho "$PWD|$PYTHONPATH|$*" >> {calls}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": "/keep"}
    return tmp_path / "repo", calls, env


def test_the_shim_installs_carried_wheels_then_runs_the_check(tmp_path):
    repo, calls, env = shim_checkout(tmp_path, ["a-1.0-py3-none-any.whl", "b-2.0-py3-none-any.whl"])
    done = subprocess.run(["bash", str(repo / "bench" / "gpu_check.sh"), "--plan"], cwd=tmp_path, env=env)
    assert done.returncode == 0
    install, run = calls.read_text().splitlines()
    assert install.startswith(f"{repo}|/keep|-m pip install ") and "--no-index" in install
    assert install.endswith("--target /tmp/site .whl/a-1.0-py3-none-any.whl .whl/b-2.0-py3-none-any.whl")
    assert run == f"{repo}|/tmp/site:/keep|bench/gpu_check.py --plan"


def test_the_shim_runs_without_wheels(tmp_path):
    repo, calls, env = shim_checkout(tmp_path, [])
    done = subprocess.run(["bash", str(repo / "bench" / "gpu_check.sh"), "--out", "x"], cwd=tmp_path, env=env)
    assert done.returncode == 0
    assert calls.read_text().splitlines() == [f"{repo}|/keep|bench/gpu_check.py --out x"]
