"""`arpo-sft data prepare`: turn a raw ARPO file into the training file, every input row accounted for."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import Discard, atomic_writer, check_outputs
from ..errors import UserError
from ..progress import file_progress
from .conversation import (
    STRUCTURAL_RULES,
    blocking,
    escape_special_tokens,
    normalize,
    problems_of,
    to_conversation,
)
from .flags import positive_number

RAW_FILE = Path("dataset_info/raw/final_5w4_still.jsonl")
PREPARED_FILE = Path("dataset_info/final_5w4_still.jsonl")
POLICIES = ("keep", "drop")
# No "truncate": LLaMA-Factory appends <|im_end|>\n to the assistant text and trains it, so a row cut to fit
# cutoff_len teaches the model to stop mid-thought. A cut row trains what the whole row trains only while it
# still exceeds cutoff_len, and where LLaMA-Factory's ratio split cuts the prompt no rewritten row can.
REMOVED_POLICY = (
    "--overlength truncate was removed: a row cut to fit cutoff_len would train <|im_end|> right after the "
    "cut (and LLaMA-Factory cuts the prompt, not the answer, when the answer is short); use --overlength "
    "keep (LLaMA-Factory truncates at cutoff_len itself, as ARPO trained) or --overlength drop"
)
POLICY_EFFECT = {"keep": "written whole; LLaMA-Factory truncates them", "drop": "moved to the rejects"}
SPECIAL_TOKENS = ("reject", "escape")
SPECIAL = "special-token-literal"
BATCH_ROWS = 512


@dataclass
class Report:
    """Counts printed at the end and saved next to the output."""

    input_rows: int = 0
    output_rows: int = 0
    rejected: Counter = field(default_factory=Counter)
    fixed_control_chars: int = 0
    control_char_rows: int = 0
    format_problem_rows: int = 0
    over_cutoff: int = 0
    prompt_cut: int = 0
    answer_cut: int = 0
    end_cut: int = 0
    special_token_rows: int = 0


def prepare(args: argparse.Namespace) -> Report:
    """Stream, check, fix, measure and write; every input row lands in the output or the rejects."""
    from .rows import iter_rows
    from .tokens import batched, load_template, load_tokenizer, measure

    tokenizer = load_tokenizer(args.model)
    template = load_template(tokenizer, args.template)
    report = Report()
    with ExitStack() as stack:
        # Rejects first: when no row is kept, Discard leaves the training file alone but the rejects are written.
        rejects = stack.enter_context(atomic_writer(args.rejects))
        out = stack.enter_context(atomic_writer(args.output))

        def reject(row: Any, reason: str, rule: str) -> None:
            report.rejected[rule] += 1
            record = {"row": row.number, "line": row.line, "reason": reason, "text": row.text}
            rejects.write(json.dumps(record, ensure_ascii=False) + "\n")

        bar = stack.enter_context(file_progress(args.input, "prepare"))
        for batch in batched(iter_rows(args.input), BATCH_ROWS):
            bar.update(sum(len(row.text.encode()) + 1 for row in batch))
            kept = []
            for row in batch:
                report.input_rows += 1
                problems = problems_of(row)
                if blocked := blocking(problems):
                    reject(row, "; ".join(message for _, message in blocked), blocked[0][0])
                    continue
                rules = {rule for rule, _ in problems}
                if SPECIAL in rules:
                    report.special_token_rows += 1
                    if args.special_tokens == "reject":
                        reject(row, "; ".join(m for r, m in problems if r == SPECIAL), SPECIAL)
                        continue
                report.control_char_rows += bool(rules & {"control-chars", "backspace-boxed"})
                report.format_problem_rows += bool(
                    rules - STRUCTURAL_RULES - {"control-chars", "backspace-boxed", SPECIAL}
                )
                data, fixed = normalize(row.data, args.fix_control_chars)
                data = escape_special_tokens(data) if SPECIAL in rules else data
                report.fixed_control_chars += fixed
                kept.append((row, data))
            measured = measure(tokenizer, template, [to_conversation(d) for _, d in kept], args.cutoff_len)
            for (row, data), tokens in zip(kept, measured, strict=True):
                if tokens.trained == 0:
                    reason = f"no trainable tokens: cutoff_len {args.cutoff_len} leaves no assistant token"
                    reject(row, reason, "no-trainable-tokens")
                    continue
                over = tokens.total > args.cutoff_len
                report.over_cutoff += over
                report.answer_cut += tokens.answer_cut
                report.end_cut += tokens.end_cut
                report.prompt_cut += tokens.prompt_cut
                if over and args.overlength == "drop":
                    reason = f"{tokens.total} tokens > cutoff_len {args.cutoff_len}"
                    reject(row, reason, "over-cutoff")
                    continue
                out.write(json.dumps(data, ensure_ascii=False) + "\n")
                report.output_rows += 1
        if report.output_rows == 0:
            raise Discard  # an empty training file would only fail later, inside the training run
    return report


def add_parser(subparsers: Any) -> None:
    """`arpo-sft data prepare`."""
    parser = subparsers.add_parser(
        "prepare",
        help="check, fix and measure a raw ARPO file and write the training file (nothing is lost)",
        description="Stream the input, reject rows LLaMA-Factory would drop or crash on, normalize roles to "
        "human/gpt, count tokens exactly as training will (the model's tokenizer, the chosen template), "
        "apply the length policy, and write the output and the rejects atomically. Input rows = output "
        "rows + rejected rows, always.\n\n"
        "The input is read once, as a stream: a file, `-` (stdin), a FIFO or <(zcat x.gz); gzip is read\n"
        "directly. Nothing is written when an output would be an input or another output.\n"
        "Rejected with their reason: rows LLaMA-Factory would drop or crash on (schema, roles, empty turns,\n"
        "lone surrogates), rows with special-token literals such as <|im_end|> (or --special-tokens escape),\n"
        "rows the cutoff leaves no trainable token.\n\n"
        "exit status: 0 written; 1 every row was rejected (the training file is not written, the rejects\n"
        "are); 2 a usage or input error (one line on stderr, nothing written)",
        epilog=f"example:\n  arpo-sft data prepare --input {RAW_FILE} --output {PREPARED_FILE} "
        "--model Qwen/Qwen2.5-7B-Instruct --cutoff-len 15000 --overlength keep --fix-control-chars",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--input",
        type=Path,
        default=RAW_FILE,
        help=f"raw JSONL or JSON array, maybe gzipped, or - (default {RAW_FILE})",
    )
    parser.add_argument(
        "--output", type=Path, default=PREPARED_FILE, help=f"training file (default {PREPARED_FILE})"
    )
    parser.add_argument(
        "--rejects", type=Path, help="rejected rows with reasons (default: OUTPUT.rejects.jsonl)"
    )
    parser.add_argument(
        "--model", required=True, help="model dir or hub id whose tokenizer counts the tokens"
    )
    parser.add_argument(
        "--template", default="qwen", help="LLaMA-Factory template the training uses (default qwen)"
    )
    parser.add_argument(
        "--cutoff-len", type=positive_number, default=15000, help="training cutoff_len (default 15000)"
    )
    parser.add_argument(
        "--overlength",
        metavar="{keep,drop}",
        default="keep",
        help="rows over cutoff: keep (ARPO's choice; LLaMA-Factory truncates them at cutoff_len itself), "
        "drop (to the rejects)",
    )
    parser.add_argument(
        "--special-tokens",
        choices=SPECIAL_TOKENS,
        default="reject",
        help="rows with literal <|im_end|>, <|im_start|>, ... (a tokenizer makes them real control tokens): "
        "reject (default, to the rejects file), or escape (a zero-width space after the '<', so they "
        "tokenize as plain text)",
    )
    parser.add_argument(
        "--fix-control-chars",
        action="store_true",
        help="repair \\x08oxed -> \\boxed (ARPO's escaping bug) and drop other control characters",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prepare, then print the accounting."""
    if args.overlength == "truncate":
        raise UserError(REMOVED_POLICY)
    if args.overlength not in POLICIES:
        raise UserError(f"--overlength {args.overlength}: choose keep or drop")
    rejects = "--rejects"
    if args.rejects is None:
        rejects = "--rejects (default: --output's name + .rejects.jsonl)"
        args.rejects = args.output.with_name(args.output.name.removesuffix(".jsonl") + ".rejects.jsonl")
    summary = args.output.with_name(args.output.name + ".report.json")
    check_outputs(
        {"--input": args.input},
        {
            "--output": args.output,
            rejects: args.rejects,
            "the report (--output's name + .report.json)": summary,
        },
    )
    report = prepare(args)
    print_report(args, report)
    with atomic_writer(summary) as handle:
        handle.write(json.dumps(report_dict(args, report), indent=2) + "\n")
    if report.output_rows == 0:
        rows = f"all {report.input_rows} rows were rejected" if report.input_rows else "there are no rows"
        print(
            f"arpo-sft: error: {args.input}: {rows}, so no training file was written ({args.output} left as "
            f"it was); fix: see why in {args.rejects}",
            file=sys.stderr,
        )
        return 1
    return 0


