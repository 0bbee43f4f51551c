"""`arpo-sft init DIR`: write a working directory (presets, DeepSpeed configs, demo data, sft_train.sh)."""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

from ..atomic import atomic_writer, check_outputs
from ..errors import UserError
from . import shipped_files

DEMO_CONFIG = "yaml/demo_cpu.yaml"


def write_workdir(target: Path, force: bool = False) -> list[str]:
    """Copy every shipped file into target (refusing to replace one unless force); return the names written."""
    if target.exists() and not target.is_dir():
        raise UserError(f"{target} is a file; choose a directory for `arpo-sft init`")
    shipped = shipped_files()
    # Every file is checked before the first is written: a link, a device or a folder in a shipped file's place,
    # or DIR being the package's own files, stops init with nothing written, --force or not.
    check_outputs(
        {f"the shipped {name}": source for name, source in shipped.items()},
        {f"DIR's {name}": target / name for name in shipped},
    )
    taken = [name for name in shipped if (target / name).exists()]
    if taken and not force:
        more = f" (+{len(taken) - 3} more)" if len(taken) > 3 else ""
        raise UserError(
            f"{target} already has {', '.join(taken[:3])}{more}; "
            "pass --force to overwrite the shipped files there, or choose another DIR"
        )
    for name, source in shipped.items():
        # Each file appears whole or not at all; an interrupted init is finished by running it again with --force.
        with atomic_writer(target / name, binary=True) as handle:
            handle.write(source.read_bytes())
        if name.endswith(".sh"):
            # Executable wherever it is readable: the permissions atomic_writer chose, plus x.
            mode = (target / name).stat().st_mode
            (target / name).chmod(mode | (mode & 0o444) >> 2)
    return list(shipped)


def run(args: argparse.Namespace) -> int:
    """Write the working directory, list it, and say how to start the demo there."""
    target = Path(args.dir)
    written = write_workdir(target, force=args.force)
    print(f"wrote {len(written)} files to {target}:")
    for name in written:
        print(f"  {name}")
    if shutil.which("arpo-sft") is None:
        # A console script started by its full path (venv/bin/arpo-sft) need not be on PATH.
        bin_dir = shlex.quote(str(Path(sys.executable).parent))
        print(f"sft_train.sh runs `arpo-sft` from PATH; first: export PATH={bin_dir}:$PATH")
    print(f"next: cd {shlex.quote(str(target))} && bash sft_train.sh {DEMO_CONFIG}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `init` to the command tree."""
    parser = subparsers.add_parser(
        "init",
        help="write a working directory: presets, DeepSpeed configs, demo data and sft_train.sh",
        description="Copy the shipped yaml/, examples/deepspeed/, dataset_info/ and sft_train.sh into DIR, so an "
        "installed package runs the demo and the presets outside a checkout. Files already in DIR are left "
        "alone unless --force; other files there are never touched.",
        epilog=f"example:\n  arpo-sft init arpo-run && cd arpo-run && bash sft_train.sh {DEMO_CONFIG}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", metavar="DIR", help="directory to write (created if missing)")
    parser.add_argument("--force", action="store_true", help="overwrite shipped files already in DIR")
    parser.set_defaults(func=run)
