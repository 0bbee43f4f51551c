"""`arpo-sft data check PATH`: stream a data file and report, per rule, how many rows break it and where."""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from .flags import whole_number
from .rows import Row, iter_rows
from .rules import RULES, Problem, row_problems

DEFAULT_EXAMPLES = 5


@dataclass
class RuleReport:
    """How many rows break one rule, and the first few of them."""

    id: str
    count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)  # {"row", "line", "message"[, "first"]}


@dataclass
class Report:
    """What `data check` found in one file."""

    path: Path
    rows: int = 0
    clean_rows: int = 0
    rules: dict[str, RuleReport] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The machine-readable report that `--json` prints."""
        return {
            "path": str(self.path),
            "rows": self.rows,
            "clean_rows": self.clean_rows,
            "rules": [
                {"id": rule.id, "description": RULES[rule.id], "count": rule.count, "examples": rule.examples}
                for rule in self.broken()
            ],
        }

    def broken(self) -> list[RuleReport]:
        """The rules some row breaks, in RULES order."""
        return [self.rules[rule] for rule in RULES if rule in self.rules]


def check_file(path: Path, examples: int = DEFAULT_EXAMPLES) -> Report:
    """Check every row of `path` against every rule, in one streaming pass."""
    report = Report(path)
    first_seen: dict[bytes, tuple[int, int]] = {}  # content hash -> (row, line) of its first occurrence
    for row in iter_rows(path):
        report.rows += 1
        problems = [("unparsable", row.error)] if row.error is not None else row_problems(row.data)
        first = _first_occurrence(row, first_seen)
        if first is not None:
            problems.append(
                ("duplicate", f"same system and conversations as row {first[0]} (line {first[1]})")
            )
        if not problems:
            report.clean_rows += 1
        for rule, message in _first_per_rule(problems):
            counted = report.rules.setdefault(rule, RuleReport(rule))
            counted.count += 1
            if len(counted.examples) < examples:
                example = {"row": row.number, "line": row.line, "message": message}
                if rule == "duplicate" and first is not None:
                    example["first"] = {"row": first[0], "line": first[1]}
                counted.examples.append(example)
    if report.rows == 0:
        raise UserError(
            f"{path}: the JSON array is empty ([]); fix: put the rows in it, or point at the data file"
        )
    return report


def _first_occurrence(row: Row, first_seen: dict[bytes, tuple[int, int]]) -> tuple[int, int] | None:
    """(row, line) of the earlier row with the same system and conversations, if there is one."""
    if not isinstance(row.data, dict):
        return None
    content = [row.data.get("system"), row.data.get("conversations")]
    # Only a 16-byte digest per row stays in memory; surrogatepass keeps lone "\udXXX" escapes hashable.
    text = json.dumps(content, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    first = first_seen.get(digest)
    if first is None:
        first_seen[digest] = (row.number, row.line)
    return first


def _first_per_rule(problems: list[Problem]) -> list[Problem]:
    """A row counts once per rule; its first message for that rule is the one shown."""
    first: dict[str, str] = {}
    for rule, message in problems:
        first.setdefault(rule, message)
    return list(first.items())


def print_report(report: Report) -> None:
    """The human-readable summary: counts, then one table line per broken rule, then each rule's first case."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False)
    broken = report.broken()
    console.print(Text(f"{report.path}", style="bold"))
    console.print(f"  rows read           {report.rows:>9,}")
    console.print(f"  rows clean          {report.clean_rows:>9,}")
    console.print(f"  rows with problems  {report.rows - report.clean_rows:>9,}")
    if not broken:
        console.print(Text("every row passes every rule", style="green"))
        return
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("rule", no_wrap=True)
    table.add_column("description")
    table.add_column("rows", justify="right", no_wrap=True)
    table.add_column("first rows", min_width=20)
    for rule in broken:
        table.add_row(Text(rule.id), Text(RULES[rule.id]), f"{rule.count:,}", Text(_where_list(rule)))
    console.print(table)
    console.print("first case of each rule:")
    for rule in broken:
        first = rule.examples[0] if rule.examples else None
        if first is not None:
            line = f"  {rule.id}: row {first['row']} (line {first['line']}): {first['message']}"
            console.print(Text(line), soft_wrap=True)


def _where_list(rule: RuleReport) -> str:
    places = []
    for example in rule.examples:
        place = str(example["row"])
        if example["line"] != example["row"]:
            place += f" (line {example['line']})"
        if "first" in example:
            place += f" = row {example['first']['row']}"
        places.append(place)
    more = ", ..." if rule.count > len(rule.examples) else ""
    return ", ".join(places) + more


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `data check` to the `arpo-sft data` subcommands."""
    parser = subparsers.add_parser(
        "check",
        help="report every row of a data file that breaks the ARPO ShareGPT schema or tag format",
        description="Stream PATH (JSON Lines, or a JSON array) in bounded memory and check every row:\n"
        "JSON and UTF-8, fields and their types, roles and their order, empty turns, control characters\n"
        "(the '\\x08oxed' backspace bug named as such), ARPO's tags in each assistant turn, duplicate rows.\n"
        "Also lone surrogates (invalid-unicode: tokenizers cannot encode them) and special-token literals\n"
        "such as <|im_end|> (special-token-literal: a tokenizer makes them real control tokens).\n"
        "Prints per rule how many rows break it and the first row numbers (and file lines).\n"
        "PATH may be gzipped, `-` (stdin), a FIFO or <(zcat x.gz): it is read once, as a stream.\n\n"
        "exit status: 0 every row is clean, 1 some rows break rules, 2 the file cannot be read",
        epilog="example:\n  arpo-sft data check dataset_info/final_5w4_still.jsonl --examples 10",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "path", type=Path, metavar="PATH", help="data file, e.g. dataset_info/final_5w4_still.jsonl, or -"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument(
        "--examples",
        type=whole_number,
        default=DEFAULT_EXAMPLES,
        metavar="N",
        help=f"how many rows to list per rule (default {DEFAULT_EXAMPLES})",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the file; 0 when every row is clean, 1 when some rows break rules."""
    report = check_file(args.path, args.examples)
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print_report(report)
    return 0 if report.clean_rows == report.rows else 1
