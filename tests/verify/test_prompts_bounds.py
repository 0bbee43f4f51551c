"""verify's prompts file is read bounded: an endless file ends at once, and a hostile line is one problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arpo_train_sft.errors import UserError
from arpo_train_sft.verify.command import MAX_PROMPTS_BYTES, read_prompts


def test_an_endless_prompts_file_is_one_line():
    with pytest.raises(UserError) as err:
        read_prompts(Path("/dev/zero"))
    assert err.value.problems == [
        f"/dev/zero: over {MAX_PROMPTS_BYTES // 2**20} MiB of prompts; split it into smaller files"
    ]


def test_deep_nesting_and_huge_integers_are_one_problem_each_and_the_rest_is_read(tmp_path: Path):
    path = tmp_path / "prompts.jsonl"
    good = json.dumps({"question": "What is 2 + 2?", "answer": 4})
    deep = '{"question": ' + "[" * 100_000 + "]" * 100_000 + "}"
    huge = '{"question": "q", "answer": ' + "9" * 5000 + "}"
    path.write_text("\n".join([good, deep, huge, good + " trailing"]) + "\n")
    with pytest.raises(UserError) as err:
        read_prompts(path)
    problems = err.value.problems
    assert len(problems) == 3
    assert problems[0].startswith(f"{path}:2: ") and "nested" in problems[0]
    assert problems[1] == f"{path}:3: an integer of 5,000 digits; the limit is 4,300"
    assert problems[2].startswith(f"{path}:4: not valid JSON (")
    path.write_text(good + "\n")
    assert [p.question for p in read_prompts(path)] == ["What is 2 + 2?"]
