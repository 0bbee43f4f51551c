"""`arpo-sft data stats`: token lengths, the cutoff's toll, tool use and loss-masked shares of a file."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_writer, check_outputs
from .flags import positive_number

TEMPLATES = ("qwen", "qwen_mask_results")


@dataclass
class Stats:
    """Everything `data stats` reports, gathered in one streaming pass."""

    lengths: list[int] = field(default_factory=list)
    skipped: int = 0
    first_skipped: int | None = None
    over_cutoff: int = 0
    answer_cut: int = 0
    end_cut: int = 0
    untrainable: int = 0  # rows the cutoff leaves no assistant token: `data prepare` rejects them
    total_tokens: int = 0
    prompt_tokens: int = 0
    result_tokens: int = 0
    tool_calls: list[int] = field(default_factory=list)
    unmasked_rows: list[int] = field(default_factory=list)  # rows `qwen_mask_results` trains like `qwen`


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return 0
    rank = max(1, round(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def gather(path: Path, model: str, cutoff_len: int) -> Stats:
    """Stream `path`, measure every readable row as `template: qwen` would encode it."""
    from ..arpo.tags import unmasked_reason
    from .conversation import blocking, normalize, problems_of, to_conversation
    from .prepare import BATCH_ROWS
    from .rows import iter_rows
    from .tokens import batched, load_template, load_tokenizer, measure

    tokenizer = load_tokenizer(model)
    template = load_template(tokenizer, "qwen")  # both templates encode identically; masks differ
    stats = Stats()
    for batch in batched(iter_rows(path), BATCH_ROWS):
        rows = []
        for row in batch:
            if blocking(problems_of(row)):
                stats.skipped += 1
                stats.first_skipped = stats.first_skipped or row.number
                continue
            conversation = to_conversation(normalize(row.data, fix=False)[0])
            if unmasked_reason(conversation.messages):
                stats.unmasked_rows.append(row.number)
            rows.append(conversation)
        for tokens in measure(tokenizer, template, rows, cutoff_len):
            stats.lengths.append(tokens.total)
            stats.over_cutoff += tokens.total > cutoff_len
            stats.answer_cut += tokens.answer_cut
            stats.end_cut += tokens.end_cut
            stats.untrainable += tokens.trained == 0
            stats.total_tokens += tokens.total
            stats.prompt_tokens += tokens.prompt
            stats.result_tokens += tokens.result
            stats.tool_calls.append(tokens.tool_calls)
    return stats


def summary(stats: Stats, cutoff_len: int) -> dict[str, Any]:
    """The figures, as printed and as `--json` emits them."""
    lengths = sorted(stats.lengths)
    total = max(stats.total_tokens, 1)
    calls = stats.tool_calls
    return {
        "rows": len(lengths),
        "rows_not_measured": stats.skipped,
        "first_not_measured_row": stats.first_skipped,
        "tokens": {
            "p50": percentile(lengths, 50),
            "p90": percentile(lengths, 90),
            "p99": percentile(lengths, 99),
            "max": lengths[-1] if lengths else 0,
            "mean": round(stats.total_tokens / max(len(lengths), 1), 1),
        },
        "cutoff_len": cutoff_len,
        "rows_over_cutoff": stats.over_cutoff,
        "rows_losing_answer": stats.answer_cut,
        "rows_losing_im_end": stats.end_cut,
        "rows_with_no_trainable_token": stats.untrainable,
        "result_token_share": round(stats.result_tokens / total, 4),
        "tool_calls_per_row": {
            "mean": round(sum(calls) / max(len(calls), 1), 2),
            "0": calls.count(0),
            "1": calls.count(1),
            "2": calls.count(2),
            "3+": sum(c >= 3 for c in calls),
        },
        "rows_qwen_mask_results_cannot_mask": {
            "count": len(stats.unmasked_rows),
            "rows": stats.unmasked_rows[:10],
        },
        "masked_token_share": {
            "qwen": round(stats.prompt_tokens / total, 4),
            "qwen_mask_results": round((stats.prompt_tokens + stats.result_tokens) / total, 4),
        },
    }


def plot(stats: Stats, cutoff_len: int, out: Path) -> None:
    """Histogram of row lengths with the cutoff marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.hist(stats.lengths, bins=80, color="#4c72b0")
    ax.axvline(cutoff_len, color="#c44e52", linestyle="--", label=f"cutoff_len {cutoff_len}")
    ax.set_xlabel("tokens per row (template qwen, before truncation)")
    ax.set_ylabel("rows")
    ax.set_yscale("log")
    ax.set_title(
        f"{len(stats.lengths)} rows, {stats.over_cutoff} over the cutoff, {stats.answer_cut} lose <answer>"
    )
    ax.legend()
    fig.tight_layout()
    with atomic_writer(out, binary=True) as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)


