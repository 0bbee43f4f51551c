"""SIGTERM on a rank: the flag, the agreed stop at the step's end, the checkpoint, the notes, the exit, and
the DataLoader workers that must live until then."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from arpo_train_sft.checkpoint.stopped import DIR_ENV, NOTE, read_note
from arpo_train_sft.rank.preempt import SaveOnSigterm
from arpo_train_sft.rank.workers import start_worker

from ..conftest import REPO
from .worker_pids import WorkerPids, mark_worker


@pytest.fixture
def callback():
    previous = signal.getsignal(signal.SIGTERM)
    yield SaveOnSigterm()
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_saves_at_the_end_of_the_step_then_exits_without_a_final_model(callback, tmp_path, capsys):
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    state = TrainerState(global_step=5, max_steps=40)
    control = TrainerControl()
    callback.on_step_end(args, state, control)
    assert not control.should_save and not control.should_training_stop  # no signal, nothing changes

    os.kill(os.getpid(), signal.SIGTERM)  # the handler only raises the flag: the process lives on
    callback.on_step_end(args, state, control)
    assert control.should_save and control.should_training_stop

    with pytest.raises(SystemExit) as exit_:
        callback.on_save(args, state, control)
    assert exit_.value.code == 0
    note = json.loads((tmp_path / NOTE).read_text())
    assert (note["step"], note["max_steps"], note["signal"]) == (5, 40, "SIGTERM")
    assert note["checkpoint"] == str(tmp_path / "checkpoint-5")
    assert f"SIGTERM: saved {tmp_path}/checkpoint-5 at step 5 of 40" in capsys.readouterr().out


def test_an_ordinary_save_goes_on(callback, tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    control = callback.on_save(args, TrainerState(global_step=3), TrainerControl())
    assert not control.should_training_stop and not (tmp_path / NOTE).exists()


def test_a_note_from_an_earlier_launch_is_not_this_ones(tmp_path):
    from arpo_train_sft.checkpoint.stopped import write_note

    write_note(tmp_path, 5, 40, "SIGTERM")
    stamp = (tmp_path / NOTE).stat().st_mtime
    assert read_note(tmp_path, since=stamp - 1)["step"] == 5
    assert read_note(tmp_path, since=stamp + 1) is None
    (tmp_path / NOTE).write_text("{half")
    assert read_note(tmp_path, since=0) is None


def test_the_launchers_own_note_is_left_by_each_nodes_first_rank(callback, tmp_path, monkeypatch):
    """Node 1's local rank 0 is not global rank 0: it leaves the note for its launcher only."""
    launcher_dir = tmp_path / "launcher"
    launcher_dir.mkdir()
    monkeypatch.setenv(DIR_ENV, str(launcher_dir))
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True)
    state = TrainerState(global_step=7, max_steps=40, is_world_process_zero=False, is_local_process_zero=True)
    os.kill(os.getpid(), signal.SIGTERM)
    callback.on_step_end(args, state, TrainerControl())
    with pytest.raises(SystemExit):
        callback.on_save(args, state, TrainerControl())
    assert read_note(launcher_dir, since=0)["checkpoint"] == str(tmp_path / "out" / "checkpoint-7")
    assert not (tmp_path / "out" / NOTE).exists()

    other = TrainerState(
        global_step=7, max_steps=40, is_world_process_zero=False, is_local_process_zero=False
    )
    (launcher_dir / NOTE).unlink()
    with pytest.raises(SystemExit):
        callback.on_save(args, other, TrainerControl())
    assert not (launcher_dir / NOTE).exists()  # one note per node, from its local rank 0


def _loader(method: str, length: int):
    from accelerate.data_loader import DataLoaderShard

    return DataLoaderShard(
        WorkerPids(length),
        batch_size=1,
        num_workers=1,
        multiprocessing_context=method,
        worker_init_fn=mark_worker,
    )


def test_the_train_loaders_workers_outlive_a_sigterm_from_outside(callback):
    """torchrun's killpg reaches the workers too; one that died would fail the rank before its save. Forked
    workers, as this stack starts them (rank/workers.py says what spawn and forkserver ones do)."""
    loader = _loader("fork", length=40)
    args = TrainingArguments(output_dir="unused", report_to="none", use_cpu=True)
    callback.on_train_begin(args, TrainerState(), TrainerControl(), train_dataloader=loader)
    batches = iter(loader)
    pid, worker_id, threads = (int(x) for x in next(batches))
    assert worker_id == 0  # the loader's own worker_init_fn still ran, after ours
    assert threads == 2  # the worker's main thread and the one taking SIGTERM: none unmasked before ours
    # From another process, as torchrun's is: torch's handler lets a worker's parent end it quietly.
    subprocess.run(["kill", "-TERM", str(pid)], check=True)
    time.sleep(0.5)
    assert {int(p) for p, _, _ in batches} == {pid}  # 39 more items, all from the same live worker


# A rank that fails mid-epoch: the traceback keeps its loader's iterator, and so its workers, alive into
# interpreter exit, where multiprocessing SIGTERMs daemon workers and then waits for them without a limit.
FAILING_RANK = """
import sys
from accelerate.data_loader import DataLoaderShard
from transformers import TrainerControl, TrainerState, TrainingArguments
from arpo_train_sft.rank.preempt import SaveOnSigterm
from tests.rank.worker_pids import WorkerPids, mark_worker

loader = DataLoaderShard(
    WorkerPids(40), num_workers=2, multiprocessing_context=sys.argv[1], worker_init_fn=mark_worker
)
args = TrainingArguments(output_dir="unused", report_to="none", use_cpu=True)
SaveOnSigterm().on_train_begin(args, TrainerState(), TrainerControl(), train_dataloader=loader)
batches = iter(loader)
print("worker", int(next(batches)[1]), flush=True)
raise RuntimeError("a peer went away")
"""


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_failing_rank_still_ends_its_workers_and_exits(method):
    result = subprocess.run(
        [sys.executable, "-c", FAILING_RANK, method], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1 and "RuntimeError: a peer went away" in result.stderr, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] in ("worker 0", "worker 1")  # the loader's own init ran there too


def test_a_resumed_loader_keeps_the_wrapped_worker_init(callback):
    from accelerate import skip_first_batches

    loader = _loader("fork", length=8)
    args = TrainingArguments(output_dir="unused", report_to="none", use_cpu=True)
    callback.on_train_begin(args, TrainerState(), TrainerControl(), train_dataloader=loader)
    resumed = skip_first_batches(loader, 2)  # what the Trainer iterates in a resumed epoch
    assert resumed.worker_init_fn.func is start_worker and resumed.worker_init_fn.args == (mark_worker,)
