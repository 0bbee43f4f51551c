"""Argument types of the data commands: a bad number is one usage line (exit 2), never a traceback later."""

from __future__ import annotations

import argparse


def whole_number(text: str) -> int:
    """0, 1, 2, ..."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, not {text!r}")
    return int(text)


def positive_number(text: str) -> int:
    """1, 2, 3, ..."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number, 1 or more, not {text!r}")
    return int(text)
