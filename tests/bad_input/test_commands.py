"""Every command that reads a user file or flag, fed malformed input: one line naming it, a documented exit."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from arpo_train_sft.cli import main, make_parser
from arpo_train_sft.errors import (
    EXIT_DATA,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TABLE,
    EXIT_USER_ERROR,
)

DEMO = Path(__file__).resolve().parents[2] / "dataset_info" / "demo" / "arpo_sft_demo.jsonl"
Y = "yaml/demo_cpu.yaml"

# (command, argv with {placeholders} from the `bad` fixture, exit status, text the error must contain).
# A run config's bad keys, values and flags (train, preflight): test_train.py.
CASES = [
    ("data download", "data download --from-file {missing}", EXIT_USER_ERROR, "no such file"),
    ("data download", "data download --out {file}", EXIT_USER_ERROR, "is a file, not a folder"),
    ("data check", "data check {missing}", EXIT_USER_ERROR, "no such file"),
    ("data check", "data check {dir}", EXIT_USER_ERROR, "is a directory"),
    ("data check", "data check {empty}", EXIT_USER_ERROR, "the file is empty"),
    ("data check", "data check {nonutf}", EXIT_USER_ERROR, "neither JSON Lines"),
    ("data check", "data check {truncated}", EXIT_DATA, "not valid JSON"),
    ("data check", "data check {wrong_shape}", EXIT_DATA, "not an object"),
    ("data check", "data check {wrong_types}", EXIT_DATA, "row 1"),
    ("data check", "data check {huge_row}", EXIT_DATA, "row 1"),
    (
        "data prepare",
        "data prepare --input {demo} --output {file}/x.jsonl --model {model}",
        EXIT_USER_ERROR,
        "is a file, not a folder",
    ),
    (
        "data prepare",
        "data prepare --input {demo} --output {demo} --model {model}",
        EXIT_USER_ERROR,
        "same file as the input",
    ),
    (
        "data prepare",
        "data prepare --input {nonutf} --output {out} --model {model}",
        EXIT_USER_ERROR,
        "neither JSON Lines",
    ),
    (
        "data prepare",
        "data prepare --input {demo} --output {out} --model {model} --cutoff-len -4",
        EXIT_USER_ERROR,
        "--cutoff-len",
    ),
    ("data stats", "data stats --model {file} {demo}", EXIT_USER_ERROR, "--model"),
    ("data stats", "data stats --model {model} {empty}", EXIT_USER_ERROR, "the file is empty"),
    ("data parity", "data parity --model {model} --sample -1 {demo}", EXIT_USER_ERROR, "--sample"),
    (
        "data parity",
        "data parity --model {model} --template nosuch {demo}",
        EXIT_USER_ERROR,
        "no such template",
    ),
    ("data parity", "data parity --model {missing} {demo}", EXIT_USER_ERROR, "--model"),
    ("init", "init {file}", EXIT_USER_ERROR, "is a file"),
    ("preflight", f"preflight {Y} template=nosuch", EXIT_USER_ERROR, "template 'nosuch'"),
    ("preflight", f"preflight {Y} output_dir={{file}}", EXIT_USER_ERROR, "is a file"),
    ("preflight", f"preflight {Y} max_steps=-3", EXIT_USER_ERROR, "max_steps: -3"),
    ("preflight", f"preflight {Y} deepspeed={{empty}}", EXIT_USER_ERROR, "not valid JSON"),
    ("preflight", "preflight {nonutf}", EXIT_USER_ERROR, "save it as UTF-8 YAML"),
    ("train", "train {dir}", EXIT_USER_ERROR, "config file not found"),
    ("train", "train {wrong_shape}", EXIT_USER_ERROR, "expected a mapping"),
    ("train", f"train {Y} cutoff_len=0", EXIT_USER_ERROR, "cutoff_len: 0"),
    ("train", f"train {Y} per_device_train_batch_size=-1", EXIT_USER_ERROR, "per_device_train_batch_size"),
    ("estimate", f"estimate {Y} --gpus -1", EXIT_USER_ERROR, "--gpus"),
    ("estimate", f"estimate {Y} --gpu-mem 0", EXIT_USER_ERROR, "--gpu-mem"),
    ("estimate", "estimate {missing}", EXIT_USER_ERROR, "config file not found"),
    ("demo-model", "demo-model --out {model}", EXIT_USER_ERROR, "exists and is not empty"),
    ("demo-model", "demo-model --out {file}", EXIT_USER_ERROR, "Not a directory"),
    ("export", "export {missing} {out}", EXIT_USER_ERROR, "not a directory"),
    ("export", "export {file} {out}", EXIT_USER_ERROR, "not a directory"),
    ("export", "export {model} {file}", EXIT_USER_ERROR, "is a file, not a directory"),
    ("export", "export {model} {fifo}", EXIT_USER_ERROR, "is a FIFO"),
    ("export", "export {model} {model}", EXIT_USER_ERROR, "already exists and is not empty"),
    ("export", "export {model} {out} --dtype fp8", EXIT_USER_ERROR, "--dtype"),
    (
        "export",
        "export {model} {out} --max-shard-size abc",
        EXIT_USER_ERROR,
        "--max-shard-size 'abc': not a size",
    ),
    ("export", "export {model} {out} --max-shard-size 0GB", EXIT_USER_ERROR, "--max-shard-size '0GB'"),
    ("export", "export {model} {out} --max-shard-size 1e999GB", EXIT_USER_ERROR, "--max-shard-size"),
    ("export", "export {model} {out} --max-shard-size nanMB", EXIT_USER_ERROR, "--max-shard-size"),
    ("export", "export {model} {out} --max-shard-size ²GB", EXIT_USER_ERROR, "--max-shard-size"),
    ("export", "export {list_config} {out}", EXIT_USER_ERROR, "holds an array, not a JSON object"),
    ("export", "export {string_config} {out}", EXIT_USER_ERROR, "holds a string, not a JSON object"),
    ("export", "export {torn_config} {out}", EXIT_USER_ERROR, "cannot be read as JSON"),
    ("export", "export {unknown_type} {out}", EXIT_USER_ERROR, "config.json: "),
    ("export", "export {torn_run} {out}", EXIT_OK, "exported"),
    ("verify", "verify {missing}", EXIT_USER_ERROR, "no such directory"),
    ("verify", "verify {model} --max-new-tokens -5", EXIT_USER_ERROR, "must be > 0"),
    ("verify", "verify {model} --prompts {nonutf}", EXIT_USER_ERROR, "cannot read the prompts"),
    ("verify", "verify {model} --prompts {missing}", EXIT_USER_ERROR, "cannot read the prompts"),
    ("verify", "verify {list_config}", EXIT_USER_ERROR, "holds an array, not a JSON object"),
    ("verify", "verify {unknown_type}", EXIT_USER_ERROR, "config.json: "),
    (
        "verify",
        "verify {model} --report {model}/config.json",
        EXIT_USER_ERROR,
        "same file as the input MODEL's",
    ),
    (
        "verify",
        "verify {model} --prompts {prompts} --report {prompts}",
        EXIT_USER_ERROR,
        "same file as the input",
    ),
    ("verify", "verify {model} --report {fifo}", EXIT_USER_ERROR, "is a FIFO"),
    ("sandbox run", "sandbox run {missing}", EXIT_USER_ERROR, "cannot read it"),
    ("sandbox run", "sandbox run {dir}", EXIT_USER_ERROR, "cannot read it"),
    ("sandbox run", "sandbox run {nonutf}", EXIT_USER_ERROR, "cannot read it"),
    ("plot", "plot {missing}", EXIT_USER_ERROR, "trainer_log.jsonl not found"),
    ("plot", "plot {file}", EXIT_USER_ERROR, "trainer_log.jsonl not found"),
    ("plot", "plot {run} --out {run}/trainer_log.jsonl", EXIT_USER_ERROR, "same file as the input"),
    ("plot", "plot {run} --out {run}", EXIT_USER_ERROR, "is a directory"),
    ("plot", "plot {run} --out {fifo}", EXIT_USER_ERROR, "is a FIFO"),
    ("plot", "plot {run} --out {link}", EXIT_USER_ERROR, "is a symbolic link"),
    ("plot", "plot {run} --out {file}/x.png", EXIT_USER_ERROR, "is a file, not a folder"),
    (
        "data prepare",
        "data prepare --input {demo} --output {fifo} --model {model}",
        EXIT_USER_ERROR,
        "is a FIFO",
    ),
    (
        "data prepare",
        "data prepare --input {demo} --output {link} --model {model}",
        EXIT_USER_ERROR,
        "is a symbolic link",
    ),
    ("data stats", "data stats --model {model} {demo} --plot {dir}", EXIT_USER_ERROR, "is a directory"),
    (
        "data download",
        "data download --from-file {demo} --out {linked}",
        EXIT_USER_ERROR,
        "is a symbolic link",
    ),
    ("init", "init {linked} --force", EXIT_USER_ERROR, "is a symbolic link"),
    ("handoff", "handoff {missing}", EXIT_USER_ERROR, "not a directory"),
    ("handoff", "handoff {model} --data {nonutf}", EXIT_USER_ERROR, "neither JSON Lines"),
]


def leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return [
                leaf
                for name, child in action.choices.items()
                for leaf in leaf_commands(child, (*prefix, name))
            ]
    return [" ".join(prefix)]


def test_every_command_is_in_the_table():
    assert set(leaf_commands(make_parser())) == {command for command, *_ in CASES}


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bad")
    files = {
        "empty": b"",
        "nonutf": b"\xff\xfe not text\n",
        "truncated": b'{"system": "s", "conversations": [{"from": "human", "va',
        "wrong_shape": b"[1, 2]\n",
        "wrong_types": b'{"system": 3, "conversations": {"from": "human"}}\n',
        "huge_row": b'{"system": "' + b"x" * 20_000_000 + b'", "conversations": []}\n',
        "file": b"not a directory\n",
        "prompts": b'{"question": "What is 1 + 1?"}\n',
    }
    paths = {}
    for name, data in files.items():
        (root / name).write_bytes(data)
        paths[name] = str(root / name)
    (root / "dir").mkdir()
    os.mkfifo(root / "fifo")
    (root / "link").symlink_to(root / "file")
    # A folder whose shipped or downloaded file is a link to somewhere else: never written through.
    (root / "linked" / "yaml").mkdir(parents=True)
    (root / "linked" / "yaml" / "demo_cpu.yaml").symlink_to(root / "file")
    (root / "linked" / "final_5w4_still.jsonl").symlink_to(root / "file")
    (root / "run").mkdir()
    (root / "run" / "trainer_log.jsonl").write_text('{"current_steps": 1, "loss": 1.0}\n')
    configs = {
        "list_config": "[1, 2]",
        "string_config": '"qwen2"',
        "torn_config": '{"model_type": ',
        "unknown_type": '{"model_type": 3}',
        "torn_run": (tiny_model / "config.json").read_text(),
    }
    for name, config in configs.items():  # the tiny model with its config.json (or run files) broken
        (root / name).mkdir()
        for part in tiny_model.iterdir():
            (root / name / part.name).symlink_to(part)
        (root / name / "config.json").unlink()
        (root / name / "config.json").write_text(config)
        paths[name] = str(root / name)
    # What a full disk or an editor leaves of the run's files: the model card says `?` for what it cannot read.
    (root / "torn_run" / "trainer_state.json").write_text('{"global_step": ')
    (root / "torn_run" / "training.log").write_text(
        '===== 2025 python -m arpo_train_sft.entry "yaml/x.yaml\n'
    )
    (root / "torn_run" / "training_args.bin").write_bytes(b"PK\x03\x04 torn")
    names = ("dir", "fifo", "link", "linked", "run")
    return (
        paths
        | {n: str(root / n) for n in names}
        | {
            "missing": str(root / "nosuch"),
            "model": str(tiny_model),
            "out": str(root / "out" / "new"),
            "demo": str(DEMO),
        }
    )


@pytest.mark.parametrize(("command", "argv", "code", "text"), CASES, ids=[c[1][:60] for c in CASES])
def test_bad_input_gives_one_line_and_a_documented_exit(
    command, argv, code, text, bad, checkout: Path, capsys, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(checkout)
    try:
        got = main(argv.format(**bad).split())
    except SystemExit as stop:  # argparse's own refusal: usage + one error line, status 2
        got = stop.code
    captured = capsys.readouterr()
    assert got != EXIT_INTERNAL, captured.err[-2000:]  # no input a user can give is a bug
    assert got == code, captured.err[-2000:]
    assert "Traceback" not in captured.err + captured.out
    assert text in captured.err + captured.out
    assert "torch.distributed.run" not in captured.out, "torchrun must not start"
    if code == EXIT_USER_ERROR:
        errors = [line for line in captured.err.splitlines() if "error:" in line]
        assert errors and all(line.startswith("arpo-sft") for line in errors)


def test_an_unexpected_exception_is_one_line_and_a_traceback_file(tmp_path, capsys, monkeypatch):
    from arpo_train_sft.checkpoint import plot

    def broken(args):
        raise ZeroDivisionError(f"secret {'hf_fakeCrashToken0123456789'} in a message")

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_TOKEN", "hf_fakeCrashToken0123456789")
    monkeypatch.setattr(plot, "run", broken)
    assert main(["plot", "somewhere"]) == EXIT_INTERNAL
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("arpo-sft: error: internal error: ZeroDivisionError: secret *** in a message")
    (crash,) = (tmp_path / ".cache" / "arpo-sft").glob("crash-*.txt")
    assert f"(full traceback in {crash})" in line
    text = crash.read_text()
    assert "Traceback" in text and "in broken" in text and "hf_fakeCrashToken" not in text


def test_ctrl_c_exits_130_without_a_traceback(capsys, monkeypatch):
    from arpo_train_sft.checkpoint import plot

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(plot, "run", interrupted)
    assert main(["plot", "somewhere"]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "arpo-sft: interrupted\n"


def test_help_shows_the_exit_table(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert EXIT_TABLE in capsys.readouterr().out
