"""A small ARPO-SFT-format demo dataset the project writes itself, with really executed python results."""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from arpo_train_sft.arpo.prompt import ARPO_SYSTEM_PROMPT
from arpo_train_sft.atomic import atomic_writer

DEFAULT_PATH = Path("dataset_info/demo/arpo_sft_demo.jsonl")


@dataclass(frozen=True)
class _PyTask:
    question: str
    code: str
    check: str | None  # an independent second computation of the same value, for two-call rows
    plan: str
    params: Callable[[random.Random], dict[str, object]]


def _multiples(r: random.Random, count: int, top: int) -> dict[str, object]:
    g = r.randint(2, top)  # a shared factor keeps gcd/lcm answers away from the trivial 1 and a*b*c
    return {name: g * r.randint(3, 40) for name in "abc"[:count]}


# fmt: off
_EXPRESSIONS = ("{0} * {1} - {2}", "({0} + {1}) * {2}", "{0} ** 3 - {1} * {2}", "{0} * {1} + {2} * {3}")
_PHRASES = ("open source software", "large language model", "reinforcement learning", "the quick brown fox",
            "tool augmented reasoning", "policy gradient", "breadth first search", "gradient descent",
            "attention is all you need", "hello world", "python interpreter", "knowledge graph",
            "chain of thought", "mixture of experts", "beam search", "dynamic programming")
