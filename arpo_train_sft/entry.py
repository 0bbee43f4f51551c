"""What torchrun runs on every rank: `python -m arpo_train_sft.entry CONFIG.yaml [key=value ...]`.

It stays outside `lf/` so that an untested LLaMA-Factory stops each rank with the one-line error, not
with a traceback from importing the package that checks it.
"""

from __future__ import annotations

import sys

from .errors import EXIT_USER_ERROR, UserError


def main() -> None:
    """Check LLaMA-Factory, register on this rank, then hand over to LLaMA-Factory's training."""
    try:
        from .lf import entry
    except UserError as err:
        print(f"arpo-sft: error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    entry.run()


if __name__ == "__main__":
    main()
