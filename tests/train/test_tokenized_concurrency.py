"""Two launchers on one tokenized-cache key at once: they take turns, and an entry in use is never deleted.

Each launcher is a real process running the launcher's own `tokenized_overrides` on real files and locks.
In the fast tests only LLaMA-Factory's preprocessing is replaced, by a build that writes real dataset files
and then waits for the test's go-ahead: that is how the two launchers are made to overlap at a known point,
in seconds. The integration test runs two real builds of the demo data and starts the second launcher once
the first one's build directory exists (each build takes about 30 s on 2 cores, so they overlap).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arpo_train_sft.config import RunConfig
from arpo_train_sft.lf.tokenize import data_arg_names
from arpo_train_sft.train.tokenized import DATASET, MANIFEST, cache_root, check_entry
from arpo_train_sft.train.tokenized.key import build_args, cache_key, key_inputs

from ..conftest import DEMO_OVERRIDES, run_env, tiny_data_and_tokenizer

# One launcher: hand out the key's entry, then stay alive as a launcher does while its ranks train.
LAUNCHER = r"""
import json, sys, time
from pathlib import Path
from arpo_train_sft.lf.tokenize import data_arg_names
from arpo_train_sft.config import RunConfig
from arpo_train_sft.train.tokenized import build, tokenized_overrides

config, control, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

def wait_for(path):
    while not path.exists():
        time.sleep(0.02)

def slow_build(path, args):
    (control / f"building-{name}").touch()
    wait_for(control / f"finish-{name}")
    (path / "train").mkdir(parents=True)
    (path / "dataset_dict.json").write_text('{"splits": ["train"]}')
    (path / "train" / "data-00000-of-00001.arrow").write_bytes(name.encode() * 50000)
    return {"rows": {"train": 1}, "encoder": "fake"}