_PY_TASKS = (
    _PyTask("What is the value of {expr}?", "print({expr})", None, "This is plain integer arithmetic.",
            lambda r: {"expr": r.choice(_EXPRESSIONS).format(*(r.randint(12, 999) for _ in range(4)))}),
    _PyTask("What is the remainder when {a}^{k} is divided by {m}?", "print(pow({a}, {k}, {m}))",
            "r = 1\nfor _ in range({k}):\n    r = r * {a} % {m}\nprint(r)",
            "Modular exponentiation gives this without the huge power.",
            lambda r: {"a": r.randint(3, 97), "k": r.randint(50, 400), "m": r.randint(7, 997)}),
    _PyTask("What is the greatest common divisor of {a} and {b}?", "import math\nprint(math.gcd({a}, {b}))",
            "a, b = {a}, {b}\nwhile b:\n    a, b = b, a % b\nprint(a)",
            "The Euclidean algorithm finds the gcd.", lambda r: _multiples(r, 2, 60)),
    _PyTask("What is the least common multiple of {a}, {b} and {c}?",
            "import math\nprint(math.lcm({a}, {b}, {c}))",
            "from math import gcd\nm = 1\nfor x in ({a}, {b}, {c}):\n    m = m * x // gcd(m, x)\nprint(m)",
            "The lcm of several numbers can be folded pairwise.", lambda r: _multiples(r, 3, 12)),
    _PyTask("How many prime numbers are there below {n}?",
            "n = {n}\nflags = [True] * n\nfor i in range(2, int(n ** 0.5) + 1):\n    if flags[i]:\n"
            "        flags[i * i :: i] = [False] * len(range(i * i, n, i))\nprint(sum(flags[2:]))",
            "print(sum(all(n % d for d in range(2, int(n ** 0.5) + 1)) for n in range(2, {n})))",
            "A sieve of Eratosthenes counts the primes quickly.", lambda r: {"n": r.randint(100, 5000)}),
    _PyTask("How many trailing zeros does {n}! have?",
            "import math\ns = str(math.factorial({n}))\nprint(len(s) - len(s.rstrip('0')))",
            "n, zeros = {n}, 0\nwhile n:\n    n //= 5\n    zeros += n\nprint(zeros)",
            "Trailing zeros come from the factors of 5.", lambda r: {"n": r.randint(30, 900)}),
    _PyTask("With F(1) = F(2) = 1, what is the Fibonacci number F({n})?",
            "a, b = 0, 1\nfor _ in range({n}):\n    a, b = b, a + b\nprint(a)",
            "fib = [0, 1]\nwhile len(fib) <= {n}:\n    fib.append(fib[-1] + fib[-2])\nprint(fib[{n}])",
            "Iterating the recurrence is exact for big indices.", lambda r: {"n": r.randint(20, 150)}),
    _PyTask("What is the sum of the digits of {a}^{k}?", "print(sum(int(d) for d in str({a} ** {k})))",
            "n, s = {a} ** {k}, 0\nwhile n:\n    n, d = divmod(n, 10)\n    s += d\nprint(s)",
            "The power has many digits, so I will compute it exactly.",
            lambda r: {"a": r.randint(2, 19), "k": r.randint(20, 200)}),
    _PyTask("In how many ways can a committee of {k} be chosen from {n} people?",
            "import math\nprint(math.comb({n}, {k}))",
            "import math\nprint(math.factorial({n}) // (math.factorial({k}) * math.factorial({n} - {k})))",
            "This is a binomial coefficient.", lambda r: {"n": r.randint(10, 60), "k": r.randint(2, 9)}),
    _PyTask("Sort the list {xs} in {order} order.", "print(sorted({xs}, reverse={rev}))", None,
            "Sorting is easiest to do reliably in code.",
            lambda r: {"xs": r.sample(range(1, 500), r.randint(6, 10))}
            | r.choice(({"order": "ascending", "rev": False}, {"order": "descending", "rev": True}))),
    _PyTask("What is the median of {xs}?", "import statistics\nprint(statistics.median({xs}))",
            "xs = sorted({xs})\nprint(xs[len(xs) // 2])", "With an odd count the median is the middle value.",
            lambda r: {"xs": r.sample(range(1, 300), r.choice((7, 9, 11)))}),
    _PyTask('What is the string "{w}" written backwards?', 'print("{w}"[::-1])',
            'print("".join(reversed("{w}")))', "Reversing characters is a slicing job.",
            lambda r: {"w": r.choice(_PHRASES)}),
    _PyTask('How many vowels (a, e, i, o, u) are in "{w}"?', "print(sum(ch in 'aeiou' for ch in \"{w}\"))",
            "print(len([ch for ch in \"{w}\" if ch in 'aeiou']))", "Counting letters by hand invites slips.",
            lambda r: {"w": r.choice(_PHRASES)}),
    _PyTask("What is the sum of the squares of the integers from 1 to {n}?",
            "print(sum(i * i for i in range(1, {n} + 1)))", "n = {n}\nprint(n * (n + 1) * (2 * n + 1) // 6)",
            "Summing the squares directly is straightforward.", lambda r: {"n": r.randint(20, 5000)}),
    _PyTask("What is the sum of all natural numbers below {n} that are multiples of 3 or 5?",
            "print(sum(i for i in range({n}) if i % 3 == 0 or i % 5 == 0))",
            "print(sum(range(0, {n}, 3)) + sum(range(0, {n}, 5)) - sum(range(0, {n}, 15)))",
            "I will add up the qualifying numbers.", lambda r: {"n": r.randint(50, 20000)}),
    _PyTask("What is 1 + 1/2 + 1/3 + ... + 1/{n}, rounded to 6 decimal places?",
            "print(round(sum(1 / k for k in range(1, {n} + 1)), 6))", None,
            "This harmonic sum needs floating point.", lambda r: {"n": r.randint(10, 3000)}),
    _PyTask("How many positive divisors does {n} have?",
            "print(sum({n} % d == 0 for d in range(1, {n} + 1)))",
            "n = {n}\nprint(sum(1 if d * d == n else 2 for d in range(1, int(n ** 0.5) + 1) if n % d == 0))",
            "Counting divisors means testing every candidate.", lambda r: {"n": r.randint(100, 60000)}),
    _PyTask("What is {n} written in binary?", "print(bin({n})[2:])", "print(format({n}, 'b'))",
            "Converting to base 2 is built into Python.", lambda r: {"n": r.randint(100, 100000)}),
    _PyTask("How many Collatz steps (halve if even, else 3n + 1) take {n} down to 1?",
            "n, steps = {n}, 0\nwhile n != 1:\n    n, steps = (3 * n + 1 if n % 2 else n // 2), steps + 1\n"
            "print(steps)", None, "I will simulate the sequence.", lambda r: {"n": r.randint(7, 9999)}),
)
_PY_OPENERS = ("I will compute it with Python to avoid slips.", "A short snippet gives the exact value.",
               "Let me run this in the Python interpreter.", "Doing this by hand is error-prone.")
