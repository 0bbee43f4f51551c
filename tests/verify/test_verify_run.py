"""`arpo-sft verify RUN_DIR`: every checkpoint of a real 2-step ZeRO-3 CPU run, `--steps`, a torn checkpoint,
a run with none, and a prompts file with bad rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from arpo_train_sft import cli

PROMPTS = ['{"question": "What is 6 * 7?", "answer": "42"}', '{"question": "Capital of Kenya?"}']
KEYS = {"format_compliance", "self_written_result_rate", "stopped_at_tool_rate", "tool_calls_per_prompt"}
SHORT = ("--max-new-tokens", "4", "--max-total-tokens", "8")


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    return path


def ours(stderr: str) -> list[str]:
    """verify's own lines; DeepSpeed's consolidation and transformers' loading print their progress too."""
    return [line for line in stderr.splitlines() if line.startswith("arpo-sft: ")]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.integration
def test_every_checkpoint_of_a_run_is_verified_and_the_run_is_left_alone(
    zero3_reference: Path, prompts: Path, tmp_path: Path, capsys
) -> None:
    before = snapshot(zero3_reference)
    report = tmp_path / "out" / "steps.json"
    argv = ["verify", str(zero3_reference), "--prompts", str(prompts), *SHORT, "--batch-size", "2"]
    assert cli.main([*argv, "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "step 1: format" in out and "step 2: format" in out
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["run"] == str(zero3_reference) and data["settings"]["batch_size"] == 2
    assert [e["step"] for e in data["steps"]] == [1, 2]
    for entry in data["steps"]:
        assert set(entry) >= KEYS and "accuracy" in entry  # one prompt has a reference
        assert entry["checkpoint"] == str(zero3_reference / f"checkpoint-{entry['step']}")
        assert len(entry["prompts"]) == 2 and all(0 < p["new_tokens"] <= 8 for p in entry["prompts"])
        assert entry["format_compliance"] == entry["summary"]["compliance"]
    assert (tmp_path / "out" / "steps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert snapshot(zero3_reference) == before  # consolidated in memory: nothing written into the run

    assert cli.main([*argv, "--steps", "2", "--report", str(tmp_path / "two.json")]) == 0
    assert [e["step"] for e in json.loads((tmp_path / "two.json").read_text())["steps"]] == [2]


@pytest.mark.integration
def test_a_torn_checkpoint_is_one_line_and_the_other_steps_run(
    zero3_reference: Path, prompts: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    shutil.copytree(zero3_reference, run)
    torn = run / "checkpoint-2" / "global_step2" / "zero_pp_rank_1_mp_rank_00_model_states.pt"
    torn.write_bytes(torn.read_bytes()[:100])
    report = tmp_path / "steps.json"
    assert cli.main(["verify", str(run), "--prompts", str(prompts), *SHORT, "--report", str(report)]) == 1
    err = ours(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("arpo-sft: step 2: skipped: ") and str(torn) in err[0]
    assert "not a readable PyTorch file" in err[0]
    first, second = json.loads(report.read_text(encoding="utf-8"))["steps"]
    assert first["step"] == 1 and set(first) >= KEYS
    assert second == {
        "step": 2,
        "checkpoint": str(run / "checkpoint-2"),
        "skipped": err[0].removeprefix("arpo-sft: "),
    }


def test_steps_that_do_not_exist_exit_2_listing_the_steps_there(tmp_path: Path, capsys) -> None:
    for step in (500, 1000, 1500):
        (tmp_path / f"checkpoint-{step}").mkdir()
    assert cli.main(["verify", str(tmp_path), "--steps", "1000,2000,3000"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"arpo-sft: error: --steps: no checkpoint-2000, checkpoint-3000/ in {tmp_path}; steps there: 500, 1000, 1500"
    ]
    assert cli.main(["verify", str(tmp_path), "--steps", "10x"]) == 2
    assert "'10x' is not a step" in capsys.readouterr().err


def test_a_run_without_checkpoints_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "trainer_log.jsonl").write_text("", encoding="utf-8")
    assert cli.main(["verify", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"{tmp_path}: no checkpoint-N/ folders and no config.json" in err[0]


def test_steps_need_a_run(tmp_path: Path, capsys) -> None:
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    assert cli.main(["verify", str(tmp_path), "--steps", "1"]) == 2
    assert "--steps needs a run's output_dir" in capsys.readouterr().err


@pytest.mark.integration
def test_bad_prompt_rows_are_each_reported_and_the_rest_run(tiny_model: Path, tmp_path: Path, capsys) -> None:
    model = tiny_model
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        "\n".join([PROMPTS[0], "{not json", '{"answer": "1"}', PROMPTS[1]]) + "\n", encoding="utf-8"
    )
    report = tmp_path / "verify.json"
    assert cli.main(["verify", str(model), "--prompts", str(path), *SHORT, "--report", str(report)]) == 1
    err = ours(capsys.readouterr().err)
    assert [line.split(": ")[1] for line in err] == [f"skipped {path}:2", f"skipped {path}:3"]
    data = json.loads(report.read_text(encoding="utf-8"))
    assert [p["question"] for p in data["prompts"]] == ["What is 6 * 7?", "Capital of Kenya?"]
    assert set(data["summary"]) >= KEYS and len(data["skipped_rows"]) == 2
    assert not (tmp_path / "verify.png").exists()  # a single model has no steps to plot
