"""`arpo-sft sandbox run` and verify's sandbox flag: what they print, exit with, and record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arpo_train_sft import cli
from arpo_train_sft.errors import EXIT_ENVIRONMENT, EXIT_USER_ERROR
from arpo_train_sft.verify import command, sandbox
from arpo_train_sft.verify.loop import Step
from arpo_train_sft.verify.sandbox import command as sandbox_command
from arpo_train_sft.verify.sandbox import isolation_problem, run_python

from .scripted import script_the_model

problem = isolation_problem()
pytestmark = pytest.mark.skipif(
    bool(problem and " namespace" in problem), reason=f"the host refuses namespaces: {problem}"
)
SIMULATED = "network namespace: Operation not permitted (simulated by the test)"


def _simulate_no_isolation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the probe report what a host without namespaces reports, wherever it is asked."""
    for module in (sandbox, sandbox_command, command):
        monkeypatch.setattr(module, "isolation_problem", lambda: SIMULATED)


def _snippet(tmp_path: Path, code: str) -> str:
    path = tmp_path / "snippet.py"
    path.write_text(code, encoding="utf-8")
    return str(path)


def test_it_prints_what_the_tool_loop_would_put_inside_result(tmp_path: Path, capsys) -> None:
    code = "import math\nx = math.factorial(5)\nx"
    assert cli.main(["sandbox", "run", _snippet(tmp_path, code)]) == 0
    assert capsys.readouterr() == (run_python(code).tool_output() + "\n", "")


def test_failing_or_stopped_code_still_exits_0(tmp_path: Path, capsys) -> None:
    assert cli.main(["sandbox", "run", _snippet(tmp_path, "raise ValueError('bad input')")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "ValueError: bad input"
    loop = _snippet(tmp_path, "print('started')\nwhile True:\n    pass")
    assert cli.main(["sandbox", "run", loop, "--timeout", "1"]) == 0
    assert (
        capsys.readouterr().out == "Execution stopped: wall-clock timeout after 1 s\n"
    )  # stdout is not shown


def test_without_isolation_it_exits_3_unless_the_weak_mode_is_accepted(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    _simulate_no_isolation(monkeypatch)
    file = _snippet(tmp_path, "print(6 * 7)")
    assert cli.main(["sandbox", "run", file]) == EXIT_ENVIRONMENT == 3
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("arpo-sft: error: the python sandbox cannot isolate")
    assert SIMULATED in err and "--allow-weak-sandbox" in err and len(err.splitlines()) == 1
    assert cli.main(["sandbox", "run", file, "--allow-weak-sandbox"]) == 0
    out, err = capsys.readouterr()
    assert out == "42\n" and err == f"arpo-sft: warning: weak sandbox ({SIMULATED})\n"


def test_an_unreadable_file_or_a_bad_timeout_is_a_user_error(tmp_path: Path, capsys) -> None:
    assert cli.main(["sandbox", "run", str(tmp_path / "missing.py")]) == EXIT_USER_ERROR
    assert "missing.py: cannot read it" in capsys.readouterr().err
    assert cli.main(["sandbox", "run", _snippet(tmp_path, "1"), "--timeout", "0"]) == EXIT_USER_ERROR


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """Passes verify's file checks; the model itself is never loaded by these tests."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "qwen2"}')  # verify reads it through transformers
    for name in ("model.safetensors", "tokenizer.json"):
        (model / name).write_text("{}")
    return model


def test_verify_refuses_model_code_without_isolation(model_dir: Path, capsys, monkeypatch) -> None:
    _simulate_no_isolation(monkeypatch)
    monkeypatch.setattr(command, "_model_engine", lambda kind, path: pytest.fail("must not load a model"))
    assert cli.main(["verify", str(model_dir)]) == EXIT_ENVIRONMENT
    assert SIMULATED in capsys.readouterr().err


@pytest.mark.parametrize("isolated", [True, False])
def test_verify_records_the_sandbox_mode_that_ran(
    isolated: bool, model_dir: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not isolated:
        _simulate_no_isolation(monkeypatch)
    pieces = ["<think>Count.</think>\n<python>print(6 * 7)</python>", "<answer>\\boxed{42}</answer>"]

    script_the_model(monkeypatch, lambda: Step(pieces.pop(0), 5, False))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"question": "6 * 7?", "answer": "42"}\n')
    report = tmp_path / "verify.json"
    argv = ["verify", str(model_dir), "--prompts", str(prompts), "--report", str(report)]
    assert cli.main(argv + ([] if isolated else ["--allow-weak-sandbox"])) == 0
    data = json.loads(report.read_text())
    assert data["settings"]["sandbox_mode"] == ("isolated" if isolated else "weak")
    assert data["settings"]["allow_weak_sandbox"] is not isolated
    assert "<result>42</result>" in data["prompts"][0]["trajectory"]  # the python call really ran
    assert ("warning: weak python sandbox" in capsys.readouterr().out) is not isolated
