"""The rules one ARPO ShareGPT row must follow: schema, roles and their order, clean text, ARPO's tag format."""

from __future__ import annotations

import re
from typing import Any

from ..arpo.tags import format_issues

# Every rule `data check` reports, in report order, with the line that describes it.
RULES: dict[str, str] = {
    "unparsable": "not valid JSON or UTF-8, or cut off",
    "not-object": "the row is not a JSON object",
    "missing-field": "a required field is missing",
    "field-type": "a field has the wrong type",
    "unknown-role": "a role is not human/gpt or user/assistant",
    "role-order": "turns do not alternate user, assistant",
    "empty-turn": "an empty or whitespace-only turn",
    "control-chars": "control characters (other than \\n \\r \\t)",
    "invalid-unicode": "a lone surrogate (e.g. a JSON \\ud800 escape) that UTF-8 cannot encode",
    "special-token-literal": "a special-token literal such as <|im_end|> in the text",
    "backspace-boxed": '"\\x08oxed": "\\boxed" with its backslash lost',
    "think-unpaired": "<think> tags not paired",
    "tag-unpaired": "a tool, <result> or <answer> tag not paired",
    "tag-nested": "a tag opened inside another",
    "tool-without-result": "a tool call not followed by a <result>",
    "result-without-tool": "a <result> not right after a tool call",
    "answer-count": "not exactly one <answer>",
    "answer-without-boxed": "an <answer> without \\boxed{...}",
    "text-after-answer": "text after </answer>",
    "duplicate": "same system and conversations as an earlier row",
}

_ROLE_PAIRS = (("human", "gpt"), ("user", "assistant"))
_PAIR_OF = {role: pair for pair in _ROLE_PAIRS for role in pair}
_SYSTEM = "system"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_BACKSPACE_BOXED = "\x08oxed"
# Python's json turns an escaped surrogate pair into one character, so any surrogate left is a lone one.
_SURROGATE = re.compile("[\ud800-\udfff]")
# The shape of the chat-control tokens of Qwen (<|im_start|>, <|im_end|>, <|endoftext|>, ...) and other
# ChatML-style families. Tokenizers match them in plain text, so a literal one becomes a real control token.
SPECIAL_TOKEN = re.compile(r"<\|[A-Za-z0-9_]{1,40}\|>")
# Control characters that Python writes for a backslash escape, e.g. "\frac" holds a form feed.
_PY_ESCAPES = {"\x07": "a", "\x08": "b", "\x0b": "v", "\x0c": "f"}

Problem = tuple[str, str]  # (rule id, message naming the field)


def row_problems(data: Any) -> list[Problem]:
    """Every rule of RULES that one parsed row breaks (duplicates aside), as (rule id, message)."""
    if not isinstance(data, dict):
        return [("not-object", f"the row is {_kind(data)}, not an object with system and conversations")]
    problems = _text_problems(data, "")
    if "system" in data and not isinstance(data["system"], str):
        problems.append(("field-type", f"system is {_kind(data['system'])}, not a string"))
    if "conversations" not in data:
        problems.append(("missing-field", "no conversations (a list of {from, value} turns)"))
        return problems
    turns = data["conversations"]
    if not isinstance(turns, list):
        problems.append(("field-type", f"conversations is {_kind(turns)}, not a list of turns"))
        return problems
    shape = [problem for i, turn in enumerate(turns) for problem in _turn_shape(i, turn)]
    if shape:
        return problems + shape
    roles = [turn["from"] for turn in turns]
    problems += _role_problems(roles)
    for i, (role, turn) in enumerate(zip(roles, turns, strict=True)):
        where = f"conversations[{i}].value"
        if not turn["value"].strip():
            problems.append(("empty-turn", f"{where} ({role}) is empty"))
        elif role in ("gpt", "assistant"):
            problems += [(rule, f"{where}: {message}") for rule, message in format_issues(turn["value"])]
    return problems


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list"}
    return names.get(type(value), "an object")


def _turn_shape(i: int, turn: Any) -> list[Problem]:
    where = f"conversations[{i}]"
    if not isinstance(turn, dict):
        return [("field-type", f"{where} is {_kind(turn)}, not an object with from and value")]
    problems: list[Problem] = []
    for key in ("from", "value"):
        if key not in turn:
            problems.append(("missing-field", f"{where} has no {key!r}"))
        elif not isinstance(turn[key], str):
            problems.append(("field-type", f"{where}.{key} is {_kind(turn[key])}, not a string"))
    return problems


