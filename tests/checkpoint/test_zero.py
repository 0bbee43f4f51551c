"""Resume planning on checkpoint directories laid out as the Trainer + DeepSpeed ZeRO write them."""

from __future__ import annotations

import json
from pathlib import Path

from arpo_train_sft.checkpoint.resume import has_previous_run, plan_resume, set_aside
from arpo_train_sft.checkpoint.zero import checkpoint_problems


def make_checkpoint(output_dir: Path, step: int, world: int = 2) -> Path:
    path = output_dir / f"checkpoint-{step}"
    tag = path / f"global_step{step}"
    tag.mkdir(parents=True)
    (path / "latest").write_text(f"global_step{step}")
    for rank in range(world):
        for kind in ("model", "optim"):
            (tag / f"zero_pp_rank_{rank}_mp_rank_00_{kind}_states.pt").write_bytes(b"x")
        (path / f"rng_state_{rank}.pth").write_bytes(b"x")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def test_complete_checkpoint_has_no_problems(tmp_path: Path):
    assert checkpoint_problems(make_checkpoint(tmp_path, 10)) == []


def test_each_kind_of_interrupted_save_is_named(tmp_path: Path):
    no_state = make_checkpoint(tmp_path, 1)
    (no_state / "trainer_state.json").unlink()
    assert checkpoint_problems(no_state) == ["trainer_state.json is missing (the save was interrupted)"]

    torn_state = make_checkpoint(tmp_path, 2)
    (torn_state / "trainer_state.json").write_text('{"global_st')
    assert checkpoint_problems(torn_state) == [
        "trainer_state.json is not valid JSON (the save was interrupted)"
    ]

    missing_shard = make_checkpoint(tmp_path, 3, world=4)
    (missing_shard / "global_step3" / "zero_pp_rank_2_mp_rank_00_optim_states.pt").unlink()
    assert checkpoint_problems(missing_shard) == ["global_step3/ lacks the optim states of rank(s) [2]"]

    empty_shard = make_checkpoint(tmp_path, 4)
    (empty_shard / "global_step4" / "zero_pp_rank_1_mp_rank_00_model_states.pt").write_bytes(b"")
    assert checkpoint_problems(empty_shard) == ["global_step4/ lacks the model states of rank(s) [1]"]

    no_tag = make_checkpoint(tmp_path, 5)
    (no_tag / "latest").write_text("global_step6")
    assert checkpoint_problems(no_tag) == ["`latest` names global_step6/, which does not exist"]


def test_plan_walks_back_to_the_newest_complete_checkpoint(tmp_path: Path):
    make_checkpoint(tmp_path, 10)
    good = make_checkpoint(tmp_path, 20)
    broken = make_checkpoint(tmp_path, 30)
    (broken / "trainer_state.json").unlink()
    (tmp_path / "checkpoint-9.incomplete-20260101-000000").mkdir()  # set aside earlier: ignored
    plan = plan_resume(tmp_path)
    assert plan.resume_from == good
    assert [path for path, _ in plan.incomplete] == [broken]


def test_numeric_not_lexical_order(tmp_path: Path):
    make_checkpoint(tmp_path, 9)
    newest = make_checkpoint(tmp_path, 100)
    assert plan_resume(tmp_path).resume_from == newest


def test_nothing_to_resume(tmp_path: Path):
    assert plan_resume(tmp_path / "absent") == plan_resume(tmp_path)
    assert plan_resume(tmp_path).resume_from is None
    assert not has_previous_run(tmp_path)


def test_set_aside_keeps_every_byte(tmp_path: Path):
    path = make_checkpoint(tmp_path, 7)
    moved = set_aside(path, "incomplete")
    assert not path.exists()
    assert moved.name.startswith("checkpoint-7.incomplete-")
    assert (moved / "global_step7" / "zero_pp_rank_1_mp_rank_00_model_states.pt").read_bytes() == b"x"
    assert plan_resume(tmp_path).resume_from is None


def run_config(output_dir: Path, **values):
    from arpo_train_sft.train.config import RunConfig

    return RunConfig(path=Path("yaml/x.yaml"), overrides=(), values={"output_dir": str(output_dir), **values})


def test_launcher_resumes_from_the_newest_complete_checkpoint(tmp_path: Path, capsys):
    from arpo_train_sft.checkpoint.resume import resume_overrides

    good = make_checkpoint(tmp_path, 10)
    torn = make_checkpoint(tmp_path, 20)
    (torn / "trainer_state.json").unlink()
    assert resume_overrides(run_config(tmp_path), fresh=False, first_node=True) == (
        f"resume_from_checkpoint={good}",
    )
    out = capsys.readouterr().out
    assert f"skipping incomplete checkpoint {torn}: trainer_state.json is missing" in out
    assert len(list(tmp_path.glob("checkpoint-20.incomplete-*"))) == 1


def test_other_nodes_do_not_rename_but_agree_on_the_checkpoint(tmp_path: Path):
    from arpo_train_sft.checkpoint.resume import resume_overrides

    good = make_checkpoint(tmp_path, 10)
    (make_checkpoint(tmp_path, 20) / "latest").unlink()
    assert resume_overrides(run_config(tmp_path), fresh=False, first_node=False) == (
        f"resume_from_checkpoint={good}",
    )
    assert (tmp_path / "checkpoint-20").is_dir()


def test_fresh_moves_the_old_run_aside_and_never_deletes(tmp_path: Path, capsys):
    from arpo_train_sft.checkpoint.resume import resume_overrides

    output_dir = tmp_path / "run"
    make_checkpoint(output_dir, 10)
    assert resume_overrides(run_config(output_dir), fresh=True, first_node=True) == ()
    (moved,) = tmp_path.glob("run.previous-*")
    assert (moved / "checkpoint-10" / "trainer_state.json").is_file()
    assert not output_dir.exists()
    assert f"moved the earlier run in {output_dir} to {moved}" in capsys.readouterr().out


def test_explicit_resume_or_overwrite_is_left_to_the_user(tmp_path: Path, capsys):
    from arpo_train_sft.checkpoint.resume import resume_overrides

    make_checkpoint(tmp_path, 10)
    assert (
        resume_overrides(run_config(tmp_path, resume_from_checkpoint="x"), fresh=False, first_node=True) == ()
    )
    assert (
        resume_overrides(run_config(tmp_path, overwrite_output_dir=True), fresh=False, first_node=True) == ()
    )
    assert "overwrite_output_dir is true, so a relaunch will not resume" in capsys.readouterr().out
