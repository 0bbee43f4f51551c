"""`arpo-sft init`: the shipped set is the top-level folders, written whole, never over a user's file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from arpo_train_sft.cli import main
from arpo_train_sft.presets import PATTERNS, shipped_files

REPO = Path(__file__).resolve().parents[2]


def repo_shipped() -> list[str]:
    """What must ship, found by globbing the top-level folders themselves: a new preset is covered at once."""
    found = [
        *(REPO / "yaml").iterdir(),
        *(REPO / "examples" / "deepspeed").iterdir(),
        REPO / "dataset_info" / "dataset_info.json",
        *(REPO / "dataset_info" / "demo").iterdir(),
        REPO / "sft_train.sh",
    ]
    return sorted(path.relative_to(REPO).as_posix() for path in found if path.is_file())


def test_shipped_files_are_the_top_level_folders():
    shipped = shipped_files()
    assert list(shipped) == repo_shipped()
    for name, path in shipped.items():
        assert path.read_bytes() == (REPO / name).read_bytes(), name


def test_package_data_globs_are_the_accessor_globs():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert config["tool"]["setuptools"]["package-data"]["arpo_train_sft.presets"] == list(PATTERNS)


def test_init_writes_exactly_the_shipped_set(tmp_path, capsys):
    target = tmp_path / "new" / "run"
    assert main(["init", str(target)]) == 0
    written = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert written == repo_shipped()
    for name in written:
        assert (target / name).read_bytes() == (REPO / name).read_bytes(), name
    assert (target / "sft_train.sh").stat().st_mode & stat.S_IXUSR
    out = capsys.readouterr().out
    assert f"wrote {len(written)} files to {target}:" in out
    assert "  yaml/demo_cpu.yaml\n" in out
    assert out.rstrip().endswith(f"next: cd {target} && bash sft_train.sh yaml/demo_cpu.yaml")


def test_init_refuses_to_overwrite_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "yaml").mkdir()
    (tmp_path / "yaml" / "demo_cpu.yaml").write_text("mine\n")
    (tmp_path / "sft_train.sh").write_text("mine\n")
    assert main(["init", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"arpo-sft: error: {tmp_path} already has sft_train.sh, yaml/demo_cpu.yaml; "
        "pass --force to overwrite the shipped files there, or choose another DIR"
    ]
    assert (tmp_path / "yaml" / "demo_cpu.yaml").read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["demo_cpu.yaml", "sft_train.sh", "yaml"]


def test_init_leaves_other_files_alone_and_force_overwrites_shipped_ones(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "keep.txt").write_text("mine\n")
    assert main(["init", str(tmp_path)]) == 0
    (tmp_path / "yaml" / "demo_cpu.yaml").write_text("edited\n")
    assert main(["init", str(tmp_path), "--force"]) == 0
    demo = "yaml/demo_cpu.yaml"
    assert (tmp_path / demo).read_bytes() == (REPO / demo).read_bytes()
    assert (tmp_path / "models" / "keep.txt").read_text() == "mine\n"


def test_init_into_a_file_is_a_user_error(tmp_path, capsys):
    (tmp_path / "run").write_text("")
    assert main(["init", str(tmp_path / "run")]) == 2
    assert "is a file; choose a directory" in capsys.readouterr().err


def test_init_says_how_to_put_arpo_sft_on_path_when_it_is_not(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["init", str(tmp_path / "run")]) == 0
    assert "sft_train.sh runs `arpo-sft` from PATH; first: export PATH=" in capsys.readouterr().out
    assert os.access(tmp_path / "run" / "sft_train.sh", os.X_OK)
