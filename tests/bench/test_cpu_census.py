"""bench/cpu_census.py: a test's CPU, its own and its children's, recorded through a real pytest run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .conftest import BENCH, load

# Burns about 0.3 CPU-seconds in a child it waits for, and almost none in the test process itself.
TESTS = """
import subprocess, sys

def test_child():
    subprocess.run([sys.executable, "-c", "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.3: pass"], check=True)

def test_idle():
    pass
"""


def test_each_test_gets_a_line_with_its_childrens_cpu_and_the_summary_adds_them(tmp_path: Path):
    (tmp_path / "test_burn.py").write_text(TESTS)
    out = tmp_path / "census.jsonl"
    # Nothing from this pytest (PYTEST_ADDOPTS, an xdist worker's PYTEST_XDIST_WORKER) reaches the inner one.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env.update(PYTHONPATH=str(BENCH), CPU_CENSUS_OUT=str(out))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "cpu_census", "-p", "no:cacheprovider", "test_burn.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    child, idle = [json.loads(line) for line in out.read_text().splitlines()]
    assert (child["id"], idle["id"]) == ("test_burn.py::test_child", "test_burn.py::test_idle")
    assert child["children"] >= 0.25 and idle["children"] == 0 and child["worker"] == "main"
    assert child["wall"] >= child["children"] - 0.05  # one child at a time: no more CPU than time

    lines = load("cpu_census").summary([child, idle])
    assert lines[0] == f"2 tests, {(child['self'] + child['children'] + idle['self']) / 60:.1f} CPU-minutes"
    assert lines[1] == "by file:" and lines[2].endswith("  test_burn.py") and lines[3] == "by group:"


def test_a_missing_or_foreign_file_is_one_line_and_exit_2(tmp_path: Path, capsys):
    census = load("cpu_census")
    missing = tmp_path / "none.jsonl"
    assert census.main([str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"cpu_census: {missing}: cannot read it (No such file or directory); pass the file CPU_CENSUS_OUT named\n"
    )
    foreign = tmp_path / "log.txt"
    foreign.write_text('{"id": "a", "self": 1, "children": 0, "wall": 1}\nstep 1 done\n')
    assert census.main([str(foreign)]) == 2
    assert (
        capsys.readouterr().err
        == f"cpu_census: {foreign}: line 2 is not JSON; pass a file the plugin wrote\n"
    )
