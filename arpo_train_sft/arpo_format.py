"""ARPO's trajectory format: the system prompt it trains and evaluates with, and the tag rules it checks."""

from __future__ import annotations

import re

# The evaluation `code_search` prompt, verbatim. The RL parquet copy has "\x08oxed" (an unescaped "\b"); this
# is the intended text, so the raw strings keep the backslashes literal.
ARPO_SYSTEM_PROMPT = (
    r"You are a helpful assistant that can solve the given question step by step with the help of the "
    r"wikipedia search tool and python interpreter tool. Given a question, you need to first think "
    r"about the reasoning process in the mind and then provide the answer. During thinking, you can "
    r"invoke the wikipedia search tool to search and python interpreter tool to calculate the math "
    r"problem for fact information about specific topics if needed. The reasoning process and answer "
    r"are enclosed within <think> </think> and <answer> </answer> tags respectively, and the search "
    r"query and result are enclosed within <search> </search> and <result> </result> tags "
    r"respectively. For example, <think> This is the reasoning process. </think> <search> search "
    r"query here </search> <result> search result here </result> <think> This is the reasoning "
    r"process. </think> <python> python code here </python> <result> python interpreter result here "
    r"</result> <think> This is the reasoning process. </think> <answer> The final answer is \[ "
    r"\boxed{answer here} \] </answer>. In the last part of the answer, the final exact answer is "
    r"enclosed within \boxed{} with latex format."
)

_TAG = re.compile(r"<(/?)(think|python|search|result|answer)>")
_TOOLS = ("python", "search")
# Code, queries and tool output may contain tag-like text; ARPO's tool loop only looks for the closing tag.
_OPAQUE = ("python", "search", "result")
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_BOXED = "\\boxed{"


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
    for m in _TAG.finditer(trajectory):
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
