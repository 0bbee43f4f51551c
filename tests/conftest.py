"""Shared fixtures: the repo root, and a scratch checkout for runs that write models and outputs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO_DATA = REPO / "dataset_info" / "demo" / "arpo_sft_demo.jsonl"
# What a user's checkout needs at run time; the package itself is installed.
CHECKOUT_PARTS = ("sft_train.sh", "yaml", "dataset_info", "examples")
DEMO_STEPS = 8
DEMO_SAVE_STEPS = DEMO_STEPS // 2
RUN_NAME = "cpu demo with spaces"
# The demo as the tests run it: shorter, and at cutoff 256 (every demo row is longer, so every row is cut;
# a CPU step takes 1.7 s there against 2.6 s at the demo's 1024).
DEMO_OVERRIDES = (
    f"max_steps={DEMO_STEPS}",
    f"save_steps={DEMO_SAVE_STEPS}",
    "logging_steps=1",
    f"run_name={RUN_NAME}",
    "cutoff_len=256",
)


# `make test` runs two pytest-xdist workers (--dist loadgroup), and a session fixture is built once per
# worker: so every test that reads a shared run goes to that run's group, and the rest of a module to
# the module's own group, which also builds the module's fixtures once.
SHARED_RUNS = ("demo_run", "resumed_run", "zero3_reference", "two_step_run")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put each test in its xdist group. Order: the shared runs, then the other integration tests, then
    the unit tests; xdist then starts its groups by their number of tests (keeping this order instead
    with --no-loadscope-reorder measured slower: 27 min 22 s against 25 min 58 s, README)."""
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group_of(item)))

    def rank(item: pytest.Item) -> int:
        if group_of(item).startswith("run-"):
            return 0
        return 1 if item.get_closest_marker("integration") else 2

    items.sort(key=rank)


def group_of(item: pytest.Item) -> str:
    """`run-<name>` for a test that reads a shared run (two_step_run: the run of its `config` parameter,
    ZeRO-3's without one), else its module."""
    shared = [name for name in SHARED_RUNS if name in item.fixturenames]
    if not shared:
        return item.module.__name__
    if shared[0] in ("demo_run", "resumed_run"):
        return "run-demo"
    params = getattr(item, "callspec", None)
    config = params.params.get("config", ZERO3) if params and shared[0] == "two_step_run" else ZERO3
    return f"run-{Path(config).stem}"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def new_checkout(root: Path) -> Path:
    """A copy of the runnable parts of the repo in `root`: no models/ and no cache of a demo run."""
    for part in CHECKOUT_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, root / part, ignore=shutil.ignore_patterns(".tokenized"))
        else:
            shutil.copy2(src, root / part)
    return root


