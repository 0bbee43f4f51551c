"""`arpo-sft sandbox run FILE.py`: run one file the way verify's tool loop runs a <python> call."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ...errors import UserError
from ..loop import Limits
from . import (
    CODE_LIMIT_BYTES,
    SCRATCH_MB,
    TIMEOUT_LIMIT_S,
    WEAK_FLAG,
    isolation_problem,
    run_python,
    terminal_safe,
)


def run(args: argparse.Namespace) -> int:
    """Print what the tool loop would put inside <result>; exit 0 whatever the code did."""
    if not 0 < args.timeout <= TIMEOUT_LIMIT_S:  # NaN fails this too
        raise UserError(
            f"--timeout {args.timeout:g}: expected seconds above 0 and at most {TIMEOUT_LIMIT_S:g}"
        )
    code = _read_code(Path(args.file))
    result = run_python(code, timeout_s=args.timeout, allow_weak=args.allow_weak_sandbox)
    if result.mode == "weak":
        print(f"arpo-sft: warning: weak sandbox ({isolation_problem()})", file=sys.stderr)
    output = result.tool_output()
    # The code's own escape sequences would retitle, recolour or rewrite this terminal; a pipe gets them exact.
    print(terminal_safe(output) if sys.stdout.isatty() else output)
    return 0


def _read_code(path: Path) -> str:
    """FILE.py's text, read once and at most one byte past the limit (an endless /dev/zero ends here)."""
    try:
        with path.open("rb") as file:
            data = file.read(CODE_LIMIT_BYTES + 1)
        if len(data) > CODE_LIMIT_BYTES:
            raise UserError(
                f"{path}: over the sandbox's {CODE_LIMIT_BYTES:,}-byte limit for one snippet; pass a smaller file"
            )
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read it ({err}); pass a readable UTF-8 python file") from err


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `sandbox run` to the `arpo-sft` command tree."""
    group = subparsers.add_parser(
        "sandbox",
        help="probe the python sandbox that verify runs model-written code in",
        epilog="example:\n  arpo-sft sandbox run attack.py --timeout 5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = group.add_subparsers(dest="sandbox_command", required=True, metavar="SANDBOX_COMMAND")
    p = sub.add_parser(
        "run",
        help="run FILE.py as one <python> tool call and print what its <result> would hold",
        description="Run FILE.py exactly as `arpo-sft verify` runs a <python> call: own mount, PID and\n"
        "network namespaces, a read-only root holding only the system libraries and this interpreter,\n"
        "a seccomp filter (sockets only of the unix, IPv4 and IPv6 families; no kernel keyrings),\n"
        f"a {SCRATCH_MB} MB scratch /tmp, no privileges, memory/CPU/process/file-size limits. Prints\n"
        "what the tool loop would put inside <result>: stdout, or stderr and why it stopped on failure.\n"
        "Exit status: 0 when the sandbox ran (whatever the code did), 3 when this host cannot isolate it.",
        epilog="example:\n  arpo-sft sandbox run attack.py --timeout 5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add, seconds = p.add_argument, Limits.python_timeout_s
    add("file", metavar="FILE.py", help="the python code to run")
    add("--timeout", type=float, default=seconds, metavar="S", help=f"wall clock (default: {seconds:g})")
    add(WEAK_FLAG, action="store_true", help="where isolation is unavailable, run it weakly anyway")
    p.set_defaults(func=run)
