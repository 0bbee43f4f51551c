"""Every command that writes, pointed at a full disk: exit 3 and one line that says so, nothing left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arpo_train_sft.cli import main, make_parser
from arpo_train_sft.errors import EXIT_ENVIRONMENT

from .conftest import small_disk
from .test_commands import leaf_commands

DEMO = Path(__file__).resolve().parents[2] / "dataset_info" / "demo" / "arpo_sft_demo.jsonl"
# Commands that write nothing a user names, so no disk of theirs can fill.
READ_ONLY = {"data check", "data parity", "preflight", "estimate", "sandbox run", "handoff"}
# Training's full disk has its own drills: tests/train/test_fault_drills.py (a checkpoint that no longer fits)
# and tests/train/test_tokenized.py (the tokenized cache); a run needs minutes, not the seconds these take.
ELSEWHERE = {"train"}
# command -> argv; {full} is the full disk, {model} the tiny model, {rows} three demo rows, {run} a run dir.
WRITERS = {
    "data download": "data download --from-file {rows} --out {full}/raw",
    "data prepare": "data prepare --input {rows} --output {full}/train.jsonl --model {model}",
    "data stats": "data stats {rows} --model {model} --plot {full}/lengths.png",
    "init": "init {full}/work",
    "plot": "plot {run} --out {full}/curves.png",
    "export": "export {model} {full}/exported",
    "verify": "verify {model} --prompts {prompts} --report {full}/report.json",
    "demo-model": "demo-model --out {full}/tiny",
}


def test_every_command_is_classified():
    """A new command must say whether it writes, so that this suite drives it into a full disk."""
    assert set(leaf_commands(make_parser())) == READ_ONLY | ELSEWHERE | set(WRITERS)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict[str, str]:
    root = tmp_path_factory.mktemp("inputs")
    rows = root / "rows.jsonl"
    rows.write_text("".join(DEMO.read_text(encoding="utf-8").splitlines(keepends=True)[:3]), encoding="utf-8")
    run = root / "run"
    run.mkdir()
    lines = [{"current_steps": s, "loss": 2.0 / s, "lr": 1e-5, "epoch": s / 10} for s in range(1, 11)]
    (run / "trainer_log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    prompts = root / "prompts.jsonl"
    prompts.write_text('{"question": "What is 1 + 1?", "answer": "2"}\n')
    return {"rows": str(rows), "run": str(run), "model": str(tiny_model), "prompts": str(prompts)}


@pytest.fixture
def fast_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    """verify with a scripted model and sandbox: what is under test is the report it writes, not generation."""
    from arpo_train_sft.verify import command
    from arpo_train_sft.verify.loop import Step
    from arpo_train_sft.verify.sandbox import SandboxResult

    from ..verify.scripted import script_the_model

    answer = Step("<think>easy</think>\n<answer>\\boxed{2}</answer>", 12, True)

    script_the_model(monkeypatch, lambda: answer)
    probe = SandboxResult("2\n", "", 0, False, None, "isolated", 0)
    monkeypatch.setattr(command, "run_python", lambda code, allow_weak: probe)


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_a_full_disk_exits_3_with_one_line(command, inputs, fast_verify, tmp_path: Path, capsys):
    with small_disk(tmp_path / "full", "64k", fill=True) as full:
        before = sorted(p.name for p in full.iterdir())
        code = main(WRITERS[command].format(full=full, **inputs).split())
        err = capsys.readouterr().err
        left = sorted(p.name for p in full.rglob("*") if p.is_file())
    assert code == EXIT_ENVIRONMENT, err[-2000:]
    (line,) = [line for line in err.splitlines() if line.startswith("arpo-sft")]
    assert "Traceback" not in err
    assert line.startswith("arpo-sft: error: ")
    assert "the disk filled up" in line or "not enough disk space" in line or "No space left" in line, line
    assert "free" in line  # the fix: free space, or write elsewhere
    assert left == before, "a full disk must not leave a partial file behind"


def test_export_that_fills_the_disk_with_its_weights_is_3_and_leaves_nothing(tiny_model, tmp_path, capsys):
    """A disk with room for config.json but not the safetensors shard: the error comes from Rust, as text."""
    with small_disk(tmp_path / "small", "1m", fill=False) as small:
        code = main(["export", str(tiny_model), str(small / "exported")])
        err = capsys.readouterr().err
        left = list(small.iterdir())
    assert code == EXIT_ENVIRONMENT, err[-2000:]
    (line,) = [line for line in err.splitlines() if line.startswith("arpo-sft")]
    assert f"{small / 'exported'}: the disk filled up while writing it" in line
    assert "the partial copy was removed" in line
    assert left == []


def test_a_write_error_that_names_no_file_is_still_3(capsys, monkeypatch: pytest.MonkeyPatch):
    """errno 28 from a library's own write() names no path; it is the host's problem, never a bug (70)."""
    import errno

    from arpo_train_sft.checkpoint import plot

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(plot, "run", full)
    assert main(["plot", "somewhere"]) == EXIT_ENVIRONMENT
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("arpo-sft: error: No space left on device while writing an output; free space")
