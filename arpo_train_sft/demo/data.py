"""A small ARPO-SFT-format demo dataset the project writes itself, with really executed python results."""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

from arpo_train_sft.arpo.prompt import ARPO_SYSTEM_PROMPT
from arpo_train_sft.atomic import atomic_writer
from arpo_train_sft.demo.facts import COMPARE, FACTS, Fact
from arpo_train_sft.demo.tasks import PY_AFTER, PY_AGREE, PY_OPENERS, PY_TASKS, PY_VERIFY

DEFAULT_PATH = Path("dataset_info/demo/arpo_sft_demo.jsonl")


def _think(text: str) -> str:
    return f"<think> {text} </think>"


def _call(tag: str, body: str, result: str) -> str:
    return f"<{tag}>\n{body}\n</{tag}>\n<result>\n{result}\n</result>"


def _answer(value: str) -> str:
    return f"<answer>The final answer is \\[ \\boxed{{{value}}} \\]</answer>"


def _run_python(code: str) -> str:
    """Run `code` the way ARPO's python tool does, in a fresh interpreter; return its stripped stdout."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:  # a demo answer must be a real result, never a traceback
        raise RuntimeError(f"demo snippet failed:\n{code}\n{proc.stderr}")
    return proc.stdout.strip()


def _search(rng: random.Random, fact: Fact) -> str:
    """A search call for `fact`, its result laid out like ARPO's snippet search: `Page i: ...` lines."""
    others = [f.snippet for f in FACTS if f.topic == fact.topic and f is not fact]
    pages = rng.sample(others, rng.randint(1, 2))
    pages.insert(rng.randint(0, 1), fact.snippet)  # the hit is usually, not always, ranked first
    return _call("search", fact.query, "\n".join(f"Page {i}: {page}" for i, page in enumerate(pages, 1)))


def _python_row(rng: random.Random, pattern: str) -> tuple[str, str]:
    twice = pattern == "python_twice"
    task = rng.choice([t for t in PY_TASKS if t.check] if twice else PY_TASKS)
    p = task.params(rng)
    code = task.code.format(**p)
    out = _run_python(code)
    steps = [_think(f"{task.plan.format(**p)} {rng.choice(PY_OPENERS)}"), _call("python", code, out)]
    if pattern == "python_think":
        steps.append(_think(rng.choice(PY_AFTER).format(out=out)))
    elif twice:
        check = (task.check or "").format(**p)
        if _run_python(check) != out:
            raise RuntimeError(f"the two computations disagree:\n{code}\n---\n{check}")
        steps += [_think(rng.choice(PY_VERIFY).format(out=out)), _call("python", check, out)]
        steps.append(_think(rng.choice(PY_AGREE).format(out=out)))
    return task.question.format(**p), "\n".join([*steps, _answer(out)])


def _search_row(rng: random.Random) -> tuple[str, str]:
    fact = rng.choice(FACTS)
    question, answer = rng.choice(fact.questions)
    opening = _think(f"This is a factual question, so I will search for {fact.query} instead of guessing.")
    steps = [opening, _search(rng, fact), _think(f"The search result answers it: {answer}."), _answer(answer)]
    return question, "\n".join(steps)


def _compare_row(rng: random.Random) -> tuple[str, str]:
    topic = rng.choice(sorted(COMPARE))
    template, pick, attribute = COMPARE[topic]
    x, y = rng.sample([f for f in FACTS if f.topic == topic], 2)
    winner = pick((x, y), key=lambda f: f.value).name.removeprefix("the ")
    steps = [
        _think(f"I need the {attribute} of {x.name} and of {y.name}. I will search for {x.name} first."),
        _search(rng, x),
        _think(f"That gives {x.value} for {x.name}. Now I need {y.name}."),
        _search(rng, y),
        _think(f"So {x.name} has {x.value} and {y.name} has {y.value}, which makes the answer {winner}."),
        _answer(winner),
    ]
    return template.format(x=x.name, y=y.name), "\n".join(steps)


def _no_tool_row(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(11, 99), rng.randint(2, 9)
    question, reasoning, result = rng.choice(
        (
            (f"What is {a} + {7 * b}?", f"{a} + {7 * b} = {a + 7 * b}.", a + 7 * b),
            (f"How many minutes are in {b} hours?", f"An hour has 60 minutes: {b} × 60 = {60 * b}.", 60 * b),
            (f"How many legs do {a} spiders have?", f"A spider has 8 legs, so {a} × 8 = {8 * a}.", 8 * a),
            (f"What is half of {2 * a}?", f"Half of {2 * a} is {a}.", a),
        )
    )
    return question, "\n".join([_think(f"{reasoning} This needs no tool."), _answer(str(result))])


# (weight, row maker): roughly the tag-pattern mix of the real ARPO-SFT-54K (reference doc, section 1.2).
_PATTERNS: dict[str, tuple[int, Callable[[random.Random], tuple[str, str]]]] = {
    "python": (40, partial(_python_row, pattern="python")),
    "python_think": (20, partial(_python_row, pattern="python_think")),
    "python_twice": (10, partial(_python_row, pattern="python_twice")),
    "search": (15, _search_row),
    "search_twice": (5, _compare_row),
    "no_tool": (10, _no_tool_row),
}


def generate_rows(n: int = 300, seed: int = 0) -> list[dict]:
    """Build `n` rows in ARPO-SFT-54K's schema; the same (n, seed) always gives the same rows."""
    rng = random.Random(seed)
    rows: list[dict] = []
    questions: set[str] = set()
    while len(rows) < n:
        _, make_row = rng.choices(list(_PATTERNS.values()), weights=[w for w, _ in _PATTERNS.values()])[0]
        for _ in range(50):  # the search pools are small: redraw within the pattern to keep the mix
            question, trajectory = make_row(rng)
            if question not in questions:
                questions.add(question)
                turns = [{"from": "human", "value": question}, {"from": "gpt", "value": trajectory}]
                rows.append({"system": ARPO_SYSTEM_PROMPT, "conversations": turns})
                break
    return rows


def write_demo_dataset(path: Path, n: int = 300, seed: int = 0) -> int:
    """Write `n` demo rows to `path` as JSONL, atomically; return the row count."""
    rows = generate_rows(n, seed)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    with atomic_writer(path) as handle:
        handle.write(text)
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    """Write the demo dataset from the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m arpo_train_sft.demo.data",
        description="Write the ARPO-format demo dataset (300 rows, seed 0), running every python snippet.",
        epilog="example: python -m arpo_train_sft.demo.data dataset_info/demo/arpo_sft_demo.jsonl",
    )
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH, help=f"default: {DEFAULT_PATH}")
    args = parser.parse_args(argv)
    print(f"wrote {write_demo_dataset(args.path)} rows to {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
