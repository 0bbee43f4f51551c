"""Both ends of the preflight child: one process per environment that answers each request in a fork.

Importing torch, transformers, DeepSpeed and LLaMA-Factory costs about ten seconds of CPU, and that is
most of what a preflight costs. A process that runs preflight more than once (the test suite, a notebook,
`train` after `preflight`) pays it once: the child imports the stack, then forks a fresh copy of itself for
each request, so no request sees what an earlier one set up (the process group, DeepSpeed's global
config, accelerate's state) and the answer is the one a fresh process would give.

Forking after CUDA is initialised breaks CUDA in the fork, and what importing the GPU packages touches is
not ours to know; so where a GPU is visible each request gets a fresh process, as a launch needs only one.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

RESULT_MARK = "ARPO_PREFLIGHT_RESULT "
CRASH_MARK = "ARPO_PREFLIGHT_CRASH "
MODULE = "arpo_train_sft.train.preflight.child"
SERVE_FLAG = "--serve"
TAIL_BYTES = 4096
# A fresh port for each request's process group; pytest's name of the running test, set for every test.
PER_REQUEST = ("MASTER_PORT", "PYTEST_CURRENT_TEST")


class NoAnswer(Exception):
    """The child crashed or hung; the message is one line for the preflight table."""


# ---- the child's side ----------------------------------------------------------------------------------


def serve(answer: Callable[[dict[str, Any]], dict[str, Any]], prepare: Callable[[], None]) -> None:
    """Import the stack (`prepare`), then answer each request line on stdin in a fork, until EOF.

    Only marked lines reach stdout, one for each request: what libraries print goes to stderr, so the
    launcher reads exactly one line per question.
    """
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    prepare()
    for line in sys.stdin:
        if line.strip():
            print(_answer_in_fork(answer, json.loads(line)), file=out, flush=True)


def _answer_in_fork(answer: Callable[[dict[str, Any]], dict[str, Any]], request: dict[str, Any]) -> str:
    read_end, write_end = os.pipe()
    with tempfile.TemporaryFile() as errors:
        pid = os.fork()
        if pid == 0:  # the fork: a fresh state for this request, its stderr kept for a crash's last line
            code = 1
            try:
                os.close(read_end)
                os.dup2(errors.fileno(), 1), os.dup2(errors.fileno(), 2)
                os.environ.clear()  # exactly the launcher's environment for this request
                os.environ.update(request.pop("env"))
                os.chdir(request.pop("cwd", os.getcwd()))
                with os.fdopen(write_end, "w") as out:
                    out.write(json.dumps(answer(request)))
                code = 0
            except BaseException:  # noqa: BLE001  (our bug or the stack's: its last line is the answer)
                traceback.print_exc()
            finally:  # never back into the serving loop; no atexit: the parent's state is not ours to close
                sys.stderr.flush()
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end) as result:
            text = result.read()
        status = os.waitpid(pid, 0)[1]
        if text and os.waitstatus_to_exitcode(status) == 0:
            return RESULT_MARK + text
        return CRASH_MARK + json.dumps(
            {"exit": os.waitstatus_to_exitcode(status), "tail": _last_line(errors)}
        )


def _last_line(file: IO[bytes]) -> str:
    file.seek(max(0, file.seek(0, os.SEEK_END) - TAIL_BYTES))
    return (file.read().decode("utf-8", "replace").strip().splitlines() or ["no output"])[-1]


def answer_once(answer: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Answer the one request on stdin in this process (where a GPU is visible)."""
    request = json.loads(sys.stdin.read())
    request.pop("env", None), request.pop("cwd", None)  # this process was started with them
    print(RESULT_MARK + json.dumps(answer(request)), flush=True)


# ---- the launcher's side -------------------------------------------------------------------------------


@dataclass
class _Server:
    proc: subprocess.Popen[str]
    errors: IO[bytes]  # the server's own stderr: the import's traceback if the stack fails to load


_servers: dict[tuple[object, ...], _Server] = {}


def ask(env: dict[str, str], request: dict[str, Any], timeout_s: float, fork: bool) -> dict[str, Any]:
    """The child's answer to `request` in `env`; NoAnswer with the reason if it crashed or hung.

    Each fork runs in exactly `env` and the launcher's working directory. The serving child is picked by
    the interpreter and `env` less PER_REQUEST, the variables that change from call to call and that
    nothing reads while the stack is imported.
    """
    request = {**request, "env": env, "cwd": os.getcwd()}
    if not fork:
        return _ask_fresh(env, request, timeout_s)
    key = (sys.executable, *sorted((k, v) for k, v in env.items() if k not in PER_REQUEST))
    server = _servers.get(key)
    if server is None or server.proc.poll() is not None:
        stop_all()  # one serving child at a time: each holds the whole stack in memory (about 1 GB)
        server = _servers[key] = _start(env)
    try:
        server.proc.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
        server.proc.stdin.flush()  # type: ignore[union-attr]
        line = _marked_line(server, timeout_s)
    except NoAnswer:
        _stop(server)
        del _servers[key]
        raise
    except BrokenPipeError:  # it ended before reading: the stack failed to import
        _stop(server)
        del _servers[key]
        raise NoAnswer(
            f"the check itself crashed (exit {server.proc.returncode}): {_last_line(server.errors)}"
        ) from None
    return _decode(line)


def _ask_fresh(env: dict[str, str], request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    try:
        proc = subprocess.run(
            [sys.executable, "-m", MODULE],
            input=json.dumps(request),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise NoAnswer(f"LLaMA-Factory's parser did not answer in {timeout_s:g} s") from None
    marked = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if not marked:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise NoAnswer(f"the check itself crashed (exit {proc.returncode}): {tail}")
    return _decode(marked[-1])


def _decode(line: str) -> dict[str, Any]:
    if line.startswith(CRASH_MARK):
        crash = json.loads(line[len(CRASH_MARK) :])
        raise NoAnswer(f"the check itself crashed (exit {crash['exit']}): {crash['tail']}")
    return json.loads(line[len(RESULT_MARK) :])


def _start(env: dict[str, str]) -> _Server:
    errors = tempfile.TemporaryFile()  # noqa: SIM115  (open while the server lives; closed with the process)
    proc = subprocess.Popen(
        [sys.executable, "-m", MODULE, SERVE_FLAG],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
        start_new_session=True,  # a hung fork is killed with its group
    )
    return _Server(proc, errors)


def _marked_line(server: _Server, timeout_s: float) -> str:
    """The next line from `server`, which writes only marked lines; NoAnswer on its exit or a timeout."""
    stdout = server.proc.stdout
    assert stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            raise NoAnswer(f"LLaMA-Factory's parser did not answer in {timeout_s:g} s")
    line = stdout.readline()
    if not line:
        code = server.proc.wait()
        raise NoAnswer(f"the check itself crashed (exit {code}): {_last_line(server.errors)}")
    return line.rstrip("\n")


def _stop(server: _Server) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait()


def stop_all() -> None:
    """End every serving child (at exit; EOF on their stdin would end them too)."""
    for server in _servers.values():
        if server.proc.poll() is None:
            server.proc.stdin.close()  # type: ignore[union-attr]
            try:
                server.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _stop(server)
    _servers.clear()


atexit.register(stop_all)
