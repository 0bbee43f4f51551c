"""Throughput, MFU and peak memory: the FLOPs arithmetic, the peak table, the reduction and the callback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, TrainerControl, TrainerState, TrainingArguments

from arpo_train_sft.family import QWEN25_SHAPES
from arpo_train_sft.rank import metrics
from arpo_train_sft.rank.metrics import PEAK_ENV, Reading, RecordWriter, StepMetrics, peak_tflops
from arpo_train_sft.train.shapes import flops_per_token, training_flops

from ..conftest import REPO

QWEN7B = QWEN25_SHAPES["Qwen2.5-7B"]


def test_qwen7b_parameters_match_the_published_count():
    # The model card: 7.61B parameters, 6.53B of them outside the embedding.
    assert QWEN7B.params() == pytest.approx(7.61e9, rel=2e-3)
    # Matmuls: everything outside the embedding but biases and norms, plus the untied lm_head.
    assert QWEN7B.matmul_params() == pytest.approx(6.53e9 + 152064 * 3584, rel=2e-3)


def test_flops_per_token_is_six_per_matmul_parameter_plus_the_causal_attention_term():
    per_token = flops_per_token(QWEN7B, 4096)
    assert per_token == 6 * QWEN7B.matmul_params() + 6 * 28 * 3584 * 4096
    assert per_token == pytest.approx(44.9e9, rel=1e-3)
    # Doubling the row length adds 6 x layers x hidden x seq_len per token, and nothing else.
    assert flops_per_token(QWEN7B, 8192) - per_token == 6 * 28 * 3584 * 4096


def test_training_flops_of_rows_is_the_sum_over_rows():
    rows = [100, 3000]
    each = sum(n * flops_per_token(QWEN7B, n) for n in rows)
    assert training_flops(QWEN7B, sum(rows), sum(n * n for n in rows)) == pytest.approx(each, rel=1e-12)


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H200", 989.4),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A100-PCIE-40GB", 312.0),
        ("NVIDIA L40S", 362.05),
        ("NVIDIA GeForce RTX 4090", 165.2),
        ("NVIDIA A10", 125.0),
    ],
)
def test_the_peak_table_by_device_name(name: str, tflops: float):
    assert peak_tflops(name, env={}) == metrics.Peak(tflops)


def test_an_unknown_gpu_has_no_peak_and_a_warning_naming_the_override():
    for name in ("NVIDIA A10G", "Some Future GPU"):
        peak = peak_tflops(name, env={})
        assert peak.tflops is None
        assert repr(name) in peak.warning and f"set {PEAK_ENV}=" in peak.warning


def test_the_override_wins_and_a_bad_one_is_no_peak():
    assert peak_tflops("NVIDIA A10G", env={PEAK_ENV: "70"}) == metrics.Peak(70.0)
    assert peak_tflops("NVIDIA H100 80GB HBM3", env={PEAK_ENV: "500.5"}) == metrics.Peak(500.5)
    for bad in ("fast", "0", "-3", "nan", "inf"):
        peak = peak_tflops("NVIDIA H100 80GB HBM3", env={PEAK_ENV: bad})
        assert peak.tflops is None and f"{PEAK_ENV}={bad!r}" in peak.warning


def test_reading_sums_tokens_and_takes_the_largest_peak():
    rows = [[1000.0, 5e5, 3 * metrics.GIB], [600.0, 2e5, 4 * metrics.GIB]]
    assert metrics.reading(rows, 2.0) == Reading(2.0, 1600.0, 7e5, 4 * metrics.GIB, 2)
    assert metrics.reading([[1.0, 1.0, -1.0], [1.0, 1.0, -1.0]], 1.0).peak_bytes is None  # CPU ranks


def test_rates_and_the_record_between_two_readings():
    start = Reading(10.0, 1000.0, 1e6, None, 8)
    end = Reading(12.0, 1000.0 + 8 * 4096, 1e6 + 8 * 4096**2, 40 * metrics.GIB, 8)
    rates = metrics.rates(start, end, QWEN7B, peak=989.4)
    assert rates.tokens_per_second_per_gpu == pytest.approx(2048.0)  # 4,096 per GPU in 2 s
    assert rates.mfu == pytest.approx(2048 * flops_per_token(QWEN7B, 4096) / 989.4e12)
    assert rates.peak_memory_gib == 40.0
    assert metrics.record(7, start, end, QWEN7B, None) == {
        "step": 7,
        "tokens_per_second_per_gpu": 2048.0,
        "mfu": None,
        "peak_memory_gib": 40.0,
        "tokens": 8 * 4096,
        "seconds": 2.0,
    }


def test_the_summary_and_calibration_lines():
    assert metrics.summary_line(metrics.Rates(3210.4, 0.4127, 61.26)) == (
        "throughput: 3,210 tokens/s/GPU, MFU 41.3%, peak memory 61.3 GiB"
    )
    assert metrics.summary_line(metrics.Rates(75.2, None, None)) == (
        "throughput: 75 tokens/s/GPU, MFU n/a, peak memory n/a"
    )
    assert metrics.memory_line(1, 31.2, 33.0) == (
        "memory after step 1: peak 31.2 GiB per GPU measured, 33.0 GiB estimated (arpo-sft estimate), ratio 0.95"
    )
    assert metrics.memory_line(5, 31.2, "no shape") == (
        "memory after step 5: peak 31.2 GiB per GPU measured; no estimate: no shape"
    )
    assert metrics.memory_line(1, None, 2.14).startswith("memory after step 1: not measured on CPU")


@pytest.mark.parametrize("blocked", ["a directory", "under a file"])
def test_an_unwritable_record_warns_once_and_does_not_raise(tmp_path: Path, capsys, blocked: str):
    (tmp_path / "file").write_text("")
    path = tmp_path if blocked == "a directory" else tmp_path / "file" / "metrics.jsonl"
    writer = RecordWriter(path)
    for step in range(3):
        writer.write({"step": step})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"[arpo-sft] warning: cannot write {path} (")


class Tiny(torch.nn.Module):
    """A model with a Qwen2 config whose forward the callback's hook sees."""

    def __init__(self) -> None:
        super().__init__()
        self.config = Qwen2Config(
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            vocab_size=32,
        )
        self.weight = torch.nn.Parameter(torch.ones(1))

    def forward(self, input_ids, attention_mask=None):
        return self.weight * input_ids.float().sum()


