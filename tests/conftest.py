"""Shared fixtures: the repo root, and a scratch checkout for runs that write models and outputs."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# What a user's checkout needs at run time; the package itself is installed.
CHECKOUT_PARTS = ("sft_train.sh", "yaml", "dataset_info", "examples")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the runnable parts of the repo with no models/ yet, so the demo must build its model."""
    root = tmp_path_factory.mktemp("checkout")
    for part in CHECKOUT_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, root / part)
        else:
            shutil.copy2(src, root / part)
    return root


def run_env(**extra: str) -> dict[str, str]:
    """The caller's environment with this venv's bin first on PATH (torchrun, llamafactory-cli)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env
