"""A diverged run through the real stack (launcher, torchrun, 2 gloo ranks, DeepSpeed ZeRO-3, LLaMA-Factory).

Measured: at learning_rate=1e30 step 1 runs at warmup's 0 and step 2 at 5e29, so step 3's forward sees
overflowing weights: its loss is nan on every rank and DeepSpeed's gradient norm inf (the log would show
`loss 0`). With save_steps=2 the run has saved checkpoint-2 by then.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from arpo_train_sft.checkpoint import diverged, stopped
from arpo_train_sft.errors import EXIT_DIVERGED

from ..conftest import run_env

DIVERGING = ("learning_rate=1e30", "max_steps=12", "save_steps=2", "logging_steps=1", "cutoff_len=256")


@pytest.mark.integration
def test_a_diverged_run_stops_every_rank_saves_nothing_after_it_and_says_why(checkout: Path):
    output_dir = checkout / "checkpoints" / "diverged"
    # Preflight refuses a learning rate above 1 (the values row); --allow lets this one through on purpose.
    command = [
        "bash",
        "sft_train.sh",
        "yaml/demo_cpu.yaml",
        *DIVERGING,
        f"output_dir={output_dir}",
        "--allow",
        "values",
    ]
    # The timeout bounds a rank left waiting in a collective: a hang fails here instead of stalling the suite.
    result = subprocess.run(command, cwd=checkout, env=run_env(), capture_output=True, text=True, timeout=600)
    log = result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == EXIT_DIVERGED, log

    lines = [line for line in result.stdout.splitlines() if line.startswith("[arpo-sft] step ")]
    assert len(lines) == 1, log
    assert lines[0].startswith(
        f"[arpo-sft] step 3: loss/grad_norm is not finite (nan/inf); last checkpoint before it: "
        f"{output_dir}/checkpoint-2; likely causes: learning_rate 1e+30 (over 10x ARPO's 7e-06), "
        "sdpa attention under DeepSpeed (LLaMA-Factory #9631"
    ), lines[0]

    assert sorted(p.name for p in output_dir.glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (output_dir / "model.safetensors").exists() and not (output_dir / stopped.NOTE).exists()
    assert json.loads((output_dir / diverged.NOTE).read_text())["step"] == 3
    logged = [json.loads(line) for line in (output_dir / "trainer_log.jsonl").read_text().splitlines()]
    assert [entry["current_steps"] for entry in logged] == [1, 2]  # step 3 was never logged as `loss 0`
