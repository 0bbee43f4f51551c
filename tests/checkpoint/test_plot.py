"""`arpo-sft plot` on synthetic LLaMA-Factory logs: 3 epochs of 200 steps, a resume, malformed lines."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from arpo_train_sft.checkpoint import plot
from arpo_train_sft.errors import UserError

STEPS, EPOCHS = 600, 3


def log_line(step: int) -> dict:
    epoch = step * EPOCHS / STEPS
    return {
        "current_steps": step,
        "total_steps": STEPS,
        "loss": 2.0 * math.exp(-step / 150) + 0.3 + 0.2 * math.sin(step),
        "lr": 7e-6 * min(1.0, step / 60),
        "epoch": epoch,
        "percentage": round(step / STEPS * 100, 2),
    }


def write_run(root: Path, extra_lines: dict[int, str] | None = None, grad: bool = True) -> Path:
    """A run dir as LLaMA-Factory leaves it: trainer_log.jsonl with a closing summary line, trainer_state.json."""
    lines = [json.dumps(log_line(step)) for step in range(1, STEPS + 1)]
    lines.append(json.dumps({"current_steps": STEPS, "total_steps": STEPS, "epoch": 3.0, "percentage": 100}))
    for index, text in sorted((extra_lines or {}).items()):
        lines.insert(index, text)
    root.mkdir(parents=True, exist_ok=True)
    (root / "trainer_log.jsonl").write_text("\n".join(lines) + "\n")
    history = [
        {"step": s, "loss": 1.0, **({"grad_norm": 1.0 / s} if grad else {})} for s in range(1, STEPS + 1)
    ]
    state = {"global_step": STEPS, "log_history": [*history, {"step": STEPS, "train_loss": 0.5}]}
    (root / "trainer_state.json").write_text(json.dumps(state))
    return root


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    plot.add_parser(parser.add_subparsers())
    args = parser.parse_args(["plot", *argv])
    return args.func(args)


def read_png(path: Path):
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(path)


def test_three_epoch_run_gives_one_png_of_the_expected_size(tmp_path: Path, capsys):
    run = write_run(tmp_path / "run")
    assert run_cli(str(run)) == 0
    image = read_png(run / "training_curves.png")
    width, height = (int(v * plot.DPI) for v in plot.FIGSIZE_IN)
    assert image.shape[:2] == (height, width)
    # Something was drawn: a blank figure would be a single colour.
    assert image[..., :3].std() > 0.05
    out = capsys.readouterr().out
    assert "600 loss points, steps 1-600" in out
    assert f"600 points from {run / 'trainer_state.json'}" in out
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_series_lengths_and_epoch_boundaries(tmp_path: Path):
    log = plot.read_trainer_log(write_run(tmp_path / "run") / "trainer_log.jsonl")
    assert log.steps == list(range(1, STEPS + 1))  # the closing summary line is not a point
    assert len(log.loss) == len(log.lr) == len(log.epoch) == STEPS
    assert log.malformed == 0
    assert plot.epoch_boundaries(log.steps, log.epoch) == [(200, 2), (400, 3)]
    grad = plot.read_grad_norm(tmp_path / "run")
    assert grad.steps == list(range(1, STEPS + 1)) and grad.values[1] == 0.5


def test_boundaries_with_sparse_logging_and_a_partial_last_epoch():
    steps = list(range(10, 251, 10))
    epochs = [s / 100 for s in steps]  # 100 steps per epoch, stopped in epoch 3
    assert plot.epoch_boundaries(steps, epochs) == [(100, 2), (200, 3)]
    assert plot.epoch_boundaries(steps[:10], epochs[:10]) == []  # one whole epoch: no boundary inside


def test_malformed_lines_are_skipped_and_counted(tmp_path: Path, capsys):
    bad = {5: '{"current_steps": 5, "loss": ', 50: "not json", 300: '{"current_steps": "x", "loss": 1.0}'}
    run = write_run(tmp_path / "run", bad)
    log = plot.read_trainer_log(run / "trainer_log.jsonl")
    assert log.malformed == 3 and log.first_malformed == 6
    assert len(log.steps) == STEPS
    assert run_cli(str(run), "--out", str(tmp_path / "c.png")) == 0
    assert "skipped 3 malformed line(s)" in capsys.readouterr().out
    read_png(tmp_path / "c.png")


def test_a_resumed_run_keeps_the_later_value_of_a_repeated_step(tmp_path: Path):
    run = write_run(tmp_path / "run")
    with (run / "trainer_log.jsonl").open("a") as f:
        f.write(json.dumps({**log_line(600), "loss": 9.5}) + "\n")
    log = plot.read_trainer_log(run / "trainer_log.jsonl")
    assert log.repeated == 1 and log.steps[-1] == 600 and log.loss[-1] == 9.5 and len(log.steps) == STEPS


def test_a_diverged_loss_is_a_gap_not_a_malformed_line():
    assert plot.ema([1.0, float("nan"), 3.0], span=3)[1:] == [1.0, 2.0]


def test_grad_norm_from_the_newest_checkpoint_while_training_runs(tmp_path: Path):
    run = write_run(tmp_path / "run", grad=False)
    (run / "trainer_state.json").unlink()  # not written until training ends
    for step in (100, 200):
        ckpt = run / f"checkpoint-{step}"
        ckpt.mkdir()
        history = [{"step": s, "grad_norm": float(s)} for s in range(1, step + 1)]
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": history}))
    grad = plot.read_grad_norm(run)
    assert grad.source == run / "checkpoint-200" / "trainer_state.json" and len(grad.steps) == 200


def test_missing_grad_norm_draws_a_note(tmp_path: Path, capsys):
    run = write_run(tmp_path / "run", grad=False)
    assert run_cli(str(run)) == 0
    assert f"note: no grad_norm in the log_history of {run / 'trainer_state.json'}" in capsys.readouterr().out
    read_png(run / "training_curves.png")


def test_out_is_checked_before_anything_is_read(tmp_path: Path):
    run = write_run(tmp_path / "run")
    (tmp_path / "file").write_text("mine\n")
    (tmp_path / "link.png").symlink_to(tmp_path / "file")
    cases = {
        tmp_path: "is a directory",
        tmp_path / "file" / "c.png": f"{tmp_path / 'file'} is a file, not a folder",
        tmp_path / "link.png": f"is a symbolic link to {tmp_path / 'file'}",
        run / "trainer_log.jsonl": "is the same file as the input OUTPUT_DIR's trainer_log.jsonl",
        run / "trainer_state.json": "is the same file as the input OUTPUT_DIR's trainer_state.json",
    }
    before = {p: p.read_bytes() for p in (run / "trainer_log.jsonl", run / "trainer_state.json")}
    for out, says in cases.items():
        with pytest.raises(UserError) as err:
            run_cli(str(run), "--out", str(out))
        (line,) = err.value.problems
        assert line.startswith(f"--out {out}") and says in line, line
    assert {p: p.read_bytes() for p in before} == before and (tmp_path / "file").read_text() == "mine\n"


def test_out_in_a_folder_not_made_yet_is_written_there(tmp_path: Path):
    run = write_run(tmp_path / "run")
    assert run_cli(str(run), "--out", str(tmp_path / "new" / "c.png")) == 0
    read_png(tmp_path / "new" / "c.png")


def test_missing_trainer_log_is_a_user_error(tmp_path: Path):
    with pytest.raises(UserError) as err:
        run_cli(str(tmp_path))
    (line,) = err.value.problems
    assert str(tmp_path / "trainer_log.jsonl") in line and "output_dir" in line
    assert not (tmp_path / "training_curves.png").exists()


def write_metrics(run: Path, gpu: bool) -> None:
    """metrics.jsonl as rank/metrics.py writes it: one line per logged step; a resume repeats step 600."""
    lines = [
        {
            "step": s,
            "tokens_per_second_per_gpu": 3000.0 + s,
            "mfu": 0.4 if gpu else None,
            "peak_memory_gib": 60.0 + s / 1000 if gpu else None,
            "tokens": 96000,
            "seconds": 4.0,
        }
        for s in range(1, STEPS + 1)
    ]
    lines.append({**lines[-1], "tokens_per_second_per_gpu": 1.0})
    text = (
        "\n".join(json.dumps(line) for line in lines) + '\n{"step": 601, "tokens_per_se'
    )  # torn by a full disk
    (run / "metrics.jsonl").write_text(text)


def test_metrics_jsonl_adds_throughput_and_memory_panels(tmp_path: Path, capsys):
    run = write_run(tmp_path / "run")
    write_metrics(run, gpu=True)
    metrics = plot.read_metrics(run / "metrics.jsonl")
    assert metrics.steps == list(range(1, STEPS + 1))  # the torn last line is not a point
    assert metrics.tokens_per_second[-1] == 1.0  # the resumed run's value of the repeated step
    assert metrics.mfu[0] == 0.4 and metrics.memory_gib[0] == 60.001
    assert run_cli(str(run)) == 0
    image = read_png(run / "training_curves.png")
    width, height = (int(v * plot.DPI) for v in plot.FIGSIZE_METRICS_IN)
    assert image.shape[:2] == (height, width)
    assert f"throughput: 600 points from {run / 'metrics.jsonl'}" in capsys.readouterr().out


def test_metrics_without_a_gpu_are_none_and_still_drawn(tmp_path: Path):
    run = write_run(tmp_path / "run")
    write_metrics(run, gpu=False)
    metrics = plot.read_metrics(run / "metrics.jsonl")
    assert set(metrics.mfu) == {None} and set(metrics.memory_gib) == {None}
    assert run_cli(str(run)) == 0
    assert read_png(run / "training_curves.png").shape[0] == int(plot.FIGSIZE_METRICS_IN[1] * plot.DPI)


def test_no_metrics_jsonl_reads_as_no_points(tmp_path: Path):
    assert plot.read_metrics(tmp_path / "metrics.jsonl") == plot.MetricsLog([], [], [], [])
