"""Progress bars for long steps: rate and ETA on a terminal, nothing at all in a log."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def file_progress(path: Path, desc: str) -> Any:
    """A tqdm bar over the bytes of `path` (ETA when it is a regular file), shown only on a terminal."""
    from tqdm.auto import tqdm

    total = path.stat().st_size if path.is_file() and not path.name.endswith(".gz") else None
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=not sys.stderr.isatty())
