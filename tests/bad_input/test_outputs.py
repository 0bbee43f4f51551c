"""Every output of every command, checked before any work: no device, FIFO, socket, folder, link or input is
ever replaced. Each refusal is exit 2, one line, and leaves every file as it was."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest

from arpo_train_sft.cli import main
from arpo_train_sft.errors import EXIT_USER_ERROR, UserError

DEMO = Path(__file__).resolve().parents[2] / "dataset_info" / "demo" / "arpo_sft_demo.jsonl"

# command -> (argv, the output the test puts something in the way of); paths are relative to the test's folder.
FILE_OUTPUTS = {
    "data prepare --output": ("data prepare --input rows.jsonl --output {out} --model {model}", "x.jsonl"),
    "data prepare --rejects": (
        "data prepare --input rows.jsonl --output ok.jsonl --rejects {out} --model {model}",
        "x.jsonl",
    ),
    "data stats --plot": ("data stats rows.jsonl --model {model} --plot {out}", "x.png"),
    "data download": ("data download --from-file rows.jsonl --out dl", "dl/final_5w4_still.jsonl"),
    "plot --out": ("plot run --out {out}", "x.png"),
    "verify --report": ("verify {model} --prompts prompts.jsonl --report {out}", "x.json"),
    "init": ("init work --force", "work/yaml/demo_cpu.yaml"),
}
KINDS = ("fifo", "socket", "device", "directory", "symlink")
SAYS = {
    "fifo": "is a FIFO, not a regular file",
    "socket": "is a socket, not a regular file",
    "device": "is a character device, not a regular file",
    "directory": "is a directory",
    "symlink": "is a symbolic link to",
}


def make(kind: str, path: Path) -> None:
    """Put a `kind` at `path`: what a careless or hostile output path names instead of a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    elif kind == "device":  # /dev/null's numbers, in the test's own folder: the real one is never at stake
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("making a device node needs root")
    elif kind == "directory":
        path.mkdir()
    else:
        (path.parent / "target.txt").write_text("mine\n")
        path.symlink_to(path.parent / "target.txt")


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every entry under root: its type bits and, for a regular file, its bytes."""
    return {
        str(p.relative_to(root)): (
            stat.S_IFMT(p.lstat().st_mode),
            p.read_text(errors="replace") if p.is_file() and not p.is_symlink() else "",
        )
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The inputs every case reads: three demo rows, a run, prompts and a corpus; the cwd is this folder."""
    (tmp_path / "rows.jsonl").write_text("".join(DEMO.read_text().splitlines(keepends=True)[:3]))
    run = tmp_path / "run"
    (run / "checkpoint-2").mkdir(parents=True)
    lines = [{"current_steps": s, "loss": 1.0, "lr": 1e-5, "epoch": s / 4} for s in (1, 2)]
    (run / "trainer_log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (run / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2, "log_history": []}')
    (run / "metrics.jsonl").write_text('{"step": 1, "tokens_per_second_per_gpu": 5.0}\n')
    (tmp_path / "prompts.jsonl").write_text('{"question": "What is 1 + 1?", "answer": "2"}\n')
    (tmp_path / "corpus.jsonl").write_text('{"text": "One and one make two."}\n')
    monkeypatch.chdir(tmp_path)
    return tmp_path


def refused(argv: str, root: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run argv; it must exit 2 with exactly one error line, write nothing and change nothing under root."""
    before = snapshot(root)
    code = main(argv.split())
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert code == EXIT_USER_ERROR and line.startswith("arpo-sft: error: "), captured.err
    assert "nothing was written" in line and "Traceback" not in captured.out
    assert snapshot(root) == before
    return line


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", sorted(FILE_OUTPUTS))
def test_an_output_that_is_not_a_regular_file_is_refused(command, kind, folder, tiny_model, capsys):
    argv, out = FILE_OUTPUTS[command]
    make(kind, folder / out)
    line = refused(argv.format(out=out, model=tiny_model), folder, capsys)
    assert f"{out} {SAYS[kind]}" in line
    if kind == "symlink":  # the fix names where the link points, so writing there is one edit away
        assert str((folder / out).parent.resolve() / "target.txt") in line


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "directory"] + ["file", "full folder"])
def test_export_refuses_an_out_dir_that_is_not_a_new_or_empty_directory(kind, folder, tiny_model, capsys):
    out = folder / "exported"
    if kind == "file":
        out.write_text("mine\n")
    elif kind == "full folder":
        out.mkdir()
        (out / "keep.txt").write_text("mine\n")
    elif kind == "symlink":  # even to an empty folder: the export would land wherever the link points
        (folder / "elsewhere").mkdir()
        out.symlink_to(folder / "elsewhere")
    else:
        make(kind, out)
    line = refused(f"export {tiny_model} {out}", folder, capsys)
    says = {"file": "is a file, not a directory", "full folder": "already exists and is not empty"}
    assert f"OUT_DIR {out} {says.get(kind) or SAYS[kind]}" in line


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ("plot run --out run/trainer_log.jsonl", "the input OUTPUT_DIR's trainer_log.jsonl"),
        ("plot run --out run/metrics.jsonl", "the input OUTPUT_DIR's metrics.jsonl"),
        (
            "plot run --out run/checkpoint-2/trainer_state.json",
            "the input OUTPUT_DIR's checkpoint-2/trainer_state.json",
        ),
        (
            "verify {model} --prompts prompts.jsonl --report prompts.jsonl",
            "the input --prompts prompts.jsonl",
        ),
        ("verify {model} --corpus corpus.jsonl --report corpus.jsonl", "the input --corpus corpus.jsonl"),
        ("verify {model} --report {model}/config.json", "the input MODEL's config.json"),
        ("verify {model} --report {model}/model.safetensors", "the input MODEL's model.safetensors"),
        ("data stats rows.jsonl --model {model} --plot rows.jsonl", "the input PATH rows.jsonl"),
        (
            "data prepare --input rows.jsonl --output o.jsonl --rejects o.jsonl --model {model}",
            "--output o.jsonl",
        ),
    ],
)
def test_an_output_that_is_an_input_or_another_output_is_refused(argv, says, folder, tiny_model, capsys):
    line = refused(argv.format(model=tiny_model), folder, capsys)
    assert f"is the same file as {says}" in line


def test_an_output_hard_linked_to_the_model_is_refused(folder, tiny_model, capsys):
    os.link(tiny_model / "config.json", folder / "report.json")
    line = refused(f"verify {tiny_model} --report report.json", folder, capsys)
    assert "--report report.json is the same file as the input MODEL's config.json" in line


def test_init_never_writes_over_the_files_it_ships(folder, capsys, monkeypatch: pytest.MonkeyPatch):
    from arpo_train_sft.presets import init

    (folder / "work").mkdir()
    (folder / "work" / "a.yaml").write_text("stage: sft\n")
    monkeypatch.setattr(init, "shipped_files", lambda: {"a.yaml": folder / "work" / "a.yaml"})
    line = refused("init work --force", folder, capsys)
    assert "DIR's a.yaml work/a.yaml is the same file as the input the shipped a.yaml" in line


def test_a_nul_byte_in_an_output_is_one_line(folder, capsys):
    assert main(["plot", "run", "--out", "a\0b.png"]) == EXIT_USER_ERROR
    (line,) = capsys.readouterr().err.splitlines()
    assert "holds a NUL byte" in line


def test_atomic_writer_itself_refuses_what_check_outputs_refuses(tmp_path: Path):
    """The last line of defence for a writer that did not call check_outputs: the same rule, same words."""
    from arpo_train_sft.atomic import atomic_writer

    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UserError) as err, atomic_writer(tmp_path / "fifo") as handle:
        handle.write("never\n")
    assert f"{tmp_path / 'fifo'} is a FIFO, not a regular file" in err.value.problems[0]
    assert stat.S_ISFIFO((tmp_path / "fifo").lstat().st_mode)


def test_a_link_that_takes_the_name_while_writing_is_not_replaced(tmp_path: Path):
    from arpo_train_sft.atomic import atomic_writer

    target, out = tmp_path / "target.txt", tmp_path / "out.txt"
    target.write_text("mine\n")
    with pytest.raises(UserError) as err, atomic_writer(out) as handle:
        handle.write("new\n")
        out.symlink_to(target)  # e.g. another user racing the writer in a shared folder
    assert "is a symbolic link to" in err.value.problems[0]
    assert out.is_symlink() and target.read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt", "target.txt"]  # no .partial left


def test_a_full_disk_inside_the_block_is_exit_3_and_keeps_the_old_file(tmp_path: Path):
    """Without root (no tmpfs to fill): errno 28 raised where a write would raise it."""
    import errno

    from arpo_train_sft.atomic import atomic_writer
    from arpo_train_sft.errors import EXIT_ENVIRONMENT

    out = tmp_path / "out.txt"
    out.write_text("old\n")
    with pytest.raises(UserError) as err, atomic_writer(out) as handle:
        handle.write("new\n")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert err.value.exit_code == EXIT_ENVIRONMENT
    (line,) = err.value.problems
    assert line.startswith(f"{out}: the disk filled up while writing it (") and "nothing was replaced" in line
    assert out.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
