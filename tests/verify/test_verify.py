"""`arpo-sft verify`: ARPO's tool loop with real python and search, its scoring, its errors, and a real model."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from arpo_train_sft import cli
from arpo_train_sft.arpo.tags import format_problems
from arpo_train_sft.errors import UserError
from arpo_train_sft.verify import command as verify
from arpo_train_sft.verify.command import Prompt, read_prompts, verify_prompt
from arpo_train_sft.verify.loop import LIMIT_REACHED, REPEATED_QUERY, RESULT_FORMATS, Limits, Step, run_loop
from arpo_train_sft.verify.search import LocalCorpusSearch

ANSWER = "<think> Done. </think>\n<answer>The final answer is \\[ \\boxed{{{}}} \\]</answer>"
EVAL, ROLLOUT = RESULT_FORMATS["eval"], RESULT_FORMATS["rollout"]
CORPUS = LocalCorpusSearch(
    [
        "Nairobi is the capital city of Kenya.",
        "Ottawa is the capital city of Canada.",
        "Gold has atomic number 79.",
    ]
)


def scripted(
    *pieces: str, ended: bool = False
) -> tuple[Callable[[str, int, float], Step], list[tuple[str, int]]]:
    """A stand-in for the model's text: returns the pieces in order and records what it was asked."""
    asked: list[tuple[str, int]] = []
    remaining = list(pieces)

    def generate(text: str, max_new_tokens: int, seconds_left: float) -> Step:
        asked.append((text, max_new_tokens))
        piece = remaining.pop(0)
        return Step(piece, len(piece.split()), ended and not remaining)

    return generate, asked


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    verify.add_parser(parser.add_subparsers())
    return parser.parse_args(["verify", *argv])


def test_python_runs_for_real_and_its_output_is_appended_inline() -> None:
    code = "import math, os\nprint(math.factorial(10) // 7, os.getcwd() == '/tmp')"
    generate, asked = scripted(
        f"<think> Compute it. </think>\n<python>\n{code}\n</python>\n<result>\ninvented\n</result>",
        ANSWER.format(518400),
    )
    report = verify_prompt(Prompt("What is 10!/7?", " 518400\n"), generate, CORPUS, Limits(), EVAL)
    # ARPO's evaluation appends the result right after the closing tag, with no whitespace around it.
    expected_call = f"<python>\n{code}\n</python><result>518400 True</result>"
    assert asked[1][0].endswith(expected_call)  # the model continues from the real result, not its own
    assert "invented" not in report.trajectory
    assert report.trajectory == asked[1][0] + ANSWER.format(518400)
    assert (report.python_calls, report.search_calls, report.stop) == (1, 0, "answer")
    assert report.compliant and report.problems == []
    assert report.answer == "518400" and report.correct is True


def test_the_rollout_layout_appends_rl_bytes_and_names_empty_output() -> None:
    pieces = (
        "<think> a </think>\n<python>print(6 * 7)</python>",
        "<python>x = 1</python>",
        ANSWER.format(42),
    )
    generate, asked = scripted(*pieces)
    run_loop(generate, CORPUS, Limits(), ROLLOUT)
    assert asked[1][0] == "<think> a </think>\n<python>print(6 * 7)</python> <result>\n42\n</result>"
    assert asked[2][0].endswith(
        "<python>x = 1</python> <result>\nTool(python) returned empty output.\n</result>"
    )
    generate, asked = scripted(*pieces)
    run_loop(
        generate, CORPUS, Limits()
    )  # eval by default: empty output stays empty, as ARPO's harness has it
    assert asked[1][0].endswith("</python><result>42</result>")
    assert asked[2][0].endswith("<python>x = 1</python><result></result>")


def test_a_python_error_returns_the_traceback() -> None:
    generate, asked = scripted("<python>1 / 0</python>", ANSWER.format(0))
    traj = run_loop(generate, CORPUS, Limits())
    assert "<result>Traceback" in asked[1][0] and asked[1][0].endswith(
        "ZeroDivisionError: division by zero</result>"
    )
    assert traj.calls == {"python": 1, "search": 0}


