"""What a relaunch resumes from, what it sets aside, and when it refuses to start over an earlier run."""

from __future__ import annotations

from pathlib import Path

import pytest

from arpo_train_sft.checkpoint.resume import plan_resume, previous_run, resume_overrides, set_aside
from arpo_train_sft.errors import UserError

from .conftest import ZERO_LAYOUTS


def run_config(output_dir: Path, **values):
    from arpo_train_sft.config import RunConfig

    return RunConfig(path=Path("yaml/x.yaml"), overrides=(), values={"output_dir": str(output_dir), **values})


@pytest.mark.parametrize("layout", [*ZERO_LAYOUTS, "hf"])
def test_complete_checkpoints_of_every_layout_are_resumed(make, tmp_path: Path, layout: str, capsys):
    make(layout, step=4)
    newest = make(layout, step=8)
    assert resume_overrides(run_config(tmp_path), fresh=False, first_node=True) == (
        f"resume_from_checkpoint={newest}",
    )
    assert capsys.readouterr().out.splitlines() == [f"[arpo-sft] resuming from {newest}"]


def test_plan_walks_back_to_the_newest_complete_checkpoint(make, tmp_path: Path):
    make("zero3", step=10)
    good = make("zero3", step=20)
    broken = make("zero3", step=30)
    (broken / "trainer_state.json").unlink()
    (tmp_path / "checkpoint-9.incomplete-20260101-000000").mkdir()  # set aside earlier: ignored
    plan = plan_resume(tmp_path)
    assert plan.resume_from == good
    assert plan.incomplete == [
        (broken, ["trainer_state.json: missing (the Trainer writes it last: the save was interrupted)"])
    ]


def test_numeric_not_lexical_order(make, tmp_path: Path):
    make("zero2", step=9)
    newest = make("zero2", step=100)
    assert plan_resume(tmp_path).resume_from == newest


def test_nothing_to_resume_in_a_new_output_dir(tmp_path: Path):
    assert plan_resume(tmp_path / "absent") == plan_resume(tmp_path)
    assert plan_resume(tmp_path).resume_from is None
    (tmp_path / "training.log").write_text("a launch that died before its first step\n")
    assert previous_run(tmp_path) == ""
    assert resume_overrides(run_config(tmp_path), fresh=False, first_node=True) == ()


def test_set_aside_keeps_every_byte(make, tmp_path: Path):
    path = make("zero3", step=7)
    before = (path / "global_step7" / "zero_pp_rank_1_mp_rank_00_model_states.pt").read_bytes()
    moved = set_aside(path, "incomplete")
    assert not path.exists()
    assert moved.name.startswith("checkpoint-7.incomplete-")
    assert (moved / "global_step7" / "zero_pp_rank_1_mp_rank_00_model_states.pt").read_bytes() == before
    assert plan_resume(tmp_path).resume_from is None


def test_a_truncated_shard_is_skipped_named_and_set_aside_never_deleted(make, tmp_path: Path, capsys):
    good = make("zero2", step=10)
    torn = make("zero2", step=20)
    shard = torn / "global_step20" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    shard.write_bytes(shard.read_bytes()[:100])
    assert resume_overrides(run_config(tmp_path), fresh=False, first_node=True) == (
        f"resume_from_checkpoint={good}",
    )
    (moved,) = tmp_path.glob("checkpoint-20.incomplete-*")
    warning, resuming = capsys.readouterr().out.splitlines()
    assert warning == (
        f"[arpo-sft] warning: skipping incomplete checkpoint {torn}: global_step20/{shard.name}: not a readable "
        f"PyTorch file (truncated or overwritten: no zip directory at its end); moved it to {moved}"
    )
    assert resuming == f"[arpo-sft] resuming from {good}"
    assert len((moved / "global_step20" / shard.name).read_bytes()) == 100


def test_other_nodes_do_not_rename_but_agree_on_the_checkpoint(make, tmp_path: Path):
    good = make("zero3", step=10)
    (make("zero3", step=20) / "latest").unlink()
    assert resume_overrides(run_config(tmp_path), fresh=False, first_node=False) == (
        f"resume_from_checkpoint={good}",
    )
    assert (tmp_path / "checkpoint-20").is_dir()


@pytest.mark.parametrize("leftover", ["model.safetensors", "trainer_log.jsonl", "checkpoint-4"])
def test_nothing_resumable_over_an_earlier_run_stops_with_both_fixes(
    make, tmp_path: Path, leftover: str, capsys
):
    if leftover == "checkpoint-4":  # its only checkpoint lost a shard
        (make("zero3", step=4) / "global_step4" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").unlink()
    else:  # a finished run (LLaMA-Factory's own refusal), or one that died before its first save
        (tmp_path / leftover).write_bytes(b"{}")
    with pytest.raises(UserError) as err:
        resume_overrides(run_config(tmp_path), fresh=False, first_node=True)
    (problem,) = err.value.problems
    assert problem.startswith(f"{tmp_path}: holds an earlier run ({leftover.replace('-4', '-4/')})")
    assert "--fresh" in problem and "set output_dir to a new directory" in problem
    assert sorted(p.name for p in tmp_path.iterdir()) == [leftover]  # nothing moved, nothing deleted
    if leftover == "checkpoint-4":
        assert "skipping incomplete checkpoint" in capsys.readouterr().out


def test_fresh_moves_the_old_run_aside_and_never_deletes(make, tmp_path: Path, capsys):
    output_dir = tmp_path / "run"
    make("zero2", step=10, root=output_dir)
    assert resume_overrides(run_config(output_dir), fresh=True, first_node=True) == ()
    (moved,) = tmp_path.glob("run.previous-*")
    assert (moved / "checkpoint-10" / "trainer_state.json").is_file()
    assert not output_dir.exists()
    assert f"moved the earlier run in {output_dir} to {moved}" in capsys.readouterr().out


def test_explicit_resume_or_overwrite_is_left_to_the_user(make, tmp_path: Path, capsys):
    make("zero3", step=10)
    assert (
        resume_overrides(run_config(tmp_path, resume_from_checkpoint="x"), fresh=False, first_node=True) == ()
    )
    assert (
        resume_overrides(run_config(tmp_path, overwrite_output_dir=True), fresh=False, first_node=True) == ()
    )
    assert "overwrite_output_dir is true, so a relaunch will not resume" in capsys.readouterr().out
