"""The reference preset trains ARPO's loss: each rank's token mean over its micro-batches, then the rank mean.

Through the real stack (the launcher, torchrun with 2 CPU ranks, DeepSpeed, LLaMA-Factory) by
bench/loss_check.py, which computes both formulas itself from the same initial weights and the rows the
ranks loaded, with no Trainer involved.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from ..conftest import REPO

SCRIPT = REPO / "bench" / "loss_check.py"


@pytest.fixture(scope="module")
def loss_check():
    spec = importlib.util.spec_from_file_location("loss_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["loss_check"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_the_two_formulas_weight_long_rows_differently(loss_check):
    row = loss_check.RowLoss
    # Rank 0: a short row (10 tokens, mean 2.0); rank 1: a long one (90 tokens, mean 4.0).
    rows = [row(0, 0, 10, 20.0), row(1, 0, 90, 360.0)]
    assert loss_check.arpo_loss(rows) == pytest.approx(3.0)  # (2 + 4) / 2
    assert loss_check.global_mean_loss(rows) == pytest.approx(3.8)  # 380 / 100
    # Accumulation: a rank's micro-batches pool their tokens before the rank mean.
    rows += [row(0, 1, 30, 120.0), row(1, 1, 10, 10.0)]
    assert loss_check.arpo_loss(rows) == pytest.approx((140 / 40 + 370 / 100) / 2)
    report = loss_check.verdict(3.6, rows, bf16=False)
    assert report["matches_arpo"] and not report["matches_global_mean"] and report["formulas_differ"]
    assert (report["ranks"], report["accumulation"]) == (2, 2)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("accumulation", "overrides"),
    [(1, []), (2, ["deepspeed=examples/deepspeed/ds_z2_config.json"])],
    ids=["one-row-a-rank-zero3-offload", "accumulation-2-zero2"],
)
def test_the_reference_preset_logs_arpos_loss(
    loss_check, tiny_model: Path, tmp_path: Path, accumulation: int, overrides: list
):
    """Rows of 40 and 780 label tokens, one a micro-batch: ARPO's formula and the global mean differ by ~0.01."""
    # The session's demo model, which loss_check would build the same way (build_tiny_model, seed 0).
    shutil.copytree(tiny_model, tmp_path / "work" / "model")
    out = tmp_path / "report.json"
    argv = ["--accumulation", str(accumulation), "--workdir", str(tmp_path / "work"), "--json", str(out)]
    assert loss_check.main(argv + overrides) == 0, out.read_text() if out.exists() else "no report"
    report = json.loads(out.read_text())
    assert report["config"].endswith("yaml/sft_config.yaml")
    assert (report["ranks"], report["accumulation"]) == (2, accumulation)
    tokens = [row["tokens"] for row in report["rows"]]
    assert max(tokens) > 10 * min(tokens)  # rows of very unequal length
    assert report["formulas_differ"], report
    assert abs(report["first_loss"] - report["arpo_loss"]) <= report["tolerance"], report
    assert abs(report["first_loss"] - report["global_mean_loss"]) > 10 * report["tolerance"], report
