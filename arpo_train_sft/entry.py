"""What torchrun runs on every rank: `python -m arpo_train_sft.entry CONFIG.yaml [key=value ...]`.

The one entry module (config.ENTRY_MODULE; users' training.log and model cards name it). It imports `lf/`
inside `main`, so that an untested LLaMA-Factory stops each rank with the one-line error, not with a
traceback; the callbacks it attaches live in `rank/`.
"""

from __future__ import annotations

import sys
import warnings

from .errors import EXIT_USER_ERROR, UserError


def main() -> None:
    """Check LLaMA-Factory, register on this rank, then hand over to LLaMA-Factory's training."""
    try:
        from . import lf  # noqa: F401  (checks the installed LLaMA-Factory before anything imports it)
    except UserError as err:
        print(f"arpo-sft: error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    run()


def run() -> None:
    """Train with the arguments on sys.argv, exactly as `llamafactory-cli train` reads them, plus what the
    launcher promises: one resume decision for the job, a checkpoint on SIGTERM, a stop without saving at
    the first step whose loss or gradient norm is not finite, throughput/MFU/memory per logged step, and
    a CUDA out-of-memory error told as one line."""
    from .lf.run import train
    from .rank.agree import agree_on_resume
    from .rank.groups import RestoreGroupSettings
    from .rank.health import StopOnNonFinite
    from .rank.metrics import StepMetrics
    from .rank.oom import OomWatch, run_guarded
    from .rank.preempt import SaveOnSigterm

    # DeepSpeed calls collectives that torch 2.14 deprecates: two warnings per collective per step
    # (about 4,000 lines in the 50-step demo) that bury the training log and ask nothing of users.
    warnings.filterwarnings(
        "ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning
    )
    sys.argv = agree_on_resume(sys.argv)
    health, oom = StopOnNonFinite(), OomWatch()
    callbacks = [health, SaveOnSigterm(health), StepMetrics(sys.argv[1:]), oom, RestoreGroupSettings()]
    run_guarded(lambda: train(callbacks), oom)


if __name__ == "__main__":
    main()
