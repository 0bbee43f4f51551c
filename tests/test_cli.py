"""The command line itself: every subcommand has help and an example, and `--help` imports nothing heavy."""

from __future__ import annotations

import subprocess
import sys

import pytest

from arpo_train_sft.cli import make_parser

HEAVY = ("torch", "transformers", "llamafactory", "deepspeed", "datasets")


def subcommand_parsers(parser=None, prefix=()):
    """Every leaf subcommand parser, with its command path."""
    import argparse

    parser = parser or make_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from subcommand_parsers(child, (*prefix, name))
            return
    yield prefix, parser


def test_help_imports_nothing_heavy():
    code = (
        "import sys\n"
        "from arpo_train_sft.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("path_and_parser", list(subcommand_parsers()), ids=lambda p: " ".join(p[0]))
def test_every_subcommand_has_help_and_an_example(path_and_parser):
    path, parser = path_and_parser
    text = parser.format_help()
    assert parser.description or parser.format_usage()
    assert "example" in text, f"arpo-sft {' '.join(path)} --help shows no example"
    assert f"arpo-sft {' '.join(path)}" in text


def test_top_level_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as done:
        make_parser().parse_args(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "demo-model", "data"):
        assert command in out
