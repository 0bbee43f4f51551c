"""Bounded work: one bad row is rejected with its reason and the file goes on; endless inputs end fast."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from arpo_train_sft.data import bounds
from arpo_train_sft.data.rows import iter_rows
from arpo_train_sft.errors import UserError

GOOD = json.dumps({"conversations": [{"from": "human", "value": "hi"}]})


def rows_of(path: Path) -> list[tuple[int, str | None]]:
    return [(row.number, row.error) for row in iter_rows(path)]


@pytest.mark.parametrize("array", [False, True])
def test_deep_nesting_and_huge_integers_reject_only_their_row(tmp_path: Path, array: bool):
    bad = ["[" * 100_000 + "]" * 100_000, '{"n": ' + "7" * 5000 + "}", "[" * 150 + "]" * 150]
    items = [GOOD, *bad, GOOD]
    path = tmp_path / "rows.json"
    path.write_text("[" + ",\n".join(items) + "]" if array else "\n".join(items) + "\n")
    found = rows_of(path)
    assert found[0] == (1, None)
    if array:
        # Python's parser gives no position past ~1000 levels: the array cannot be followed further.
        assert found[1][1].startswith(bounds.TOO_DEEP) and len(found) == 2
        path.write_text("[" + ",\n".join([GOOD, *bad[1:], GOOD]) + "]")
        found = rows_of(path)
        assert found[1][1] == "an integer of 5,000 digits; the limit is 4,300"
        assert found[2][1] == bounds.TOO_DEEP and found[3] == (4, None)
        return
    assert found[1] == (2, bounds.TOO_DEEP)
    assert found[2] == (3, "an integer of 5,000 digits; the limit is 4,300")
    assert found[3] == (4, bounds.TOO_DEEP)
    assert found[4] == (5, None)


def test_a_row_over_the_size_limit_is_rejected_and_the_next_row_read(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("arpo_train_sft.data.rows.MAX_ROW_BYTES", 1000)
    path = tmp_path / "big.jsonl"
    path.write_text(f'{GOOD}\n{{"x": "{"a" * 5000}"}}\n{GOOD}\n')
    rows = list(iter_rows(path))
    assert [(row.number, row.line, row.data is None) for row in rows] == [
        (1, 1, False),
        (2, 2, True),
        (3, 3, False),
    ]
    assert rows[1].error == "row too long: 5,010 bytes, the limit is 1,000; split or shorten it"
    assert rows[1].text.startswith('{"x": "aaa') and len(rows[1].text) <= bounds.ROW_SAMPLE


def test_a_100_mb_row_is_rejected_not_the_file(tmp_path: Path):
    path = tmp_path / "huge.jsonl"
    with path.open("w") as f:
        f.write(f'{GOOD}\n{{"x": "')
        for _ in range(100):
            f.write("a" * 2**20)
        f.write(f'"}}\n{GOOD}\n')
    found = rows_of(path)
    assert [number for number, _ in found] == [1, 2, 3] and found[0][1] is None and found[2][1] is None
    assert found[1][1].startswith("row too long: 104,857,") and "limit is 67,108,864" in found[1][1]


def test_dev_zero_ends_in_seconds_with_one_line():
    started = time.monotonic()
    with pytest.raises(UserError) as err:
        list(iter_rows(Path("/dev/zero")))
    assert time.monotonic() - started < 30
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith("/dev/zero: ")


def test_endless_blank_input_ends_with_one_line(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("arpo_train_sft.data.rows.MAX_SKIP_BYTES", 10_000)
    path = tmp_path / "blank.jsonl"
    path.write_text(f"{GOOD}\n" + "\n" * 50_000 + f"{GOOD}\n")
    with pytest.raises(UserError, match=r"no row in 10,000 bytes after line"):
        rows_of(path)
    path.write_text(" " * 50_000)
    with pytest.raises(UserError, match=r"nothing but blank space in the first 10,000 bytes"):
        rows_of(path)
