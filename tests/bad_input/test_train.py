"""Bad input to `arpo-sft train` / `arpo-sft preflight` / `sft_train.sh`: one line per problem, exit 2,
nothing started. The one place for a run config's bad keys, values and flags through the CLI; the numeric
reader itself: tests/train/test_values.py; every other command's bad input: test_commands.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from arpo_train_sft.cli import main
from arpo_train_sft.errors import EXIT_INTERNAL, EXIT_USER_ERROR

from ..conftest import run_env


def train_errors(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    """Run `arpo-sft train ARGV` in-process; it must refuse, and say why on stderr."""
    code = main(["train", *argv])
    captured = capsys.readouterr()
    assert code != EXIT_INTERNAL, captured.err  # no input a user can give is a bug
    assert code == EXIT_USER_ERROR, captured.err
    assert "torch.distributed.run" not in captured.out, "torchrun must not start"
    lines = captured.err.splitlines()
    assert lines and all(line.startswith("arpo-sft: error: ") for line in lines)
    if "preflight failed" in lines[-1]:  # the closing line of a preflight refusal names the bypass
        assert "--skip-preflight" in lines[-1]
        lines = lines[:-1]
    return lines


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run `arpo-sft ARGV` in-process; it must exit 2 with exactly one error line, and return it."""
    assert main(list(argv)) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("arpo-sft: error: ")
    return lines[0]


