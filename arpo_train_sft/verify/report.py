"""What `arpo-sft verify` found: one record per prompt, the totals, the table and the JSON file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_writer
from ..secrets import redact


@dataclass(frozen=True)
class PromptReport:
    question: str
    reference: str | None
    trajectory: str
    problems: list[str]
    compliant: bool
    answer: str | None
    correct: bool | None
    python_calls: int
    search_calls: int
    refused_calls: int
    repeated_queries: int
    stop: str
    new_tokens: int
    elapsed_s: float
    tool_stops: int = 0  # generations that stopped at </python> or </search> (run, refused or repeated)
    self_written_results: int = 0  # generations whose own text held <result>


# The per-checkpoint numbers `verify RUN_DIR` plots against step (accuracy only where references exist).
METRICS = ("format_compliance", "self_written_result_rate", "stopped_at_tool_rate", "tool_calls_per_prompt")


def summarize(reports: list[PromptReport]) -> dict[str, Any]:
    """Overall numbers: format compliance, accuracy where a reference exists, tool calls, time."""
    scored = [r for r in reports if r.correct is not None]
    n = len(reports)
    return {
        "prompts": n,
        "compliant": sum(r.compliant for r in reports),
        "compliance": sum(r.compliant for r in reports) / n if n else 0.0,
        "scored": len(scored),
        "correct": sum(bool(r.correct) for r in scored),
        "accuracy": sum(bool(r.correct) for r in scored) / len(scored) if scored else None,
        "python_calls": sum(r.python_calls for r in reports),
        "search_calls": sum(r.search_calls for r in reports),
        "refused_calls": sum(r.refused_calls for r in reports),
        "repeated_queries": sum(r.repeated_queries for r in reports),
        "elapsed_s": round(sum(r.elapsed_s for r in reports), 3),
    } | metrics(reports)


def metrics(reports: list[PromptReport]) -> dict[str, float]:
    """Shares of prompts: compliant, that wrote <result> themselves, that stopped at a tool call at least
    once; tool calls the model made per prompt; accuracy over the prompts with a reference, if any."""
    n = len(reports) or 1
    scored = [r for r in reports if r.correct is not None]
    found = {
        "format_compliance": sum(r.compliant for r in reports) / n,
        "self_written_result_rate": sum(r.self_written_results > 0 for r in reports) / n,
        "stopped_at_tool_rate": sum(r.tool_stops > 0 for r in reports) / n,
        "tool_calls_per_prompt": sum(r.tool_stops for r in reports) / n,
    }
    if scored:
        found["accuracy"] = sum(bool(r.correct) for r in scored) / len(scored)
    return found


def print_report(model: Path, reports: list[PromptReport], summary: dict[str, Any]) -> None:
    """A rich table, one row per prompt, then each format problem and the totals."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from .sandbox import terminal_safe

    def shown(text: str) -> Text:
        # Questions and answers are other people's and the model's text: no markup, no terminal controls.
        return Text(terminal_safe(text))

    table = Table(title=f"arpo-sft verify {model}")
    table.add_column("question", min_width=20)
    for column in ("py/search", "answer", "correct", "format", "stop", "s"):
        table.add_column(column)
    marks = {True: "yes", False: "no", None: "-"}
    for i, r in enumerate(reports, 1):
        table.add_row(
            shown(f"{i}. {r.question[:60]}"),
            f"{r.python_calls}/{r.search_calls}",
            shown((r.answer or "-")[:30]),
            marks[r.correct],
            marks[r.compliant],
            r.stop,
            f"{r.elapsed_s:.1f}",
        )
    console = Console()
    console.print(table)
    for i, r in enumerate(reports, 1):
        if r.problems:
            console.print(
                shown(f"#{i}: {'; '.join(r.problems[:3])}{' ...' if len(r.problems) > 3 else ''}"),
                markup=False,
            )
    accuracy = "-" if summary["accuracy"] is None else f"{summary['accuracy']:.0%} of {summary['scored']}"
    console.print(
        f"format compliance {summary['compliance']:.0%} ({summary['compliant']}/{summary['prompts']}), "
        f"accuracy {accuracy}, tool calls: {summary['python_calls']} python, {summary['search_calls']} search "
        f"run ({summary['refused_calls']} refused over the limit, {summary['repeated_queries']} repeated "
        f"queries), {summary['elapsed_s']:.1f} s",
        markup=False,
    )


def write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_writer(path) as handle:
        handle.write(redact(json.dumps(data, indent=2, ensure_ascii=False)) + "\n")
