"""The command line itself: every subcommand has help and an example, and `--help` imports nothing heavy."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator

import pytest

from arpo_train_sft.cli import make_parser

HEAVY = ("torch", "transformers", "llamafactory", "deepspeed", "datasets")


def subcommand_parsers(
    parser: argparse.ArgumentParser | None = None, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str | None]]:
    """Every subcommand parser below `parser` (groups such as `data` too), with its path and listed help."""
    parser = parser or make_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {choice.dest: choice.help for choice in action._choices_actions}
            for name, child in action.choices.items():
                yield (*prefix, name), child, listed.get(name)
                yield from subcommand_parsers(child, (*prefix, name))


def example_commands(epilog: str | None) -> list[list[str]]:
    """The argv of every `arpo-sft ...` example in an epilog, without env assignments or trailing notes."""
    commands = []
    for line in (epilog or "").splitlines():
        for part in line.split("&&"):
            # A note follows the command after two or more spaces.
            words = shlex.split(re.split(r"\s{2,}", part.strip())[0])
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                words.pop(0)
            if words[:1] == ["arpo-sft"]:
                commands.append(words[1:])
    return commands


def test_help_imports_nothing_heavy():
    code = (
        "import sys\n"
        "from arpo_train_sft.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("found", list(subcommand_parsers()), ids=lambda found: " ".join(found[0]))
def test_every_subcommand_has_help_and_an_example(found):
    path, parser, listed_help = found
    command = " ".join(path)
    assert listed_help and listed_help.strip(), f"arpo-sft {command} has no help line in its parent's listing"
    examples = [argv for argv in example_commands(parser.epilog) if argv[: len(path)] == list(path)]
    assert examples, f"arpo-sft {command} --help shows no example of arpo-sft {command}"
    for argv in examples:
        try:
            make_parser().parse_args(argv)
        except SystemExit as done:
            pytest.fail(f"the example `arpo-sft {shlex.join(argv)}` does not parse (exit {done.code})")


def test_top_level_help_lists_every_command_and_its_examples_parse(capsys):
    parser = make_parser()
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    listing = out.split("positional arguments:")[1].split("options:")[0]
    listed = re.findall(r"^ {4}(\S+)", listing, flags=re.MULTILINE)
    commands = [path[0] for path, _, _ in subcommand_parsers(parser) if len(path) == 1]
    assert {"train", "demo-model", "data"} <= set(commands)
    assert listed == commands
    examples = example_commands(parser.epilog)
    assert {argv[0] for argv in examples} >= {"init", "train", "demo-model"}
    for argv in examples:
        try:
            make_parser().parse_args(argv)
        except SystemExit as failed:
            pytest.fail(f"the example `arpo-sft {shlex.join(argv)}` does not parse (exit {failed.code})")
