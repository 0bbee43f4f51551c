"""The tokenized cache on a disk that fills up (exit 3, one line) or cannot be written (exit 2)."""

from __future__ import annotations

import errno
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from arpo_train_sft.config import RunConfig, load_run_config
from arpo_train_sft.errors import EXIT_ENVIRONMENT, EXIT_USER_ERROR, UserError
from arpo_train_sft.train.tokenized import build as tokenized_build
from arpo_train_sft.train.tokenized import tokenized_overrides

from ..conftest import tiny_data_and_tokenizer


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 256 KiB tmpfs: too small for the demo's 1.5 MB tokenized dataset."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def run(tmp_path: Path) -> RunConfig:
    """A config over a tiny data file and tokenizer files (the build itself is replaced in each test)."""
    data, model = tiny_data_and_tokenizer(tmp_path)
    values = {
        "model_name_or_path": str(model),
        "dataset_dir": str(data),
        "dataset": "rows",
        "template": "qwen",
        "output_dir": str(tmp_path / "out"),
    }
    return RunConfig(path=tmp_path / "x.yaml", overrides=(), values=values)


def big_build(path: Path, args: dict[str, Any]) -> dict[str, Any]:
    """Stands in for LLaMA-Factory's build: 1 MiB of real writes, as save_to_disk makes them."""
    (path / "train").mkdir(parents=True)
    with (path / "train" / "data-00000-of-00001.arrow").open("wb") as handle:
        for _ in range(16):
            handle.write(b"\0" * (1 << 16))
    return {"rows": {"train": 1}, "encoder": "fake"}


def left_behind(root: Path) -> list[str]:
    """What a failed build left in the cache, less the empty lock files of the key (tokenized/lock.py)."""
    return [p.name for p in root.iterdir() if not (p.name.endswith(".lock") and p.stat().st_size == 0)]


def test_a_full_disk_is_exit_3_with_one_line_and_leaves_nothing(run, tiny_disk, monkeypatch):
    monkeypatch.setattr(tokenized_build, "run_build", big_build)
    monkeypatch.setenv("ARPO_SFT_CACHE", str(tiny_disk))
    with pytest.raises(UserError) as err:
        tokenized_overrides(run)
    assert err.value.exit_code == EXIT_ENVIRONMENT
    [line] = err.value.problems
    assert line.startswith(f"tokenized dataset: cannot write {tiny_disk / 'tokenized'}/")
    assert line.endswith(
        "No space left on device; free space there or set ARPO_SFT_CACHE to a directory on a disk with room"
    )
    assert left_behind(tiny_disk / "tokenized") == []


@pytest.mark.parametrize(
    ("code", "status", "fix"),
    [
        (errno.ENOSPC, EXIT_ENVIRONMENT, "free space there"),
        (errno.EDQUOT, EXIT_ENVIRONMENT, "free space there"),
        (errno.EACCES, EXIT_USER_ERROR, "to a directory you can write"),
    ],
)
def test_the_build_childs_write_error_keeps_its_exit_status(run, tmp_path, monkeypatch, code, status, fix):
    """The child reports an OSError as JSON on its last line; the launcher exits as cli does for one."""

    def child(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        failed = json.dumps({"error": errno.errorcode[code], "errno": code})
        return subprocess.CompletedProcess(cmd, 3, f"encoder: x\n{failed}\n")

    monkeypatch.setattr(tokenized_build.subprocess, "run", child)
    monkeypatch.setenv("ARPO_SFT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError) as err:
        tokenized_overrides(run)
    assert err.value.exit_code == status and len(err.value.problems) == 1 and fix in err.value.problems[0]


def test_a_cache_path_through_a_file_is_exit_2(run, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("ARPO_SFT_CACHE", str(tmp_path / "file"))
    with pytest.raises(UserError) as err:
        tokenized_overrides(run)
    assert err.value.exit_code == EXIT_USER_ERROR
    [line] = err.value.problems
    assert line.startswith("tokenized dataset: cannot write ") and "Not a directory" in line


@pytest.mark.integration
def test_a_disk_that_fills_during_the_real_build_is_exit_3(demo_run, checkout, monkeypatch, tiny_disk):
    monkeypatch.chdir(checkout)
    monkeypatch.setenv("ARPO_SFT_CACHE", str(tiny_disk))
    cfg = load_run_config(Path("yaml/demo_cpu.yaml"), ["max_samples=200"])
    with pytest.raises(
        UserError, match="No space left on device; free space there or set ARPO_SFT_CACHE"
    ) as err:
        tokenized_overrides(cfg)
    assert err.value.exit_code == EXIT_ENVIRONMENT and len(err.value.problems) == 1
    assert left_behind(tiny_disk / "tokenized") == []  # no entry, no half-written build left behind
