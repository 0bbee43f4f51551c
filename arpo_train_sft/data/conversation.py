"""One row from the raw file to what LLaMA-Factory's ShareGPT converter hands the template.

Shared by `data prepare`, `data stats` and `data parity`, so the three agree on every row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .rules import SPECIAL_TOKEN, row_problems

# Rows LLaMA-Factory would drop with only a log line, or crash on: never written to the training file.
STRUCTURAL_RULES = {
    "unparsable",
    "not-object",
    "missing-field",
    "field-type",
    "unknown-role",
    "role-order",
    "empty-turn",
    "invalid-unicode",  # the tokenizer cannot encode it: LLaMA-Factory would crash on the row
}
ROLE_MAP = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt"}
# After "<": the literal then tokenizes as plain text (verified in tests/data/test_prepare.py) and reads the same.
ZERO_WIDTH_SPACE = "\u200b"
# C0 and C1 control characters but the three whitespace ones, as `data check` flags them.
_CONTROL = {chr(c) for c in [*range(32), *range(127, 160)] if chr(c) not in "\n\r\t"}


@dataclass(frozen=True)
class Conversation:
    """One row in LLaMA-Factory's terms: alternating user/assistant messages and a system prompt."""

    messages: list[dict[str, str]]
    system: str | None = None


def fix_control_chars(text: str) -> str:
    """`\\x08oxed` back to `\\boxed` (a Python escaping bug in ARPO's prompts); other control chars dropped."""
    text = text.replace("\x08oxed", "\\boxed")
    return "".join(ch for ch in text if ch not in _CONTROL)


def normalize(data: dict[str, Any], fix: bool) -> tuple[dict[str, Any], bool]:
    """The row with `human`/`gpt` roles and the system prompt in its column; whether a fix changed it."""
    system = data.get("system")
    turns = list(data["conversations"])
    if turns and turns[0]["from"] == "system":
        system = turns.pop(0)["value"]
    row: dict[str, Any] = {}
    if system is not None:
        row["system"] = system
    row["conversations"] = [{"from": ROLE_MAP[t["from"]], "value": t["value"]} for t in turns]
    if not fix:
        return row, False
    fixed = json.loads(json.dumps(row), object_hook=_fix_strings)
    return fixed, fixed != row


def escape_special_tokens(data: dict[str, Any]) -> dict[str, Any]:
    """The row with a zero-width space after the "<" of every special-token literal, in every string."""
    return json.loads(json.dumps(data), object_hook=_escape_strings)


def _escape(text: str) -> str:
    return SPECIAL_TOKEN.sub(lambda m: "<" + ZERO_WIDTH_SPACE + m.group()[1:], text)


def _escape_strings(obj: dict[str, Any]) -> dict[str, Any]:
    return {key: _escape(value) if isinstance(value, str) else value for key, value in obj.items()}


def _fix_strings(obj: dict[str, Any]) -> dict[str, Any]:
    return {key: fix_control_chars(value) if isinstance(value, str) else value for key, value in obj.items()}


def problems_of(row: Any) -> list[tuple[str, str]]:
    """Every (rule, message) a streamed row breaks, an unreadable row included."""
    return [("unparsable", row.error)] if row.error is not None else row_problems(row.data)


def blocking(problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The problems that keep a row out of training: shapes LLaMA-Factory drops or crashes on."""
    return [(rule, message) for rule, message in problems if rule in STRUCTURAL_RULES]


def to_conversation(row: dict[str, Any]) -> Conversation:
    """The row as LLaMA-Factory's ShareGPT converter hands it to the template."""
    roles = {"human": "user", "gpt": "assistant"}
    messages = [{"role": roles[t["from"]], "content": t["value"]} for t in row["conversations"]]
    return Conversation(messages, row.get("system"))
