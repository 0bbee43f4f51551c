"""A rank out of GPU memory: one console line (rank, step, tokens, the estimate, the cheapest change), its
exit code, and every traceback in training.log only. CUDA's error is injected into rank 1 on CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arpo_train_sft.config import RunConfig
from arpo_train_sft.errors import EXIT_OOM
from arpo_train_sft.train.oom import MARKER, oom_line, read_note, write_note

from ..conftest import REPO, run_env

SEVEN_B = {
    "model_name_or_path": "Qwen/Qwen2.5-7B-Instruct",
    "cutoff_len": 15000,
    "bf16": True,
    "per_device_train_batch_size": 1,
    "deepspeed": str(REPO / "examples/deepspeed/ds_z3_config.json"),
}


def config(tmp_path: Path, **values) -> RunConfig:
    path = tmp_path / "x.yaml"
    path.write_text("# Sized for: one node with 8x 24 GB GPUs\n")
    return RunConfig(path=path, overrides=(), values={**SEVEN_B, **values})


def test_the_line_names_rank_step_tokens_and_the_estimates_cheapest_change(tmp_path: Path):
    note = {"rank": 3, "step": 120, "tokens": 14873, "time": 0.0}
    line = oom_line(note, config(tmp_path, enable_liger_kernel=False), gpus=8, gpu_mem_gib=None)
    assert line.startswith("rank 3 ran out of GPU memory at step 120 on a micro-batch of 14,873 tokens; ")
    assert "arpo-sft estimate: " in line and "GiB per GPU of 24" in line
    # The estimator's own advice, as overrides to paste (here Liger alone is not enough on 24 GB).
    assert line.endswith("cheapest change that fits: cutoff_len=1024 (21.5 GiB per GPU)")


def test_when_the_estimate_fitted_it_asks_for_its_margin_back(tmp_path: Path):
    line = oom_line(
        {"rank": 0, "step": 1, "tokens": None, "time": 0.0},
        config(tmp_path, enable_liger_kernel=True),
        gpus=8,
        gpu_mem_gib=80.0,
    )
    assert "on its first micro-batch" in line
    assert (
        "(it fitted: the estimate is 15% low here at least); cheapest change that saves the margin: " in line
    )


def test_the_earliest_note_of_this_launch_is_the_one_read(tmp_path: Path):
    write_note(tmp_path, 5, 7, 100)
    since = time.time()
    assert read_note(tmp_path, since) is None  # an earlier launch's note
    time.sleep(0.01)
    write_note(tmp_path, 1, 9, 300)
    time.sleep(0.01)
    write_note(tmp_path, 0, 9, 200)
    assert read_note(tmp_path, since)["rank"] == 1
    (tmp_path / "oom-rank9.json").write_text("{torn")
    assert read_note(tmp_path, since)["rank"] == 1


LAUNCHER = """
import sys
from pathlib import Path
from arpo_train_sft.train.launch import run_teed
sys.exit(run_teed([sys.executable, "-c", sys.argv[1]], {}, Path(sys.argv[2]), quiet_from=sys.argv[3].encode()))
"""


def test_the_terminal_goes_quiet_at_the_marker_and_the_log_keeps_everything(tmp_path: Path):
    child = (
        f"print('step 1', flush=True); print({MARKER!r} + ' 1 at step 2', flush=True); print('Traceback x')"
    )
    result = subprocess.run(
        [sys.executable, "-c", LAUNCHER, child, str(tmp_path / "run.log"), MARKER],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.stdout == "step 1\n"
    assert (tmp_path / "run.log").read_text().splitlines()[2:] == [
        "step 1",
        f"{MARKER} 1 at step 2",
        "Traceback x",
    ]


# Loaded at interpreter start in every process of the launch (PYTHONPATH); acts only in the rank named by
# ARPO_TEST_OOM_RANK, where the model's second forward (step 2) raises CUDA's out-of-memory error.
SITECUSTOMIZE = """
import os
if os.environ.get("RANK") is not None and os.environ.get("RANK") == os.environ.get("ARPO_TEST_OOM_RANK"):
    import torch
    from transformers.models.qwen2 import modeling_qwen2

    forward, calls = modeling_qwen2.Qwen2Model.forward, []

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return forward(self, *args, **kwargs)

    modeling_qwen2.Qwen2Model.forward = failing
"""


@pytest.mark.integration
def test_an_injected_oom_is_one_line_and_exit_5(checkout: Path, tmp_path: Path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    preset = (checkout / "yaml" / "demo_cpu.yaml").read_text().splitlines()
    body = [line for line in preset if not line.startswith("#")]
    conf = tmp_path / "oom.yaml"  # the demo, sized for GPUs so that the estimate has a memory to weigh
    conf.write_text("\n".join(["# Sized for: one node with 2x 8 GB GPUs", *body]) + "\n")
    output_dir = tmp_path / "out"
    env = run_env(PYTHONPATH=str(tmp_path / "site"), ARPO_TEST_OOM_RANK="1")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "arpo_train_sft.cli",
            "train",
            str(conf),
            "max_steps=4",
            "logging_steps=1",
            "cutoff_len=256",
            f"output_dir={output_dir}",
            "--skip-preflight",
        ],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == EXIT_OOM, result.stdout[-3000:] + result.stderr[-3000:]
    console = result.stdout + result.stderr
    lines = [line for line in console.splitlines() if "ran out of GPU memory" in line]
    assert len(lines) == 1, console[-3000:]
    assert lines[0].startswith("[arpo-sft] rank 1 ran out of GPU memory at step 2 on a micro-batch of ")
    assert (
        "arpo-sft estimate: " in lines[0] and "GiB per GPU of 8" in lines[0] and "cheapest change" in lines[0]
    )
    assert lines[0].endswith(f"(tracebacks: {output_dir / 'training.log'})")
    assert "Traceback" not in console and MARKER not in console
    log = (output_dir / "training.log").read_text()
    assert "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (injected)" in log
    assert f"{MARKER} 1 at step 2" in log
