"""bench/proc_census.py: each process under a command, orphans included, with its CPU, and the summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import BENCH, load

# The command exits 3 at once; the child it leaves behind, in a session of its own, burns about 1 CPU-second.
ORPHANING = """
import subprocess, sys
burn = "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 1.0: pass"
# Joined here, so that only the orphan's command line holds the marker.
subprocess.Popen([sys.executable, "-c", burn, "orphan" + "-marker"], start_new_session=True)
sys.exit(3)
"""


def test_an_orphan_is_followed_to_its_end_and_the_exit_status_passed_on(tmp_path: Path):
    out = tmp_path / "procs.jsonl"
    done = subprocess.run(
        [sys.executable, str(BENCH / "proc_census.py"), str(out), "--", sys.executable, "-c", ORPHANING],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    entries = [json.loads(line) for line in out.read_text().splitlines()]
    (orphan,) = [entry for entry in entries if "orphan-marker" in " ".join(entry["commands"])]
    # Its last reading is at most a poll (0.25 s) before it ends.
    assert orphan["cpu"] >= 0.5
    assert any("sys.exit(3)" in " ".join(entry["commands"]) for entry in entries)
    census = load("proc_census")
    assert census.kind(orphan) == "other Python"
    assert census.main([str(out)]) == 0


def test_torchruns_command_line_is_a_launcher_and_the_ranks_are_summed():
    census = load("proc_census")
    agent = {
        "cpu": 2.0,
        "commands": ["arpo-sft train x.yaml", "python -m torch.distributed.run -m arpo_train_sft.entry"],
    }
    ranks = [
        {"cpu": cpu, "commands": ["python -u -m arpo_train_sft.entry x.yaml"]} for cpu in (18.0, 20.0, 30.0)
    ]
    assert census.kind(agent) == "launcher (arpo-sft train, then torchrun's agent)"
    compiler = {"cpu": 40.0, "commands": ["cc1plus -I /venv/include/python3.11 cpu_adam.cpp"]}
    assert census.kind(compiler) == "C++ compiler (DeepSpeed's JIT op builds)"
    assert census.summary([agent, *ranks]) == [
        "4 processes, 1.2 CPU-minutes",
        "    68.0 CPU s     3 processes   22.7 each  rank (and what it forks)",
        "     2.0 CPU s     1 processes    2.0 each  launcher (arpo-sft train, then torchrun's agent)",
        "ranks and their forks: 3, CPU s each: least 18.0, median 20.0, most 30.0",
    ]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (None, "cannot read it (No such file or directory); pass the file a recording wrote"),
        (
            '{"cpu": 1, "commands": []}\nstep 1 done\n',
            "line 2 is not a process record; pass the file a recording wrote",
        ),
        ('{"id": "a test"}\n', "line 1 is not a process record; pass the file a recording wrote"),
    ],
)
def test_a_missing_or_foreign_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys, text: str | None, said: str
):
    path = tmp_path / "procs.jsonl"
    if text is not None:
        path.write_text(text)
    assert load("proc_census").main([str(path)]) == 2
    assert capsys.readouterr().err == f"proc_census: {path}: {said}\n"


def test_a_command_not_found_or_an_unwritable_record_is_one_line_before_anything_runs(tmp_path: Path, capsys):
    census = load("proc_census")
    out = tmp_path / "procs.jsonl"
    assert census.main([str(out), "--", "no-such-command-here", "x"]) == 127
    assert (
        capsys.readouterr().err
        == "proc_census: no-such-command-here: command not found; give the command after --\n"
    )
    assert not out.exists()
    unwritable = tmp_path / "missing" / "procs.jsonl"
    assert census.main([str(unwritable), "--", sys.executable, "-c", "raise SystemExit('ran')"]) == 2
    assert capsys.readouterr().err == (
        f"proc_census: {unwritable}: cannot write it (No such file or directory); pass a writable path\n"
    )
