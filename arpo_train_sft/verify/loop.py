"""ARPO's inference loop, independent of the model: generate, run each closed tool call, append its result."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .sandbox import run_python
from .search import SearchBackend, format_pages

STOP_TAGS = ("</python>", "</search>", "</answer>")
# The bundled demo data lays a call out as "</python>\n<result>\n...\n</result>\n<think>", so the loop
# writes the same bytes around a real result.
RESULT = "\n<result>\n{}\n</result>\n"
LIMIT_REACHED = "The maximum {0} call limit is exceeded. You are not allowed to use {0}."  # ARPO's eval text
REPEATED_QUERY = "You have searched this query. Please refer to previous results."
EMPTY_OUTPUT = "Tool({}) returned empty output."  # ARPO's RL rollout text
SEARCH_PAGES = 3  # the demo data shows 1-3 pages per search


@dataclass(frozen=True)
class Step:
    """One generation call: the text it produced, its token count, and whether it ended with EOS."""

    text: str
    tokens: int
    ended: bool


# (assistant text so far, max new tokens, seconds left) -> the continuation, cut at a stop tag or EOS.
Generate = Callable[[str, int, float], Step]


@dataclass(frozen=True)
class Limits:
    max_tool_calls: int = 5
    max_new_tokens: int = 512  # per generation call
    max_total_tokens: int = 4096  # per prompt, all calls together
    time_limit_s: float = 300  # per prompt, generation and tools together
    python_timeout_s: float = 10
    allow_weak_sandbox: bool = False  # run python where the sandbox cannot isolate it (see sandbox.py)


@dataclass
class Trajectory:
    text: str = ""
    calls: dict[str, int] = field(default_factory=lambda: {"python": 0, "search": 0})
    refused: int = 0  # calls answered with LIMIT_REACHED instead of running
    tokens: int = 0
    stop: str = ""  # answer, eos, length, token budget, time budget


def run_loop(generate: Generate, search: SearchBackend, limits: Limits) -> Trajectory:
    """ARPO's inference loop: generate, run each closed <python>/<search> call, append its <result>, repeat."""
    deadline = time.monotonic() + limits.time_limit_s
    traj, queries = Trajectory(), set()
    while True:
        if stop := _spent(traj, limits, deadline):
            traj.stop = stop
            return traj
        left = deadline - time.monotonic()
        step = generate(traj.text, min(limits.max_new_tokens, limits.max_total_tokens - traj.tokens), left)
        traj.tokens += step.tokens
        ends = [(step.text.find(tag), tag) for tag in STOP_TAGS if tag in step.text]
        if not ends:
            traj.text += step.text
            traj.stop = "eos" if step.ended else _spent(traj, limits, deadline) or "length"  # of this call
            return traj
        at, tag = min(ends)
        traj.text += step.text[: at + len(tag)]  # a stop string can end inside the last token
        if tag == "</answer>":
            traj.stop = "answer"
            return traj
        tool = tag[2:-1]
        body = traj.text[: -len(tag)]
        start = body.rfind(f"<{tool}>")  # the last opening tag, as ARPO's rollout reads it
        content = body[start + len(tool) + 2 :].strip() if start != -1 else ""
        traj.calls[tool] += 1
        if sum(traj.calls.values()) > limits.max_tool_calls:
            traj.refused += 1
            output = LIMIT_REACHED.format(tool)
        elif tool == "python":
            timeout = min(limits.python_timeout_s, max(1.0, deadline - time.monotonic()))
            output = run_python(content, timeout, allow_weak=limits.allow_weak_sandbox).tool_output()
        elif content in queries:
            output = REPEATED_QUERY
        else:
            queries.add(content)
            output = format_pages(search.search(content, SEARCH_PAGES))
        traj.text += RESULT.format(output or EMPTY_OUTPUT.format(tool))


def _spent(traj: Trajectory, limits: Limits, deadline: float) -> str | None:
    if time.monotonic() >= deadline:
        return "time budget"
    return "token budget" if traj.tokens >= limits.max_total_tokens else None
