"""An untested LLaMA-Factory stops every entry point with one line naming both versions and the fix, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import arpo_train_sft
from arpo_train_sft.errors import EXIT_USER_ERROR, UserError
from arpo_train_sft.lf import TESTED_VERSIONS, check_version

from ..conftest import REPO, run_env

FIX = f"pip install 'llamafactory=={TESTED_VERSIONS[-1]}'"


def test_tested_version_passes():
    for tested in TESTED_VERSIONS:
        check_version(tested)


@pytest.mark.parametrize(("installed", "says"), [("0.9.9", "0.9.9 is installed"), (None, "is not installed")])
def test_other_version_is_one_line_with_both_versions_and_the_fix(installed: str | None, says: str):
    with pytest.raises(UserError) as raised:
        check_version(installed)
    (line,) = raised.value.problems
    assert f"LLaMA-Factory {says}" in line
    assert f"arpo-train-sft {arpo_train_sft.__version__} is tested with {TESTED_VERSIONS[-1]}" in line
    assert line.endswith(f"fix: {FIX}")


@pytest.fixture
def fake_llamafactory(tmp_path: Path) -> dict[str, str]:
    """An environment whose first sys.path entry claims LLaMA-Factory 0.9.9 is installed."""
    dist = tmp_path / "fake" / "llamafactory-0.9.9.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: llamafactory\nVersion: 0.9.9\n")
    path = os.pathsep.join(p for p in (str(dist.parent), os.environ.get("PYTHONPATH", "")) if p)
    return run_env(PYTHONPATH=path)


def assert_one_line_exit_2(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == EXIT_USER_ERROR, result.stderr[-2000:]
    assert result.stderr.splitlines() == [
        f"arpo-sft: error: LLaMA-Factory 0.9.9 is installed, but arpo-train-sft {arpo_train_sft.__version__} "
        f"is tested with {TESTED_VERSIONS[-1]} only (it patches private code); fix: {FIX}"
    ]


def test_train_stops_before_anything_runs(fake_llamafactory: dict[str, str], tmp_path: Path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = subprocess.run(
        ["arpo-sft", "train", str(REPO / "yaml" / "demo_cpu.yaml")],
        cwd=workdir,
        env=fake_llamafactory,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_exit_2(result)
    assert result.stdout == ""  # no torchrun command, no model built
    assert list(workdir.iterdir()) == []


def test_rank_entry_stops_with_the_same_line(fake_llamafactory: dict[str, str], tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "arpo_train_sft.entry", str(REPO / "yaml" / "demo_cpu.yaml")],
        cwd=tmp_path,
        env=fake_llamafactory,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_exit_2(result)
    assert result.stdout == ""
