"""ARPO cold-start SFT on upstream LLaMA-Factory."""

from importlib.metadata import version

__version__ = version("arpo-train-sft")


def register() -> None:
    """Register the plugin with LLaMA-Factory in this process; importing `arpo_train_sft.lf.masking` does it."""
    from .lf import masking  # noqa: F401
