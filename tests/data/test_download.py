"""`arpo-sft data download`: the real huggingface_hub code path against a fake hub on 127.0.0.1, and --from-file."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from arpo_train_sft.data import download as data_download
from arpo_train_sft.data.download import FILE_NAME, PROVENANCE_SUFFIX, REPO_ID
from arpo_train_sft.errors import UserError

COMMIT = "0123456789abcdef0123456789abcdef01234567"
ROW = {
    "system": "s",
    "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "<answer>a</answer>"}],
}
CONTENT = "".join(json.dumps(ROW) + "\n" for _ in range(3)).encode()
SHA = hashlib.sha256(CONTENT).hexdigest()
RESOLVE = f"/datasets/{REPO_ID}/resolve/"

# What cli.main does around a command, without loading every other subcommand. huggingface_hub reads
# HF_HOME, HF_ENDPOINT and HF_HUB_OFFLINE when it is imported, so every hub case runs in its own process.
MAIN = """
import argparse, sys
from arpo_train_sft.data import download as data_download
from arpo_train_sft.errors import UserError
parser = argparse.ArgumentParser(prog="arpo-sft data")
data_download.add_parser(parser.add_subparsers())
args = parser.parse_args(sys.argv[1:])
try:
    sys.exit(args.func(args))
except UserError as err:
    for line in err.problems:
        print(f"arpo-sft: error: {line}", file=sys.stderr)
    sys.exit(2)
