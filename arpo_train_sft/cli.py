"""`arpo-sft`: the plugin's command line. Heavy imports live inside the commands so `--help` is instant."""

from __future__ import annotations

import argparse
import sys

from .checkpoint import export, plot
from .data import check, download, parity, prepare, stats
from .demo import model
from .errors import UserError
from .presets import init
from .train import command as train
from .train import preflight
from .train.estimate import command as estimate
from .verify import command as verify
from .verify.sandbox import command as sandbox

# Each module adds one subcommand with `add_parser(subparsers)` and imports only the standard library at
# module level, so building the whole parser (and `--help`) stays instant.
DATA_COMMANDS = (download, check, prepare, stats, parity)
TOP_COMMANDS = (init, preflight, train, estimate, model, export, verify, sandbox, plot)

EPILOG = """examples:
  arpo-sft init arpo-run                            presets, DeepSpeed configs, demo data and sft_train.sh
  arpo-sft train yaml/demo_cpu.yaml                 CPU demo: tiny model, bundled data, 2 ranks
  arpo-sft preflight yaml/sft_config.yaml           every check train runs first, as one table
  arpo-sft train yaml/sft_config.yaml max_steps=10  the reference run, with an override
  NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 arpo-sft train yaml/qwen2.5-7b.yaml
  arpo-sft estimate yaml/qwen2.5-7b.yaml            per-GPU peak memory: fits or not, and the fix
  arpo-sft demo-model                               build the tiny offline Qwen2 model
  arpo-sft plot checkpoints/demo-cpu                loss, learning rate and grad norm in one PNG
  arpo-sft export checkpoints/demo-cpu/checkpoint-50 exported/demo   ZeRO shards -> safetensors model
  arpo-sft verify exported/demo                     ARPO's tool loop on a model: format, tool calls, answers
  arpo-sft sandbox run attack.py                    what verify's python sandbox makes of one file
"""


def make_parser() -> argparse.ArgumentParser:
    """The whole `arpo-sft` command tree."""
    parser = argparse.ArgumentParser(
        prog="arpo-sft",
        description="ARPO cold-start SFT on LLaMA-Factory: checked configs, torchrun + DeepSpeed launch.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data = sub.add_parser(
        "data",
        help="download, check, prepare and measure ARPO-format data",
        epilog="example (from nothing to the training file dataset_info/final_5w4_still.jsonl):\n"
        "  arpo-sft data download && arpo-sft data prepare --model Qwen/Qwen2.5-7B-Instruct",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    for module in DATA_COMMANDS:
        module.add_parser(data_sub)
    for module in TOP_COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `arpo-sft` console script."""
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as err:
        for line in err.problems:
            print(f"arpo-sft: error: {line}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