_PY_AFTER = ("The interpreter printed {out}, which answers the question.", "Python returned {out}.",
             "The output is {out}; that is the value asked for.")
_PY_VERIFY = ("The first method gives {out}. Let me confirm it another way.", "I got {out}; let me check.")
_PY_AGREE = ("Both methods give {out}, so the answer is confirmed.", "The check agrees: the answer is {out}.")
# fmt: on


@dataclass(frozen=True)
class _Fact:
    topic: str
    name: str
    query: str
    snippet: str
    value: int | None  # what comparison questions compare: atomic number, length, year
    questions: tuple[tuple[str, str], ...]  # (question, answer)


# fmt: off
_ELEMENTS = {"carbon": ("C", 6), "oxygen": ("O", 8), "sodium": ("Na", 11), "iron": ("Fe", 26),
             "copper": ("Cu", 29), "silver": ("Ag", 47), "gold": ("Au", 79), "lead": ("Pb", 82)}
_CAPITALS = {"Australia": "Canberra", "Canada": "Ottawa", "Brazil": "Brasília", "Turkey": "Ankara",
             "Nigeria": "Abuja", "New Zealand": "Wellington", "Kenya": "Nairobi", "Pakistan": "Islamabad"}
_RIVERS = {"Nile": (6650, "the Mediterranean Sea"), "Yangtze": (6300, "the East China Sea"),
           "Mekong": (4900, "the South China Sea"), "Volga": (3530, "the Caspian Sea"),
           "Danube": (2850, "the Black Sea"), "Rhine": (1230, "the North Sea")}
_INVENTIONS = {"the printing press": ("Johannes Gutenberg", 1440),
               "the mercury thermometer": ("Daniel Fahrenheit", 1714),
               "the lightning rod": ("Benjamin Franklin", 1752), "the cotton gin": ("Eli Whitney", 1793),
               "dynamite": ("Alfred Nobel", 1867), "the telephone": ("Alexander Graham Bell", 1876),
               "the phonograph": ("Thomas Edison", 1877), "the World Wide Web": ("Tim Berners-Lee", 1989)}
_FACTS = (
    [_Fact("element", e, f"{e} chemical element",
           f"{e.capitalize()} is a chemical element with the symbol {s} and atomic number {z}.", z,
           ((f"What is the chemical symbol of {e}?", s), (f"What is the atomic number of {e}?", str(z))))
     for e, (s, z) in _ELEMENTS.items()]
    + [_Fact("capital", c, f"capital of {c}", f"{cap} is the capital city of {c}.", None,
             ((f"What is the capital of {c}?", cap), (f"{cap} is the capital of which country?", c)))
       for c, cap in _CAPITALS.items()]
    + [_Fact("river", r, f"{r} river", f"The {r} is a river about {km} km long that flows into {sea}.", km,
             ((f"About how long is the {r} river, in kilometres?", str(km)),
              (f"Into which body of water does the {r} flow?", sea.removeprefix("the "))))
       for r, (km, sea) in _RIVERS.items()]
    + [_Fact("invention", t, f"who invented {t}", f"{who} is credited with inventing {t} in {y}.", y,
             ((f"Who is credited with inventing {t}?", who), (f"In what year was {t} invented?", str(y))))
       for t, (who, y) in _INVENTIONS.items()]
)
# The passages the demo's search results quote: `arpo-sft verify` searches the same corpus offline.
SEARCH_SNIPPETS = tuple(fact.snippet for fact in _FACTS)
_COMPARE = {"element": ("Which has the larger atomic number, {x} or {y}?", max, "atomic number"),
            "river": ("Which river is longer, the {x} or the {y}?", max, "length in km"),
            "invention": ("Which came first, {x} or {y}?", min, "year of invention")}
