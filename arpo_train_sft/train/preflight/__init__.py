"""`arpo-sft preflight`: every check that runs in seconds before torchrun, printed as one table."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ...errors import UserError
from ...secrets import redact
from .rows import CHECKS, FAIL, WARN, Gpu, Plan, Row

SKIP_FLAG = "--skip-preflight"
ALLOWED = "allowed"  # the status a failed row of an --allow'ed check is shown with


def checks() -> list[Callable[[Plan], list[Row]]]:
    """Every check, in the order of the table; adding one is adding a line here."""
    from .arguments import check_config
    from .environment import check_gpus, check_topology, check_versions
    from .files import check_dataset, check_deepspeed_file, check_model, check_output_dir
    from .memory import check_memory
    from .repro import check_reproduction
    from .stop import check_stop_timeout

    return [
        check_config,  # keys, values, template, then LLaMA-Factory's parser and DeepSpeed's schema
        check_versions,
        check_gpus,
        check_memory,  # the estimate for this config's ZeRO stage and offload, on these GPUs
        check_topology,
        check_stop_timeout,  # ARPO_SFT_STOP_TIMEOUT against the time to save a checkpoint on SIGTERM
        check_model,
        check_dataset,
        check_deepspeed_file,
        check_output_dir,
        check_reproduction,
    ]


def run_preflight(plan: Plan) -> list[Row]:
    """All rows for `plan`, in table order."""
    return [row for check in checks() for row in check(plan)]


def failures(rows: list[Row], allowed: tuple[str, ...] = ()) -> list[str]:
    """The failing rows as error lines, one each, less those of the checks in `allowed`; secrets masked.

    A row may echo a value as it was given (`hf_hub_token: ['hf_a', 'hf_b'] is not a string`), and these
    lines reach the terminal, the training log's header and callers' own messages.
    """
    return [redact(row.line) for row in rows if row.status == FAIL and row.check not in allowed]


def check_allowed(names: list[str]) -> tuple[str, ...]:
    """The `--allow` names, each one a check of the table; else one line listing the names."""
    unknown = [name for name in names if name not in CHECKS]
    if unknown:
        listed = ", ".join(repr(name) if " " in name else name for name in CHECKS)
        raise UserError(f"--allow {unknown[0]}: not a preflight check; the checks are: {listed}")
    return tuple(dict.fromkeys(names))


def print_table(rows: list[Row], title: str) -> None:
    """The rows as one rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    colours = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim", ALLOWED: "bold yellow"}
    table = Table(title=title, show_lines=False)
    for column in ("check", "status", "found", "fix"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row.check, f"[{colours[row.status]}]{row.status}[/]", redact(row.found), redact(row.fix)
        )
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def gpus_for(
    gpus_flag: str | None, mem_flag: str | None, config: Path | None = None
) -> tuple[list[Gpu], bool]:
    """The GPUs to plan for: this machine's, or the ones --gpus/--gpu-mem declare; and whether declared.

    A declared GPU's memory comes from --gpu-mem, else the preset's "Sized for:" header, else this machine's
    GPUs; with none of them there is nothing to plan with. --gpus counts one node's GPUs, at most
    RANKS_PER_NODE_MAX, and the list holds one shared record per GPU.
    """
    from ..estimate import hardware_from_header
    from ..hardware import gpu_count, gpu_memory
    from ..values import RANKS_PER_NODE_MAX
    from .environment import detect_gpus

    mem = None if mem_flag is None else gpu_memory(mem_flag)
    count = None if gpus_flag is None else gpu_count(gpus_flag, RANKS_PER_NODE_MAX)
    visible = detect_gpus()
    if count is None:
        if mem is None:
            return visible, False
        if not visible:
            raise UserError("--gpu-mem: no GPU is visible here; also pass --gpus N to plan for N GPUs")
        return [Gpu(gpu.name, mem, gpu.capability) for gpu in visible], True
    header = hardware_from_header(config)[1] if mem is None and config is not None else None
    template = visible[0] if visible else None
    mem = mem or header or (template.mem_gib if template else None)
    if mem is None:
        raise UserError(
            f"--gpus {count}: no GPU memory to plan with (no --gpu-mem, no 'Sized for: ... Nx M GB GPUs' "
            "header, no GPU visible here); pass --gpu-mem GIB, e.g. --gpu-mem 80"
        )
    gpu = Gpu(template.name if template else "declared GPU", mem, template.capability if template else None)
    return [gpu] * count, True


def make_plan(args: argparse.Namespace, fresh: bool = False) -> Plan:
    """Load the config with its overrides and collect what the checks judge it against."""
    from ...config import load_run_config

    cfg = load_run_config(Path(args.config), args.overrides)
    gpus, declared = gpus_for(getattr(args, "gpus", None), getattr(args, "gpu_mem", None), cfg.path)
    return Plan(cfg=cfg, gpus=gpus, env=dict(os.environ), declared=declared, fresh=fresh)


def report(rows: list[Row], as_json: bool, title: str, allowed: tuple[str, ...] = ()) -> list[str]:
    """Print the rows (table or JSON); raise UserError with one line per failing row not in `allowed`.

    Returns the lines of the failed rows that `allowed` let through, for the training log's header.
    """
    overridden = [row for row in rows if row.status == FAIL and row.check in allowed]
    if as_json:
        print(redact(json.dumps([row.__dict__ for row in rows], indent=1)))
    else:
        shown = [
            Row(row.check, ALLOWED, row.found, row.fix, row.where) if row in overridden else row
            for row in rows
        ]
        print_table(shown, title)
    warned = sum(row.status == WARN for row in rows)
    problems = failures(rows, allowed)
    if not as_json:
        verdict = f"{len(problems)} failed" if problems else "all passed"
        if overridden:
            names = ", ".join(dict.fromkeys(row.check for row in overridden))
            verdict = f"{len(problems)} failed, {len(overridden)} failed but allowed by --allow ({names})"
        print(f"[arpo-sft] preflight: {len(rows)} rows, {verdict}, {warned} warning(s)", flush=True)
    if problems:
        raise UserError(problems)
    return [f"--allow {row.check}: {redact(row.line)}" for row in overridden]


def run(args: argparse.Namespace) -> int:
    """Run every check on CONFIG; exit 0 when all pass, 2 otherwise."""
    plan = make_plan(args, fresh=args.fresh)
    report(run_preflight(plan), args.json, f"preflight: {plan.cfg.path}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `preflight` to the command tree."""
    parser = subparsers.add_parser(
        "preflight",
        help="check a training config, this machine and the output dir in seconds, without starting training",
        description="Run every check `arpo-sft train` runs before torchrun and print them as one table: "
        "the config through LLaMA-Factory's own parser, package versions, GPUs, rendezvous settings, model, "
        "dataset, DeepSpeed JSON, output_dir (disk, resume) and departures from ARPO's published run "
        "(warnings only). Exit 0 when every check passes, 2 otherwise.",
        epilog="examples:\n  arpo-sft preflight yaml/sft_config.yaml\n"
        "  arpo-sft preflight yaml/qwen2.5-14b.yaml --gpus 8 --gpu-mem 80   plan for another machine",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="training YAML, e.g. yaml/sft_config.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override a YAML key")
    parser.add_argument("--gpus", help="plan for this many GPUs per node instead of the ones visible here")
    parser.add_argument("--gpu-mem", help="plan for GPUs with this much memory each (GiB)")
    parser.add_argument("--fresh", action="store_true", help="judge a `train --fresh` launch (no resume)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    parser.set_defaults(func=run)