def test_the_callback_counts_training_tokens_and_writes_one_record_per_logged_step(tmp_path: Path, capsys):
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    state, control, model = TrainerState(), TrainerControl(), Tiny()
    # A config whose model is not there: the estimate cannot be made, and the line says so.
    callback = StepMetrics([str(REPO / "yaml" / "demo_cpu.yaml"), "model_name_or_path=nowhere/model"])
    callback.on_train_begin(args, state, control, model=model)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    for step in (1, 2):
        callback.on_step_begin(args, state, control)
        model.train()
        model(input_ids=torch.ones(2, 4, dtype=torch.long), attention_mask=mask)  # rows of 3 and 2 tokens
        model.eval()
        model(input_ids=torch.ones(2, 4, dtype=torch.long), attention_mask=mask)  # evaluation: not trained
        state.global_step = step
        callback.on_step_end(args, state, control)
        callback.on_log(args, state, control, logs={"loss": 1.0})
    callback.on_log(args, state, control, logs={"train_runtime": 1.0})  # the closing summary: not a step
    callback.on_train_end(args, state, control)
    model.train()
    model(input_ids=torch.ones(2, 4, dtype=torch.long), attention_mask=mask)  # after the end: no hook

    records = [json.loads(line) for line in (tmp_path / metrics.METRICS).read_text().splitlines()]
    assert [(r["step"], r["tokens"], r["mfu"], r["peak_memory_gib"]) for r in records] == [
        (1, 5, None, None),
        (2, 5, None, None),
    ]
    assert callback.counts.tolist() == [10.0, 2 * (9 + 4)]  # tokens, and the squares of the row lengths
    out = capsys.readouterr().out.splitlines()
    (memory,) = [line for line in out if "memory after step" in line]
    assert memory.startswith("[arpo-sft] memory after step 1: not measured on CPU")
    assert "no estimate: model_name_or_path nowhere/model" in memory
    assert out[-1].startswith("[arpo-sft] throughput: ") and out[-1].endswith("MFU n/a, peak memory n/a")


def test_another_family_trains_on_with_a_null_mfu_and_one_line_why(tmp_path: Path, capsys):
    from transformers import LlamaConfig

    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    model = Tiny()
    model.config = LlamaConfig(
        hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2, vocab_size=32
    )
    callback = StepMetrics([str(REPO / "yaml" / "demo_cpu.yaml"), "model_name_or_path=nowhere/model"])
    callback.on_train_begin(args, TrainerState(), TrainerControl(), model=model)
    assert callback.shape is None
    warnings = [line for line in capsys.readouterr().out.splitlines() if "mfu is null" in line]
    assert warnings == [
        "[arpo-sft] warning: mfu is null: no memory model for llama (the estimate knows qwen2 only)"
    ]