# fmt: on


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


def _search(rng: random.Random, fact: _Fact) -> str:
    """A search call for `fact`, its result laid out like ARPO's snippet search: `Page i: ...` lines."""
    others = [f.snippet for f in _FACTS if f.topic == fact.topic and f is not fact]
    pages = rng.sample(others, rng.randint(1, 2))
    pages.insert(rng.randint(0, 1), fact.snippet)  # the hit is usually, not always, ranked first
    return _call("search", fact.query, "\n".join(f"Page {i}: {page}" for i, page in enumerate(pages, 1)))


def _python_row(rng: random.Random, pattern: str) -> tuple[str, str]:
    twice = pattern == "python_twice"
    task = rng.choice([t for t in _PY_TASKS if t.check] if twice else _PY_TASKS)
    p = task.params(rng)
    code = task.code.format(**p)
    out = _run_python(code)
    steps = [_think(f"{task.plan.format(**p)} {rng.choice(_PY_OPENERS)}"), _call("python", code, out)]
    if pattern == "python_think":
        steps.append(_think(rng.choice(_PY_AFTER).format(out=out)))
    elif twice:
        check = (task.check or "").format(**p)
        if _run_python(check) != out:
            raise RuntimeError(f"the two computations disagree:\n{code}\n---\n{check}")
        steps += [_think(rng.choice(_PY_VERIFY).format(out=out)), _call("python", check, out)]
        steps.append(_think(rng.choice(_PY_AGREE).format(out=out)))
    return task.question.format(**p), "\n".join([*steps, _answer(out)])


def _search_row(rng: random.Random) -> tuple[str, str]:
    fact = rng.choice(_FACTS)
    question, answer = rng.choice(fact.questions)
    opening = _think(f"This is a factual question, so I will search for {fact.query} instead of guessing.")
    steps = [opening, _search(rng, fact), _think(f"The search result answers it: {answer}."), _answer(answer)]
    return question, "\n".join(steps)


def _compare_row(rng: random.Random) -> tuple[str, str]:
    topic = rng.choice(sorted(_COMPARE))
    template, pick, attribute = _COMPARE[topic]
    x, y = rng.sample([f for f in _FACTS if f.topic == topic], 2)
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
    # fmt: off
    question, reasoning, result = rng.choice((
        (f"What is {a} + {7 * b}?", f"{a} + {7 * b} = {a + 7 * b}.", a + 7 * b),
        (f"How many minutes are in {b} hours?", f"An hour has 60 minutes: {b} × 60 = {60 * b}.", 60 * b),
        (f"How many legs do {a} spiders have?", f"A spider has 8 legs, so {a} × 8 = {8 * a}.", 8 * a),
        (f"What is half of {2 * a}?", f"Half of {2 * a} is {a}.", a),
    ))
    # fmt: on
    return question, "\n".join([_think(f"{reasoning} This needs no tool."), _answer(str(result))])


# (weight, row maker): roughly the tag-pattern mix of the real ARPO-SFT-54K (reference doc, section 1.2).
# fmt: off
_PATTERNS: dict[str, tuple[int, Callable[[random.Random], tuple[str, str]]]] = {
    "python": (40, partial(_python_row, pattern="python")),
    "python_think": (20, partial(_python_row, pattern="python_think")),
    "python_twice": (10, partial(_python_row, pattern="python_twice")),
    "search": (15, _search_row), "search_twice": (5, _compare_row), "no_tool": (10, _no_tool_row)}
# fmt: on


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
