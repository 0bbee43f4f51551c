"""User-facing errors: problems the user can fix, reported together, one line each, no traceback."""

from __future__ import annotations

# The one exit-status table of every `arpo-sft` command (README and `arpo-sft --help` show EXIT_TABLE).
EXIT_OK = 0
# The command ran and found data that breaks ARPO's rules (`data check`, `data prepare`, `data parity`), a
# hand-off check that fails, or input `verify` had to skip while it ran the rest.
EXIT_DATA = 1
# "Your input is wrong, nothing was started"; training failures keep torchrun's own code.
EXIT_USER_ERROR = 2
# "This host cannot do it safely" (e.g. no sandbox isolation, the disk filled up); nothing more was run.
EXIT_ENVIRONMENT = 3
# `arpo-sft train` stopped at the first step whose loss or gradient norm was not finite, saving nothing after
# it. 4 is the next free code: 1-3 are taken, 70 and 128+ mean other things, and torchrun's own failures are 1.
EXIT_DIVERGED = 4
# `arpo-sft train`: a rank ran out of GPU memory; one line names the rank, step, tokens and the change to make.
EXIT_OOM = 5
# Our own bug: an exception nobody expected (sysexits' EX_SOFTWARE); the traceback goes to a file.
EXIT_INTERNAL = 70
# Stopped by Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130
# `arpo-sft train` stopped by SIGTERM after saving a checkpoint (128 + SIGTERM): relaunch to resume.
EXIT_PREEMPTED = 143

EXIT_TABLE = f"""exit status (every command):
  {EXIT_OK}    ok
  {EXIT_DATA}    data breaks ARPO's rules (data check / prepare / parity found rows to fix); handoff: a check failed;
         verify: it ran the rest, but skipped a prompts row or a torn checkpoint (each named on stderr)
  {EXIT_USER_ERROR}    user error: a bad flag, path, config key or value; one line each, nothing started
  {EXIT_ENVIRONMENT}    this host cannot do it (no sandbox isolation, the disk filled up)
  {EXIT_DIVERGED}    train: a step's loss or grad_norm was not finite; nothing saved after it (see the one line)
  {EXIT_OOM}    train: a rank ran out of GPU memory (the one line names the step and the cheapest change)
  {EXIT_INTERNAL}   internal error (a bug): one line on stderr, the full traceback in a file it names
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
  {EXIT_PREEMPTED}  train: stopped by SIGTERM after saving checkpoint-<step>; the same command resumes it
  other  `arpo-sft train` passes on torchrun's status when training itself fails"""


class UserError(Exception):
    """One or more problems in the user's input; each line names where it is and how to fix it."""

    exit_code = EXIT_USER_ERROR  # what `arpo-sft` exits with; a subclass may say EXIT_ENVIRONMENT

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class EnvironmentProblem(UserError):
    """The input is fine but this host cannot do it (no isolation, a full disk); exits EXIT_ENVIRONMENT."""

    exit_code = EXIT_ENVIRONMENT
