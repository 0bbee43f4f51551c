"""The bench scripts as modules: they are files in bench/, not a package, so each test module loads them here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load(name: str) -> ModuleType:
    """bench/NAME.py as module NAME (dataclasses resolve their module by name, so it goes in sys.modules)."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """bench/gpu_throughput.py, which brings throughput_setup, throughput_launch and throughput_log along."""
    return load("gpu_throughput")
