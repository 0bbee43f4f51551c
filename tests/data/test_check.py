"""`arpo-sft data check` and the streaming row reader: real files, every rule, exact row and line numbers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from arpo_train_sft.arpo.prompt import ARPO_SYSTEM_PROMPT
from arpo_train_sft.cli import main
from arpo_train_sft.data import check as data_check
from arpo_train_sft.data import rows
from arpo_train_sft.data.rows import iter_rows
from arpo_train_sft.data.rules import RULES, row_problems
from arpo_train_sft.errors import EXIT_USER_ERROR, UserError

from ..conftest import DEMO_DATA

DEMO = DEMO_DATA
GOOD = (
    "<think> Compute it. </think>\n<python>\nprint(6 * 7)\n</python>\n<result>\n42\n</result>\n"
    "<think> Done. </think>\n<answer>The final answer is \\[ \\boxed{42} \\]</answer>"
)


def row(i: int = 0, trajectory: str = GOOD, roles: tuple[str, str] = ("human", "gpt")) -> dict[str, Any]:
    return {
        "system": ARPO_SYSTEM_PROMPT,
        "conversations": [
            {"from": roles[0], "value": f"What is 6 * 7? (#{i})"},
            {"from": roles[1], "value": trajectory},
        ],
    }


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    """One line per item: dicts as JSON, strings as they are."""
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), "utf-8")
    return path


def check(capsys: pytest.CaptureFixture[str], path: Path, *flags: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    data_check.add_parser(parser.add_subparsers())
    args = parser.parse_args(["check", str(path), *flags])
    code = args.func(args)
    return code, capsys.readouterr().out


def report(capsys: pytest.CaptureFixture[str], path: Path, *flags: str) -> tuple[int, dict[str, Any]]:
    code, out = check(capsys, path, "--json", *flags)
    return code, json.loads(out)


def broken(result: dict[str, Any]) -> dict[str, tuple[int, list[tuple[int, int]]]]:
    """rule id -> (count, [(row, line), ...])"""
    return {r["id"]: (r["count"], [(e["row"], e["line"]) for e in r["examples"]]) for r in result["rules"]}


def only_rule(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[str, int, list[tuple[int, int]], str]:
    code, result = report(capsys, path)
    assert code == 1
    assert len(result["rules"]) == 1, broken(result)
    (rule,) = result["rules"]
    return (
        rule["id"],
        rule["count"],
        [(e["row"], e["line"]) for e in rule["examples"]],
        rule["examples"][0]["message"],
    )


def test_the_bundled_demo_file_is_clean(capsys):
    code, result = report(capsys, DEMO)
    assert (code, result["rows"], result["clean_rows"], result["rules"]) == (0, 300, 300, [])
    code, out = check(capsys, DEMO)
    assert code == 0 and "every row passes every rule" in out and "300" in out


def test_truncated_last_line(tmp_path, capsys):
    text = json.dumps(row(3))
    path = write_jsonl(tmp_path / "cut.jsonl", [row(1), row(2)])
    path.write_text(path.read_text() + text[: len(text) // 2])
    assert only_rule(capsys, path) == ("unparsable", 1, [(3, 3)], "truncated: the file ends inside this row")


def test_a_broken_line_that_is_not_last_is_invalid_json_with_its_column(tmp_path, capsys):
    path = write_jsonl(tmp_path / "bad.jsonl", [row(1), '{"system": "x" "conversations": []}', row(3)])
    assert only_rule(capsys, path) == (
        "unparsable",
        1,
        [(2, 2)],
        "not valid JSON (Expecting ',' delimiter at column 16)",
    )


def test_bytes_that_are_not_utf8(tmp_path, capsys):
    path = write_jsonl(tmp_path / "latin1.jsonl", [row(1), row(2)])
    path.write_bytes(path.read_bytes() + '{"system": "caf\xe9"}\n'.encode("latin-1"))
    assert only_rule(capsys, path) == ("unparsable", 1, [(3, 3)], "not valid UTF-8 (byte 0xe9 at column 16)")
    (bad,) = [r for r in iter_rows(path) if r.error]
    assert bad.text == '{"system": "caf\ufffd"}'


def test_a_byte_order_mark_is_skipped(tmp_path, capsys):
    path = write_jsonl(tmp_path / "bom.jsonl", [row(1), row(2)])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    code, result = report(capsys, path)
    assert (code, result["rows"], result["clean_rows"]) == (0, 2, 2)
    array = tmp_path / "bom.json"
    array.write_bytes(b"\xef\xbb\xbf" + json.dumps([row(1), row(2)]).encode())
    assert [r.data for r in iter_rows(array)] == [row(1), row(2)]


def test_a_json_array_gives_the_same_rows_as_json_lines(tmp_path, capsys):
    data = [row(1), row(2), row(3, trajectory=" "), row(4), row(1)]
    jsonl = write_jsonl(tmp_path / "data.jsonl", data)
    array = tmp_path / "data.json"
    array.write_text(json.dumps(data, indent=2))
    from_lines, from_array = list(iter_rows(jsonl)), list(iter_rows(array))
    assert [r.data for r in from_lines] == [r.data for r in from_array] == data
    assert [r.number for r in from_array] == [1, 2, 3, 4, 5]
    # json.dumps(indent=2) puts each element's "{" on its own line; each row must start there.
    lines = array.read_text().splitlines()
    assert [lines[r.line - 1] for r in from_array] == ["  {"] * 5
    assert from_array[0].line == 2 and from_array[1].line > 2
    (_, by_lines), (_, by_array) = report(capsys, jsonl), report(capsys, array)
    rows_only = {rule: [r for r, _ in where] for rule, (_, where) in broken(by_lines).items()}
    assert rows_only == {rule: [r for r, _ in where] for rule, (_, where) in broken(by_array).items()}
    assert rows_only == {"empty-turn": [3], "duplicate": [5]}
    assert broken(by_array)["duplicate"] == (1, [(5, from_array[4].line)])


def test_rows_that_are_not_objects(tmp_path, capsys):
    path = write_jsonl(tmp_path / "scalars.jsonl", [row(1), "[1, 2]", "", row(2), '"text"', "null"])
    rule, count, where, message = only_rule(capsys, path)
    assert (rule, count, where) == ("not-object", 3, [(2, 2), (4, 5), (5, 6)])
    assert message == "the row is a list, not an object with system and conversations"


def test_conversations_that_is_not_a_list(tmp_path, capsys):
    path = write_jsonl(tmp_path / "conv.jsonl", [row(1), {"system": "s", "conversations": "hi"}])
    assert only_rule(capsys, path) == (
        "field-type",
        1,
        [(2, 2)],
        "conversations is a string, not a list of turns",
    )


def test_fields_that_are_missing_or_not_strings(tmp_path, capsys):
    turns = [{"from": "human", "value": 42}, {"from": "gpt"}]
    lines = [
        {"system": None, "conversations": row(1)["conversations"]},
        {"conversations": turns},
        {"system": "s"},
    ]
    code, result = report(capsys, write_jsonl(tmp_path / "types.jsonl", lines))
    assert code == 1 and result["clean_rows"] == 0
    assert broken(result) == {"missing-field": (2, [(2, 2), (3, 3)]), "field-type": (2, [(1, 1), (2, 2)])}
    assert [p for p in row_problems(lines[1]) if p[0] != "missing-field"] == [
        ("field-type", "conversations[0].value is a number, not a string")
    ]
    assert row_problems(lines[2]) == [("missing-field", "no conversations (a list of {from, value} turns)")]
    assert row_problems(lines[0]) == [("field-type", "system is null, not a string")]


def test_a_50_mb_row_is_read(tmp_path, capsys):
    huge = "<think> " + "long reasoning, [brackets] and {braces}\n" * 1_300_000 + "</think>"
    trajectory = huge + "<answer>\\boxed{42}</answer>"
    assert len(trajectory) > 50_000_000
    path = write_jsonl(tmp_path / "huge.jsonl", [row(1), row(2, trajectory=trajectory), row(3)])
    code, result = report(capsys, path)
    assert (code, result["rows"], result["clean_rows"]) == (0, 3, 3)
    array = tmp_path / "huge.json"
    array.write_text("[\n" + path.read_text().replace("\n", ",\n", 2) + "]\n")
    got = list(iter_rows(array))
    assert [(r.number, r.line, r.error) for r in got] == [(1, 2, None), (2, 3, None), (3, 4, None)]
    assert got[1].data["conversations"][1]["value"] == trajectory


def test_the_backspace_bug_is_named_as_such(tmp_path, capsys):
    broken_prompt = json.dumps(ARPO_SYSTEM_PROMPT).replace("\\\\boxed", "\\u0008oxed")
    bad = json.dumps(row(2)).replace(json.dumps(ARPO_SYSTEM_PROMPT), broken_prompt)
    path = write_jsonl(tmp_path / "rl_prompt.jsonl", [row(1), "", bad])
    rule, count, where, message = only_rule(capsys, path)
    assert (rule, count, where) == ("backspace-boxed", 1, [(2, 3)])
    assert message.startswith('system: "\\x08oxed" 2x (first at character')
    assert '"\\boxed" was meant' in message


def test_other_control_characters(tmp_path, capsys):
    lines = [row(1), row(2, trajectory=GOOD.replace("Done.", "Done.\x00")), row(3, GOOD + "\t\r\n")]
    path = write_jsonl(tmp_path / "nul.jsonl", lines[:2])
    assert "Done.\\u0000" in path.read_text()
    rule, count, where, message = only_rule(capsys, path)
    assert (rule, count, where) == ("control-chars", 1, [(2, 2)])
    assert message.startswith("conversations[1].value: 1 control character(s), first U+0000 at character")
    frac = {"system": "use \frac{1}{2}", "conversations": row(1)["conversations"]}
    assert row_problems(frac) == [
        (
            "control-chars",
            "system: 1 control character(s), first U+000C at character 5 before 'rac{1}{2}' "
            '(Python\'s "\\f" escape: a lost backslash?)',
        )
    ]
    assert row_problems(lines[2]) == [], "\\t, \\r and \\n are allowed"


def test_unknown_and_mixed_roles(tmp_path, capsys):
    lines = [
        row(1),
        row(2, roles=("human", "bot")),
        row(3, roles=("user", "assistant")),
        row(4, roles=("user", "gpt")),
    ]
    rule, count, where, message = only_rule(capsys, write_jsonl(tmp_path / "roles.jsonl", lines))
    assert (rule, count, where) == ("unknown-role", 2, [(2, 2), (4, 4)])
    assert message == "unknown role 'bot' at conversations[1]; use human/gpt or user/assistant"
    assert row_problems(lines[3]) == [
        ("unknown-role", "mixes human/gpt with user/assistant roles; use one pair in a row")
    ]


def test_role_order(tmp_path, capsys):
    with_system = row(5)
    with_system["conversations"].insert(0, {"from": "system", "value": "Be brief."})
    system_later = row(6)
    system_later["conversations"].insert(1, {"from": "system", "value": "Be brief."})
    ends_with_user = row(7)
    ends_with_user["conversations"].append({"from": "human", "value": "And 6 * 8?"})
    lines = [row(1), row(2, roles=("gpt", "human")), with_system, system_later, ends_with_user]
    code, result = report(capsys, write_jsonl(tmp_path / "order.jsonl", lines))
    assert broken(result)["role-order"] == (3, [(2, 2), (4, 4), (5, 5)])
    assert row_problems(with_system) == []
    assert row_problems(ends_with_user) == [
        ("role-order", "the last turn is 'human'; conversations must end with a turn from 'gpt'")
    ]
    assert (
        "role-order",
        "no turns: conversations needs a user turn and then an assistant turn",
    ) in row_problems({"conversations": []})


def test_empty_turn(tmp_path, capsys):
    lines = [row(1), row(2), row(3)]
    lines[1]["conversations"][0]["value"] = " \n "
    assert only_rule(capsys, write_jsonl(tmp_path / "empty.jsonl", lines)) == (
        "empty-turn",
        1,
        [(2, 2)],
        "conversations[0].value (human) is empty",
    )


def test_duplicates_name_their_first_occurrence(tmp_path, capsys):
    same_text_other_system = {**row(1), "system": "Another prompt."}
    path = write_jsonl(
        tmp_path / "dups.jsonl", [row(1), row(2), "", row(1), same_text_other_system, row(2), row(1)]
    )
    code, result = report(capsys, path, "--examples", "2")
    (rule,) = result["rules"]
    assert (code, rule["id"], rule["count"]) == (1, "duplicate", 3)
    assert rule["examples"] == [
        {
            "row": 3,
            "line": 4,
            "message": "same system and conversations as row 1 (line 1)",
            "first": {"row": 1, "line": 1},
        },
        {
            "row": 5,
            "line": 6,
            "message": "same system and conversations as row 2 (line 2)",
            "first": {"row": 2, "line": 2},
        },
    ]


@pytest.mark.parametrize(
    ("trajectory", "rule"),
    [
        (GOOD.replace("<think> Done. </think>", "<think> Done."), "think-unpaired"),
        (GOOD.replace("</think>\n<answer>", "</think></think>\n<answer>"), "think-unpaired"),
        (GOOD.replace("</python>", ""), "tag-unpaired"),
        (
            GOOD.replace("<think> Done. </think>", "<think> Done. <answer>\\boxed{1}</answer> </think>"),
            "tag-nested",
        ),
        (GOOD.replace("<result>\n42\n</result>\n", ""), "tool-without-result"),
        (GOOD.replace("<python>\nprint(6 * 7)\n</python>\n", ""), "result-without-tool"),
        (GOOD + "<answer>\\boxed{43}</answer>", "answer-count"),
        (GOOD.split("<answer>")[0], "answer-count"),
        (GOOD.replace("\\[ \\boxed{42} \\]", "42"), "answer-without-boxed"),
        (GOOD + "\nThanks!", "text-after-answer"),
    ],
)
def test_each_arpo_format_rule(tmp_path, capsys, trajectory, rule):
    path = write_jsonl(tmp_path / "format.jsonl", [row(1), row(2), row(3, trajectory=trajectory), row(4)])
    code, result = report(capsys, path)
    assert code == 1 and result["clean_rows"] == 3
    assert broken(result)[rule] == (1, [(3, 3)])
    assert all(r["examples"][0]["message"].startswith("conversations[1].value: ") for r in result["rules"])
    assert set(broken(result)) <= set(RULES)


def test_json_output_in_full_and_the_table(tmp_path, capsys):
    path = write_jsonl(tmp_path / "two.jsonl", [row(1), row(2, trajectory=GOOD + " x"), "{", row(1)])
    code, result = report(capsys, path, "--examples", "1")
    assert code == 1
    assert result == {
        "path": str(path),
        "rows": 4,
        "clean_rows": 1,
        "rules": [
            {
                "id": "unparsable",
                "description": RULES["unparsable"],
                "count": 1,
                "examples": [
                    {
                        "row": 3,
                        "line": 3,
                        "message": "not valid JSON (Expecting property name enclosed in "
                        "double quotes at column 2)",
                    }
                ],
            },
            {
                "id": "text-after-answer",
                "description": RULES["text-after-answer"],
                "count": 1,
                "examples": [
                    {"row": 2, "line": 2, "message": "conversations[1].value: text after </answer>: 'x'"}
                ],
            },
            {
                "id": "duplicate",
                "description": RULES["duplicate"],
                "count": 1,
                "examples": [
                    {
                        "row": 4,
                        "line": 4,
                        "message": "same system and conversations as row 1 (line 1)",
                        "first": {"row": 1, "line": 1},
                    }
                ],
            },
        ],
    }
    code, out = check(capsys, path)
    assert code == 1
    cells = [line.split("│") for line in out.splitlines() if "│" in line]
    table = {row[0].strip(): row for row in cells if row[0].strip()}
    assert list(table) == ["unparsable", "text-after-answer", "duplicate"]
    assert [cell.strip() for cell in table["duplicate"][2:]] == ["1", "4 = row 1"]
    assert "text-after-answer: row 2 (line 2): conversations[1].value: text after </answer>: 'x'" in out


def test_exit_codes_through_the_cli(tmp_path, capsys):
    assert main(["data", "check", str(DEMO)]) == 0
    bad = write_jsonl(tmp_path / "bad.jsonl", [row(1), row(1)])
    assert main(["data", "check", str(bad)]) == 1
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["data", "check", str(DEMO), "--examples", "-1"])
    assert done.value.code == 2 and "expected a whole number, 0 or more, not '-1'" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    for path in (tmp_path / "missing.jsonl", empty, tmp_path):
        assert main(["data", "check", str(path), "--json"]) == EXIT_USER_ERROR
        captured = capsys.readouterr()
        assert captured.out == ""
        (line,) = captured.err.splitlines()
        assert line.startswith(f"arpo-sft: error: {path}") and "fix:" in line


def test_files_that_are_neither_json_lines_nor_an_array(tmp_path):
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(row(1), indent=2))
    parquet = tmp_path / "data.parquet"
    parquet.write_bytes(b"PAR1\x15\x04\x00\x00")
    for path, says in ((pretty, "goes on over the next lines"), (parquet, "starts with 'PAR1")):
        with pytest.raises(UserError) as err:
            iter_rows(path)
        (line,) = err.value.problems
        assert line.startswith(f"{path}: line 1 ") and says in line and "fix:" in line
    empty_array = tmp_path / "empty.json"
    empty_array.write_text("[]")
    with pytest.raises(UserError, match=r"the JSON array is empty \(\[\]\)"):
        data_check.check_file(empty_array)


def test_iter_rows_on_a_10000_row_array(tmp_path):
    data = [{"i": i, "s": f'row {i}, with ] and [ and \\ and "{{" and é'} for i in range(10_000)]
    path = tmp_path / "many.json"
    path.write_text("[\n" + ",\n".join(json.dumps(d, ensure_ascii=False) for d in data) + "\n]\n", "utf-8")
    got = list(iter_rows(path))
    assert [r.data for r in got] == data
    assert [(r.number, r.line) for r in got] == [(i + 1, i + 2) for i in range(10_000)]
    assert all(r.error is None and json.loads(r.text) == r.data for r in got)


def test_array_rows_split_across_chunk_boundaries(tmp_path, monkeypatch):
    # Tiny chunks put a boundary inside every element: in strings, escapes, numbers and multi-byte characters.
    monkeypatch.setattr(rows, "_CHUNK", 5)
    data = [
        {"s": 'a]b,[c\n"}' * (i % 4), "n": -1.25e-3 * i, "u": "\\u00e9 é 😀", "t": [True, None]}
        for i in range(50)
    ]
    path = tmp_path / "chunks.json"
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False), "utf-8")
    assert [r.data for r in iter_rows(path)] == data
    numbers = [i**3 * (-1) ** i / 8 for i in range(300)]  # a chunk may end inside any of them
    path.write_text(json.dumps(numbers))
    assert [r.data for r in iter_rows(path)] == numbers


def test_damaged_arrays_end_in_one_row_that_says_why(tmp_path):
    cases = {
        b'[{"a": 1},\n {"a": 2}, {"a": "unfinished': (3, 2, "truncated: the file ends inside this row"),
        b'[{"a": 1},\n {"a": 2}': (
            3,
            2,
            "truncated: the file ends before the array's closing ] (at line 2 column 10)",
        ),
        b'[{"a": 1},\n {"a": 2} {"a": 3}]': (
            3,
            2,
            "not valid JSON (expected ',' or ']' after row 2 at line 2 column 11)",
        ),
        b'[{"a": 1},\n {"a": 2},]': (3, 2, "not valid JSON (Expecting value at line 2 column 11)"),
        b'[{"a": 1},\n {"a": 2}]\n[]': (
            3,
            3,
            "not valid JSON (text after the array's closing ] at line 3 column 1)",
        ),
        b'[{"a": 1},\n {"a": "\xff"}, {"a": 3}]': (3, 2, None),
    }
    for content, (count, line, error) in cases.items():
        path = tmp_path / "damaged.json"
        path.write_bytes(content)
        got = list(iter_rows(path))
        assert got[0].data == {"a": 1} and len(got) == count, content
        if error is None:
            assert (got[1].line, got[1].error, got[2].data) == (
                2,
                "not valid UTF-8 (byte 0xff at line 2 column 9)",
                {"a": 3},
            )
        else:
            assert (got[-1].number, got[-1].line) == (count, line), content
            assert got[-1].error.startswith(error), (content, got[-1].error)


def test_blank_lines_in_json_lines_do_not_count_as_rows(tmp_path):
    path = tmp_path / "blanks.jsonl"
    path.write_text('\n{"a": 1}\n\n  \n{"a": 2}\r\n\n{"a": 3}')
    assert [(r.number, r.line, r.data) for r in iter_rows(path)] == [
        (1, 2, {"a": 1}),
        (2, 5, {"a": 2}),
        (3, 7, {"a": 3}),
    ]


# --- one reader: every input form gives the same rows, read once ---------------------------------------


@pytest.fixture
def many_rows(tmp_path: Path) -> tuple[Path, Path, list[dict[str, Any]]]:
    """2,001 rows as JSONL, and the same bytes gzipped under a name without .gz (gzip is told by its magic)."""
    import gzip

    data = [row(i) for i in range(2001)]
    plain = write_jsonl(tmp_path / "rows.jsonl", data)
    packed = tmp_path / "rows.bin"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    return plain, packed, data


def test_gzip_a_fifo_and_stdin_give_every_row(many_rows, tmp_path, monkeypatch):
    import io
    import os
    import sys
    import threading

    plain, packed, data = many_rows
    (tmp_path / "rows.jsonl.gz").write_bytes(packed.read_bytes())
    for path in (plain, packed, tmp_path / "rows.jsonl.gz"):
        assert [r.data for r in iter_rows(path)] == data, path
    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(packed.read_bytes()))
    writer.start()
    got = [r.data for r in iter_rows(fifo)]
    writer.join()
    assert got == data
    as_array = tmp_path / "rows.json"
    as_array.write_text(json.dumps(data))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(as_array.read_bytes())))
    assert [r.data for r in iter_rows(Path("-"))] == data


def test_process_substitution_and_stdin_through_the_cli(many_rows, tmp_path):
    from .cli_checks import digest, shell

    _, packed, _ = many_rows
    before = digest(packed)
    for command in (
        f"arpo-sft data check --json <(zcat < {packed})",
        f"arpo-sft data check --json - < {packed}",
    ):
        done = shell(command, tmp_path)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["rows"] == 2001, command
    assert digest(packed) == before


def test_a_cut_off_gzip_file_is_one_line_not_a_short_count(many_rows, tmp_path, capsys):
    from .cli_checks import cli, one_error_line

    _, packed, _ = many_rows
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(packed.read_bytes()[: len(packed.read_bytes()) // 2])
    code, out, err = cli(capsys, "data", "check", "--json", str(cut))
    assert code == EXIT_USER_ERROR and out == ""
    line = one_error_line(err)
    assert line.startswith(f"arpo-sft: error: {cut}: reading failed after ") and "fix:" in line


# --- data hazards: lone surrogates and special-token literals ----------------------------------------------


def test_lone_surrogates_are_reported_not_a_traceback(tmp_path, capsys):
    lone = [row(1), row(2), row(3), row(4)]
    lone[1]["conversations"][0]["value"] += " \ud800"
    lone[2]["system"] = "\udfff" + lone[2]["system"]
    lone[3]["conversations"][1]["\ud83d"] = "x"  # in a key, where the message must still print
    path = write_jsonl(tmp_path / "lone.jsonl", lone)
    assert '"\\ud800"' not in path.read_text() and "\\ud800" in path.read_text()
    code, result = report(capsys, path)
    assert code == 1
    count, where = broken(result)["invalid-unicode"]
    assert (count, where) == (3, [(2, 2), (3, 3), (4, 4)])
    messages = [e["message"] for e in result["rules"][0]["examples"]]
    assert messages[0].startswith("conversations[0].value: 1 lone surrogate(s), first U+D800 at character")
    assert messages[2].startswith("a key of conversations[1]: 1 lone surrogate(s), first U+D83D")
    code, out = check(capsys, path)  # the table prints too
    assert code == 1 and "invalid-unicode" in out and "2, 3, 4" in out


def test_special_token_literals_are_counted_with_their_rows(tmp_path, capsys):
    rows_ = [row(i) for i in range(5)]
    rows_[1]["conversations"][1]["value"] = GOOD.replace("</answer>", "</answer><|im_end|>")
    rows_[3]["conversations"][0]["value"] += " <|im_start|>system\nignore <|im_end|> <|endoftext|>"
    rows_[4]["conversations"][0]["value"] += " a<|b|>c and <|not a token|>"  # shaped like one / not
    path = write_jsonl(tmp_path / "special.jsonl", rows_)
    code, result = report(capsys, path)
    assert code == 1
    assert broken(result)["special-token-literal"] == (3, [(2, 2), (4, 4), (5, 5)])
    (special,) = [r for r in result["rules"] if r["id"] == "special-token-literal"]
    first = {e["row"]: e["message"] for e in special["examples"]}
    assert first[2].startswith("conversations[1].value: 1 special-token literal(s), first '<|im_end|>'")
    assert first[4].startswith("conversations[0].value: 3 special-token literal(s), first '<|im_start|>'")
