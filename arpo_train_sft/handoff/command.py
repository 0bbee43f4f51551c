"""`arpo-sft handoff MODEL_DIR`: is an exported model ready for ARPO's RL stage? One table, exit 0/1/2."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..data.flags import positive_number
from ..errors import EXIT_DATA, EXIT_OK, UserError
from .budget import RL_RESPONSE_BUDGET
from .rows import Check, print_table


class ChecksFailed(UserError):
    """One line per failed check; `arpo-sft` prints them and exits EXIT_DATA (1)."""

    exit_code = EXIT_DATA


def export_checks(path: Path) -> list[Check]:
    """The checks `export` runs on what it wrote: generation stops on <|im_end|>, the chat template matches."""
    from .checks import stop_checks, template_check
    from .model import load_model_dir

    model = load_model_dir(path)
    return [*stop_checks(model), template_check(model)]


def handoff_checks(path: Path, data: Path | None, budget: int) -> list[Check]:
    """Every hand-off check, in table order."""
    from .budget import budget_check, measure_budget
    from .checks import QUESTION, splice_check, stop_checks, template_check
    from .model import load_model_dir
    from .serving import vllm_check

    model = load_model_dir(path)
    # Read the data first: an unreadable file is bad input (exit 2), whatever the model checks find.
    found = None if data is None else budget_check(data, measure_budget(data, model, budget))
    checks = [*stop_checks(model), template_check(model), splice_check(model)]
    checks += [] if found is None else [found]
    return [*checks, vllm_check(path, QUESTION)]


def report(checks: list[Check], as_json: bool, title: str) -> None:
    """Print the checks (table or one JSON object); raise ChecksFailed with one line per failed check."""
    if as_json:
        print(
            json.dumps({"ok": all(c.ok for c in checks), "checks": [c.as_json() for c in checks]}, indent=1)
        )
    else:
        print_table(checks, title)
    failed = [check.line for check in checks if not check.ok]
    if failed:
        raise ChecksFailed(failed)


def run(args: argparse.Namespace) -> int:
    """Run every check on MODEL_DIR and print them."""
    path = Path(args.model_dir)
    checks = handoff_checks(path, None if args.data is None else Path(args.data), args.rl_response_budget)
    report(checks, args.json, f"hand-off to RL: {path}")
    return EXIT_OK


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `handoff` to the command tree."""
    parser = subparsers.add_parser(
        "handoff",
        help="check that an exported model stops, prompts and splices tool results in RL as it trained",
        description="Check MODEL_DIR against ARPO's RL rollout: generation stops on <|im_end|> "
        "(generation_config.json and the tokenizer's eos token), the chat template renders ARPO's RL prompt "
        "to the ids training's qwen template gave, ARPO's result splice ' <result>\\n...\\n</result>' "
        "tokenizes as training saw it, with --data how many responses exceed the RL response budget, and "
        "whether vLLM loads the model (skipped where vllm is not installed). Exit 0 all pass, 1 a check "
        "failed (one line each, with the fix), 2 bad input.",
        epilog="examples:\n"
        "  arpo-sft handoff exports/qwen2.5-7b-arpo-sft\n"
        "  arpo-sft handoff exports/qwen2.5-14b-arpo-sft --data dataset_info/final_5w4_still.jsonl "
        "--rl-response-budget 6192",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="an exported model dir (arpo-sft export)")
    parser.add_argument(
        "--data", metavar="PREPARED.jsonl", help="the training file `arpo-sft data prepare` wrote"
    )
    parser.add_argument(
        "--rl-response-budget",
        type=positive_number,
        default=RL_RESPONSE_BUDGET,
        metavar="N",
        help=f"RL's data.max_response_length in tokens (default {RL_RESPONSE_BUDGET}, ARPO's 7B; 6192 for 14B)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.set_defaults(func=run)
