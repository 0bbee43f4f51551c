"""ARPO's inference loop, independent of the model: generate, run each closed tool call, append its result."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .sandbox import run_python
from .search import SearchBackend, format_pages

STOP_TAGS = ("</python>", "</search>", "</answer>")
# The tag the loop writes around a tool's output; in the model's own text it means it invented the result.
RESULT_TAG = "<result>"
# ARPO's evaluation harness (evaluation/src/sample_processor.py) answers each call with these texts.
LIMIT_REACHED = {
    "python": "The maximum python call limit is exceeded. You are not allowed to use python.",
    "search": "The maximum search limit is exceeded. You are not allowed to search.",
}
REPEATED_QUERY = "You have searched this query. Please refer to previous results."
SEARCH_PAGES = 3  # the demo data shows 1-3 pages per search


@dataclass(frozen=True)
class ResultFormat:
    """The bytes a tool's output is written back into the assistant text with, right after `</tool>`."""

    name: str
    layout: str  # `{output}` stands for the tool's output
    empty: str  # what an empty output becomes; `{tool}` stands for the tool's name

    def wrap(self, tool: str, output: str) -> str:
        """The text appended after `tool`'s closing tag."""
        return self.layout.replace("{output}", output or self.empty.replace("{tool}", tool))


RESULT_FORMATS = {
    # ARPO's evaluation harness, which measured its published numbers: no whitespace, empty stays empty.
    "eval": ResultFormat("eval", "<result>{output}</result>", ""),
    # ARPO's RL rollout (vllm_rollout_with_tools.py): a leading space and newlines, empty output named.
    "rollout": ResultFormat(
        "rollout", " <result>\n{output}\n</result>", "Tool({tool}) returned empty output."
    ),
}


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
    max_python_calls: int = 5  # ARPO's evaluation: MAX_PYTHON_TIMES=5
    max_search_calls: int = 10  # and MAX_SEARCH_TIMES=10
    max_new_tokens: int = 512  # per generation call
    max_total_tokens: int = 4096  # per prompt, all calls together
    time_limit_s: float = 300  # per prompt, generation and tools together
    python_timeout_s: float = 10
    allow_weak_sandbox: bool = False  # run python where the sandbox cannot isolate it (see sandbox.py)


@dataclass
class Trajectory:
    text: str = ""
    calls: dict[str, int] = field(default_factory=lambda: {"python": 0, "search": 0})  # calls that ran
    refused: dict[str, int] = field(default_factory=lambda: {"python": 0, "search": 0})  # over the limit
    repeated: int = 0  # searches for a query already searched, answered with REPEATED_QUERY
    tokens: int = 0
    stop: str = ""  # answer, eos, length, token budget, time budget
    tool_stops: int = 0  # generations that ended at </python> or </search>, run, refused or repeated
    # generations whose own text holds RESULT_TAG: the model wrote a tool's result instead of stopping
    self_written_results: int = 0


class ToolLoop:
    """One prompt's state in ARPO's loop, so that many prompts can share a batched generator.

    `budget()` says how many tokens the next generation may add (None once the trajectory is finished),
    `take(step)` applies a generation and returns the tool call it closed, to run before the next `budget()`.
    As in ARPO's evaluation, a call over its tool's limit or a repeated query is answered without running
    and does not count towards the limit. The time limit starts at the first `budget()`.
    """

    def __init__(self, search: SearchBackend, limits: Limits, result_format: ResultFormat) -> None:
        self.search, self.limits, self.result_format = search, limits, result_format
        self.traj = Trajectory()
        self.queries: set[str] = set()
        self.deadline: float | None = None

    def budget(self) -> int | None:
        """Tokens the next generation may add, or None (and `traj.stop` set) when the prompt is done."""
        if self.deadline is None:
            self.deadline = time.monotonic() + self.limits.time_limit_s
        if self.traj.stop:
            return None
        if stop := self._spent():
            self.traj.stop = stop
            return None
        return min(self.limits.max_new_tokens, self.limits.max_total_tokens - self.traj.tokens)

    def seconds_left(self) -> float:
        """Time left of the prompt's limit."""
        return (self.deadline or 0.0) - time.monotonic()

    def take(self, step: Step) -> Callable[[], None] | None:
        """Apply one generation: cut it at the first stop tag; return the tool call it closed, if any."""
        traj = self.traj
        traj.tokens += step.tokens
        traj.self_written_results += RESULT_TAG in step.text
        ends = [(step.text.find(tag), tag) for tag in STOP_TAGS if tag in step.text]
        if not ends:
            traj.text += step.text
            traj.stop = "eos" if step.ended else self._spent() or "length"  # of this call
            return None
        at, tag = min(ends)
        traj.text += step.text[: at + len(tag)]  # a stop string can end inside the last token
        if tag == "</answer>":
            traj.stop = "answer"
            return None
        traj.tool_stops += 1
        tool = tag[2:-1]
        body = traj.text[: -len(tag)]
        start = body.rfind(f"<{tool}>")  # the last opening tag, as ARPO's rollout reads it
        content = body[start + len(tool) + 2 :].strip() if start != -1 else ""
        return lambda: self._call(tool, content)

    def _call(self, tool: str, content: str) -> None:
        traj, limits = self.traj, self.limits
        limit = limits.max_python_calls if tool == "python" else limits.max_search_calls
        if traj.calls[tool] >= limit:
            traj.refused[tool] += 1
            output = LIMIT_REACHED[tool]
        elif tool == "search" and content in self.queries:
            traj.repeated += 1
            output = REPEATED_QUERY
        elif tool == "python":
            traj.calls[tool] += 1
            timeout = min(limits.python_timeout_s, max(1.0, self.seconds_left()))
            output = run_python(
                content, timeout_s=timeout, allow_weak=limits.allow_weak_sandbox
            ).tool_output()
        else:
            traj.calls[tool] += 1
            self.queries.add(content)
            output = format_pages(self.search.search(content, SEARCH_PAGES))
        traj.text += self.result_format.wrap(tool, output)

    def _spent(self) -> str | None:
        if time.monotonic() >= (self.deadline or 0.0):
            return "time budget"
        return "token budget" if self.traj.tokens >= self.limits.max_total_tokens else None


def run_loop(
    generate: Generate,
    search: SearchBackend,
    limits: Limits,
    result_format: ResultFormat = RESULT_FORMATS["eval"],
) -> Trajectory:
    """ARPO's inference loop for one prompt: generate, run each closed <python>/<search> call, append its
    <result>, repeat."""
    loop = ToolLoop(search, limits, result_format)
    while (budget := loop.budget()) is not None:
        if call := loop.take(generate(loop.traj.text, budget, loop.seconds_left())):
            call()
    return loop.traj
