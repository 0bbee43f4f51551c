"""`arpo-sft`: the plugin's command line. Heavy imports live inside the commands so `--help` is instant."""

from __future__ import annotations

import argparse
import sys
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import EXIT_USER_ERROR, UserError

if TYPE_CHECKING:
    from .config import RunConfig

# Modules that each add one subcommand: `add_parser(subparsers)` sets `func=run`. They import only the
# standard library at module level, so building the whole parser (and `--help`) stays instant.
DATA_COMMANDS = ("data_download", "data_check", "data_prepare", "data_stats", "data_parity")
TOP_COMMANDS = ("export", "verify", "plot")

EPILOG = """examples:
  arpo-sft train yaml/demo_cpu.yaml                 CPU demo: tiny model, bundled data, 2 ranks
  arpo-sft train yaml/sft_config.yaml max_steps=10  the reference run, with an override
  NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 arpo-sft train yaml/qwen2.5-7b.yaml
  arpo-sft demo-model                               build the tiny offline Qwen2 model
  arpo-sft plot checkpoints/demo-cpu                loss, learning rate and grad norm in one PNG
  arpo-sft export checkpoints/demo-cpu/checkpoint-50 exported/demo   ZeRO shards -> safetensors model
  arpo-sft verify exported/demo                     ARPO's tool loop on a model: format, tool calls, answers
"""


def cmd_train(args: argparse.Namespace) -> int:
    """Check the config, then launch torchrun on every local rank."""
    import os
    import shlex

    from .config import load_run_config
    from .launch import run_teed, topology_from_env, torchrun_command, training_env
    from .preflight import is_demo_model, run_checks
    from .tiny_model import DEMO_MODEL_DIR, ensure_demo_model

    cfg = load_run_config(Path(args.config), args.overrides)
    gpus = _visible_gpus()
    problems = run_checks(cfg, gpus)
    if problems:
        raise UserError(problems)
    topo = topology_from_env(os.environ, gpus)
    if is_demo_model(cfg) and ensure_demo_model(DEMO_MODEL_DIR):
        say(f"built the tiny demo model in {DEMO_MODEL_DIR}")
    overrides = cfg.overrides + resume_overrides(cfg, fresh=args.fresh, first_node=topo.node_rank == 0)

    cmd = torchrun_command(cfg.path, overrides, topo, sys.executable)
    log_path = cfg.output_dir / "training.log"
    say(shlex.join(cmd))
    say(f"log: {log_path}")
    return run_teed(cmd, training_env(os.environ, on_cpu=gpus == 0), log_path)


def say(message: str) -> None:
    """One launcher line on stdout, before the ranks' own output."""
    print(f"[arpo-sft] {message}", flush=True)


def resume_overrides(cfg: RunConfig, fresh: bool, first_node: bool) -> tuple[str, ...]:
    """Resume from the newest complete checkpoint; set aside incomplete ones and, with --fresh, the old run."""
    from .checkpoints import has_previous_run, plan_resume, set_aside

    if fresh:
        if first_node and has_previous_run(cfg.output_dir):
            moved = set_aside(cfg.output_dir, "previous")
            say(f"--fresh: moved the earlier run in {cfg.output_dir} to {moved} (nothing was deleted)")
        return ()
    if "resume_from_checkpoint" in cfg.values:
        return ()
    if cfg.values.get("overwrite_output_dir"):
        say("warning: overwrite_output_dir is true, so a relaunch will not resume; set it to false")
        return ()
    plan = plan_resume(cfg.output_dir)
    for path, problems in plan.incomplete:
        note = f"warning: skipping incomplete checkpoint {path}: {'; '.join(problems)}"
        if first_node:
            note += f"; moved it to {set_aside(path, 'incomplete')}"
        say(note)
    if plan.resume_from is None:
        return ()
    say(f"resuming from {plan.resume_from}")
    return (f"resume_from_checkpoint={plan.resume_from}",)


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def cmd_demo_model(args: argparse.Namespace) -> int:
    """Build the tiny random-init Qwen2 model on the real Qwen2.5 vocabulary."""
    from .tiny_model import build_tiny_model

    out = build_tiny_model(Path(args.out), seed=args.seed)
    print(f"tiny Qwen2 model written to {out}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    """The whole `arpo-sft` command tree."""
    parser = argparse.ArgumentParser(
        prog="arpo-sft",
        description="ARPO cold-start SFT on LLaMA-Factory: checked configs, torchrun + DeepSpeed launch.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser(
        "train",
        help="check a config, then train with torchrun + DeepSpeed on every local GPU (or 2 CPU ranks)",
        description="Check CONFIG in seconds, then launch torchrun on the plugin's entry module. "
        "Distributed settings come from NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT. "
        "Output is also appended to <output_dir>/training.log. A relaunch resumes from the newest complete "
        "checkpoint; incomplete ones (a crash while saving) are renamed *.incomplete-<time> and skipped.",
        epilog="example:\n  arpo-sft train yaml/sft_config.yaml learning_rate=5e-6 output_dir=checkpoints/lr",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("config", help="training YAML, e.g. yaml/sft_config.yaml")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="override a YAML key")
    train.add_argument(
        "--fresh",
        action="store_true",
        help="start from step 0: move an earlier run in output_dir aside (never deleted) instead of resuming",
    )
    train.set_defaults(func=cmd_train)

    demo = sub.add_parser(
        "demo-model",
        help="build the tiny offline Qwen2 model used by yaml/demo_cpu.yaml",
        epilog="example:\n  arpo-sft demo-model --out models/arpo-sft-tiny-qwen2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--out", default="models/arpo-sft-tiny-qwen2", help="output directory")
    demo.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    demo.set_defaults(func=cmd_demo_model)

    data = sub.add_parser(
        "data",
        help="download, check, prepare and measure ARPO-format data",
        epilog="example (from nothing to the training file dataset_info/final_5w4_still.jsonl):\n"
        "  arpo-sft data download && arpo-sft data prepare --model Qwen/Qwen2.5-7B-Instruct",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    for module in DATA_COMMANDS:
        import_module(f"{__package__}.{module}").add_parser(data_sub)
    for module in TOP_COMMANDS:
        import_module(f"{__package__}.{module}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `arpo-sft` console script."""
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as err:
        for line in err.problems:
            print(f"arpo-sft: error: {line}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
