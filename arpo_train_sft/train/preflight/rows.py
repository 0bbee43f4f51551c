"""What every preflight check takes (the run as planned) and gives back (rows of the table)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...config import RunConfig

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
# Every check's name, in table order: what `train --allow CHECK` accepts (a test reads every Row the
# checks can make and holds them to this list).
CHECKS = (
    "keys",
    "values",
    "template",
    "llamafactory",
    "deepspeed schema",
    "versions",
    "gpus",
    "bf16",
    "flash_attn",
    "memory",
    "topology",
    "ddp_timeout",
    "stop_timeout",
    "model",
    "dataset",
    "deepspeed",
    "output_dir",
    "disk",
    "resume",
    "ARPO run",
)


@dataclass(frozen=True)
class Row:
    """One line of the preflight table: which check, how it went, what was found, and how to fix it."""

    check: str
    status: str
    found: str
    fix: str = ""
    where: str = ""  # the file the problem is in, when it is in one

    @property
    def line(self) -> str:
        """The row as one error line: where, what, and the fix."""
        text = f"{self.found}: {self.fix}" if self.fix else self.found
        return f"{self.where}: {text}" if self.where else text


@dataclass(frozen=True)
class Gpu:
    """One GPU as preflight sees it; `capability` is None when it was declared (--gpus), not detected."""

    name: str
    mem_gib: float
    capability: tuple[int, int] | None = None


@dataclass(frozen=True)
class Plan:
    """The run preflight judges: the merged config, the GPUs per node, the environment, the relaunch mode."""

    cfg: RunConfig
    gpus: list[Gpu]
    env: Mapping[str, str]
    declared: bool = False  # GPUs came from --gpus/--gpu-mem-gib rather than from this machine
    fresh: bool = False
    # What preflight's one LLaMA-Factory child answered (check_config asks it first); later checks read it
    # rather than start a second child. Empty when it did not answer.
    child: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def where(self) -> str:
        return str(self.cfg.path)
