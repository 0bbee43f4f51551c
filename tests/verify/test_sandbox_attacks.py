"""Attacks on the python sandbox's isolation: host files, every kind of socket, escaping processes, privileges.

Each snippet is what hostile model-written code would try; each test checks the outcome from the host side
too (the test's own listener never accepts, no process with the snippet's marker is left in /proc).
The socket families a network namespace leaves open, and kernel keyrings, are in test_sandbox_seccomp.py.
"""

from __future__ import annotations

import ast
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from arpo_train_sft.verify.sandbox import IsolationUnavailable, isolation_problem, run_python, visible_paths

problem = isolation_problem()
pytestmark = pytest.mark.skipif(
    bool(problem and " namespace" in problem), reason=f"the host refuses namespaces: {problem}"
)
SIMULATED = "mount namespace: Operation not permitted (simulated by the test)"


def _processes_with(marker: str) -> list[int]:
    """Host processes whose command line holds `marker`, read from /proc independently of the sandbox."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    yield server
    with pytest.raises(BlockingIOError):
        server.accept()  # nothing ever reached the test's own listener
    server.close()


def test_root_only_files_and_the_callers_token_stay_unreadable(tmp_path: Path) -> None:
    token = Path.home() / ".cache" / "huggingface" / "token"
    created = not token.exists()  # a real token stays as it is: the snippet must not read it either
    if created:
        token.parent.mkdir(parents=True, exist_ok=True)
        token.write_text("hf_fake_token_for_the_sandbox_test")
    secret = tmp_path / "root-only"
    secret.write_text("root-only secret")
    secret.chmod(0o600)
    try:
        code = "".join(
            f"try:\n    print(open({str(path)!r}).read())\nexcept OSError as err:\n    print(type(err).__name__)\n"
            for path in ("/etc/shadow", token, secret, f"/proc/1/root{token}")
        )
        result = run_python(code)
        assert result.stdout.split() == ["FileNotFoundError"] * 4, result.tool_output()
    finally:
        if created:
            token.unlink()


def test_the_root_holds_only_the_interpreter_and_system_libraries_read_only() -> None:
    code = "import os, sys\nprint(sorted(os.listdir('/')))\nopen(os.path.join(sys.prefix, 'planted'), 'w')"
    result = run_python(code)
    assert set(ast.literal_eval(result.stdout)) <= {
        "bin",
        "dev",
        "etc",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "sbin",
        "tmp",
        "usr",
        *(p.split("/")[1] for p in visible_paths()),
    }
    assert "proc" not in result.stdout and "home" not in result.stdout
    assert "Read-only file system" in result.stderr and not Path(sys.prefix, "planted").exists()
    assert Path(sys.base_prefix).resolve().as_posix() in visible_paths()


def test_no_privilege_is_left_to_the_snippet() -> None:
    code = (
        "import ctypes, os\n"
        "header, data = (ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()\n"
        "ctypes.CDLL(None).capget(header, data)\n"
        "print((list(data), os.getresuid(), os.getgroups(), os.getpid()))\n"
    )
    capabilities, resuid, groups, pid = ast.literal_eval(run_python(code).stdout)
    assert capabilities == [0] * 6  # the old sandbox kept CAP_DAC_READ_SEARCH and read /etc/shadow
    assert 0 not in resuid and groups == []
    assert pid == 2  # its own PID namespace: init is 1, the snippet 2, and no host process is visible


def test_python_sockets_reach_nothing(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    code = (
        "import socket\n"
        f"for address in [('127.0.0.1', {port}), ('1.1.1.1', 53), ('::1', {port})]:\n"
        "    try:\n"
        "        socket.create_connection(address, timeout=3)\n"
        "        print('connected', address)\n"
        "    except OSError as err:\n"
        "        print('failed', type(err).__name__)\n"
    )
    result = run_python(code)
    assert result.stdout.count("failed") == 3 and "connected" not in result.stdout, result.tool_output()


def test_ctypes_sockets_reach_nothing(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    code = (
        "import ctypes, socket, struct\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)\n"
        f"address = struct.pack('=HH4s8x', socket.AF_INET, socket.htons({port}), bytes([127, 0, 0, 1]))\n"
        "print(fd >= 0, libc.connect(fd, address, len(address)), ctypes.get_errno())\n"
    )
    created, connected, errno = run_python(code).stdout.split()
    assert created == "True" and connected == "-1" and int(errno) != 0  # the socket exists, leads nowhere


def test_unix_sockets_of_the_host_are_out_of_reach(tmp_path: Path) -> None:
    servers = []
    for address in (str(tmp_path / "host.sock"), f"\0arpo-sandbox-test-{uuid.uuid4().hex}"):
        server = socket.socket(socket.AF_UNIX)
        server.bind(address)
        server.listen()
        server.setblocking(False)
        servers.append(server)
    code = "".join(
        f"try:\n    socket.socket(socket.AF_UNIX).connect({s.getsockname()!r})\n    print('connected')\n"
        "except OSError as err:\n    print(type(err).__name__)\n"
        for s in servers
    )
    result = run_python("import socket\n" + code)
    assert "connected" not in result.stdout and len(result.stdout.split()) == 2, result.tool_output()
    for server in servers:
        with pytest.raises(BlockingIOError):
            server.accept()
        server.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed on this host")
def test_curl_reaches_nothing(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    code = (
        "import subprocess\n"
        f"done = subprocess.run(['curl', '-sS', '--max-time', '3', 'http://127.0.0.1:{port}/'], "
        "capture_output=True, text=True)\n"
        "print(done.returncode, done.stderr.strip())\n"
    )
    result = run_python(code)
    assert result.exit_code == 0 and not result.stdout.startswith("0 "), result.tool_output()
    assert "Failed to connect" in result.stdout  # curl ran and was refused, it was not merely missing


@pytest.mark.parametrize("ending", ["print('parent done')", "while True:\n    pass"])
def test_a_setsid_grandchild_dies_with_the_call(ending: str) -> None:
    marker = f"arpo-sandbox-escape-{uuid.uuid4().hex}"
    code = (
        "import subprocess, sys\n"
        f"code = 'import time\\ntime.sleep(60)'\n"
        f"child = subprocess.Popen([sys.executable, '-c', code, '{marker}'], start_new_session=True)\n"
        "print('spawned', child.poll() is None)\n"
        f"{ending}\n"
    )
    result = run_python(code, timeout_s=3)
    assert result.stdout.startswith("spawned True"), result.tool_output()
    assert _processes_with(marker) == []
    time.sleep(0.5)
    assert _processes_with(marker) == []  # nor did anything come back later


def test_without_isolation_it_refuses_and_says_why() -> None:
    with pytest.raises(IsolationUnavailable, match="mount namespace: Operation not permitted") as caught:
        run_python("print('never runs')", probe=lambda: SIMULATED)
    assert caught.value.exit_code == 3 and "--allow-weak-sandbox" in str(caught.value)


@pytest.mark.parametrize(
    "ending", ["print(os.getuid() != 0)", "print(os.getuid() != 0)\nwhile True:\n    pass"]
)
def test_the_weak_mode_runs_only_when_accepted_and_still_limits_what_it_can(ending: str) -> None:
    # Weak mode as root runs the snippet as nobody, which may not read this interpreter's files: the code
    # uses only modules the child imported before dropping root.
    marker = f"arpo-sandbox-escape-{uuid.uuid4().hex}"
    code = (
        "import os, socket\n"
        "try:\n    socket.socket(socket.AF_INET, socket.SOCK_STREAM)\nexcept OSError as err:\n"
        "    print(type(err).__name__)\n"
        "if os.fork() == 0:\n    os.setsid()\n"
        f"    os.execv('/bin/sleep', ['sleep', '60', '{marker}'])\n"
        f"{ending}\n"
    )
    result = run_python(code, timeout_s=3, allow_weak=True, probe=lambda: SIMULATED)
    assert result.mode == "weak" and result.stdout.split() == ["PermissionError", "True"], result.stdout
    assert _processes_with(marker) == []  # a subreaper collected and killed it
