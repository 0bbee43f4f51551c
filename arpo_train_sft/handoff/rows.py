"""One row of the hand-off table, and how the table is printed."""

from __future__ import annotations

import sys
from dataclasses import dataclass

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"


@dataclass(frozen=True)
class Check:
    """What one check found; `warn` and `skip` do not fail the command, `fail` does."""

    name: str
    status: str
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        """False only for a failed check."""
        return self.status != FAIL

    def as_json(self) -> dict[str, object]:
        """The row as `--json` prints it."""
        return {
            "name": self.name,
            "ok": self.ok,
            "status": self.status,
            "detail": self.detail,
            "fix": self.fix,
        }

    @property
    def line(self) -> str:
        """The failure as one line: what was found and the fix."""
        return f"{self.name}: {self.detail}; fix: {self.fix}"


def print_table(checks: list[Check], title: str) -> None:
    """The rows as one rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    colours = {PASS: "green", WARN: "yellow", FAIL: "bold red", SKIP: "dim"}
    table = Table(title=title)
    for column in ("check", "status", "found", "fix"):
        table.add_column(column, overflow="fold")
    for check in checks:
        table.add_row(check.name, f"[{colours[check.status]}]{check.status}[/]", check.detail, check.fix)
    Console(width=None if sys.stdout.isatty() else 200).print(table)
