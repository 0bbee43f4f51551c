"""SIGTERM on a rank: the flag, the agreed stop at the step's end, the checkpoint, the note, the exit."""

from __future__ import annotations

import json
import os
import signal

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from arpo_train_sft.checkpoint.stopped import NOTE, read_note
from arpo_train_sft.rank.preempt import SaveOnSigterm


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