"""


class FakeHub(BaseHTTPRequestHandler):
    """Answers HEAD/GET on /resolve/ the way the hub does, keyed by revision; records every request."""

    def do_HEAD(self) -> None:
        self.answer(send_body=False)

    def do_GET(self) -> None:
        self.answer(send_body=True)

    def answer(self, send_body: bool) -> None:
        self.server.seen.append((self.command, self.path))
        revision, _, name = self.path.removeprefix(RESOLVE).partition("/")
        found = {"X-Repo-Commit": COMMIT, "ETag": f'"{SHA}"', "Content-Length": str(len(CONTENT))}
        status, headers = {
            "main": (200, found),
            "huge": (200, {**found, "X-Linked-Size": str(10**18)}),
            "gated": (403, {"X-Error-Code": "GatedRepo"}),
            "private": (401, {"X-Error-Code": "RepoNotFound"}),
            "proxy": (200, {"Content-Length": str(len(CONTENT))}),  # a web server that is not a hub
        }.get(revision, (404, {"X-Error-Code": "RevisionNotFound"}))
        if name != FILE_NAME:
            status, headers = 404, {"X-Error-Code": "EntryNotFound"}
        self.send_response(status)
        for key, value in {"Content-Length": "0", **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        if send_body and status == 200:
            self.wfile.write(CONTENT)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def hub() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    server.seen = []
    server.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def hub_env(home: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without its Hugging Face settings, with a private HF_HOME."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGINGFACE_")) and k != "TRANSFORMERS_OFFLINE"
    }
    # A proxy from the caller's environment must not see requests meant for 127.0.0.1.
    env.update(HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    env.update(extra)
    return env


def download(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    # The timeout only stops a hang; without the quick probe a closed port costs hf_hub_download ~25 s of retries.
    return subprocess.run(
        [sys.executable, "-c", MAIN, "download", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def gets(hub: ThreadingHTTPServer) -> int:
    return sum(method == "GET" for method, _ in hub.seen)


def provenance(folder: Path) -> dict:
    return json.loads((folder / (FILE_NAME + PROVENANCE_SUFFIX)).read_text())


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("arpo-sft: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def test_download_then_reuse_the_cache_then_work_offline(hub, tmp_path):
    env = hub_env(tmp_path / "hf", HF_ENDPOINT=hub.url)
    first = download(["--out", "data"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    dest = tmp_path / "data" / FILE_NAME
    assert dest.read_bytes() == CONTENT
    record = provenance(tmp_path / "data")
    assert (record["repo"], record["revision"], record["commit"]) == (REPO_ID, "main", COMMIT)
    assert (record["sha256"], record["size"], record["rows"]) == (SHA, len(CONTENT), 3)
    assert COMMIT in first.stdout and "3 rows" in first.stdout
    assert sorted(p.name for p in dest.parent.iterdir()) == [FILE_NAME, FILE_NAME + PROVENANCE_SUFFIX]
    assert gets(hub) == 1
    assert list((tmp_path / "hf" / "hub").glob(f"datasets--*/snapshots/{COMMIT}/{FILE_NAME}"))

    again = download(["--out", "data"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already up to date" in again.stdout
    assert gets(hub) == 1  # the cache answered; the hub was only asked for metadata

    asked = len(hub.seen)
    offline = download(["--out", "elsewhere"], {**env, "HF_HUB_OFFLINE": "1"}, tmp_path)
    assert offline.returncode == 0, offline.stderr
    assert (tmp_path / "elsewhere" / FILE_NAME).read_bytes() == CONTENT
    assert provenance(tmp_path / "elsewhere")["commit"] == COMMIT
    assert "HF_HUB_OFFLINE is set" in offline.stdout
    assert len(hub.seen) == asked


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("case", ["offline with an empty cache", "closed port", "server that never answers"])
def test_no_hub_and_no_cache_fails_at_once_with_the_manual_steps(hub, tmp_path, case):
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = {"closed port": closed_port(), "server that never answers": silent.getsockname()[1]}.get(case)
        env = hub_env(tmp_path / "hf", HF_ENDPOINT=f"http://127.0.0.1:{port}" if port else hub.url)
        if case == "offline with an empty cache":
            env["HF_HUB_OFFLINE"] = "1"
        if case == "server that never answers":
            env["HF_HUB_ETAG_TIMEOUT"] = "1"  # the user's bound is honoured; the default is 10 s
        asked = len(hub.seen)
        result = download([], env, tmp_path)
    why = f"cannot reach http://127.0.0.1:{port}" if port else "HF_HUB_OFFLINE is set"
    assert_one_line_error(result, why, f"datasets/{REPO_ID}", "arpo-sft data download --from-file PATH")
    assert "Retrying" not in result.stderr  # huggingface_hub's backoff (25 s to minutes) never started
    assert len(hub.seen) == asked
    assert not (tmp_path / "dataset_info").exists()


@pytest.mark.parametrize(
    ("revision", "needles"),
    [
        ("no-such-branch", ["--revision no-such-branch", "no such branch, tag or commit"]),
        ("gated", ["is gated", "HF_TOKEN", "hf auth login"]),
        ("private", ["HTTP 401", "HF_TOKEN", "hf auth login"]),
        ("proxy", ["does not answer like a Hugging Face hub", "arpo-sft data download --from-file PATH"]),
        ("huge", ["not enough disk space", "needs 1000000.0 TB", "HF_HOME"]),
    ],
)
def test_hub_refusals_are_one_line_errors(hub, tmp_path, revision, needles):
    env = hub_env(tmp_path / "hf", HF_ENDPOINT=hub.url)
    before = gets(hub)
    result = download(["--revision", revision, "--out", "data"], env, tmp_path)
    line = assert_one_line_error(result, *needles)
    if revision == "huge":
        assert str(tmp_path / "hf" / "hub") in line
    assert gets(hub) == before
    assert not (tmp_path / "data").exists()


def run_in_process(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    data_download.add_parser(parser.add_subparsers())
    args = parser.parse_args(["download", *argv])
    return args.func(args)


@pytest.mark.parametrize(
    ("text", "rows"), [(CONTENT, "3 rows"), (b"  [" + CONTENT[:-1] + b"]\n", "not counted")]
)
def test_from_file_copies_and_records_the_source(tmp_path, capsys, text, rows):
    src = tmp_path / "downloads" / "copy.jsonl"
    src.parent.mkdir()
    src.write_bytes(text)
    out = tmp_path / "out"
    assert run_in_process("--from-file", str(src), "--out", str(out)) == 0
    assert (out / FILE_NAME).read_bytes() == text
    record = provenance(out)
    assert record["source"] == str(src.resolve()) and "repo" not in record
    assert (record["sha256"], record["size"]) == (hashlib.sha256(text).hexdigest(), len(text))
    assert sorted(p.name for p in out.iterdir()) == [FILE_NAME, FILE_NAME + PROVENANCE_SUFFIX]
    assert rows in capsys.readouterr().out

    assert run_in_process("--from-file", str(src), "--out", str(out)) == 0
    assert "already up to date" in capsys.readouterr().out


def test_from_file_refuses_what_is_not_json(tmp_path):
    src = tmp_path / "page.jsonl"
    src.write_text("<!DOCTYPE html><html>Sign in</html>")
    with pytest.raises(UserError) as err:
        run_in_process("--from-file", str(src), "--out", str(tmp_path / "out"))
    assert str(src) in err.value.problems[0] and "<!DOCTYPE html>" in err.value.problems[0]
    assert not (tmp_path / "out").exists()


def test_from_file_keeps_a_different_file_unless_forced(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / FILE_NAME).write_text('{"old": true}\n')
    src = tmp_path / "new.jsonl"
    src.write_bytes(CONTENT)
    with pytest.raises(UserError) as err:
        run_in_process("--from-file", str(src), "--out", str(out))
    assert "--force" in err.value.problems[0] and str(out / FILE_NAME) in err.value.problems[0]
    assert (out / FILE_NAME).read_text() == '{"old": true}\n'

    assert run_in_process("--from-file", str(src), "--out", str(out), "--force") == 0
    assert (out / FILE_NAME).read_bytes() == CONTENT


def test_from_file_and_revision_exclude_each_other(tmp_path):
    with pytest.raises(SystemExit):
        run_in_process("--from-file", str(tmp_path / "x.jsonl"), "--revision", "main")


def test_from_file_reads_gzip_and_stdin_once(tmp_path, capsys, monkeypatch):
    import gzip
    import io

    packed = tmp_path / "copy.jsonl.gz"
    packed.write_bytes(gzip.compress(CONTENT))
    out = tmp_path / "out"
    assert run_in_process("--from-file", str(packed), "--out", str(out)) == 0
    assert (out / FILE_NAME).read_bytes() == CONTENT and provenance(out)["rows"] == 3
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(packed.read_bytes())))
    assert run_in_process("--from-file", "-", "--out", str(out)) == 0
    assert "already up to date" in capsys.readouterr().out
    assert (provenance(out)["source"], provenance(out)["sha256"]) == ("-", SHA)


@pytest.mark.parametrize("which", [FILE_NAME, FILE_NAME + PROVENANCE_SUFFIX])
def test_from_file_that_is_an_output_is_refused(tmp_path, which):
    out = tmp_path / "out"
    out.mkdir()
    src = out / which
    src.write_bytes(CONTENT)
    link = tmp_path / "link.jsonl"
    link.symlink_to(src)
    for given in (src, link):
        with pytest.raises(UserError) as err:
            run_in_process("--from-file", str(given), "--out", str(out))
        (line,) = err.value.problems
        assert f"--out's {which} {src} is the same file as the input --from-file {given}" in line
    assert src.read_bytes() == CONTENT and sorted(p.name for p in out.iterdir()) == [which]
