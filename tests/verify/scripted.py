"""A stand-in for verify's model: every generation is the next step a test scripts."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest

from arpo_train_sft.verify import command
from arpo_train_sft.verify.loop import Step


class ScriptedEngine:
    """An engine with verify's interface whose every row writes `next_step()`, one row at a time."""

    name = "scripted"

    def __init__(self, next_step: Callable[[], Step]) -> None:
        self.next_step = next_step

    def prompt(self, question: str) -> str:
        return question

    def default_batch_size(self, limits) -> int:
        return 1

    def generate(self, rows, on_done) -> None:
        for row in rows:
            on_done(row.key, self.next_step())


def script_the_model(monkeypatch: pytest.MonkeyPatch, next_step: Callable[[], Step]) -> None:
    """Make `arpo-sft verify` generate with a ScriptedEngine instead of loading the model."""
    engine = ScriptedEngine(next_step)
    monkeypatch.setattr(command, "_model_engine", lambda kind, path: contextlib.nullcontext(engine))
