"""The note a diverged run leaves: the newest complete checkpoint before it, the causes, the launcher's line."""

from __future__ import annotations

import json
import time

from arpo_train_sft.checkpoint.diverged import (
    NOTE,
    Facts,
    describe,
    diverged_exit,
    last_complete_before,
    likely_causes,
    read_note,
    write_note,
)
from arpo_train_sft.errors import EXIT_DIVERGED

ARPO = Facts(learning_rate=7e-6, attention="flash_attention_2", deepspeed=True, fp16=False)
DEMO = Facts(learning_rate=1e30, attention="sdpa", deepspeed=True, fp16=False)


def test_the_checkpoint_before_is_the_newest_complete_one_older_than_the_step(tmp_path, make):
    make("zero3", step=2)
    make("zero3", step=4)
    torn = make("zero3", step=6)
    (torn / "trainer_state.json").unlink()  # a save cut short
    make("zero3", step=8)  # not before step 7: an earlier launch's, or written after the divergence
    assert last_complete_before(tmp_path, 7) == tmp_path / "checkpoint-4"
    assert last_complete_before(tmp_path, 4) == tmp_path / "checkpoint-2"
    assert last_complete_before(tmp_path, 2) is None


def test_the_note_names_the_step_the_values_and_the_checkpoint(tmp_path, make):
    make("zero3", step=2)
    note = write_note(tmp_path, 3, "nan", "inf", DEMO)
    assert json.loads((tmp_path / NOTE).read_text()) == note
    assert (note["step"], note["loss"], note["grad_norm"]) == (3, "nan", "inf")
    assert note["checkpoint"] == str(tmp_path / "checkpoint-2")
    assert read_note(tmp_path, since=0) == note


def test_a_note_from_an_earlier_launch_or_a_torn_one_is_not_read(tmp_path):
    write_note(tmp_path, 3, "nan", None, DEMO)
    stamp = (tmp_path / NOTE).stat().st_mtime
    assert read_note(tmp_path, since=stamp - 1)["step"] == 3
    assert read_note(tmp_path, since=stamp + 1) is None
    (tmp_path / NOTE).write_text('{"step": 3, "facts": {"learning_rate": 1}}')  # facts cut short
    assert read_note(tmp_path, since=0) is None


def test_causes_come_from_the_config():
    assert likely_causes(ARPO) == [
        "none this config names (learning rate, attention and precision look ordinary)"
    ]
    causes = likely_causes(DEMO)
    assert causes[0] == "learning_rate 1e+30 (over 10x ARPO's 7e-06)"
    assert causes[1].startswith("sdpa attention under DeepSpeed (LLaMA-Factory #9631 #8088 #9567 #8137")
    assert len(causes) == 2
    # 10x ARPO's is still ordinary; sdpa without DeepSpeed is not the reported failure
    assert likely_causes(Facts(7e-5, "sdpa", deepspeed=False, fp16=False)) == likely_causes(ARPO)
    both = likely_causes(Facts(7e-6, "flash_attention_2", deepspeed=True, fp16=True, row=17))
    assert both == [
        "data: row 17 of the tokenized training set (the step's other micro-batches stayed finite)",
        "fp16 (its range overflows where bf16's does not; set bf16: true)",
    ]


def test_the_line_names_only_the_quantity_that_was_not_finite(tmp_path):
    note = write_note(tmp_path, 3, None, "inf", ARPO)
    assert describe(note).startswith(
        "step 3: grad_norm is not finite (inf); last checkpoint before it: none; "
    )
    note = write_note(tmp_path, 5, "nan", None, ARPO)
    assert describe(note).startswith("step 5: loss is not finite (nan); ")
    note = write_note(tmp_path, 5, "-inf", "nan", DEMO)
    line = describe(note)
    assert line.startswith(
        "step 5: loss/grad_norm is not finite (-inf/nan); last checkpoint before it: none;"
    )
    assert line.endswith("; likely causes: " + ", ".join(likely_causes(DEMO)))


def test_the_launcher_prints_one_line_and_exits_diverged(tmp_path, capsys, make):
    since = time.time() - 1
    assert diverged_exit(tmp_path, since) is None  # no note: the launcher goes on as before
    make("zero3", step=2)
    write_note(tmp_path, 3, "nan", "inf", DEMO)
    assert diverged_exit(tmp_path, since) == EXIT_DIVERGED
    out = capsys.readouterr().out.splitlines()
    causes = ", ".join(likely_causes(DEMO))
    head = "[arpo-sft] step 3: loss/grad_norm is not finite (nan/inf); last checkpoint before it:"
    assert out == [f"{head} {tmp_path}/checkpoint-2; likely causes: {causes}"]
