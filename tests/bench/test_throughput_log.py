"""bench/throughput_log.py: FLOPs per token, card peaks, and rates read back from recorded trainer logs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Recorded from `python bench/gpu_throughput.py --smoke --steps 2 --arpo-steps 3` (2 CPU ranks, cutoff 60).
CPU_LOG = FIXTURES / "trainer_log_cpu_smoke_2ranks.jsonl"
# Written by hand in LogCallback's format (7B, one rank, cutoff 4096): a 9.5 s warm-up, three 4,096-token
# steps of 2.0 s, then rows of 1,500, 4,096, 800 and 2,304 tokens taking 0.9, 2.0, 0.6 and 1.2 s, and a
# last line cut short as a kill leaves it.
GPU_LOG = FIXTURES / "trainer_log_7b_one_rank_synthetic.jsonl"


@pytest.fixture(scope="module")
def tlog(bench):
    return sys.modules["throughput_log"]


def seven_b_matmul_params() -> int:
    """Qwen2.5-7B's matmul weights, counted by hand: q, o (3584^2), k, v (3584 x 512), MLP, lm_head."""
    per_layer = 2 * 3584 * 3584 + 2 * 3584 * 512 + 3 * 3584 * 18944
    return 28 * per_layer + 3584 * 152064


def test_model_flops_match_the_parameter_count_and_causal_attention(tlog, bench):
    shape = bench.SHAPES["7b"]
    assert tlog.model_flops_per_token(shape, 0) == 6 * seven_b_matmul_params()
    assert (
        6 * 6.9e9 < tlog.model_flops_per_token(shape, 0) < 6 * 7.7e9
    )  # 7.6e9 weights, 0.5e9 of them looked up
    # Causal attention summed position by position: token i scores and mixes i keys (2 x 2 x hidden x i
    # FLOPs per layer forward), times 3 for training, averaged over the row.
    seq = 4096
    direct = sum(3 * 2 * 2 * 3584 * i * 28 for i in range(1, seq + 1)) / seq
    attention = tlog.model_flops_per_token(shape, seq) - tlog.model_flops_per_token(shape, 0)
    assert attention == pytest.approx(direct, rel=1 / seq)


def test_published_peaks_are_matched_by_device_name(tlog):
    assert tlog.published_peak("NVIDIA H100 80GB HBM3") == 989.4
    assert tlog.published_peak("NVIDIA H100 PCIe") == 756.0
    assert tlog.published_peak("NVIDIA H100 NVL") == 835.0
    assert tlog.published_peak("NVIDIA H200") == 989.4
    assert tlog.published_peak("NVIDIA A100-SXM4-80GB") == 312.0
    assert tlog.published_peak("Tesla T4") is None


def test_the_recorded_cpu_log_gives_exact_times_and_per_gpu_rates(tlog, bench):
    rows = tlog.read_log(CPU_LOG)
    raw = [json.loads(line) for line in CPU_LOG.read_text().splitlines()]
    assert [r.step for r in rows] == list(range(1, len(raw) + 1))
    for row, line in zip(rows, raw, strict=True):
        h, m, s = map(int, line["elapsed_time"].split(":"))
        assert 0 <= row.seconds - (3600 * h + 60 * m + s) < 1  # the same clock, without the rounding
        assert row.allocated_gib is None  # no GPU: LLaMA-Factory logs 0.0
    # 2 ranks, cutoff 60 padded to 64: only the 60 real tokens of each row are counted
    assert {b.tokens - a.tokens for a, b in zip(rows, rows[1:], strict=False)} == {2 * 60}
    measured = tlog.rate(rows, 1, 3, ranks=2, shape=bench.SHAPES["tiny"], peak_tflops=None)
    assert measured.tokens_per_s_per_gpu == pytest.approx(
        2 * 2 * 60 / (rows[2].seconds - rows[0].seconds) / 2
    )
    assert measured.mean_row_tokens == 60 and measured.mfu is None and measured.steps == 2


def test_rates_and_mfu_of_a_one_gpu_log(tlog, bench):
    rows = tlog.read_log(GPU_LOG)
    assert [r.step for r in rows] == list(range(1, 9))  # the line cut short by the kill is left out
    # Each time is total_tokens / throughput, which LogCallback rounds to 0.01 token/s: ~1e-5 relative here.
    cutoff = tlog.rate(rows, 1, 4, ranks=1, shape=bench.SHAPES["7b"], peak_tflops=989.0)
    assert cutoff.tokens_per_s_per_gpu == pytest.approx(3 * 4096 / 6.0, rel=1e-4)
    flops = 6 * seven_b_matmul_params() + 6 * 28 * 3584 * 4096
    assert cutoff.mfu == pytest.approx(3 * 4096 * flops / 6.0 / 989e12, rel=1e-4)
    arpo = tlog.rate(rows, 4, 8, ranks=1, shape=bench.SHAPES["7b"], peak_tflops=989.0)
    lengths = [1500, 4096, 800, 2304]
    assert arpo.tokens_per_s_per_gpu == pytest.approx(sum(lengths) / 4.7, rel=1e-4)
    assert arpo.mean_row_tokens == sum(lengths) / 4
    flops = sum(n * (6 * seven_b_matmul_params() + 6 * 28 * 3584 * n) for n in lengths)
    assert arpo.mfu == pytest.approx(flops / 4.7 / 989e12, rel=1e-4)
    assert tlog.peak_gib(rows, 8) == (121.1, 124.5)
    assert tlog.peak_gib(rows, 1) == (118.42, 121.82)


def test_logs_that_cannot_be_measured_say_why(tlog, tmp_path):
    broken = tmp_path / "trainer_log.jsonl"
    lines = GPU_LOG.read_text().splitlines()
    broken.write_text("\n".join([lines[0], "{not json", lines[1]]) + "\n")
    with pytest.raises(ValueError, match=":2: not JSON"):
        tlog.read_log(broken)
    broken.write_text(json.dumps({"current_steps": 1, "loss": 1.0}) + "\n")
    with pytest.raises(ValueError, match="include_num_input_tokens_seen"):
        tlog.read_log(broken)
    with pytest.raises(ValueError, match="logging_steps"):
        tlog.rate(tlog.read_log(GPU_LOG)[::2], 1, 4, 1, {}, None)