build.run_build = slow_build
cfg = RunConfig(path=config, overrides=(), values=json.loads(config.read_text()))
print(tokenized_overrides(cfg)[0], flush=True)
(control / f"handed-{name}").touch()
wait_for(control / f"exit-{name}")
"""

TIMEOUT_S = 30


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run over a tiny data file and tokenizer files, its cache in tmp_path (nothing is tokenized)."""
    data, model = tiny_data_and_tokenizer(tmp_path)
    values = {
        "model_name_or_path": str(model),
        "dataset_dir": str(data),
        "dataset": "rows",
        "template": "qwen",
        "cutoff_len": 512,
        "output_dir": str(tmp_path / "out"),
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(values))
    monkeypatch.setenv("ARPO_SFT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "control").mkdir()
    return path


class Launcher:
    """One launcher process, steered through marker files in `control`."""

    def __init__(self, config: Path, name: str) -> None:
        self.control, self.name = config.parent / "control", name
        self.out = self.control / f"{name}.out"
        with self.out.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", LAUNCHER, str(config), str(self.control), name],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=run_env(),
            )

    def wait_for(self, marker: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not (self.control / f"{marker}-{self.name}").exists():
            assert self.proc.poll() is None or marker == "handed", self.said()
            assert time.monotonic() < deadline, f"{self.name} never reached {marker}: {self.said()}"
            time.sleep(0.02)

    def wait_until_said(self, text: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while text not in self.said():
            assert self.proc.poll() is None, self.said()
            assert time.monotonic() < deadline, f"{self.name} never said {text!r}: {self.said()}"
            time.sleep(0.02)

    def go(self, marker: str) -> None:
        (self.control / f"{marker}-{self.name}").touch()

    def said(self) -> str:
        return self.out.read_text()

    def end(self) -> int:
        self.go("exit")
        return self.proc.wait(TIMEOUT_S)


def entry_of(config: Path) -> tuple[Path, str, dict]:
    cfg = RunConfig(path=config, overrides=(), values=json.loads(config.read_text()))
    inputs = key_inputs(cfg, build_args(cfg, data_arg_names()))
    key = cache_key(inputs)
    return cache_root(cfg) / key, key, inputs


def files_of(entry: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of an entry by name: its inode and bytes (a rebuild or a deletion changes them)."""
    return {
        str(p.relative_to(entry)): (p.stat().st_ino, p.read_bytes()) for p in entry.rglob("*") if p.is_file()
    }


@pytest.fixture
def launchers():
    started: list[Launcher] = []
    yield started
    for launcher in started:
        if launcher.proc.poll() is None:
            launcher.proc.kill()
            launcher.proc.wait()


def test_the_second_builder_waits_and_takes_the_first_ones_entry(config, launchers):
    first = Launcher(config, "a")
    launchers.append(first)
    first.wait_for("building")  # a's build is under way, no entry exists yet
    second = Launcher(config, "b")
    launchers.append(second)
    second.wait_until_said("waiting for another launcher building")
    first.go("finish")
    first.wait_for("handed")
    entry, key, inputs = entry_of(config)
    handed = files_of(entry)
    second.wait_for("handed")
    assert second.end() == 0 and first.end() == 0
    assert not (config.parent / "control" / "building-b").exists()  # b never built its own
    assert "tokenized dataset: built " in first.said() and "(first build)" in first.said()
    assert f"tokenized dataset: reused {entry / DATASET}" in second.said()
    assert files_of(entry) == handed  # the very files a handed to its ranks: same inodes, same bytes
    assert check_entry(entry, key, inputs) is None
    assert [p.name for p in entry.parent.iterdir() if p.name.startswith(".building-")] == []


def test_an_entry_in_use_is_never_deleted_even_when_it_stops_checking_out(config, launchers):
    first = Launcher(config, "a")
    launchers.append(first)
    first.go("finish")
    first.wait_for("handed")  # a's ranks are training on it
    entry, key, inputs = entry_of(config)
    arrow = entry / DATASET / "train" / "data-00000-of-00001.arrow"
    arrow.write_bytes(b"damaged")
    handed = files_of(entry)

    second = Launcher(config, "b")
    launchers.append(second)
    second.go("finish")
    assert second.proc.wait(TIMEOUT_S) != 0
    assert "is in use by another launcher's ranks and does not check out" in second.said()
    assert "set ARPO_SFT_CACHE to another directory" in second.said()
    assert files_of(entry) == handed  # left exactly as a's ranks have it

    assert first.end() == 0  # a's run ended: nobody uses the damaged entry, so the next launch replaces it
    third = Launcher(config, "c")
    launchers.append(third)
    third.go("finish")
    third.wait_for("handed")
    assert "found a corrupted cache" in third.said() and check_entry(entry, key, inputs) is None
    assert third.end() == 0


def test_a_reuser_and_a_finished_entry_do_not_block_each_other(config, launchers):
    first = Launcher(config, "a")
    launchers.append(first)
    first.go("finish")
    first.wait_for("handed")
    entry, _, _ = entry_of(config)
    before = (entry / MANIFEST).stat().st_ino
    others = [Launcher(config, name) for name in ("b", "c")]
    launchers.extend(others)
    for other in others:
        other.wait_for("handed")
        assert f"tokenized dataset: reused {entry / DATASET}" in other.said()
        assert "waiting" not in other.said()
    assert all(launcher.end() == 0 for launcher in (first, *others))
    assert (entry / MANIFEST).stat().st_ino == before


# ----- integration: two real builds (LLaMA-Factory in a child each) of one key at once -----

REAL_LAUNCHER = r"""
import sys
from pathlib import Path
from arpo_train_sft.config import load_run_config
from arpo_train_sft.train.tokenized import tokenized_overrides
print(tokenized_overrides(load_run_config(Path("yaml/demo_cpu.yaml"), sys.argv[1:]))[0], flush=True)
"""


@pytest.mark.integration
def test_two_real_launchers_build_one_key_once(demo_run, checkout, tmp_path):
    env = run_env(ARPO_SFT_CACHE=str(tmp_path / "cache"))
    overrides = [*DEMO_OVERRIDES, "max_samples=40"]

    def start(name: str) -> subprocess.Popen:
        out = (tmp_path / f"{name}.out").open("w")
        return subprocess.Popen(
            [sys.executable, "-c", REAL_LAUNCHER, *overrides],
            cwd=checkout,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    first = start("a")
    root = tmp_path / "cache" / "tokenized"
    deadline = time.monotonic() + 120
    while not (root.is_dir() and any(p.name.startswith(".building-") for p in root.iterdir())):
        assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "a.out").read_text()
        time.sleep(0.05)
    second = start("b")  # a's build is running: b finds no entry and must not build over a's
    assert first.wait(600) == 0 and second.wait(600) == 0
    said_a, said_b = (tmp_path / "a.out").read_text(), (tmp_path / "b.out").read_text()
    [path] = {
        line.split("=", 1)[1] for line in (said_a + said_b).splitlines() if line.startswith("tokenized_")
    }
    assert f"tokenized dataset: built {path} (first build)" in said_a
    assert "waiting for another launcher building" in said_b and f"reused {path}" in said_b
    entry = Path(path).parent
    assert [p for p in root.iterdir() if p.name.startswith(".building-")] == []
    manifest = json.loads((entry / MANIFEST).read_text())
    assert manifest["rows"] == {"train": 40} and os.path.isdir(path)
