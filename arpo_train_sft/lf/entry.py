"""LLaMA-Factory's training, as each torchrun rank runs it once the plugin is registered there."""

from __future__ import annotations

import sys
import warnings

from llamafactory.train.tuner import run_exp

from ..checkpoint.agree import agree_on_resume
from . import masking  # noqa: F401  (registers qwen_mask_results in this process)
from .health import StopOnNonFinite
from .metrics import StepMetrics
from .oom import OomWatch, run_guarded
from .preempt import SaveOnSigterm


def run() -> None:
    """Train with the arguments on sys.argv, exactly as `llamafactory-cli train` reads them, plus what the
    launcher promises: one resume decision for the job, a checkpoint on SIGTERM, a stop without saving at
    the first step whose loss or gradient norm is not finite, throughput/MFU/memory per logged step, and
    a CUDA out-of-memory error told as one line."""
    # DeepSpeed calls collectives that torch 2.14 deprecates: two warnings per collective per step
    # (about 4,000 lines in the 50-step demo) that bury the training log and ask nothing of users.
    warnings.filterwarnings(
        "ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning
    )
    sys.argv = agree_on_resume(sys.argv)
    health, oom = StopOnNonFinite(), OomWatch()
    callbacks = [health, SaveOnSigterm(health), StepMetrics(sys.argv[1:]), oom]
    run_guarded(lambda: run_exp(callbacks=callbacks), oom)
