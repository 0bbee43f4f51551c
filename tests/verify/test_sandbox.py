"""The python sandbox: ARPO's output rules, and that time, memory, processes, network and files stay bounded."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from arpo_train_sft.verify.sandbox import OUTPUT_LIMIT, default_network, run_python
from arpo_train_sft.verify.sandbox_child import FILE_LIMIT_MB

# Generous: these only guard against a sandbox that waits for a runaway snippet to finish by itself.
SLACK_S = 10


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


def test_an_endless_loop_is_stopped_at_the_wall_clock_timeout() -> None:
    start = time.monotonic()
    result = run_python("print('started')\nwhile True:\n    pass", timeout_s=2)
    assert result.timed_out and "timeout" in (result.killed_reason or "")
    assert time.monotonic() - start < 2 + SLACK_S
    assert result.stdout == "started\n"  # unbuffered: what ran before the kill is kept
    assert "timeout" in result.tool_output()


def test_cpu_time_is_limited_apart_from_the_wall_clock() -> None:
    result = run_python("while True:\n    pass", timeout_s=60, cpu_s=1)
    assert not result.timed_out and "CPU" in (result.killed_reason or "")


def test_allocating_50_gb_fails_with_memory_error_inside_the_sandbox() -> None:
    result = run_python("data = bytearray(50 * 2**30)\nprint(len(data))", memory_mb=512)
    assert result.exit_code == 1 and "MemoryError" in result.stderr and not result.timed_out
    assert run_python("print('still fine')").stdout == "still fine\n"


def test_a_fork_bomb_ends_within_the_timeout_and_leaves_no_process_behind() -> None:
    start = time.monotonic()
    result = run_python("import os\nwhile True:\n    os.fork()", timeout_s=5)
    assert time.monotonic() - start < 5 + SLACK_S
    assert "BlockingIOError" in result.stderr  # the process limit stopped it, not only the timeout
    assert _survivors(result.pid) == []


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    yield server
    server.close()


@pytest.mark.parametrize("network", ["auto", "block"])
def test_the_network_is_unreachable(network: str, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    code = (
        "import socket\n"
        f"for address in [('127.0.0.1', {port}), ('1.1.1.1', 53)]:\n"
        "    try:\n"
        "        socket.create_connection(address, timeout=3)\n"
        "        print('connected', address)\n"
        "    except OSError as err:\n"
        "        print('failed', type(err).__name__)\n"
    )
    result = run_python(code, network=network)
    assert result.stdout.count("failed") == 2 and "connected" not in result.stdout, result.stdout
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing ever reached the test's own listener
    assert result.network == (default_network() if network == "auto" else "block")


def test_files_land_in_a_temporary_directory_that_is_removed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_python("import os\nopen('notes.txt', 'w').write('hi')\nprint(os.getcwd())")
    workdir = Path(result.stdout.strip())
    assert result.exit_code == 0 and workdir != tmp_path and workdir.name == "work"
    assert not workdir.exists() and not workdir.parent.exists()
    assert not (tmp_path / "notes.txt").exists()


def test_writes_outside_the_sandbox_and_oversized_files_fail() -> None:
    outside = run_python("open('/etc/arpo-sandbox-probe', 'w')")
    assert "PermissionError" in outside.stderr and not Path("/etc/arpo-sandbox-probe").exists()
    big = run_python(f"open('big', 'wb').write(b'0' * ({FILE_LIMIT_MB + 1} * 2**20))")
    assert "File too large" in big.stderr


def test_the_snippet_never_runs_as_root() -> None:
    assert run_python("import os\nprint(os.getuid())").stdout.strip() != "0"


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
