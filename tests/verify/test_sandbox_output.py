"""What the sandbox hands back: escape sequences neutralised on a terminal only, its own failures as one line."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arpo_train_sft import cli
from arpo_train_sft.errors import EXIT_USER_ERROR
from arpo_train_sft.verify import sandbox
from arpo_train_sft.verify.sandbox import (
    CODE_LIMIT_BYTES,
    NOT_RUN,
    SETUP_FAILED,
    isolation_problem,
    run_python,
    terminal_safe,
)

problem = isolation_problem()
live = pytest.mark.skipif(
    bool(problem and " namespace" in problem), reason=f"the host refuses namespaces: {problem}"
)
# A window title (OSC), a colour and a cursor move (CSI), a carriage return, a bell, C1's one-byte CSI.
HOSTILE = "title\x1b]0;pwned\x07 \x1b[31mred\x1b[0m\x1b[2J\rback\x9b1m\x7f end"
SHOWN = "title\\x1b]0;pwned\\x07 \\x1b[31mred\\x1b[0m\\x1b[2J\\x0dback\\x9b1m\\x7f end"
CLI = [sys.executable, "-c", "import sys; from arpo_train_sft import cli; sys.exit(cli.main(sys.argv[1:]))"]


def test_every_control_character_but_newline_and_tab_is_shown_escaped() -> None:
    assert terminal_safe(HOSTILE) == SHOWN
    kept = "line one\n\tindented: é, 日本, \\x1b as typed"
    assert terminal_safe(kept) == kept
    assert terminal_safe("".join(map(chr, range(0x20)))) == "".join(
        "\n" if c == 10 else "\t" if c == 9 else f"\\x{c:02x}" for c in range(0x20)
    )


def _on_a_terminal(argv: list[str]) -> bytes:
    """Everything `argv` writes to a pseudo-terminal as its stdout and stderr."""
    controller, terminal = pty.openpty()
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal) as proc:
        os.close(terminal)
        seen, give_up = b"", time.monotonic() + 60
        while time.monotonic() < give_up:
            if select.select([controller], [], [], 1)[0]:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: every end of the terminal closed
                    break
                if not chunk:
                    break
                seen += chunk
        proc.wait(10)
    os.close(controller)
    return seen


@live
def test_a_terminal_sees_the_escapes_escaped_and_a_pipe_the_exact_bytes(tmp_path: Path) -> None:
    snippet = tmp_path / "hostile.py"
    snippet.write_text(f"print({HOSTILE!r})\n", encoding="utf-8")
    shown = _on_a_terminal([*CLI, "sandbox", "run", str(snippet)])
    assert b"\x1b" not in shown and b"\x07" not in shown and b"\xc2\x9b" not in shown, shown
    assert SHOWN.encode() in shown
    piped = subprocess.run([*CLI, "sandbox", "run", str(snippet)], capture_output=True, check=True)
    assert piped.stdout == (HOSTILE + "\n").encode()  # what verify's report and the model get, unchanged
    assert run_python(snippet.read_text()).tool_output() == HOSTILE


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "0", "1e9"])
def test_a_bad_timeout_is_one_line_and_exit_2(value: str, tmp_path: Path, capsys) -> None:
    snippet = tmp_path / "ok.py"
    snippet.write_text("print(1)")
    assert cli.main(["sandbox", "run", str(snippet), f"--timeout={value}"]) == EXIT_USER_ERROR
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "--timeout" in err and "at most 3600" in err, err
    with pytest.raises(ValueError, match="timeout_s"):
        run_python("print(1)", timeout_s=float(value))  # the library refuses it too, before starting anything


@pytest.mark.parametrize("source", ["huge", "/dev/zero"])
def test_a_source_over_the_limit_is_one_line_and_exit_2(source: str, tmp_path: Path, capsys) -> None:
    path = Path(source) if source.startswith("/") else tmp_path / "huge.py"
    if not source.startswith("/"):
        path.write_text("x = 1\n" * (CODE_LIMIT_BYTES // 6 + 1))
    started = time.monotonic()
    assert cli.main(["sandbox", "run", str(path)]) == EXIT_USER_ERROR
    out, err = capsys.readouterr()
    limit = "over the sandbox's 1,048,576-byte limit for one snippet; pass a smaller file"
    assert out == "" and err == f"arpo-sft: error: {path}: {limit}\n"
    assert time.monotonic() - started < 10  # an endless input is read only up to the limit


def test_model_written_code_over_the_limit_is_refused_in_one_line_without_running() -> None:
    result = run_python("#" * (CODE_LIMIT_BYTES + 1), probe=lambda: None)
    assert result.exit_code == NOT_RUN and result.pid == 0  # no process was started
    assert (
        result.tool_output()
        == "sandbox: the code is 1,048,577 bytes, over the 1,048,576-byte limit; nothing was run"
    )


@live
@pytest.mark.parametrize("code", ["-" * 100_000 + "1", "x = " + "1+" * 300_000 + "1", "print(1)\0"])
def test_code_too_deep_for_the_parser_gives_one_line_not_the_sandboxs_traceback(code: str) -> None:
    result = run_python(code)
    (line,) = result.tool_output().splitlines()  # e.g. "RecursionError: maximum recursion depth exceeded ..."
    assert result.exit_code == 1 and line.split(":")[0] in ("MemoryError", "RecursionError", "SyntaxError"), (
        line
    )


def test_the_supervisor_failing_is_one_line_not_its_traceback(tmp_path: Path, monkeypatch) -> None:
    broken = tmp_path / "child.py"  # stands in for the supervisor script: it dies before writing its status
    broken.write_text("def main():\n    raise ValueError('Invalid value NaN (not a number)')\nmain()\n")
    monkeypatch.setattr(sandbox.child, "__file__", str(broken))
    result = run_python("print(1)", probe=lambda: None)
    assert result.exit_code == SETUP_FAILED
    assert result.tool_output() == "sandbox: failed: ValueError: Invalid value NaN (not a number)"
