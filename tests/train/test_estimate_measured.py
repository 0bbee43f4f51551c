"""The memory estimate against a real 2-rank CPU training step (torchrun, DeepSpeed ZeRO-3, LLaMA-Factory).

What is measured, per rank: the resident memory (VmRSS) just before LLaMA-Factory loads the model, and
the kernel's high-water mark (VmHWM, reset through /proc/self/clear_refs as the second step begins) at
the end of that step. Their difference is what the model, its ZeRO states, and one forward + backward +
optimizer step add to the process; the estimate's matching figure is its total minus `overhead` (the
CUDA context and allocator slack, which a CPU rank does not have). RSS counts only touched pages, like
an allocator counts live tensors; tensors above glibc's mmap threshold go back to the kernel when freed,
so the high-water mark is the peak of live tensors plus small-allocation slack.

Tolerance: +-15 %, the issue's target. The model is shaped so that no term dominates (about 45 % ZeRO
states and gathered weights, 40 % logits, 15 % activations at 2 x 256 tokens), so a formula wrong by a
factor in any one of them fails the test. Measured on the CPU box (2026-12-02, three runs): 2.08-2.15 GiB
per rank against 2.16 estimated (+0.5 to +4 %). The split is less exact than the total: what stays
resident between steps measured 0.96-1.04 GiB (estimate 0.86; glibc keeps some freed heap), the step
itself 1.11-1.19 GiB (estimate 1.30).

This module is also what each rank runs (`python -m tests.train.test_estimate_measured CONFIG ...`):
LLaMA-Factory's own `run_exp` with one callback that reads /proc; the only other hook records RSS and then
calls LLaMA-Factory's `load_model` unchanged.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from arpo_train_sft.train.estimate import MARGIN

from ..conftest import REPO, run_env

# The estimate's stated margin, which preflight's memory row also uses (one owner: train/estimate).
TOLERANCE = MARGIN
MEASURED_STEP = 1  # global_step as the second step begins
# Qwen2 on the real vocabulary, hidden 256, MLP 4096, 8 layers: 65M parameters (39M of them embedding).
SHAPE = {
    "hidden_size": 256,
    "intermediate_size": 4096,
    "num_hidden_layers": 8,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
# Every demo row is longer than 256 tokens, so each micro-batch is exactly 2 x 256 with no padding.
OVERRIDES = (
    "cutoff_len=256",
    "per_device_train_batch_size=2",
    "max_steps=2",
    "max_samples=16",
    "disable_gradient_checkpointing=true",
    "save_steps=1000",
    "logging_steps=1",
    "plot_loss=false",
)


def _status(field: str) -> int:
    """A /proc/self/status field in KiB."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1))


def probe_main() -> None:
    """One rank: LLaMA-Factory's training with memory marks written to $PROBE_OUT/rank<N>.json."""
    import warnings

    import llamafactory.train.sft.workflow as workflow
    from llamafactory.train.tuner import run_exp
    from transformers import TrainerCallback

    from arpo_train_sft.lf import masking  # noqa: F401  (as the plugin's entry registers it)

    warnings.filterwarnings("ignore", category=FutureWarning)
    marks: dict[str, int] = {"max_seq": 0, "max_batch": 0}
    load_model = workflow.load_model

    def marked_load_model(*args, **kwargs):
        marks["before_model_kib"] = _status("VmRSS")
        return load_model(*args, **kwargs)

    workflow.load_model = marked_load_model

    def record_shape(_module, _args, kwargs):
        batch, seq = kwargs["input_ids"].shape
        marks["max_batch"], marks["max_seq"] = max(marks["max_batch"], batch), max(marks["max_seq"], seq)

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            marks["train_begin_kib"] = _status("VmRSS")
            model.register_forward_pre_hook(record_shape, with_kwargs=True)

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == MEASURED_STEP:
                marks["step_begin_kib"] = _status("VmRSS")
                Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS from here on

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == MEASURED_STEP + 1:
                marks["step_peak_kib"] = _status("VmHWM")
                out = Path(os.environ["PROBE_OUT"]) / f"rank{os.environ['RANK']}.json"
                out.write_text(json.dumps(marks))

    run_exp(callbacks=[Probe()])


@pytest.fixture(scope="module")
def measured(
    checkout: Path, qwen_tokenizer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[dict], Path]:
    """Build the probe model, run two steps on 2 CPU ranks, return each rank's marks and the model dir."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from arpo_train_sft.config import ENTRY_MODULE
    from arpo_train_sft.family import QWEN25_VOCAB_SIZE
    from arpo_train_sft.train.launch import torchrun_command, training_env
    from arpo_train_sft.train.topology import Topology, free_port

    tmp = tmp_path_factory.mktemp("estimate")
    model_dir = tmp / "model"
    config = Qwen2Config(vocab_size=QWEN25_VOCAB_SIZE, tie_word_embeddings=True, **SHAPE)
    Qwen2ForCausalLM(config).save_pretrained(model_dir)
    qwen_tokenizer.save_pretrained(model_dir)

    overrides = (*OVERRIDES, f"model_name_or_path={model_dir}", f"output_dir={tmp / 'out'}")
    cmd = torchrun_command(
        Path("yaml/demo_cpu.yaml"), overrides, Topology(2, master_port=free_port()), sys.executable
    )
    cmd[cmd.index(ENTRY_MODULE)] = __name__
    env = training_env(run_env(PROBE_OUT=str(tmp), PYTHONPATH=str(REPO)), on_cpu=True)
    result = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [json.loads((tmp / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    return ranks, model_dir


@pytest.mark.integration
def test_estimate_within_tolerance_of_a_real_cpu_step(measured, checkout: Path, monkeypatch):
    from arpo_train_sft.config import load_run_config
    from arpo_train_sft.train.estimate import estimate

    ranks, model_dir = measured
    assert all(r["max_batch"] == 2 and r["max_seq"] == 256 for r in ranks), ranks  # the tokens estimated
    monkeypatch.chdir(checkout)
    cfg = load_run_config(Path("yaml/demo_cpu.yaml"), (*OVERRIDES, f"model_name_or_path={model_dir}"))
    est = estimate(cfg, gpus=2, gpu_mem_gib=1000.0)
    expected_gib = est.total_gib - est.per_gpu_gib["overhead"]
    for marks in ranks:
        measured_gib = (marks["step_peak_kib"] - marks["before_model_kib"]) / 2**20
        print(f"measured {measured_gib:.3f} GiB, estimated {expected_gib:.3f} GiB; {marks}; {est.to_json()}")
        assert abs(expected_gib - measured_gib) <= TOLERANCE * measured_gib, (
            measured_gib,
            expected_gib,
            marks,
        )


if __name__ == "__main__":
    probe_main()
