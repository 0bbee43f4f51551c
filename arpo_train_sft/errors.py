"""User-facing errors: problems the user can fix, reported together, one line each, no traceback."""

from __future__ import annotations

# Exit status for "your input is wrong, nothing was started"; training failures keep torchrun's own code.
EXIT_USER_ERROR = 2
# Exit status for "this host cannot do it safely" (e.g. no sandbox isolation); nothing was run.
EXIT_ENVIRONMENT = 3


class UserError(Exception):
    """One or more problems in the user's input; each line names where it is and how to fix it."""

    exit_code = EXIT_USER_ERROR  # what `arpo-sft` exits with; a subclass may say EXIT_ENVIRONMENT

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))
