"""The python sandbox: ARPO's output rules, and that time, memory, processes and disk stay bounded.

The attacks on its isolation (files, sockets, escaping processes, the weak mode) are in test_sandbox_attacks.py.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from arpo_train_sft.verify.sandbox import OUTPUT_LIMIT, SCRATCH_MB, isolation_problem, run_python
from arpo_train_sft.verify.sandbox.child import FILE_LIMIT_MB

# Generous: these only guard against a sandbox that waits for a runaway snippet to finish by itself.
SLACK_S = 10


# Skipped only where the host itself refuses to make namespaces; a failure in any later step is a bug.
problem = isolation_problem()
pytestmark = pytest.mark.skipif(
    bool(problem and " namespace" in problem), reason=f"the host refuses namespaces: {problem}"
)


def _survivors(pgid: int) -> list[str]:
    """Processes still alive in process group `pgid`, read from /proc independently of the sandbox."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(stat.parent.name)
    return alive


def test_this_host_isolates() -> None:
    assert isolation_problem() is None
    assert run_python("print(1)").mode == "isolated"


def test_ordinary_code_prints() -> None:
    result = run_python("for i in range(3):\n    print(i * i)")
    assert (result.stdout, result.stderr, result.exit_code, result.timed_out) == ("0\n1\n4\n", "", 0, False)
    assert result.tool_output() == "0\n1\n4"


def test_the_last_bare_expression_is_printed_only_when_the_code_prints_nothing() -> None:
    assert run_python("import math\nx = math.factorial(6)\nx // 2").stdout == "360\n"
    assert run_python("print('shown')\n1 + 1").stdout == "shown\n"
    assert run_python("x = 1").stdout == ""


def test_an_exception_gives_its_traceback_on_stderr() -> None:
    result = run_python("values = [1, 2]\nvalues[5]")
    assert result.exit_code == 1 and result.stdout == "" and result.killed_reason is None
    assert 'File "<python>", line 2' in result.stderr and "IndexError" in result.stderr
    assert result.tool_output() == result.stderr.strip()
    assert "SyntaxError" in run_python("def broken(:\n    pass").stderr
    assert run_python("import sys\nprint('bye')\nsys.exit(4)").exit_code == 4


def test_the_math_libraries_the_tool_is_used_with_import() -> None:
    code = "import fractions, numpy, sympy\nprint(fractions.Fraction(1, 3) * 3, numpy.arange(4).sum(), sympy.sqrt(8))"
    assert run_python(code, timeout_s=60).stdout == "1 6 2*sqrt(2)\n"


def test_an_endless_loop_is_stopped_at_the_wall_clock_timeout() -> None:
    start = time.monotonic()
    result = run_python("print('started')\nwhile True:\n    pass", timeout_s=2)
    assert result.timed_out and "timeout" in (result.killed_reason or "")
    assert time.monotonic() - start < 2 + SLACK_S
    assert result.stdout == "started\n"  # unbuffered: what ran before the kill is kept
    assert "timeout" in result.tool_output()


def test_cpu_time_is_limited_apart_from_the_wall_clock() -> None:
    result = run_python("while True:\n    pass", timeout_s=60, cpu_s=1)
    assert not result.timed_out and result.killed_reason == "CPU time limit exceeded"


def test_allocating_50_gb_fails_with_memory_error_inside_the_sandbox() -> None:
    result = run_python("data = bytearray(50 * 2**30)\nprint(len(data))", memory_mb=512)
    assert result.exit_code == 1 and "MemoryError" in result.stderr and not result.timed_out
    assert run_python("print('still fine')").stdout == "still fine\n"


def test_a_growing_memory_bomb_is_stopped_at_the_limit_and_says_so() -> None:
    code = "hoard = []\nwhile True:\n    hoard.append(bytearray(2**24))"
    start = time.monotonic()
    result = run_python(code, timeout_s=30, memory_mb=256)
    assert not result.timed_out and time.monotonic() - start < 30
    assert result.exit_code == 1 and result.tool_output().splitlines()[-1] == "MemoryError"


def test_a_fork_bomb_ends_within_the_timeout_and_leaves_no_process_behind() -> None:
    start = time.monotonic()
    result = run_python("import os\nwhile True:\n    os.fork()", timeout_s=5)
    assert time.monotonic() - start < 5 + SLACK_S
    assert "BlockingIOError" in result.stderr  # the process limit stopped it, not only the timeout
    assert _survivors(result.pid) == []


def test_the_scratch_disk_fills_up_inside_the_sandbox_and_not_on_the_host() -> None:
    name = f"arpo-fill-{uuid.uuid4().hex}"
    code = (
        "import os\n"
        f"os.makedirs('{name}')\n"
        "written = 0\n"
        "try:\n"
        "    for i in range(1000):\n"
        f"        with open(f'{name}/{{i}}', 'wb') as f:\n"
        "            for _ in range(8):\n"
        "                f.write(b'0' * 2**20)\n"
        "                written += 1\n"
        "except OSError as err:\n"
        "    print(err.strerror)\n"
        "disk = os.statvfs('.')\n"
        "print(os.getcwd(), written, disk.f_blocks * disk.f_frsize // 2**20)\n"
    )
    result = run_python(code, timeout_s=30)
    assert result.stdout.splitlines()[0] == "No space left on device", result.tool_output()
    cwd, written, size = result.stdout.splitlines()[1].split()
    assert cwd == "/tmp" and int(size) == SCRATCH_MB and SCRATCH_MB - 8 <= int(written) <= SCRATCH_MB
    assert not (Path("/tmp") / name).exists()  # the sandbox's /tmp is its own, never the host's
    assert run_python("print('room again')").stdout == "room again\n"  # each call gets a fresh, empty one


def test_oversized_files_fail() -> None:
    big = run_python(f"open('big', 'wb').write(b'0' * ({FILE_LIMIT_MB + 1} * 2**20))")
    assert "File too large" in big.stderr


def test_huge_output_is_truncated_with_a_marker() -> None:
    result = run_python("print('x' * 10**7)\nimport sys\nprint('e' * 10**6, file=sys.stderr)")
    assert result.exit_code == 0
    for text in (result.stdout, result.stderr):
        assert text.endswith(f"[output truncated after {OUTPUT_LIMIT} characters]")
        assert len(text) < OUTPUT_LIMIT + 100


def test_the_environment_carries_no_secrets(monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    result = run_python("import os\nprint(sorted(os.environ))")
    assert "HF_TOKEN" not in result.stdout and "HTTPS_PROXY" not in result.stdout
    assert os.environ["HF_TOKEN"] == "hf_secret"  # the caller's own environment is untouched
