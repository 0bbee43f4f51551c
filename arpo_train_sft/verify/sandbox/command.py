"""`arpo-sft sandbox run FILE.py`: run one file the way verify's tool loop runs a <python> call."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ...errors import UserError
from ..loop import Limits
from . import SCRATCH_MB, WEAK_FLAG, isolation_problem, run_python


def run(args: argparse.Namespace) -> int:
    """Print what the tool loop would put inside <result>; exit 0 whatever the code did."""
    if args.timeout <= 0:
        raise UserError(f"--timeout must be > 0, not {args.timeout:g}")
    try:
        code = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{args.file}: cannot read it ({err}); pass a readable UTF-8 python file") from err
    result = run_python(code, timeout_s=args.timeout, allow_weak=args.allow_weak_sandbox)
    if result.mode == "weak":
        print(f"arpo-sft: warning: weak sandbox ({isolation_problem()})", file=sys.stderr)
    print(result.tool_output())
    return 0


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
