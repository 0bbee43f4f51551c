"""User-facing errors: problems the user can fix, reported together, one line each, no traceback."""

from __future__ import annotations

# Exit status for "your input is wrong, nothing was started"; training failures keep torchrun's own code.
EXIT_USER_ERROR = 2


class UserError(Exception):
    """One or more problems in the user's input; each line names where it is and how to fix it."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))
