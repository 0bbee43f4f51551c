"""ARPO's trajectory tags: one scanner for the format rules, the result spans and the boxed answer."""

from __future__ import annotations

import re
from dataclasses import dataclass

TAG = re.compile(r"<(/?)(think|python|search|result|answer)>")
_TOOLS = ("python", "search")
# Code, queries and tool output may contain tag-like text; ARPO's tool loop only looks for the closing tag.
_OPAQUE = ("python", "search", "result")
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_BOXED = "\\boxed{"
_PROSE = ("think", "answer")  # tags that carry no code: irrelevant to where a result span ends
_RESULT_OPEN = "<result>"


def _excerpt(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit] + "...")


def format_problems(trajectory: str) -> list[str]:
    """Every way `trajectory` breaks ARPO's tag rules, one readable line each; empty means compliant."""
    return [message for _, message in format_issues(trajectory)]


def format_issues(trajectory: str) -> list[tuple[str, str]]:
    """Like `format_problems`, each line paired with the id of the rule it breaks (e.g. "think-unpaired")."""
    issues: list[tuple[str, str]] = []
    stack: list[tuple[str, int, int]] = []  # (tag, where its content starts, its number among that tag)
    seen = dict.fromkeys(("think", "python", "search", "result", "answer"), 0)
    answers: list[str] = []
    tool_end: int | None = None  # end of the latest </python> or </search>
    answer_end: int | None = None
    for m in TAG.finditer(trajectory):
        closing, tag = m.group(1) == "/", m.group(2)
        if stack and stack[-1][0] in _OPAQUE and not (closing and tag == stack[-1][0]):
            continue
        if not closing:
            seen[tag] += 1
            if stack:
                outer = stack[-1][0]
                if tag == outer == "think":
                    issues.append(("think-unpaired", "nested <think>"))
                else:
                    issues.append(("tag-nested", f"<{tag}> inside <{outer}>"))
            if tag == "result" and (tool_end is None or trajectory[tool_end : m.start()].strip()):
                message = f"<result> #{seen[tag]} does not directly follow a </python> or </search>"
                issues.append(("result-without-tool", message))
            stack.append((tag, m.end(), seen[tag]))
            continue
        if not any(open_tag == tag for open_tag, _, _ in stack):
            issues.append((_unpaired(tag), f"</{tag}> without an opening <{tag}>"))
            continue
        while stack[-1][0] != tag:
            unclosed = stack.pop()[0]
            issues.append((_unpaired(unclosed), f"unclosed <{unclosed}>"))
        _, start, number = stack.pop()
        if tag in _TOOLS:
            tool_end = m.end()
            if not trajectory[m.end() :].lstrip().startswith("<result>"):
                issues.append(
                    ("tool-without-result", f"<{tag}> #{number} is not directly followed by a <result>")
                )
        elif tag == "answer":
            answers.append(trajectory[start : m.start()])
            answer_end = m.end()
    issues.extend((_unpaired(tag), f"unclosed <{tag}>") for tag, _, _ in reversed(stack))
    if len(answers) != 1:
        issues.append(("answer-count", f"expected exactly one <answer>...</answer>, found {len(answers)}"))
    issues.extend(
        ("answer-without-boxed", f"<answer> #{i} has no \\boxed{{...}}")
        for i, text in enumerate(answers, 1)
        if _BOXED not in text
    )
    if answer_end is not None and trajectory[answer_end:].strip():
        issues.append(("text-after-answer", f"text after </answer>: {_excerpt(trajectory[answer_end:])}"))
    return issues


def _unpaired(tag: str) -> str:
    return "think-unpaired" if tag == "think" else "tag-unpaired"


def boxed_answer(trajectory: str) -> str | None:
    """Content of the last brace-balanced \\boxed{...} in the last <answer>, as ARPO's evaluation reads it."""
    blocks = _ANSWER.findall(trajectory)
    if not blocks:
        return None
    text, found = blocks[-1], None
    start = text.find(_BOXED)
    while start != -1:
        depth, i = 1, start + len(_BOXED)
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth:
            break  # unbalanced: what follows cannot be read reliably
        found = text[start + len(_BOXED) : i - 1]
        start = text.find(_BOXED, i)
    return found


@dataclass(frozen=True)
class SpanScan:
    """Where the result spans of one text are, or why none can be trusted."""

    spans: list[tuple[int, int]]
    problem: str | None = None


def find_result_spans(text: str) -> SpanScan:
    """Character ranges `[start, end)` of every `<result>…</result>` span in one assistant message."""
    spans: list[tuple[int, int]] = []
    in_call = None  # the tool tag whose block we are in: its text is code, not markup
    span_start = None
    for match in TAG.finditer(text):
        closing, name = match.group(1) == "/", match.group(2)
        if name in _PROSE:
            continue
        if span_start is not None:
            if name != "result":
                continue  # tool output may print anything
            if not closing:
                return SpanScan([], f"<result> at character {match.start()} opens inside another result")
            spans.append((span_start, match.end()))
            span_start = None
        elif in_call is not None:
            if closing and name == in_call:
                in_call = None
        elif name == "result":
            if closing:
                return SpanScan([], f"</result> at character {match.start()} closes nothing")
            span_start = match.start()
        elif not closing:
            in_call = name
    if span_start is not None:
        return SpanScan([], f"<result> at character {span_start} is never closed")
    return SpanScan(spans)


def user_turn_problem(messages: list[dict[str, str]]) -> str | None:
    """Why a row's user turns make masking ambiguous, if they do."""
    if any(m["role"] == "user" and _RESULT_OPEN in m["content"] for m in messages):
        return "a <result> tag sits in a user turn"
    return None


def unmasked_reason(messages: list[dict[str, str]]) -> str | None:
    """Why `qwen_mask_results` would train this row exactly like `qwen` (no masking), if it would."""
    assistant = (find_result_spans(m["content"]).problem for m in messages if m["role"] == "assistant")
    return user_turn_problem(messages) or next((p for p in assistant if p), None)


def token_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[bool]:
    """True for every token whose first character lies inside a span."""
    return [any(start <= tok_start < end for start, end in spans) for tok_start, _ in offsets]
