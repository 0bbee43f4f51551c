"""The demo's python questions: each task's question, code, an independent check and the plan before it."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class PyTask:
    """One kind of python question: its text, the code that answers it, an independent check, the plan."""

    question: str
    code: str
    check: str | None  # an independent second computation of the same value, for two-call rows
    plan: str
    params: Callable[[random.Random], dict[str, object]]


def _multiples(r: random.Random, count: int, top: int) -> dict[str, object]:
    g = r.randint(2, top)  # a shared factor keeps gcd/lcm answers away from the trivial 1 and a*b*c
    return {name: g * r.randint(3, 40) for name in "abc"[:count]}


EXPRESSIONS = ("{0} * {1} - {2}", "({0} + {1}) * {2}", "{0} ** 3 - {1} * {2}", "{0} * {1} + {2} * {3}")
PHRASES = (
    "open source software",
    "large language model",
    "reinforcement learning",
    "the quick brown fox",
    "tool augmented reasoning",
    "policy gradient",
    "breadth first search",
    "gradient descent",
    "attention is all you need",
    "hello world",
    "python interpreter",
    "knowledge graph",
    "chain of thought",
    "mixture of experts",
    "beam search",
    "dynamic programming",
)
PY_TASKS = (
    PyTask(
        "What is the value of {expr}?",
        "print({expr})",
        None,
        "This is plain integer arithmetic.",
        lambda r: {"expr": r.choice(EXPRESSIONS).format(*(r.randint(12, 999) for _ in range(4)))},
    ),
    PyTask(
        "What is the remainder when {a}^{k} is divided by {m}?",
        "print(pow({a}, {k}, {m}))",
        "r = 1\nfor _ in range({k}):\n    r = r * {a} % {m}\nprint(r)",
        "Modular exponentiation gives this without the huge power.",
        lambda r: {"a": r.randint(3, 97), "k": r.randint(50, 400), "m": r.randint(7, 997)},
    ),
    PyTask(
        "What is the greatest common divisor of {a} and {b}?",
        "import math\nprint(math.gcd({a}, {b}))",
        "a, b = {a}, {b}\nwhile b:\n    a, b = b, a % b\nprint(a)",
        "The Euclidean algorithm finds the gcd.",
        lambda r: _multiples(r, 2, 60),
    ),
    PyTask(
        "What is the least common multiple of {a}, {b} and {c}?",
        "import math\nprint(math.lcm({a}, {b}, {c}))",
        "from math import gcd\nm = 1\nfor x in ({a}, {b}, {c}):\n    m = m * x // gcd(m, x)\nprint(m)",
        "The lcm of several numbers can be folded pairwise.",
        lambda r: _multiples(r, 3, 12),
    ),
    PyTask(
        "How many prime numbers are there below {n}?",
        "n = {n}\nflags = [True] * n\nfor i in range(2, int(n ** 0.5) + 1):\n    if flags[i]:\n"
        "        flags[i * i :: i] = [False] * len(range(i * i, n, i))\nprint(sum(flags[2:]))",
        "print(sum(all(n % d for d in range(2, int(n ** 0.5) + 1)) for n in range(2, {n})))",
        "A sieve of Eratosthenes counts the primes quickly.",
        lambda r: {"n": r.randint(100, 5000)},
    ),
    PyTask(
        "How many trailing zeros does {n}! have?",
        "import math\ns = str(math.factorial({n}))\nprint(len(s) - len(s.rstrip('0')))",
        "n, zeros = {n}, 0\nwhile n:\n    n //= 5\n    zeros += n\nprint(zeros)",
        "Trailing zeros come from the factors of 5.",
        lambda r: {"n": r.randint(30, 900)},
    ),
    PyTask(
        "With F(1) = F(2) = 1, what is the Fibonacci number F({n})?",
        "a, b = 0, 1\nfor _ in range({n}):\n    a, b = b, a + b\nprint(a)",
        "fib = [0, 1]\nwhile len(fib) <= {n}:\n    fib.append(fib[-1] + fib[-2])\nprint(fib[{n}])",
        "Iterating the recurrence is exact for big indices.",
        lambda r: {"n": r.randint(20, 150)},
    ),
    PyTask(
        "What is the sum of the digits of {a}^{k}?",
        "print(sum(int(d) for d in str({a} ** {k})))",
        "n, s = {a} ** {k}, 0\nwhile n:\n    n, d = divmod(n, 10)\n    s += d\nprint(s)",
        "The power has many digits, so I will compute it exactly.",
        lambda r: {"a": r.randint(2, 19), "k": r.randint(20, 200)},
    ),
    PyTask(
        "In how many ways can a committee of {k} be chosen from {n} people?",
        "import math\nprint(math.comb({n}, {k}))",
        "import math\nprint(math.factorial({n}) // (math.factorial({k}) * math.factorial({n} - {k})))",
        "This is a binomial coefficient.",
        lambda r: {"n": r.randint(10, 60), "k": r.randint(2, 9)},
    ),
    PyTask(
        "Sort the list {xs} in {order} order.",
        "print(sorted({xs}, reverse={rev}))",
        None,
        "Sorting is easiest to do reliably in code.",
        lambda r: (
            {"xs": r.sample(range(1, 500), r.randint(6, 10))}
            | r.choice(({"order": "ascending", "rev": False}, {"order": "descending", "rev": True}))
        ),
    ),
    PyTask(
        "What is the median of {xs}?",
        "import statistics\nprint(statistics.median({xs}))",
        "xs = sorted({xs})\nprint(xs[len(xs) // 2])",
        "With an odd count the median is the middle value.",
        lambda r: {"xs": r.sample(range(1, 300), r.choice((7, 9, 11)))},
    ),
    PyTask(
        'What is the string "{w}" written backwards?',
        'print("{w}"[::-1])',
        'print("".join(reversed("{w}")))',
        "Reversing characters is a slicing job.",
        lambda r: {"w": r.choice(PHRASES)},
    ),
    PyTask(
        'How many vowels (a, e, i, o, u) are in "{w}"?',
        "print(sum(ch in 'aeiou' for ch in \"{w}\"))",
        "print(len([ch for ch in \"{w}\" if ch in 'aeiou']))",
        "Counting letters by hand invites slips.",
        lambda r: {"w": r.choice(PHRASES)},
    ),
    PyTask(
        "What is the sum of the squares of the integers from 1 to {n}?",
        "print(sum(i * i for i in range(1, {n} + 1)))",
        "n = {n}\nprint(n * (n + 1) * (2 * n + 1) // 6)",
        "Summing the squares directly is straightforward.",
        lambda r: {"n": r.randint(20, 5000)},
    ),
    PyTask(
        "What is the sum of all natural numbers below {n} that are multiples of 3 or 5?",
        "print(sum(i for i in range({n}) if i % 3 == 0 or i % 5 == 0))",
        "print(sum(range(0, {n}, 3)) + sum(range(0, {n}, 5)) - sum(range(0, {n}, 15)))",
        "I will add up the qualifying numbers.",
        lambda r: {"n": r.randint(50, 20000)},
    ),
    PyTask(
        "What is 1 + 1/2 + 1/3 + ... + 1/{n}, rounded to 6 decimal places?",
        "print(round(sum(1 / k for k in range(1, {n} + 1)), 6))",
        None,
        "This harmonic sum needs floating point.",
        lambda r: {"n": r.randint(10, 3000)},
    ),
    PyTask(
        "How many positive divisors does {n} have?",
        "print(sum({n} % d == 0 for d in range(1, {n} + 1)))",
        "n = {n}\nprint(sum(1 if d * d == n else 2 for d in range(1, int(n ** 0.5) + 1) if n % d == 0))",
        "Counting divisors means testing every candidate.",
        lambda r: {"n": r.randint(100, 60000)},
    ),
    PyTask(
        "What is {n} written in binary?",
        "print(bin({n})[2:])",
        "print(format({n}, 'b'))",
        "Converting to base 2 is built into Python.",
        lambda r: {"n": r.randint(100, 100000)},
    ),
    PyTask(
        "How many Collatz steps (halve if even, else 3n + 1) take {n} down to 1?",
        "n, steps = {n}, 0\nwhile n != 1:\n    n, steps = (3 * n + 1 if n % 2 else n // 2), steps + 1\n"
        "print(steps)",
        None,
        "I will simulate the sequence.",
        lambda r: {"n": r.randint(7, 9999)},
    ),
)
PY_OPENERS = (
    "I will compute it with Python to avoid slips.",
    "A short snippet gives the exact value.",
    "Let me run this in the Python interpreter.",
    "Doing this by hand is error-prone.",
)
PY_AFTER = (
    "The interpreter printed {out}, which answers the question.",
    "Python returned {out}.",
    "The output is {out}; that is the value asked for.",
)
PY_VERIFY = ("The first method gives {out}. Let me confirm it another way.", "I got {out}; let me check.")
PY_AGREE = ("Both methods give {out}, so the answer is confirmed.", "The check agrees: the answer is {out}.")