def add_parser(subparsers: Any) -> None:
    """`arpo-sft data stats`."""
    parser = subparsers.add_parser(
        "stats",
        help="token-length distribution, rows hurt by the cutoff, tool use, loss-masked shares",
        description="Count tokens exactly as training will (the model's tokenizer, template qwen) and report "
        "p50/p90/p99/max lengths, rows over cutoff_len and rows whose <answer> or <|im_end|> it would cut, the "
        "share of tokens inside <result> blocks, tool calls per row, and the share of tokens the loss ignores "
        "under `qwen` and under `qwen_mask_results`. Rows LLaMA-Factory would drop or crash on (e.g. lone "
        "surrogates) are counted as not measured. Exit 0, or 2 for a usage or input error (one line).",
        epilog="example:\n  arpo-sft data stats dataset_info/final_5w4_still.jsonl --model Qwen/Qwen2.5-7B-Instruct "
        "--cutoff-len 15000 --plot lengths.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", type=Path, help="JSONL or JSON array of ARPO rows (gzipped, or -, too)")
    parser.add_argument(
        "--model", required=True, help="model dir or hub id whose tokenizer counts the tokens"
    )
    parser.add_argument(
        "--cutoff-len", type=positive_number, default=15000, help="training cutoff_len (default 15000)"
    )
    parser.add_argument("--plot", type=Path, help="write a histogram PNG with the cutoff marked")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Gather, print, plot."""
    if args.plot:
        check_outputs({"PATH": args.path}, {"--plot": args.plot})
    stats = gather(args.path, args.model, args.cutoff_len)
    figures = summary(stats, args.cutoff_len)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print_table(args.path, figures)
    if args.plot:
        plot(stats, args.cutoff_len, args.plot)
        print(f"histogram: {args.plot}")
    return 0


def print_table(path: Path, figures: dict[str, Any]) -> None:
    """The figures as a two-column table."""
    from rich.console import Console
    from rich.table import Table

    tokens, calls, masked = figures["tokens"], figures["tool_calls_per_row"], figures["masked_token_share"]
    table = Table(title=f"data stats: {path}", show_header=False)
    table.add_row("rows measured", str(figures["rows"]))
    if figures["rows_not_measured"]:
        table.add_row(
            "rows not measured (see `arpo-sft data check`)",
            f"{figures['rows_not_measured']} (first: row {figures['first_not_measured_row']})",
        )
    table.add_row(
        "tokens p50 / p90 / p99 / max",
        f"{tokens['p50']} / {tokens['p90']} / {tokens['p99']} / {tokens['max']}",
    )
    table.add_row(f"rows over cutoff_len {figures['cutoff_len']}", str(figures["rows_over_cutoff"]))
    table.add_row("  would lose <answer>", str(figures["rows_losing_answer"]))
    table.add_row("  would lose <|im_end|>", str(figures["rows_losing_im_end"]))
    table.add_row("  would train on no token", str(figures["rows_with_no_trainable_token"]))
    table.add_row("tokens inside <result> blocks", f"{figures['result_token_share']:.1%}")
    table.add_row(
        "tool calls per row (mean; 0/1/2/3+)",
        f"{calls['mean']}; {calls['0']}/{calls['1']}/{calls['2']}/{calls['3+']}",
    )
    table.add_row("tokens ignored by the loss: qwen", f"{masked['qwen']:.1%}")
    table.add_row("tokens ignored by the loss: qwen_mask_results", f"{masked['qwen_mask_results']:.1%}")
    unmasked = figures["rows_qwen_mask_results_cannot_mask"]
    if unmasked["count"]:
        rows = ", ".join(map(str, unmasked["rows"]))
        table.add_row(
            "  rows it trains unmasked (unbalanced/nested <result>, <result> in a user turn)",
            f"{unmasked['count']} (rows {rows}{', ...' if unmasked['count'] > len(unmasked['rows']) else ''})",
        )
    Console().print(table)
