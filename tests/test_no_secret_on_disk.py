"""No file we write holds a secret, of any type: the tokenized build, preflight's lines, crash files.

The end-to-end run (train with its tokenized build, export, verify) is tests/test_secrets.py's integration
test; these are the fast ones, each on the path where a token used to reach a file.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from arpo_train_sft import cli, secrets
from arpo_train_sft.config import load_run_config
from arpo_train_sft.errors import UserError
from arpo_train_sft.lf import tokenize
from arpo_train_sft.secrets import SECRET_ARGS_ENV, secret_args, split_secret_args
from arpo_train_sft.train.preflight import report
from arpo_train_sft.train.preflight.rows import FAIL, OK, Row
from arpo_train_sft.train.tokenized import build as tokenized_build
from arpo_train_sft.train.tokenized import tokenized_overrides

from .conftest import descendants, run_env, tiny_data_and_tokenizer

YAML_TOKEN = "hf_fakeYamlKeyToken0123456789abc"
OVERRIDE_TOKEN = "ms_fakeOverrideToken0123456789ab"
ENV_TOKEN = "hf_fakeEnvToken0123456789abcdefg"
FILE_TOKEN = "hf_fakeFileToken0123456789abcdef"
LIST_TOKENS = ["hf_fakeListElementOne012345", "hf_fakeListElementTwo678901"]
NUMBER_TOKEN = 918273645546372819
# Each way README lists: a config key, a key=value override, the environment, the HF token file; and the
# wrong types a user can give (a list, a number), which must be masked element by element.
STRINGS = {"yaml": f"hf_hub_token: {YAML_TOKEN}\n", "overrides": [f"ms_hub_token={OVERRIDE_TOKEN}"]}
WRONG_TYPES = {
    "yaml": f"hf_hub_token: {json.dumps(LIST_TOKENS)}\n",
    "overrides": [f"om_hub_token={NUMBER_TOKEN}"],
}
FAKES = (YAML_TOKEN, OVERRIDE_TOKEN, ENV_TOKEN, FILE_TOKEN, *LIST_TOKENS, str(NUMBER_TOKEN))


@pytest.fixture(autouse=True)
def no_remembered_configs(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(secrets, "_from_configs", set())


@pytest.fixture
def tokens_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment's tokens (a variable and the HF token file) and a cache under tmp_path."""
    token_file = tmp_path / "hf-token"
    token_file.write_text(FILE_TOKEN)
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    monkeypatch.setenv("HF_TOKEN_PATH", str(token_file))
    monkeypatch.setenv("ARPO_SFT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_config(tmp_path: Path, extra_yaml: str) -> Path:
    """A run over a tiny data file and tokenizer files, plus `extra_yaml`'s token keys."""
    data, model = tiny_data_and_tokenizer(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model_name_or_path: {model}\ndataset_dir: {data}\ndataset: rows\ntemplate: qwen\n"
        f"cutoff_len: 512\noutput_dir: {tmp_path / 'out'}\n{extra_yaml}"
    )
    return config


def leaks(root: Path) -> list[str]:
    """Every file under root holding a fake token's bytes, as `file: token`."""
    found = []
    for file in root.rglob("*"):
        if file.is_file():
            data = file.read_bytes()
            found += [f"{file}: {fake}" for fake in FAKES if fake.encode() in data]
    return found


def written_leaks(tmp_path: Path) -> list[str]:
    """Leaks in what the launcher writes (the cache, output_dir), not in the user's own config or token file."""
    return leaks(tmp_path / "cache") + leaks(tmp_path / "out")


def test_split_secret_args_keeps_every_type_out_of_the_args_and_hands_it_back():
    args = {
        "hf_hub_token": LIST_TOKENS,
        "om_hub_token": NUMBER_TOKEN,
        "ms_hub_token": None,
        "cutoff_len": 512,
    }
    plain, env = split_secret_args(args)
    assert plain == {"cutoff_len": 512}
    assert secret_args(env) == {"hf_hub_token": LIST_TOKENS, "om_hub_token": NUMBER_TOKEN}
    assert split_secret_args({"cutoff_len": 512}) == ({"cutoff_len": 512}, {})


@pytest.mark.parametrize("given", [STRINGS, WRONG_TYPES], ids=["strings", "list-and-number"])
def test_the_build_child_gets_tokens_from_its_environment_and_no_file_holds_one(
    tmp_path, tokens_everywhere, monkeypatch, given
):
    cfg = load_run_config(write_config(tmp_path, given["yaml"]), given["overrides"])
    seen: dict[str, Any] = {}

    def child(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        """Stands in for the build child: looks at every file at the moment the child starts (which is
        what a `kill -9` would leave), then writes a dataset and echoes a token into its log."""
        seen["leaks"] = written_leaks(tmp_path)
        seen["spec"] = json.loads(kwargs["input"])
        seen["secrets"] = secret_args(kwargs["env"])
        dataset = Path(seen["spec"]["path"])
        (dataset / "train").mkdir(parents=True)
        (dataset / "train" / "data.arrow").write_text("rows")
        echo = f"loading with token {seen['secrets']} {ENV_TOKEN} {FILE_TOKEN}\n"
        return subprocess.CompletedProcess(cmd, 0, echo + json.dumps({"rows": {"train": 1}, "encoder": "x"}))

    monkeypatch.setattr(tokenized_build.subprocess, "run", child)
    [override] = tokenized_overrides(cfg)
    assert seen["leaks"] == []
    assert not any(fake in json.dumps(seen["spec"]) for fake in FAKES)
    expected = {"hf_hub_token": YAML_TOKEN, "ms_hub_token": OVERRIDE_TOKEN}
    if given is WRONG_TYPES:
        expected = {"hf_hub_token": LIST_TOKENS, "om_hub_token": NUMBER_TOKEN}
    assert seen["secrets"] == expected  # the child still gets each token, as it was typed
    entry = Path(override.split("=", 1)[1]).parent
    assert "***" in (entry / "build.log").read_text()  # the echo was there, masked
    assert written_leaks(tmp_path) == []  # manifest (the key's inputs), build.log, last-used.json


def test_the_child_puts_the_environments_tokens_back_into_its_arguments(monkeypatch):
    given: dict[str, Any] = {}

    def fake_build(args: dict[str, Any], path: Path) -> tuple[dict[str, int], str]:
        given.update(args=args, env=os.environ.get(SECRET_ARGS_ENV))
        return {"train": 1}, "x"

    monkeypatch.setattr(tokenize, "build", fake_build)
    monkeypatch.setattr(
        sys, "stdin", io.StringIO(json.dumps({"args": {"cutoff_len": 8}, "path": "/nowhere"}))
    )
    monkeypatch.setenv(SECRET_ARGS_ENV, json.dumps({"hf_hub_token": YAML_TOKEN}))
    tokenize.main()
    assert given["args"] == {"cutoff_len": 8, "hf_hub_token": YAML_TOKEN}
    assert given["env"] is None  # gone from the environment its data workers inherit


KILLED_LAUNCHER = r"""
import sys
from pathlib import Path
from arpo_train_sft.config import load_run_config
from arpo_train_sft.train.tokenized import tokenized_overrides
tokenized_overrides(load_run_config(Path(sys.argv[1]), sys.argv[2:]))
"""


def test_a_launcher_killed_during_the_build_leaves_no_token(tmp_path):
    config = write_config(tmp_path, STRINGS["yaml"])
    env = run_env(ARPO_SFT_CACHE=str(tmp_path / "cache"), HF_TOKEN=ENV_TOKEN)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_LAUNCHER, str(config), *STRINGS["overrides"]],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not descendants(proc.pid):  # the build child runs: its arguments have been handed over
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert any((tmp_path / "cache" / "tokenized").glob(".building-*"))  # killed mid-build
    assert leaks(tmp_path / "cache") == []


def test_a_wrong_typed_token_is_masked_in_preflights_lines_table_and_json(tmp_path, capsys):
    config = write_config(tmp_path, WRONG_TYPES["yaml"])
    load_run_config(config, WRONG_TYPES["overrides"])  # as preflight loads it
    # The rows as lf/args.type_problems words them (it echoes the value it refuses).
    rows = [
        Row("values", FAIL, f"hf_hub_token: {LIST_TOKENS!r} is not a string", "set hf_hub_token to a string"),
        Row(
            "values", FAIL, f"om_hub_token: {NUMBER_TOKEN!r} is not a string", "set om_hub_token to a string"
        ),
        Row("model", OK, "fine"),
    ]
    for as_json in (False, True):
        with pytest.raises(UserError) as err:
            report(rows, as_json, "preflight")
        shown = capsys.readouterr().out + "\n".join(err.value.problems)
        assert len(err.value.problems) == 2 and "is not a string" in shown and "***" in shown
        assert [fake for fake in FAKES if fake in shown] == []


def test_a_crash_file_masks_a_wrong_typed_token(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    secrets.remember({"hf_hub_token": LIST_TOKENS, "om_hub_token": NUMBER_TOKEN})
    try:
        raise RuntimeError(f"could not use {LIST_TOKENS} or {NUMBER_TOKEN}")
    except RuntimeError as err:
        crash = cli.write_traceback(err)
    assert crash.is_relative_to(tmp_path / "home") and "***" in crash.read_text()
    assert leaks(tmp_path / "home") == []
