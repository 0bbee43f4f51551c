"""Helpers for tests that walk the data commands as users do: the real CLI, real files, one-line errors."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from arpo_train_sft.cli import main

from ..conftest import REPO


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `arpo-sft ARGV` run in this process; argparse errors included."""
    try:
        code = main(list(argv))
    except SystemExit as done:
        code = done.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    """The single `arpo-sft: error:` line of stderr (argparse puts its usage line before it), no traceback."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert not [line for line in err.splitlines() if not line.startswith(("usage:", " ", "arpo-sft"))], err
    return errors[0]


def digest(*paths: Path) -> dict[str, str]:
    """sha256 of each file, to show that no input changed."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`bash -c COMMAND` with `arpo-sft` on PATH as a function running this checkout's code."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    prelude = f'arpo-sft() {{ "{sys.executable}" -m arpo_train_sft.cli "$@"; }}\n'
    return subprocess.run(
        ["bash", "-c", prelude + command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
