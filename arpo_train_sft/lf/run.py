"""LLaMA-Factory's training on this rank, with `qwen_mask_results` registered in this process first."""

from __future__ import annotations

from typing import Any

from llamafactory.train.tuner import run_exp

from . import masking  # noqa: F401  (registers qwen_mask_results in this process)


def train(callbacks: list[Any]) -> None:
    """Train with the arguments on sys.argv, exactly as `llamafactory-cli train` reads them, plus `callbacks`."""
    run_exp(callbacks=callbacks)
