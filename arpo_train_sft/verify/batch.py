"""Many prompts through ARPO's tool loop at once: each keeps its own state, generation is batched, and a
prompt that stops at a tool call runs it in a worker thread while the other rows keep generating."""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Protocol

from ..arpo.tags import boxed_answer, format_problems
from .engine import OnDone, Row
from .loop import Generate, Limits, ResultFormat, ToolLoop, Trajectory, run_loop
from .prompts import Prompt
from .report import PromptReport
from .search import SearchBackend

MAX_TOOL_WORKERS = 8  # python calls are sandboxed processes: a few at a time keep the CPU for generation


class Engine(Protocol):
    """What the loop needs of a generator (engine.HFEngine, vllm_engine.VLLMEngine)."""

    name: str

    def prompt(self, question: str) -> str: ...

    def generate(self, rows: list[Row], on_done: OnDone) -> None: ...

    def default_batch_size(self, limits: Limits) -> int: ...


def _squash(text: str) -> str:
    return " ".join(text.split())


def score(prompt: Prompt, traj: Trajectory, elapsed_s: float) -> PromptReport:
    """A finished trajectory's format problems, answer and tool use."""
    problems = format_problems(traj.text)
    answer = boxed_answer(traj.text)
    correct = (
        None if prompt.answer is None else answer is not None and _squash(answer) == _squash(prompt.answer)
    )
    return PromptReport(
        prompt.question,
        prompt.answer,
        traj.text,
        problems,
        not problems,
        answer,
        correct,
        traj.calls["python"],
        traj.calls["search"],
        sum(traj.refused.values()),
        traj.repeated,
        traj.stop,
        traj.tokens,
        round(elapsed_s, 3),
        traj.tool_stops,
        traj.self_written_results,
    )


def verify_prompt(
    prompt: Prompt, generate: Generate, search: SearchBackend, limits: Limits, result_format: ResultFormat
) -> PromptReport:
    """Run one question through the loop with a one-at-a-time generator and score its trajectory."""
    start = time.monotonic()
    traj = run_loop(generate, search, limits, result_format)
    return score(prompt, traj, time.monotonic() - start)


def run_prompts(
    engine: Engine,
    prompts: list[Prompt],
    search: SearchBackend,
    limits: Limits,
    result_format: ResultFormat,
    batch_size: int,
) -> list[PromptReport]:
    """Every prompt through the loop, `batch_size` rows per generation call; reports in prompt order.

    Rounds: each takes up to `batch_size` prompts that are ready (new, or back from a tool) and generates
    them together. A row that stops at </python> or </search> is handed to a tool worker at once, while
    the rest of its round goes on; it joins the first round that starts after its tool returned. A prompt's
    text depends only on its own state, so, with greedy decoding and exact batching, the results equal
    one-at-a-time generation.
    """
    loops = [ToolLoop(search, limits, result_format) for _ in prompts]
    texts = [engine.prompt(p.question) for p in prompts]
    started: dict[int, float] = {}
    elapsed: dict[int, float] = {}
    ready: deque[int] = deque(range(len(prompts)))
    running: dict[Future, int] = {}

    def finished(key: int) -> None:
        elapsed[key] = time.monotonic() - started[key]

    with ThreadPoolExecutor(max_workers=max(1, min(batch_size, MAX_TOOL_WORKERS))) as pool:

        def on_done(key: int, step) -> None:
            call = loops[key].take(step)
            if call is None:
                finished(key)
            else:
                running[pool.submit(call)] = key

        while ready or running:
            if not ready:  # every prompt left is in a tool: wait for the first one back
                wait(list(running), return_when=FIRST_COMPLETED)
            for future in [f for f in running if f.done()]:
                future.result()  # a tool's own bug surfaces here, with its traceback
                ready.append(running.pop(future))
            rows = []
            while ready and len(rows) < batch_size:
                key = ready.popleft()
                started.setdefault(key, time.monotonic())
                budget = loops[key].budget()
                if budget is None:
                    finished(key)
                else:
                    rows.append(Row(key, texts[key] + loops[key].traj.text, budget, loops[key].deadline))
            if rows:
                engine.generate(rows, on_done)
    return [score(p, loop.traj, elapsed[i]) for i, (p, loop) in enumerate(zip(prompts, loops, strict=True))]
