"""Where the test suite's CPU goes: a pytest plugin that records each test's CPU, and a summary of the record.

Record (every xdist worker appends to the same file):

    PYTHONPATH=bench CPU_CENSUS_OUT=/tmp/census.jsonl PYTEST_ADDOPTS="-p cpu_census" make test

One JSON line per test: its node id, `self` (CPU seconds of the test process during the test's setup,
call and teardown), `children` (CPU seconds of the processes it started and waited for, their own
children included once reaped), `wall` and `worker`. A session fixture's runs count in the test that
built them. A process the test started but never waited for is not counted (the kernel adds a child's
CPU to its parent's only when the parent reaps it).

Summary, by test file and by xdist group:

    python bench/cpu_census.py /tmp/census.jsonl
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jsonl_file import BadRecord, read_jsonl  # noqa: E402

OUT_ENV = "CPU_CENSUS_OUT"
DEFAULT_OUT = "cpu_census.jsonl"


def cpu_seconds() -> tuple[float, float]:
    """(this process, its reaped children), user + system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    own, children = cpu_seconds()
    started = time.monotonic()
    yield
    own_after, children_after = cpu_seconds()
    record = {
        "id": item.nodeid,
        "self": round(own_after - own, 2),
        "children": round(children_after - children, 2),
        "wall": round(time.monotonic() - started, 2),
        "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
    }
    # One short line per write, opened for append: workers writing at once do not interleave lines.
    with open(os.environ.get(OUT_ENV, DEFAULT_OUT), "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")


def summary(records: list[dict]) -> list[str]:
    """Total CPU, then CPU and wall per test file and per xdist group (`id@group`), most first."""
    lines = [f"{len(records)} tests, {sum(map(_cpu, records)) / 60:.1f} CPU-minutes"]
    for title, key in (("file", _file), ("group", _group)):
        spent, wall = Counter(), Counter()
        for record in records:
            spent[key(record)] += _cpu(record)
            wall[key(record)] += record["wall"]
        lines += [f"by {title}:"] + [f"{s:8.1f} CPU s {wall[k]:8.1f} s  {k}" for k, s in spent.most_common()]
    return lines


def _cpu(record: dict) -> float:
    return record["self"] + record["children"]


def _file(record: dict) -> str:
    return record["id"].split("::")[0]


def _group(record: dict) -> str:
    """xdist's loadgroup appends `@group` to the id; without xdist the file is the group."""
    return record["id"].rpartition("@")[2] if "@" in record["id"] else _file(record)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python bench/cpu_census.py CENSUS.jsonl", file=sys.stderr)
        return 2
    try:
        records = read_jsonl(
            Path(argv[0]),
            unreadable="pass the file CPU_CENSUS_OUT named",
            bad_line="is not JSON; pass a file the plugin wrote",
        )
    except BadRecord as err:
        print(f"cpu_census: {err}", file=sys.stderr)
        return 2
    print("\n".join(summary(records)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
