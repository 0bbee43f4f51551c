"""The shipped demo dataset: ARPO-SFT-54K schema, ARPO's tag rules, real python results, byte-reproducible."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from arpo_train_sft.arpo.prompt import ARPO_SYSTEM_PROMPT
from arpo_train_sft.arpo.tags import boxed_answer, format_problems
from arpo_train_sft.demo.data import write_demo_dataset

from ..conftest import DEMO_DATA

DEMO = DEMO_DATA
PYTHON_CALL = re.compile(r"<python>\n(.*?)\n</python>\s*<result>\n(.*?)\n</result>", re.DOTALL)
SEARCH_CALL = re.compile(r"<search>\n(.*?)\n</search>\s*<result>\n(.*?)\n</result>", re.DOTALL)
STEP = re.compile(r"<(think|python|search|answer)>")
GOOD = (
    "<think> Compute it. </think>\n<python>\nprint(6 * 7)\n</python>\n<result>\n42\n</result>\n"
    "<think> Done. </think>\n<answer>The final answer is \\[ \\boxed{42} \\]</answer>"
)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return [json.loads(line) for line in DEMO.read_text(encoding="utf-8").splitlines()]


def _trajectory(row: dict) -> str:
    return row["conversations"][1]["value"]


def _pattern(row: dict) -> str:
    return "→".join(STEP.findall(_trajectory(row)))


def test_every_row_has_the_arpo_sft_schema(rows: list[dict]) -> None:
    problems = []
    for i, row in enumerate(rows, 1):
        if list(row) != ["system", "conversations"] or row["system"] != ARPO_SYSTEM_PROMPT:
            problems.append(f"row {i}: keys {list(row)} or system prompt differ")
            continue
        turns = row["conversations"]
        roles = [t["from"] for t in turns]
        if [list(t) for t in turns] != [["from", "value"]] * 2 or roles != ["human", "gpt"]:
            problems.append(f"row {i}: conversations must be [human, gpt] with keys from/value")
        elif not all(isinstance(t["value"], str) and t["value"].strip() for t in turns):
            problems.append(f"row {i}: empty or non-string value")
    assert len(rows) == 300
    assert not problems, "\n".join(problems)


def test_every_row_follows_arpo_tag_rules(rows: list[dict]) -> None:
    problems = [f"row {i}: {p}" for i, row in enumerate(rows, 1) for p in format_problems(_trajectory(row))]
    assert not problems, "\n".join(problems)
    assert all(boxed_answer(_trajectory(row)) for row in rows)


def _run_like_arpo(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=10)
    return (proc.stdout if proc.returncode == 0 else proc.stderr).strip()


def test_recorded_python_results_are_what_the_code_prints(rows: list[dict]) -> None:
    calls = [call for row in rows for call in PYTHON_CALL.findall(_trajectory(row))]
    with ThreadPoolExecutor(max_workers=4) as pool:
        outputs = list(pool.map(_run_like_arpo, [code for code, _ in calls]))
    wrong = [
        f"{code}\n  recorded {result!r}, now {out!r}"
        for (code, result), out in zip(calls, outputs, strict=True)
        if out != result
    ]
    assert len(calls) > 200
    assert not wrong, "\n".join(wrong[:5])


def test_python_rows_box_the_last_python_result(rows: list[dict]) -> None:
    for row in rows:
        calls = PYTHON_CALL.findall(_trajectory(row))
        if calls:
            assert boxed_answer(_trajectory(row)) == calls[-1][1], row["conversations"][0]["value"]


def test_search_rows_answer_from_their_results(rows: list[dict]) -> None:
    searched = [row for row in rows if "<search>" in _trajectory(row)]
    for row in searched:
        calls = SEARCH_CALL.findall(_trajectory(row))
        assert calls, row["conversations"][0]["value"]
        for _, result in calls:
            assert all(re.fullmatch(r"Page \d+: .+", line) for line in result.splitlines()), result
        pages = "\n".join(result for _, result in calls).lower()
        assert boxed_answer(_trajectory(row)).lower() in pages, row["conversations"][0]["value"]


def test_pattern_mix_resembles_arpo_sft(rows: list[dict]) -> None:
    mix = Counter(_pattern(row) for row in rows)
    assert len(mix) >= 4, mix
    assert mix["think→python→answer"] > mix["think→python→think→answer"] > 0, mix
    assert mix["think→python→think→python→think→answer"] > 0, mix
    assert mix["think→search→think→answer"] > 0 and mix["think→search→think→search→think→answer"] > 0, mix
    assert mix["think→answer"] > 0, mix
    python_rows = sum(n for pattern, n in mix.items() if "python" in pattern)
    assert python_rows > len(rows) / 2, f"python should dominate, like the real data: {mix}"


def test_questions_are_distinct_and_rows_short(rows: list[dict]) -> None:
    questions = [row["conversations"][0]["value"] for row in rows]
    assert len(set(questions)) == len(questions)
    # 2,400 characters stays under ~650 Qwen2.5 tokens with the chat template (measured: at most 611).
    longest = max(
        len(row["system"]) + len(q) + len(_trajectory(row)) for row, q in zip(rows, questions, strict=True)
    )
    assert longest < 2400


def test_regenerating_gives_the_committed_bytes(tmp_path: Path) -> None:
    out = tmp_path / "demo" / "arpo_sft_demo.jsonl"
    assert write_demo_dataset(out, n=300, seed=0) == 300
    assert out.read_bytes() == DEMO.read_bytes()
    assert [p.name for p in out.parent.iterdir()] == [out.name], "no temporary file may be left behind"


def test_a_compliant_trajectory_has_no_problems() -> None:
    assert format_problems(GOOD) == []
    # ARPO's evaluation loop appends results with no surrounding whitespace; that is compliant too.
    assert format_problems(GOOD.replace("\n", "")) == []
    assert format_problems(GOOD + "\n  \n") == []


@pytest.mark.parametrize(
    ("trajectory", "expected"),
    [
        (GOOD.replace("<think> Done. </think>", "<think> Done."), "unclosed <think>"),
        (
            GOOD.replace("<think> Done. </think>", "<think> Done. <think> again </think> </think>"),
            "nested <think>",
        ),
        (
            GOOD.replace("</think>\n<answer>", "</think></think>\n<answer>"),
            "</think> without an opening <think>",
        ),
        (GOOD.replace("<result>\n42\n</result>\n", ""), "<python> #1 is not directly followed by a <result>"),
        (
            GOOD.replace("</python>\n", "</python>\nso\n"),
            "<python> #1 is not directly followed by a <result>",
        ),
        (GOOD.replace("<python>\nprint(6 * 7)\n</python>\n", ""), "<result> #1 does not directly follow"),
        (GOOD.replace("</python>", ""), "unclosed <python>"),
        ("<think> a </think><search> q </search><answer>\\boxed{x}</answer>", "<search> #1 is not directly"),
        (GOOD + "<answer>\\boxed{43}</answer>", "expected exactly one <answer>...</answer>, found 2"),
        (GOOD.split("<answer>")[0], "expected exactly one <answer>...</answer>, found 0"),
        (GOOD.replace("\\[ \\boxed{42} \\]", "42"), "<answer> #1 has no \\boxed{...}"),
        (GOOD + "\nThanks!", "text after </answer>: 'Thanks!'"),
    ],
)
def test_format_problems_names_the_problem(trajectory: str, expected: str) -> None:
    problems = format_problems(trajectory)
    assert any(expected in p for p in problems), problems


def test_boxed_answer() -> None:
    assert boxed_answer(GOOD) == "42"
    assert (
        boxed_answer("<answer>The final answer is \\[ \\boxed{\\frac{1}{2}} \\]</answer>") == "\\frac{1}{2}"
    )
    assert boxed_answer("<answer>\\boxed{1} or rather \\boxed{{2}, {3}}</answer>") == "{2}, {3}"
    assert boxed_answer("\\boxed{7} <answer>no box</answer>") is None
    assert boxed_answer("<answer>\\boxed{\\frac{1}{2}</answer>") is None
    assert boxed_answer("<think> \\boxed{1} </think>") is None