def test_search_hits_the_local_corpus_and_a_repeated_query_is_answered_without_counting() -> None:
    generate, asked = scripted(
        "<think> Search. </think>\n<search> capital of Kenya </search>",
        "<search> capital of Kenya </search>",
        ANSWER.format("Nairobi"),
    )
    report = verify_prompt(
        Prompt("What is the capital of Kenya?", "Nairobi"), generate, CORPUS, Limits(), EVAL
    )
    first_result = asked[1][0].split("</search><result>")[1]
    assert first_result.startswith("Page 1: Nairobi is the capital city of Kenya.\nPage 2: ")
    assert first_result.endswith("</result>") and "Gold" not in first_result  # shares no word with the query
    assert asked[2][0].endswith(f"</search><result>{REPEATED_QUERY}</result>")
    assert (report.search_calls, report.repeated_queries, report.refused_calls) == (1, 1, 0)
    assert report.correct is True and report.compliant is True


def test_each_tool_has_its_own_limit_and_refused_calls_are_not_counted() -> None:
    python = [f"<python>\nprint('ran {i}')\n</python>" for i in range(3)]
    search = [
        "<search>gold</search>",
        "<search>gold</search>",
        "<search>Kenya</search>",
        "<search>Canada</search>",
    ]
    generate, asked = scripted(python[0], *search[:2], python[1], python[2], *search[2:], ANSWER.format(7))
    report = verify_prompt(
        Prompt("q", "8"), generate, CORPUS, Limits(max_python_calls=2, max_search_calls=2), EVAL
    )
    assert "<result>ran 0</result>" in report.trajectory and "<result>ran 1</result>" in report.trajectory
    assert "ran 2</result>" not in report.trajectory
    assert asked[5][0].endswith(f"print('ran 2')\n</python><result>{LIMIT_REACHED['python']}</result>")
    # the repeated "gold" did not use up a search: "Kenya" still ran, "Canada" was the one over the limit
    assert "<search>Kenya</search><result>Page 1: Nairobi" in report.trajectory
    assert asked[7][0].endswith(
        "<search>Canada</search><result>The maximum search limit is exceeded. You are not allowed to search.</result>"
    )
    assert (
        LIMIT_REACHED["python"]
        == "The maximum python call limit is exceeded. You are not allowed to use python."
    )
    assert (report.python_calls, report.search_calls) == (2, 2)  # the calls that ran
    assert (report.refused_calls, report.repeated_queries) == (2, 1)
    assert report.answer == "7" and report.correct is False
    generate, asked = scripted("<python>print(1)</python>", ANSWER.format(1))
    traj = run_loop(generate, CORPUS, Limits(max_python_calls=0))
    assert traj.calls["python"] == 0 and traj.refused == {"python": 1, "search": 0}


def test_stop_reasons_and_the_token_budget() -> None:
    generate, _ = scripted("<think> no answer </think>", ended=True)
    assert run_loop(generate, CORPUS, Limits()).stop == "eos"
    generate, _ = scripted("<think> cut off")
    traj = run_loop(generate, CORPUS, Limits())
    assert traj.stop == "length" and format_problems(traj.text) != []
    generate, asked = scripted("<python>print(1)</python>", "one two three four five six")
    traj = run_loop(generate, CORPUS, Limits(max_new_tokens=5, max_total_tokens=8))
    assert [n for _, n in asked] == [5, 5] and traj.stop == "length"
    generate, asked = scripted("a b c d e f g h <python>print(1)</python>", "never asked")
    assert run_loop(generate, CORPUS, Limits(max_total_tokens=8)).stop == "token budget" and len(asked) == 1
    generate, _ = scripted("a b c d e f g h")  # the total budget, not the per-call one, ran out
    assert run_loop(generate, CORPUS, Limits(max_total_tokens=8)).stop == "token budget"
    generate, asked = scripted("never asked")
    assert run_loop(generate, CORPUS, Limits(time_limit_s=0)).stop == "time budget" and asked == []


