"""`arpo-sft`: the plugin's command line. Heavy imports live inside the commands so `--help` is instant."""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import traceback
from pathlib import Path

from .atomic import DISK_FULL_ERRNOS
from .checkpoint import export, plot
from .data import check, download, parity, prepare, stats
from .demo import model
from .errors import (
    EXIT_ENVIRONMENT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_TABLE,
    EXIT_USER_ERROR,
    UserError,
)
from .handoff import command as handoff
from .presets import init
from .secrets import redact
from .train import command as train
from .train import preflight
from .train.estimate import command as estimate
from .verify import command as verify
from .verify.sandbox import command as sandbox

# Each module adds one subcommand with `add_parser(subparsers)` and imports only the standard library at
# module level, so building the whole parser (and `--help`) stays instant.
DATA_COMMANDS = (download, check, prepare, stats, parity)
TOP_COMMANDS = (init, preflight, train, estimate, model, export, handoff, verify, sandbox, plot)

EPILOG = (
    """examples:
  arpo-sft init arpo-run                            presets, DeepSpeed configs, demo data and sft_train.sh
  arpo-sft train yaml/demo_cpu.yaml                 CPU demo: tiny model, bundled data, 2 ranks
  arpo-sft preflight yaml/sft_config.yaml           every check train runs first, as one table
  arpo-sft train yaml/sft_config.yaml max_steps=10  the reference run, with an override
  NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 arpo-sft train yaml/qwen2.5-7b.yaml
  arpo-sft estimate yaml/qwen2.5-7b.yaml            per-GPU peak memory: fits or not, and the fix
  arpo-sft demo-model                               build the tiny offline Qwen2 model
  arpo-sft plot checkpoints/demo-cpu                loss, learning rate and grad norm in one PNG
  arpo-sft export checkpoints/demo-cpu/checkpoint-50 exported/demo   ZeRO shards -> safetensors model
  arpo-sft handoff exported/demo                    ready for ARPO's RL: stops, prompt, result splice
  arpo-sft verify exported/demo                     ARPO's tool loop on a model: format, tool calls, answers
  arpo-sft sandbox run attack.py                    what verify's python sandbox makes of one file

"""
    + EXIT_TABLE
    + "\n"
)


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


def _error(line: str) -> None:
    print(redact(f"arpo-sft: error: {line}"), file=sys.stderr)


def write_traceback(err: BaseException) -> Path:
    """The full traceback of an unexpected error in a new file (~/.cache/arpo-sft, else $TMPDIR), redacted."""
    text = redact("".join(traceback.format_exception(err)))
    name = f"crash-{datetime.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.txt"
    for folder in (Path.home() / ".cache" / "arpo-sft", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text, encoding="utf-8")
            return folder / name
        except OSError:
            continue
    raise err


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `arpo-sft` console script: exit statuses as in errors.EXIT_TABLE."""
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as err:
        for line in err.problems:
            _error(line)
        return err.exit_code
    except KeyboardInterrupt:
        print("arpo-sft: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as err:
        # A write into a full disk names no file (errno 28 from write()); it is still the host's, not a bug.
        if err.errno in DISK_FULL_ERRNOS and err.filename is None:
            _error(
                f"{err.strerror} while writing an output; free space on that filesystem or write elsewhere"
            )
            return EXIT_ENVIRONMENT
        if err.filename is None:
            return _internal(err)
        where = f"{err.filename} -> {err.filename2}" if err.filename2 else str(err.filename)
        if err.errno in DISK_FULL_ERRNOS:
            _error(f"{where}: {err.strerror}; free space on that filesystem or write elsewhere")
            return EXIT_ENVIRONMENT
        _error(f"{where}: {err.strerror or err}; pass another path")
        return EXIT_USER_ERROR
    except Exception as err:  # noqa: BLE001  (our bug: one line here, the traceback in a file)
        return _internal(err)


def _internal(err: BaseException) -> int:
    path = write_traceback(err)
    first = str(err).splitlines()[0] if str(err) else ""
    _error(f"internal error: {type(err).__name__}: {first} (full traceback in {path})")
    return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