def errors_of(command: str, capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    """The error lines of `arpo-sft COMMAND ARGV`, which must refuse: train's, or preflight's one line."""
    return train_errors(capsys, *argv) if command == "train" else [refused(capsys, command, *argv)]


@pytest.mark.parametrize("command", ["train", "preflight"])
def test_missing_config_file(in_checkout: Path, capsys, command: str):
    (line,) = errors_of(command, capsys, "yaml/nope.yaml")
    assert "yaml/nope.yaml: config file not found" in line


@pytest.mark.parametrize("command", ["train", "preflight"])
def test_yaml_syntax_error_names_the_line(in_checkout: Path, capsys, command: str):
    config = in_checkout / "yaml" / f"broken_{command}.yaml"
    config.write_text("stage: sft\nlearning_rate: [1e-5\nbf16: false\n")
    (line,) = errors_of(command, capsys, str(config))
    assert f"{config}:" in line and "not valid YAML" in line


@pytest.mark.parametrize("command", ["train", "preflight"])
def test_unknown_key_gets_a_spelling_hint(in_checkout: Path, capsys, command: str):
    (line,) = errors_of(command, capsys, "yaml/demo_cpu.yaml", "learning_rte=1e-4")
    assert "yaml/demo_cpu.yaml: unknown key 'learning_rte': did you mean 'learning_rate'?" in line


def test_unknown_key_in_yaml_file(in_checkout: Path, capsys):
    config = in_checkout / "yaml" / "typo.yaml"
    config.write_text((in_checkout / "yaml" / "demo_cpu.yaml").read_text() + "num_train_epoch: 2\n")
    (line,) = train_errors(capsys, str(config))
    assert f"{config}: unknown key 'num_train_epoch': did you mean 'num_train_epochs'?" in line


def test_missing_dataset_file_names_the_file_and_the_download(in_checkout: Path, capsys):
    (line,) = train_errors(capsys, "yaml/demo_cpu.yaml", "dataset=final_5w4_still")
    assert "dataset 'final_5w4_still': file dataset_info/final_5w4_still.jsonl not found" in line
    assert "`arpo-sft data download && arpo-sft data prepare --model Qwen/Qwen2.5-7B-Instruct`" in line


def test_unregistered_dataset(in_checkout: Path, capsys):
    (line,) = train_errors(capsys, "yaml/demo_cpu.yaml", "dataset=arpo_sft_dem")
    assert (
        "dataset 'arpo_sft_dem' is not in dataset_info/dataset_info.json: did you mean 'arpo_sft_demo'?"
        in line
    )


def test_missing_model_path(in_checkout: Path, capsys):
    (line,) = train_errors(capsys, "yaml/demo_cpu.yaml", "model_name_or_path=./models/Qwen2.5-7B-Instruct")
    assert "model_name_or_path models/Qwen2.5-7B-Instruct not found" in line
    assert "`hf download Qwen/Qwen2.5-7B-Instruct --local-dir models/Qwen2.5-7B-Instruct`" in line


@pytest.mark.parametrize(
    ("files", "named"),
    [
        (("tokenizer.json", "tokenizer_config.json"), "has no config.json"),
        (("config.json",), "has no tokenizer files"),
    ],
)
def test_incomplete_model_dir(in_checkout: Path, tmp_path: Path, capsys, files: tuple[str, ...], named: str):
    for name in files:
        (tmp_path / name).write_text("{}")
    line = refused(capsys, "preflight", "yaml/demo_cpu.yaml", f"model_name_or_path={tmp_path}")
    assert f"model_name_or_path {tmp_path} {named}" in line


def test_every_problem_is_reported_at_once(in_checkout: Path, capsys):
    lines = train_errors(
        capsys, "yaml/demo_cpu.yaml", "lr=1", "dataset=nope", "deepspeed=examples/deepspeed/nope.json"
    )
    assert len(lines) == 3
    assert "unknown key 'lr'" in lines[0]
    assert "dataset 'nope'" in lines[1]
    assert "deepspeed config examples/deepspeed/nope.json not found" in lines[2]


def test_override_without_equals(in_checkout: Path, capsys):
    (line,) = train_errors(capsys, "yaml/demo_cpu.yaml", "max_steps")
    assert "override 'max_steps': expected key=value" in line


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("learning_rate=abc", "learning_rate: 'abc' is not a number"),
        ("num_train_epochs=-1", "num_train_epochs: -1 must be above 0"),
        ("per_device_train_batch_size=0", "per_device_train_batch_size: 0 must be at least 1"),
        ("cutoff_len=-1", "cutoff_len: -1 must be at least 1"),
        ("template=qwen_masked", "template 'qwen_masked' is not a known template: did you mean"),
        ("bf16=maybe", "bf16: 'maybe' is not true or false"),
        ("lr_scheduler_type=cosinus", "lr_scheduler_type: 'cosinus' is not one of"),
        ("learning_rate=.inf", "learning_rate: inf is not a finite number"),
        ("warmup_ratio=1.5", "warmup_ratio: 1.5 must be at most 0.999999"),
        ("save_steps=.nan", "save_steps: nan is not a finite number"),
        ("report_to=wandbb", "report_to: 'wandbb' is not a logging backend transformers knows"),
        ("output_dir=", "output_dir: None is not a directory path"),
        ("max_steps=0", "max_steps: 0 must be at least 1: set max_steps to -1"),
    ],
)
def test_bad_value_is_one_line_naming_the_key(in_checkout: Path, capsys, override: str, named: str):
    line = refused(capsys, "preflight", "yaml/demo_cpu.yaml", override)
    assert f"yaml/demo_cpu.yaml: {named}" in line


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--gpus", "abc"], "--gpus 'abc': expected a whole number"),
        (["--gpus", "²"], "--gpus '²': expected a whole number from 1 to 1,024, in ASCII digits"),
        (["--gpus", "0"], "--gpus 0: must be at least 1"),
        (["--gpus", "10000000000"], "--gpus 10000000000: must be at most 1,024"),
        (["--gpus", "8", "--gpu-mem", "-80"], "--gpu-mem -80: must be above 0"),
        (["--gpus", "8", "--gpu-mem", "lots"], "--gpu-mem 'lots': expected"),
    ],
)
def test_nonsense_flags_name_the_flag(in_checkout: Path, capsys, argv: list[str], named: str):
    assert named in refused(capsys, "preflight", "yaml/demo_cpu.yaml", *argv)


def test_master_port_out_of_range(in_checkout: Path, capsys, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MASTER_PORT", "99999")
    line = refused(capsys, "preflight", "yaml/demo_cpu.yaml")
    assert "MASTER_PORT=99999: must be at most 65,535" in line


def test_gpu_config_on_a_cpu_host_says_it_needs_gpus(in_checkout: Path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has a GPU")
    lines = train_errors(capsys, "yaml/sft_config.yaml")
    assert any(
        "needs GPUs (bf16: true, enable_liger_kernel: true, flash_attn: fa2) but no CUDA device is visible"
        in line
        for line in lines
    )


def test_sft_train_sh_refuses_without_traceback(checkout: Path):
    result = subprocess.run(
        ["bash", str(checkout / "sft_train.sh"), "yaml/missing.yaml"],
        cwd=checkout,
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == EXIT_USER_ERROR
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "arpo-sft: error: yaml/missing.yaml: config file not found; "
        "pass a YAML from yaml/ (e.g. yaml/demo_cpu.yaml)"
    ]