@pytest.fixture(scope="session")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout the shared runs train in (the demo run into demo_cpu.yaml's own output_dir); it has
    no models/ yet, so the first launch must build the demo model."""
    return new_checkout(tmp_path_factory.mktemp("checkout"))


@pytest.fixture(scope="session")
def quiet_checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkout no test trains in with demo_cpu.yaml's own output_dir, for the tests that run the CLI
    in-process on it: what they say cannot depend on which runs came first."""
    return new_checkout(tmp_path_factory.mktemp("quiet-checkout"))


@pytest.fixture(scope="session")
def qwen_tokenizer():
    """The demo's Qwen2.5 tokenizer, rebuilt once from its 151,643 ranks (~10 s a build). Shared: a test
    that changes it, or hands it to LLaMA-Factory's template fix (which adds tokens), takes copy.deepcopy."""
    from arpo_train_sft.demo.model import build_qwen_tokenizer

    return build_qwen_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`build_tiny_model(dir, seed=0)`: the demo's model, built once; read-only (copy it to change it)."""
    from arpo_train_sft.demo.model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny", seed=0)


def run_env(**extra: str) -> dict[str, str]:
    """The caller's environment with this venv's bin first on PATH (torchrun, llamafactory-cli)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


@pytest.fixture
def in_checkout(quiet_checkout: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """quiet_checkout as the working directory, with no rendezvous settings from the caller."""
    monkeypatch.chdir(quiet_checkout)
    for name in ("MASTER_PORT", "NNODES", "NODE_RANK", "NPROC_PER_NODE", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    return quiet_checkout


@pytest.fixture(scope="session")
def demo_run(checkout: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """`bash sft_train.sh yaml/demo_cpu.yaml` in a fresh checkout (no model yet), with DEMO_OVERRIDES."""
    output_dir = checkout / "checkpoints" / "demo-cpu"
    # Another test may have trained in the checkout first (and so built the model): say which it was.
    model_existed = (checkout / "models" / "arpo-sft-tiny-qwen2").is_dir()
    result = subprocess.run(
        [
            "bash",
            "sft_train.sh",
            "yaml/demo_cpu.yaml",
            *DEMO_OVERRIDES,
        ],
        cwd=checkout,
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    result.model_existed = model_existed
    return result, output_dir


# The kill-and-resume drill (tests/checkpoint/test_resume.py; tests/train/test_step_metrics.py reads its
# metrics): the demo, with one rank SIGKILLed once it logged step KILLED_AFTER, past checkpoint-SAVED; a torn
# checkpoint-TORN (a crash while saving, between the two: rank 1's shards and trainer_state.json missing,
# rank 0's optimizer shard cut in half) must be skipped and SAVED resumed. It is also the ZeRO-3 case of
# tests/checkpoint/test_resume_configs.py, which relaunches every other shipped config.
SAVED = DEMO_SAVE_STEPS
KILLED_AFTER = SAVED + 2
TORN = SAVED + 1
CUT_SHARD = "zero_pp_rank_0_mp_rank_00_optim_states.pt"  # in checkpoint-TORN, a write cut off halfway
# A dead rank must end the job this fast (torchrun's agent notices a child exit within seconds).
KILL_BOUND_S = 120


@dataclass(frozen=True)
class ResumedRun:
    """What the drill left: the run dir, the killed launch and the relaunch."""

    output_dir: Path
    killed_code: int | None  # the launcher's exit status; None when it outlived KILL_BOUND_S
    killed_seconds: float  # from the SIGKILL of the rank to the launcher's exit
    killed_said: str  # what the killed launch's launcher printed, stdout and stderr together
    saved_problems: tuple  # scan(checkpoint-SAVED).problems right after the kill
    relaunch: subprocess.CompletedProcess


def last_step(output_dir: Path) -> int:
    log = output_dir / "trainer_log.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    return json.loads(lines[-1])["current_steps"] if lines else 0


def wait_for(predicate, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"training ended early with {proc.returncode}"
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.5)


def rank_pids(launcher: int) -> list[int]:
    """The training ranks under a launcher (not torchrun's agent)."""
    found = []
    for pid in descendants(launcher):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"arpo_train_sft.entry" in argv and b"torch.distributed.run" not in argv:
            found.append(pid)
    return sorted(found)


@pytest.fixture(scope="session")
def resumed_run(checkout: Path, demo_run) -> ResumedRun:
    """The demo (DEMO_OVERRIDES) killed past checkpoint-SAVED by SIGKILL to one rank, a torn checkpoint-TORN
    added, then the same command relaunched; read-only (copy it to relaunch it)."""
    from arpo_train_sft.checkpoint.scan import scan

    output_dir = checkout / "checkpoints" / "demo-resume"
    command = [
        "bash",
        "sft_train.sh",
        "yaml/demo_cpu.yaml",
        *DEMO_OVERRIDES,
        f"output_dir={output_dir}",
        "--skip-preflight",
    ]
    said = checkout / "checkpoints" / "demo-resume.killed.txt"
    with said.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=checkout, env=run_env(), start_new_session=True, stdout=out, stderr=out
        )
        try:
            wait_for(lambda: (output_dir / f"checkpoint-{SAVED}" / "trainer_state.json").exists(), proc, 600)
            wait_for(lambda: last_step(output_dir) >= KILLED_AFTER, proc, 300)
            os.kill(rank_pids(proc.pid)[-1], signal.SIGKILL)  # one rank, mid-step
            killed_at = time.monotonic()
            try:
                code: int | None = proc.wait(timeout=KILL_BOUND_S)
            except subprocess.TimeoutExpired:
                code = None
            seconds = time.monotonic() - killed_at
        finally:
            if proc.poll() is None:
                kill_tree(proc.pid)
                proc.wait()
    saved_problems = scan(output_dir / f"checkpoint-{SAVED}").problems
    # A crash while writing checkpoint-TORN: shards of one rank and trainer_state.json never landed.
    torn = output_dir / f"checkpoint-{TORN}"
    shutil.copytree(output_dir / f"checkpoint-{SAVED}", torn)
    (torn / "trainer_state.json").unlink()
    (torn / "latest").write_text(f"global_step{TORN}")
    (torn / f"global_step{SAVED}").rename(torn / f"global_step{TORN}")
    for shard in (torn / f"global_step{TORN}").glob("zero_pp_rank_1_*"):
        shard.unlink()
    cut_in_half(torn / f"global_step{TORN}" / CUT_SHARD)

    relaunch = subprocess.run(
        command, cwd=checkout, env=run_env(), capture_output=True, text=True, timeout=900
    )
    return ResumedRun(
        output_dir, code, seconds, said.read_text(errors="replace"), tuple(saved_problems), relaunch
    )


# A run as short as a resume can be: a checkpoint at step 1 and at step 2 (tests/checkpoint/test_resume_configs.py
# and tests/train/test_multinode.py relaunch it for one more step).
SHORT_RUN = ("save_steps=1", "logging_steps=1", "cutoff_len=256")
ZERO3 = "ds_z3_config.json"


@pytest.fixture(scope="session")
def zero3_reference(checkout: Path) -> Path:
    """output_dir of a 2-step ZeRO-3 run, one node with 2 ranks; read-only (copy it to relaunch it)."""
    output_dir = checkout / "checkpoints" / "reference-zero3"
    command = [
        "bash",
        "sft_train.sh",
        "yaml/demo_cpu.yaml",
        f"deepspeed=examples/deepspeed/{ZERO3}",
        "max_steps=2",
        *SHORT_RUN,
        f"output_dir={output_dir}",
        "--skip-preflight",
    ]
    result = subprocess.run(command, cwd=checkout, env=run_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output_dir


def cut_in_half(file: Path) -> bytes:
    """A write cut off halfway: keep the first half of `file`'s bytes and return them."""
    kept = file.read_bytes()[: file.stat().st_size // 2]
    file.write_bytes(kept)
    return kept


def descendants(pid: int) -> list[int]:
    """Every descendant of pid, from /proc (the launcher starts torchrun in a session of its own)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL pid and everything under it at once: a machine that lost power, as far as this run goes."""
    for each in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)


def tiny_data_and_tokenizer(tmp_path: Path) -> tuple[Path, Path]:
    """(dataset_dir, model dir) for runs that key or build a tokenized cache without training: one empty
    conversation registered as dataset `rows`, and a folder of tokenizer files."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "rows.jsonl").write_text('{"conversations": []}\n')
    (data / "dataset_info.json").write_text(json.dumps({"rows": {"file_name": "rows.jsonl"}}))
    model = tmp_path / "model"
    model.mkdir()
    (model / "tokenizer.json").write_text('{"model": "bpe"}')
    return data, model
