"""verify's questions: the built-in few, or a JSONL file read bounded, one problem per bad line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

# prompts files are hand-made lists of questions: 16 MiB is thousands of them.
MAX_PROMPTS_BYTES = 16 * 2**20


@dataclass(frozen=True)
class Prompt:
    question: str
    answer: str | None = None  # the reference, when known


DEFAULT_PROMPTS = (
    Prompt("What is the value of 37 * 43 - 19?", "1572"),
    Prompt("What is the greatest common divisor of 462 and 1071?", "21"),
    Prompt("What is the capital of Kenya?", "Nairobi"),
    Prompt("What is the atomic number of gold?", "79"),
    Prompt("Which river is longer, the Volga or the Danube?", "Volga"),
)


def read_prompt_rows(path: Path) -> tuple[list[Prompt], list[str]]:
    """Prompts from JSONL lines {"question": ..., "answer": optional}, and one problem per bad line.

    At most MAX_PROMPTS_BYTES are read (an endless file such as /dev/zero ends at once), and each line goes
    through the data readers' bounded decode (nesting depth, integer digits).
    """
    from ..data.bounds import decode

    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_PROMPTS_BYTES + 1)
        lines = raw.decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read the prompts ({err}); pass a readable UTF-8 JSONL file") from err
    if len(raw) > MAX_PROMPTS_BYTES:
        raise UserError(
            f"{path}: over {MAX_PROMPTS_BYTES // 2**20} MiB of prompts; split it into smaller files"
        )
    prompts, problems = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row, end, limit = decode(line, len(line) - len(line.lstrip()))
            if limit is None and line[end:].strip():
                raise json.JSONDecodeError("extra data after the object", line, end)
        except (json.JSONDecodeError, RecursionError) as err:
            reason = err.msg if isinstance(err, json.JSONDecodeError) else str(err)
            problems.append(f"{path}:{number}: not valid JSON ({reason}); fix or delete the line")
            continue
        if limit is not None:
            problems.append(f"{path}:{number}: {limit}")
            continue
        question = row.get("question") if isinstance(row, dict) else None
        answer = row.get("answer") if isinstance(row, dict) else None
        if not isinstance(question, str) or not question.strip():
            problems.append(
                f'{path}:{number}: needs a "question" string: {{"question": "...", "answer": "42"}}'
            )
        elif answer is not None and not isinstance(answer, (str, int, float)):
            problems.append(f'{path}:{number}: "answer" must be a string or a number, or left out')
        else:
            prompts.append(Prompt(question, None if answer is None else str(answer)))
    if not problems and not prompts:
        problems.append(f'{path}: no prompts; add one {{"question": ...}} object per line')
    return prompts, problems


def read_prompts(path: Path) -> list[Prompt]:
    """Every prompt of `path`, or a UserError listing every bad line."""
    prompts, problems = read_prompt_rows(path)
    if problems:
        raise UserError(problems)
    return prompts
