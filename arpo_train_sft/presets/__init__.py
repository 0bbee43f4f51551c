"""The files a working directory needs (presets, DeepSpeed configs, dataset_info, the launcher), as package data.

In a checkout yaml/, examples/, dataset_info/ and sft_train.sh next to this file are symlinks to the top-level
folders, which stay the source of truth; building the wheel copies what PATTERNS selects from them, so an
installed package, an editable install and a plain checkout all read the same names from here.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

# What is shipped, relative to the presets root; pyproject.toml's package-data lists the same globs (a test
# keeps them equal). Spelled out rather than "everything", because dataset_info/ also holds downloaded data.
PATTERNS = (
    "yaml/*.yaml",
    "examples/deepspeed/*.json",
    "dataset_info/dataset_info.json",
    "dataset_info/demo/*.jsonl",
    "sft_train.sh",
)


def shipped_files() -> dict[str, Path]:
    """Every shipped file as {path relative to a working directory: where it is installed}, sorted by name."""
    # pip installs packages as plain directories, so the resource root is a real path in every supported install.
    root = Path(str(files(__name__)))
    found = {path.relative_to(root).as_posix(): path for pattern in PATTERNS for path in root.glob(pattern)}
    return dict(sorted((name, path) for name, path in found.items() if path.is_file()))
