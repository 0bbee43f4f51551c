"""`arpo-sft handoff` on the tiny demo model (real tokenizer, LLaMA-Factory's qwen template), and copies of it broken."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pytest

from arpo_train_sft.errors import EXIT_DATA, EXIT_OK, EXIT_USER_ERROR, UserError
from arpo_train_sft.handoff import checks, command, serving
from arpo_train_sft.handoff.model import load_model_dir

CHECK_NAMES = ["generation_config eos", "tokenizer eos", "chat template", "result splice", "loads in vLLM"]


def handoff(*argv: str) -> int:
    """`arpo-sft handoff ...` as the CLI runs it: its exit status, the failure lines printed as cli.main does."""
    parser = argparse.ArgumentParser(prog="arpo-sft")
    command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["handoff", *argv])
    try:
        return args.func(args)
    except UserError as err:
        for line in err.problems:
            print(f"arpo-sft: error: {line}", file=sys.stderr)
        return err.exit_code


def error_lines(err: str) -> list[str]:
    """Our lines on stderr (LLaMA-Factory's logger may add its own)."""
    return [line for line in err.splitlines() if line.startswith("arpo-sft:")]


def as_json(capsys: pytest.CaptureFixture[str]) -> dict[str, dict]:
    out = json.loads(capsys.readouterr().out)
    return {row["name"]: row for row in out["checks"]}


@pytest.fixture
def good(tiny_model: Path) -> Path:
    """The demo model as `demo-model` saves it: the layout and files `arpo-sft export` writes (read-only)."""
    return tiny_model


@pytest.fixture
def copy(good: Path, tmp_path: Path) -> Path:
    return shutil.copytree(good, tmp_path / "model")


def test_a_good_model_passes_every_check(good: Path, capsys):
    assert handoff(str(good), "--json") == EXIT_OK
    rows = as_json(capsys)
    assert list(rows) == CHECK_NAMES
    assert all(row["ok"] for row in rows.values())
    assert rows["result splice"]["status"] == "pass"
    assert rows["chat template"]["detail"].startswith("ARPO's RL prompt renders to training's")


def test_the_table_names_every_check(good: Path, capsys):
    assert handoff(str(good)) == EXIT_OK
    out = capsys.readouterr().out
    assert all(name in out for name in CHECK_NAMES)


def test_generation_config_without_im_end_fails_naming_it(copy: Path, capsys):
    config = json.loads((copy / "generation_config.json").read_text())
    config["eos_token_id"] = 151643  # <|endoftext|> only: LLaMA-Factory issue #7454's export
    (copy / "generation_config.json").write_text(json.dumps(config))
    assert handoff(str(copy)) == EXIT_DATA
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1
    assert (
        "generation_config eos" in errors[0] and "eos_token_id 151643 lacks <|im_end|> (151645)" in errors[0]
    )
    assert '"eos_token_id": [151645, 151643]' in errors[0]


def test_a_tokenizer_whose_eos_is_not_im_end_fails(copy: Path, capsys):
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config["eos_token"] = "<|endoftext|>"
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    assert handoff(str(copy)) == EXIT_DATA
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "tokenizer eos" in errors[0] and "<|endoftext|>" in errors[0]


def test_a_chat_template_that_renders_differently_fails_naming_it(copy: Path, capsys):
    template = (copy / "chat_template.jinja").read_text()
    broken = template.replace("'<|im_start|>assistant\\n'", "'<|im_start|>assistant\\n\\n'")
    assert broken != template
    (copy / "chat_template.jinja").write_text(broken)
    assert handoff(str(copy), "--json") == EXIT_DATA
    captured = capsys.readouterr()
    rows = {row["name"]: row for row in json.loads(captured.out)["checks"]}
    assert not rows["chat template"]["ok"] and rows["chat template"]["fix"]
    assert [name for name, row in rows.items() if not row["ok"]] == ["chat template"]
    errors = error_lines(captured.err)
    assert len(errors) == 1 and "chat template: ARPO's RL prompt differs" in errors[0]


def test_a_tokenizer_that_adds_a_bos_to_every_encode_fails_the_splice(copy: Path, capsys):
    tokenizer = json.loads((copy / "tokenizer.json").read_text())
    bos = {"id": "<|endoftext|>", "ids": [151643], "tokens": ["<|endoftext|>"]}
    tokenizer["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [
            {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
        ],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|endoftext|>": bos},
    }
    (copy / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert handoff(str(copy)) == EXIT_DATA
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1
    assert "result splice: tokenizer.encode adds ['<|endoftext|>']" in errors[0]


def test_a_boundary_training_merged_is_named_not_failed(good: Path, monkeypatch):
    # After `</result>` a newline: training's one text has the token '>\n', ARPO's separate encode '>'.
    monkeypatch.setattr(checks, "SAMPLE_AFTER", "\n<think> The product is 391. </think>")
    found = checks.splice_check(load_model_dir(good))
    assert found.status == "warn" and found.ok
    assert "differ only after </result>" in found.detail and "'>\\n'" in found.detail


def write_rows(path: Path, lengths: list[int]) -> Path:
    """Prepared rows whose responses are `n` tokens of ' x' (plus <|im_end|> and its newline)."""
    rows = [
        {
            "system": "s",
            "conversations": [
                {"from": "human", "value": "q"},
                {"from": "gpt", "value": "x" + " x" * (n - 1)},
            ],
        }
        for n in lengths
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_data_counts_responses_over_the_budget_and_the_trained_tokens_past_it(
    good: Path, tmp_path: Path, capsys
):
    data = write_rows(tmp_path / "prepared.jsonl", [3, 10, 28])  # responses of 5, 12 and 30 tokens
    assert handoff(str(good), "--data", str(data), "--rl-response-budget", "10", "--json") == EXIT_OK
    row = as_json(capsys)["RL response budget"]
    assert row["status"] == "warn" and row["ok"]
    assert row["detail"] == (
        "2 of 3 rows in prepared.jsonl have responses over 10 tokens; 22 of 47 trained tokens (46.8%) lie past it"
    )


def test_data_within_the_budget_passes(good: Path, tmp_path: Path, capsys):
    data = write_rows(tmp_path / "prepared.jsonl", [3, 8])
    assert handoff(str(good), "--data", str(data), "--json") == EXIT_OK
    row = as_json(capsys)["RL response budget"]
    assert row["status"] == "pass"
    assert row["detail"].startswith("0 of 2 rows in prepared.jsonl have responses over 4096 tokens; 0 of 15")


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("missing", "not a directory"),
        ("no_config", "config.json: missing"),
        ("torn_generation_config", "generation_config.json: cannot be read as JSON"),
        ("no_tokenizer", "tokenizer_config.json: missing"),
        ("missing_data", "no such file"),
        ("directory_data", "is a directory"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(case: str, says: str, copy: Path, tmp_path: Path, capsys):
    argv = [str(copy)]
    if case == "missing":
        argv = [str(tmp_path / "nosuch")]
    elif case == "no_config":
        (copy / "config.json").unlink()
    elif case == "torn_generation_config":
        (copy / "generation_config.json").write_text('{"eos_token_id": ')
    elif case == "no_tokenizer":
        (copy / "tokenizer_config.json").unlink()
    elif case == "missing_data":
        argv += ["--data", str(tmp_path / "nosuch.jsonl")]
    else:
        argv += ["--data", str(tmp_path)]
    assert handoff(*argv) == EXIT_USER_ERROR
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    lines = error_lines(captured.err)
    assert len(lines) == 1 and lines[0].startswith("arpo-sft: error: ") and says in lines[0], lines


def test_a_budget_that_is_not_a_positive_number_is_a_usage_error(good: Path, capsys):
    with pytest.raises(SystemExit) as stop:
        handoff(str(good), "--rl-response-budget", "0")
    assert stop.value.code == EXIT_USER_ERROR
    assert "--rl-response-budget" in capsys.readouterr().err


def test_the_vllm_row_is_skipped_cleanly_without_vllm(good: Path, monkeypatch):
    monkeypatch.setattr(serving.importlib.util, "find_spec", lambda name: None)
    found = serving.vllm_check(good, checks.QUESTION)
    assert (found.status, found.ok, found.detail) == ("skip", True, "vllm not installed: skipped")


def test_export_prints_the_stop_and_template_checks(good: Path, tmp_path: Path, capsys):
    """Exporting a saved model (no training run): its output ends with the hand-off table."""
    from arpo_train_sft.checkpoint import export

    parser = argparse.ArgumentParser()
    export.add_parser(parser.add_subparsers())
    args = parser.parse_args(["export", str(good), str(tmp_path / "exported")])
    assert args.func(args) == EXIT_OK
    out = capsys.readouterr().out
    table = out.split("hand-off to RL")[1]
    assert all(name in table for name in CHECK_NAMES[:3]) and "result splice" not in table
    assert table.count("pass") == 3 and "failed" not in table