def test_prompts_file_errors_name_the_file_and_line(tmp_path: Path) -> None:
    good = tmp_path / "prompts.jsonl"
    good.write_text('{"question": "What is 2 + 2?", "answer": 4}\n\n{"question": "Why?"}\n', encoding="utf-8")
    assert read_prompts(good) == [Prompt("What is 2 + 2?", "4"), Prompt("Why?", None)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok"}\n{not json\n{"answer": "1"}\n', encoding="utf-8")
    with pytest.raises(UserError) as err:
        read_prompts(bad)
    assert [p.split(": ")[0] for p in err.value.problems] == [f"{bad}:2", f"{bad}:3"]
    with pytest.raises(UserError, match="cannot read"):
        read_prompts(tmp_path / "missing.jsonl")


def test_a_corpus_file_loads_as_jsonl_or_plain_text(tmp_path: Path) -> None:
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_text('{"text": "Lima is the capital of Peru."}\n{"title": "no text"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=f"{jsonl}:2"):
        LocalCorpusSearch.from_file(jsonl)
    plain = tmp_path / "corpus.txt"
    plain.write_text("Lima is the capital of Peru.\n\nQuito is the capital of Ecuador.\n", encoding="utf-8")
    assert LocalCorpusSearch.from_file(plain).search("capital of Ecuador", 1) == [
        "Quito is the capital of Ecuador."
    ]
    assert LocalCorpusSearch.demo().search("capital of Kenya", 1) == ["Nairobi is the capital city of Kenya."]


def test_the_tool_flags_parse_and_bad_limits_exit_2(capsys) -> None:
    args = parse("m")
    assert (args.result_format, args.max_python_calls, args.max_search_calls) == ("eval", 5, 10)
    args = parse("m", "--result-format", "rollout", "--max-python-calls", "0", "--max-search-calls", "3")
    assert (args.result_format, args.max_python_calls, args.max_search_calls) == ("rollout", 0, 3)
    assert cli.main(["verify", "m", "--max-search-calls", "-1"]) == 2
    assert capsys.readouterr().err == (
        "arpo-sft: error: --max-python-calls and --max-search-calls must be >= 0 (0 refuses every call)\n"
    )
    with pytest.raises(SystemExit):
        parse("m", "--result-format", "chat")


def test_a_model_without_a_tokenizer_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    model = tmp_path / "checkpoint-30"
    model.mkdir()
    (model / "config.json").write_text("{}", encoding="utf-8")
    (model / "model.safetensors").write_bytes(b"")
    assert cli.main(["verify", str(model)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and str(model) in lines[0] and "tokenizer" in lines[0]
    assert "copy the tokenizer files from the base model" in lines[0] and "arpo-sft export" in lines[0]


@pytest.mark.integration
def test_verify_runs_the_tiny_model_and_writes_the_report(tiny_model: Path, tmp_path: Path, capsys) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"question": "What is 6 * 7?", "answer": "42"}\n{"question": "Capital of Kenya?"}\n')
    report_path = tmp_path / "out" / "verify.json"
    args = parse(
        str(tiny_model), "--prompts", str(prompts), "--max-new-tokens", "6", "--report", str(report_path)
    )
    assert args.func(args) == 0
    assert "format compliance" in capsys.readouterr().out
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert set(report) == {"model", "settings", "summary", "prompts"}
    summary, rows = report["summary"], report["prompts"]
    assert summary["prompts"] == 2 and len(rows) == 2 and summary["scored"] == 1
    assert isinstance(summary["compliance"], float) and 0 <= summary["compliance"] <= 1
    assert summary["compliance"] == sum(r["compliant"] for r in rows) / 2
    for row in rows:
        assert 0 < row["new_tokens"] <= 6 * 5 and row["trajectory"]  # the model really generated
        assert row["compliant"] == (row["problems"] == [])
        assert row["stop"] in {"answer", "eos", "length", "token budget", "time budget"}
    assert rows[1]["correct"] is None and report["settings"]["max_new_tokens"] == 6
    settings = report["settings"]
    assert (settings["max_python_calls"], settings["max_search_calls"]) == (5, 10)
    assert settings["result_format"] == {"name": "eval", "layout": "<result>{output}</result>", "empty": ""}