def _role_problems(roles: list[str]) -> list[Problem]:
    start = 1 if roles[:1] == [_SYSTEM] else 0
    unknown = [(i, r) for i, r in enumerate(roles) if r not in _PAIR_OF and r != _SYSTEM]
    if unknown:
        listed = ", ".join(f"{r!r} at conversations[{i}]" for i, r in unknown[:3])
        return [("unknown-role", f"unknown role {listed}; use human/gpt or user/assistant")]
    pairs = {_PAIR_OF[r] for r in roles if r != _SYSTEM}
    if len(pairs) > 1:
        return [("unknown-role", "mixes human/gpt with user/assistant roles; use one pair in a row")]
    user, assistant = pairs.pop() if pairs else _ROLE_PAIRS[0]
    if len(roles) == start:
        return [("role-order", "no turns: conversations needs a user turn and then an assistant turn")]
    for i in range(start, len(roles)):
        expected = user if (i - start) % 2 == 0 else assistant
        if roles[i] != expected:
            return [
                (
                    "role-order",
                    f"conversations[{i}] is {roles[i]!r} where {expected!r} belongs (turns alternate "
                    f"{user}, {assistant}; only the first turn may be {_SYSTEM})",
                )
            ]
    if roles[-1] != assistant:
        return [
            (
                "role-order",
                f"the last turn is {user!r}; conversations must end with a turn from {assistant!r}",
            )
        ]
    return []


def _text_problems(value: Any, where: str) -> list[Problem]:
    """Control characters (the backspace bug named), lone surrogates, special tokens: every string, keys too."""
    if isinstance(value, str):
        return _string_problems(value, where or "the row")
    if isinstance(value, dict):
        items = value.items()
        problems = [p for key in value for p in _string_problems(key, f"a key of {where or 'the row'}")]
    elif isinstance(value, list):
        items, problems = enumerate(value), []
    else:
        return []
    for key, item in items:
        key = key if isinstance(key, int) else _printable(key)
        path = f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else key
        problems += _text_problems(item, path)
    return problems


def _printable(text: str) -> str:
    """`text` with lone surrogates written as \\udXXX, so a message naming it can be printed."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _string_problems(text: str, where: str) -> list[Problem]:
    problems = _control_chars(text, where)
    if lone := _SURROGATE.search(text):
        count = len(_SURROGATE.findall(text))
        problems.append(
            (
                "invalid-unicode",
                f"{where}: {count} lone surrogate(s), first U+{ord(lone.group()):04X} at character "
                f"{lone.start() + 1}, which UTF-8 cannot encode (a JSON \\ud800-style escape without its "
                "pair); fix the source that wrote it",
            )
        )
    if token := SPECIAL_TOKEN.search(text):
        count = len(SPECIAL_TOKEN.findall(text))
        problems.append(
            (
                "special-token-literal",
                f"{where}: {count} special-token literal(s), first {token.group()!r} at character "
                f"{token.start() + 1}; the tokenizer would make it a real control token",
            )
        )
    return problems


def _control_chars(text: str, where: str) -> list[Problem]:
    if not _CONTROL.search(text):
        return []
    problems: list[Problem] = []
    boxed = text.find(_BACKSPACE_BOXED)
    if boxed >= 0:
        count = text.count(_BACKSPACE_BOXED)
        problems.append(
            (
                "backspace-boxed",
                f'{where}: "\\x08oxed" {count}x (first at character {boxed + 1}) where "\\boxed" was meant; '
                'fix the source that wrote it (write "\\\\boxed" or use a raw string) and regenerate',
            )
        )
    others = [m for m in _CONTROL.finditer(text) if not text.startswith(_BACKSPACE_BOXED, m.start())]
    if others:
        char, at = others[0].group(), others[0].start()
        hint = (
            f' (Python\'s "\\{_PY_ESCAPES[char]}" escape: a lost backslash?)' if char in _PY_ESCAPES else ""
        )
        problems.append(
            (
                "control-chars",
                f"{where}: {len(others)} control character(s), first U+{ord(char):04X} at character {at + 1}"
                f" before {text[at + 1 : at + 11]!r}{hint}",
            )
        )
    return problems