def report_dict(args: argparse.Namespace, report: Report) -> dict[str, Any]:
    """The accounting as JSON, saved next to the output."""
    return {
        "input": str(args.input),
        "output": str(args.output),
        "rejects": str(args.rejects),
        "model": args.model,
        "template": args.template,
        "cutoff_len": args.cutoff_len,
        "overlength": args.overlength,
        "special_tokens": args.special_tokens,
        "input_rows": report.input_rows,
        "output_rows": report.output_rows,
        "rejected_rows": sum(report.rejected.values()),
        "rejected_by_reason": dict(report.rejected),
        "fixed_control_chars": report.fixed_control_chars,
        "control_char_rows": report.control_char_rows,
        "format_problem_rows": report.format_problem_rows,
        "over_cutoff": report.over_cutoff,
        "would_lose_answer": report.answer_cut,
        "would_lose_im_end": report.end_cut,
        "prompt_cut": report.prompt_cut,
        "special_token_rows": report.special_token_rows,
    }


def print_report(args: argparse.Namespace, report: Report) -> None:
    """A short table: where every row went, and what the cutoff does to them."""
    from rich.console import Console
    from rich.table import Table

    rejected = sum(report.rejected.values())
    assert report.input_rows == report.output_rows + rejected, "a row was lost"
    table = Table(title=f"data prepare: {args.input} -> {args.output}", show_header=False)
    table.add_row("input rows", str(report.input_rows))
    table.add_row("written", f"{report.output_rows}  ({args.output})")
    table.add_row("rejected", f"{rejected}  ({args.rejects})")
    for reason, count in report.rejected.most_common():
        table.add_row(f"  {reason}", str(count))
    table.add_row("control characters fixed", str(report.fixed_control_chars))
    table.add_row("rows failing ARPO's format rules (kept)", str(report.format_problem_rows))
    table.add_row(f"rows with special-token literals ({args.special_tokens})", str(report.special_token_rows))
    table.add_row(f"rows over cutoff_len {args.cutoff_len}", str(report.over_cutoff))
    table.add_row("  would lose <answer> at training", str(report.answer_cut))
    table.add_row("  would lose <|im_end|> at training", str(report.end_cut))
    table.add_row("  would lose part of the prompt at training", str(report.prompt_cut))
    table.add_row(f"  policy: {args.overlength}", POLICY_EFFECT[args.overlength])
    Console().print(table)
    print(f"{report.input_rows} input rows = {report.output_rows} written + {rejected} rejected")
