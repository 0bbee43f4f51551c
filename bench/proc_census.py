"""Where a command's CPU goes, process by process: the ranks, launchers and children that `make test` starts.

Record (the command's exit status is passed on):

    python bench/proc_census.py /tmp/procs.jsonl -- make test

Summary, by kind of process (ranks, torchrun launchers, preflight and tokenizing children, ...):

    python bench/proc_census.py /tmp/procs.jsonl

It reads `/proc` every POLL_S seconds and keeps, for each process under the command, its CPU (user +
system) at the last reading and the command lines it ran (an `exec` keeps the process). It makes itself
the subreaper of the tree, so a process whose parent exits first stays counted; processes still running
LINGER_S seconds after the command ended are written as they stand, and named. Limits: a process is
seen only if it lives through a reading, and loses the CPU it spent after its last one (at most POLL_S
each); Linux only.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jsonl_file import BadRecord, read_jsonl  # noqa: E402

POLL_S = 0.25
LINGER_S = 60  # after the command ends, how long the processes it left behind are still followed
PR_SET_CHILD_SUBREAPER = 36
TICKS = os.sysconf("SC_CLK_TCK")
RANK = "rank (and what it forks)"
# First match wins, on every command line the process ran. The launcher comes before the rank because
# torchrun's own command line names the rank's module.
KINDS = (
    ("launcher (arpo-sft train, then torchrun's agent)", ("torch.distributed.run", "bin/torchrun")),
    (RANK, ("arpo_train_sft.entry",)),
    ("tokenizing child", ("arpo_train_sft.lf.tokenize",)),
    ("preflight child", ("arpo_train_sft.train.preflight.child",)),
    ("node watcher", ("arpo_train_sft.train.watch",)),
    ("pytest-xdist worker (the tests that run in-process)", ("exec(eval(sys.stdin.readline()))",)),
    ("arpo-sft, other commands", ("arpo_train_sft.cli", "bin/arpo-sft")),
    ("multiprocessing worker", ("multiprocess",)),
    # Before "other Python": a compiler's command line names the venv's python3.11 include directory.
    ("C++ compiler (DeepSpeed's JIT op builds)", ("cc1plus", "g++", "c++", "ninja")),
    ("other Python", ("python",)),
)


def read_stat(pid: str) -> tuple[int, str, float, str] | None:
    """(parent pid, state, CPU seconds, start time) of a live or zombie process; None once it is gone."""
    try:
        # The command name may hold spaces and parentheses: the fields that matter follow the last ")".
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[1]), fields[0], (int(fields[11]) + int(fields[12])) / TICKS, fields[19]


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def record(argv: list[str], out: Path) -> int:
    """Run argv, write one JSON line per process under it to out, and return argv's exit status."""
    if shutil.which(argv[0]) is None:
        print(f"proc_census: {argv[0]}: command not found; give the command after --", file=sys.stderr)
        return 127
    try:  # opened first: a record that cannot be written is said before the command runs, not after
        file = out.open("w", encoding="utf-8")
    except OSError as err:
        print(f"proc_census: {out}: cannot write it ({err.strerror}); pass a writable path", file=sys.stderr)
        return 2
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    me = os.getpid()
    proc = subprocess.Popen(argv)
    seen: dict[str, dict] = {}
    ended_at = None
    while True:
        stats = {int(pid): stat for pid in os.listdir("/proc") if pid.isdigit() and (stat := read_stat(pid))}
        under = _descendants(stats, me)
        for pid in under:
            parent, state, cpu, started = stats[pid]
            entry = seen.setdefault(f"{pid}:{started}", {"pid": pid, "cpu": 0.0, "commands": []})
            entry["cpu"] = cpu
            line = command_line(pid)
            if line and line not in entry["commands"]:
                entry["commands"].append(line)
            # An orphan handed to this process is reaped here once counted; the command itself by Popen.
            if parent == me and state == "Z" and pid != proc.pid:
                os.waitpid(pid, os.WNOHANG)
        left = under - {proc.pid}
        if proc.poll() is not None and ended_at is None:
            ended_at = time.monotonic()
        if ended_at is not None and (not left or time.monotonic() - ended_at > LINGER_S):
            break
        time.sleep(POLL_S)
    for pid in sorted(left):
        print(
            f"proc_census: {pid} still running {LINGER_S} s after the command ended: {command_line(pid)}",
            file=sys.stderr,
        )
    with file:
        file.writelines(json.dumps(entry) + "\n" for entry in seen.values())
    return proc.returncode


def _descendants(stats: dict[int, tuple], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (parent, *_) in stats.items():
        children.setdefault(parent, []).append(pid)
    found, stack = set(), list(children.get(root, []))
    while stack:
        pid = stack.pop()
        found.add(pid)
        stack += children.get(pid, [])
    return found


def kind(entry: dict) -> str:
    text = " ".join(entry["commands"])
    return next((name for name, marks in KINDS if any(mark in text for mark in marks)), "other")


def summary(entries: list[dict]) -> list[str]:
    """Total CPU, then CPU, count and CPU per process for each kind, most first; then the ranks' spread."""
    spent, count = Counter(), Counter()
    for entry in entries:
        spent[kind(entry)] += entry["cpu"]
        count[kind(entry)] += 1
    lines = [f"{len(entries)} processes, {sum(spent.values()) / 60:.1f} CPU-minutes"]
    lines += [
        f"{cpu:8.1f} CPU s {count[k]:5d} processes {cpu / count[k]:6.1f} each  {k}"
        for k, cpu in spent.most_common()
    ]
    ranks = sorted(entry["cpu"] for entry in entries if kind(entry) == RANK)
    if ranks:
        median = statistics.median(ranks)
        lines.append(
            f"ranks and their forks: {len(ranks)}, CPU s each: least {ranks[0]:.1f}, median {median:.1f}, "
            f"most {ranks[-1]:.1f}"
        )
    return lines


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[1] == "--":
        return record(argv[2:], Path(argv[0]))
    if len(argv) != 1:
        print(
            "usage: python bench/proc_census.py OUT.jsonl -- COMMAND... | python bench/proc_census.py OUT.jsonl",
            file=sys.stderr,
        )
        return 2
    try:
        entries = read_jsonl(
            Path(argv[0]),
            unreadable="pass the file a recording wrote",
            bad_line="is not a process record; pass the file a recording wrote",
            is_record=lambda entry: isinstance(entry, dict) and {"cpu", "commands"} <= entry.keys(),
        )
    except BadRecord as err:
        print(f"proc_census: {err}", file=sys.stderr)
        return 2
    print("\n".join(summary(entries)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
