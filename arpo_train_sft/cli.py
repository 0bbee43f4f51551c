"""`arpo-sft`: the plugin's command line. Heavy imports live inside the commands so `--help` is instant."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from importlib import import_module

from .errors import EXIT_USER_ERROR, UserError

# Modules that each add one subcommand: `add_parser(subparsers)` sets `func=run`. They import only the
# standard library at module level, so building the whole parser (and `--help`) stays instant.
DATA_COMMANDS: tuple[str, ...] = ()
TOP_COMMANDS: tuple[str, ...] = ()

EPILOG = """examples:
  arpo-sft train yaml/demo_cpu.yaml                 CPU demo: tiny model, bundled data, 2 ranks
  arpo-sft train yaml/sft_config.yaml max_steps=10  the reference run, with an override
  NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 arpo-sft train yaml/qwen2.5-7b.yaml
  arpo-sft demo-model                               build the tiny offline Qwen2 model
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
        print(f"[arpo-sft] built the tiny demo model in {DEMO_MODEL_DIR}", flush=True)

    cmd = torchrun_command(cfg.path, cfg.overrides, topo, sys.executable)
    log_path = cfg.output_dir / "training.log"
    print(f"[arpo-sft] {shlex.join(cmd)}", flush=True)
    print(f"[arpo-sft] log: {log_path}", flush=True)
    return run_teed(cmd, training_env(os.environ, on_cpu=gpus == 0), log_path)


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
        "Output is also appended to <output_dir>/training.log.",
        epilog="example:\n  arpo-sft train yaml/sft_config.yaml learning_rate=5e-6 output_dir=checkpoints/lr",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("config", help="training YAML, e.g. yaml/sft_config.yaml")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="override a YAML key")
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

    data = sub.add_parser("data", help="download, check, prepare and measure ARPO-format data")
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
