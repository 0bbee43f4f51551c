"""Training arguments as LLaMA-Factory's own parser defines them."""

from __future__ import annotations

import dataclasses

from llamafactory.hparams.parser import _TRAIN_ARGS


def training_keys() -> set[str]:
    """Every key LLaMA-Factory's training parser accepts, read from its own dataclasses."""
    return {field.name for cls in _TRAIN_ARGS for field in dataclasses.fields(cls)}
