"""`arpo-sft train`: check a config in seconds, then run torchrun on every local rank."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    """Run preflight, agree on the job's resume, then launch torchrun with its output teed to this node's log."""
    from .. import lf  # noqa: F401  (stops on an untested LLaMA-Factory before anything else runs)
    from ..checkpoint.diverged import diverged_exit
    from ..checkpoint.resume import resume_overrides
    from ..checkpoint.stopped import DIR_ENV as STOP_DIR_ENV
    from ..checkpoint.stopped import read_note
    from ..console import say
    from ..demo.model import DEMO_MODEL_DIR, ensure_demo_model
    from ..errors import EXIT_OOM, EXIT_PREEMPTED, EnvironmentProblem, UserError
    from ..secrets import move_to_env
    from .handshake import agree, data_info, node_info
    from .launch import failure_lines, run_teed, torchrun_command, training_env
    from .oom import LOG_ENV, MARKER, oom_line
    from .oom import read_note as read_oom
    from .preflight import SKIP_FLAG, check_allowed, make_plan, report, run_preflight
    from .preflight.files import is_demo_model
    from .tokenized import tokenized_overrides
    from .topology import topology_from_env
    from .watch import Watch, watch_job

    allowed = check_allowed(args.allow)
    plan = make_plan(args, fresh=args.fresh)
    cfg, gpus = plan.cfg, len(plan.gpus)
    if args.skip_preflight:
        if (problem := cfg.output_dir_problem()) is not None:  # every later step writes there
            raise UserError(f"{cfg.path}: {problem}; set output_dir to the run's directory")
        say(f"{SKIP_FLAG}: launching without the preflight checks")
        overridden = [f"{SKIP_FLAG}: launched without the preflight checks"]
    else:
        try:
            overridden = report(
                run_preflight(plan), as_json=False, title=f"preflight: {cfg.path}", allowed=allowed
            )
        except UserError as err:
            hint = (
                f"preflight failed, so torchrun was not started: fix the above, or pass {SKIP_FLAG} to launch "
                "anyway (or --allow CHECK to launch despite that one check, CHECK as named in the table)"
            )
            raise UserError([*err.problems, hint]) from None
    topo = topology_from_env(os.environ, gpus)
    if topo.elastic and args.fresh:
        raise UserError(
            "--fresh with RDZV_ENDPOINT: under c10d no launcher knows it is first, so none can move "
            "output_dir aside before the others read it; move it yourself (mv OUTPUT_DIR "
            "OUTPUT_DIR.old) or set a new output_dir, then launch without --fresh"
        )
    if is_demo_model(cfg) and ensure_demo_model(DEMO_MODEL_DIR):
        say(f"built the tiny demo model in {DEMO_MODEL_DIR}")
    tokenized = tokenized_overrides(cfg)  # before the handshake, which compares every node's
    if topo.meets:
        say(
            f"node {topo.node_rank} of {topo.nnodes}: meeting the other nodes at {topo.master_addr}:"
            f"{topo.master_port} (RDZV_TIMEOUT={topo.rdzv_timeout} s)"
        )
    resume = agree(
        topo,
        node_info(topo, cfg.values, args.fresh, data_info(cfg.values, tokenized)),
        lambda: resume_overrides(
            cfg, fresh=args.fresh, first_node=topo.first_node, world=topo.nproc_per_node * topo.nnodes
        ),
    )
    if topo.meets and not topo.first_node:
        chosen = resume[0].split("=", 1)[1] if resume else "none, start at step 0"
        say(f"node 0 decided the resume for the job: {chosen}")
    overrides = cfg.overrides + tokenized + resume
    overrides, secret_env = move_to_env(
        cfg.values, overrides
    )  # no token on the ranks' argv or in their files

    cmd = torchrun_command(cfg.path, overrides, topo, sys.executable)
    log_path = cfg.output_dir / topo.log_name
    say(shlex.join(cmd))
    say(f"log: {log_path}")
    watches: list[Watch] = []

    def started(pid: int) -> Watch | None:
        if topo.nnodes > 1:  # a single node has nobody to lose
            node = f"node {topo.node_rank}" if not topo.elastic else "a node"
            watches.append(
                watch_job(*topo.store_address, node, topo.heartbeat_timeout, topo.stop_timeout, pid)
            )
        return watches[-1] if watches else None

    tail, since = bytearray(), time.time()
    notes = tuple(f"preflight override: {o}" for o in overridden)
    # This node's ranks tell it of a SIGTERM stop here: output_dir may be node-local, not global rank 0's.
    with tempfile.TemporaryDirectory(prefix="arpo-sft-stop-") as stop_dir:
        ours = {LOG_ENV: str(log_path.resolve()), STOP_DIR_ENV: stop_dir}
        env = training_env(os.environ, on_cpu=gpus == 0) | secret_env | ours
        code = run_teed(cmd, env, log_path, tail, started, notes=notes, quiet_from=MARKER.encode())
        note = read_note(Path(stop_dir), since)
    lost = [watch.lost for watch in watches if watch.lost]
    if lost:
        raise EnvironmentProblem(
            [
                f"{lost[0]}; this node stopped its ranks too",
                "relaunch every node: the job resumes from the "
                f"newest complete checkpoint in {cfg.output_dir}",
            ]
        )
    if note is not None:
        say(
            f"stopped by {note['signal']} at step {note['step']} of {note['max_steps']} after saving "
            f"{note['checkpoint']}; the same command resumes from it"
        )
        return EXIT_PREEMPTED
    if (diverged := diverged_exit(cfg.output_dir, since)) is not None:
        return diverged
    oom = read_oom(cfg.output_dir, since) if code else None
    if oom is not None:
        memory = min((gpu.mem_gib for gpu in plan.gpus), default=None)
        say(f"{oom_line(oom, cfg, topo.nproc_per_node * topo.nnodes, memory)} (tracebacks: {log_path})")
        return EXIT_OOM
    problems = failure_lines(bytes(tail), cfg.output_dir) if code else []
    if problems and problems[0].startswith("output_dir"):
        raise EnvironmentProblem(problems)
    for line in problems:
        say(line)
    return code


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `train` to the command tree."""
    parser = subparsers.add_parser(
        "train",
        help="check a config, then train with torchrun + DeepSpeed on every local GPU (or 2 CPU ranks)",
        description="Run `arpo-sft preflight` on CONFIG (seconds), then launch torchrun on the plugin's entry module. "
        "Distributed settings come from NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, or for c10d "
        "rendezvous RDZV_ENDPOINT, RDZV_ID, MIN_NNODES, MAX_NNODES; RDZV_TIMEOUT bounds every wait for the other "
        "nodes. Each node logs to its own file in output_dir (training.log on node 0). SIGTERM saves a checkpoint "
        "at the end of the step and exits 143; the same command resumes. "
        "A step whose loss or gradient norm is not finite stops every rank before it is saved (exit 4); "
        "a rank out of GPU memory is one line naming the step and the cheapest change (exit 5). "
        "metrics.jsonl in output_dir holds tokens/s/GPU, MFU and peak memory per logged step. "
        "A relaunch resumes from the newest complete "
        "checkpoint; incomplete ones (a crash while saving) are renamed *.incomplete-<time> and skipped. "
        "When nothing can be resumed but output_dir holds an earlier run, it stops before torchrun: "
        "pass --fresh, or another output_dir.",
        epilog="examples:\n  arpo-sft train yaml/sft_config.yaml learning_rate=5e-6 output_dir=checkpoints/lr\n"
        "  arpo-sft train yaml/qwen2.5-7b.yaml --allow memory   launch although the estimate says it does not fit",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="training YAML, e.g. yaml/sft_config.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override a YAML key")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start from step 0: move an earlier run in output_dir aside (never deleted) instead of resuming",
    )
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="CHECK",
        help="launch even when this one preflight check fails (CHECK as named in the table, e.g. memory; "
        "repeatable); every other check still runs and stops the launch; training.log's header records it",
    )
    parser.add_argument(
        "--skip-preflight",
        action="store_true",
        help="launch without any preflight check (see `arpo-sft preflight CONFIG`); prefer --allow CHECK",
    )
    parser.set_defaults(func=run)
