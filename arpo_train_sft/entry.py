"""What torchrun runs on every rank: the plugin's registrations, then LLaMA-Factory's training.

Run as `python -m arpo_train_sft.entry CONFIG.yaml [key=value ...]`; the arguments are read by
LLaMA-Factory itself, exactly as `llamafactory-cli train` reads them.
"""

from __future__ import annotations

import warnings


def main() -> None:
    """Register on this rank, then hand over to LLaMA-Factory."""
    from llamafactory.train.tuner import run_exp

    import arpo_train_sft

    # DeepSpeed calls collectives that torch 2.14 deprecates: two warnings per collective per step
    # (about 4,000 lines in the 50-step demo) that bury the training log and ask nothing of users.
    warnings.filterwarnings(
        "ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning
    )
    arpo_train_sft.register()
    run_exp()


if __name__ == "__main__":
    main()
