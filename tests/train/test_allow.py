"""`train --allow CHECK`: one failed preflight row let through, the rest still stopping the launch, and the
override in training.log's header; the memory row's margin; GPU packages imported for real."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from arpo_train_sft.cli import main
from arpo_train_sft.errors import EXIT_USER_ERROR
from arpo_train_sft.train import launch
from arpo_train_sft.train.preflight.rows import CHECKS, FAIL, OK, WARN, Gpu

from ..conftest import REPO, run_env
from .test_preflight import DEMO_CHECKS, plan_for

PREFLIGHT = REPO / "arpo_train_sft" / "train" / "preflight"


def test_every_row_a_check_can_make_is_named_in_checks():
    """--allow accepts CHECKS; every literal check name in the preflight modules must be one of them."""
    named = set()
    for path in PREFLIGHT.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) in ("Row", "_rows")
                and node.args
            ):
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    named.add(first.value)
    assert named and named <= set(CHECKS), named - set(CHECKS)
    # The two rows named from a loop variable (environment.check_gpus), and the table order.
    assert {"bf16", "flash_attn"} <= set(CHECKS)
    assert [name for name in CHECKS if name in DEMO_CHECKS] == DEMO_CHECKS


def test_an_unknown_check_is_one_line_listing_the_names(capsys):
    assert main(["train", "yaml/demo_cpu.yaml", "--allow", "memroy"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err.splitlines()
    listed = ", ".join(repr(name) if " " in name else name for name in CHECKS)
    assert err == [f"arpo-sft: error: --allow memroy: not a preflight check; the checks are: {listed}"]
    assert "memory" in err[0] and "'deepspeed schema'" in err[0]


def test_allow_launches_despite_that_row_and_records_it(
    in_checkout: Path,
    tmp_path: Path,
    capsys,
    monkeypatch,
):
    launched = []

    def fake_run_teed(cmd, env, log_path, tail=None, started=None, notes=(), quiet_from=b""):
        launched.append(notes)
        return 0

    monkeypatch.setattr(launch, "run_teed", fake_run_teed)
    # save_total_limit 0 fails the values row; transformers then keeps every checkpoint, so it can train.
    # Its own output_dir: the session's checkout holds other tests' demo runs, which --fresh would move aside.
    output_dir = f"output_dir={tmp_path / 'out'}"
    assert main(["train", "yaml/demo_cpu.yaml", "save_total_limit=0", output_dir, "--allow", "values"]) == 0
    out = capsys.readouterr().out
    assert "allowed" in out and "0 failed, 1 failed but allowed by --allow (values)" in out
    found = (
        "yaml/demo_cpu.yaml: save_total_limit: 0 must be at least 1: set save_total_limit to a whole number "
        "from 1 to 1,000,000"
    )
    assert launched == [(f"preflight override: --allow values: {found}",)]

    # Every other check still stops the launch: ddp_timeout 0 is its own row.
    code = main(
        [
            "train",
            "yaml/demo_cpu.yaml",
            "save_total_limit=0",
            "ddp_timeout=0",
            output_dir,
            "--allow",
            "values",
        ]
    )
    assert code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "ddp_timeout: 0 s" in err and "save_total_limit" not in err
    assert len(launched) == 1  # torchrun was not started the second time


def test_notes_go_into_the_training_log_header(tmp_path: Path):
    log = tmp_path / "training.log"
    notes = ("preflight override: --allow memory: x.yaml: 90 GiB of 80: does not fit",)
    assert launch.run_teed([sys.executable, "-c", "print('step 1')"], {}, log, notes=notes) == 0
    lines = log.read_text().splitlines()
    assert lines[1].startswith("===== ") and sys.executable in lines[1]
    assert lines[2:] == [f"# {notes[0]}", "step 1"]


def test_memory_fails_only_beyond_the_estimates_margin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from arpo_train_sft.train.estimate import MARGIN, estimate
    from arpo_train_sft.train.preflight.memory import check_memory

    monkeypatch.chdir(tmp_path)
    Path("x.yaml").write_text("# no 'Sized for:' header: the GPUs come from the plan\n")
    plan = plan_for(
        {
            "model_name_or_path": "Qwen/Qwen2.5-7B-Instruct",
            "cutoff_len": 15000,
            "bf16": True,
            "per_device_train_batch_size": 1,
            "deepspeed": str(REPO / "examples/deepspeed/ds_z3_config.json"),
            "enable_liger_kernel": True,
        }
    )
    total = estimate(plan.cfg, gpus=8, gpu_mem_gib=80.0).total_gib

    def row(over: float):
        return check_memory(replace(plan, gpus=[Gpu("H100", total / (1 + over))] * 8))[0]

    assert row(-0.01).status == OK
    inside = row(MARGIN * 0.6)
    assert inside.status == WARN and f"inside the estimate's {MARGIN:.0%} margin" in inside.found
    beyond = row(MARGIN * 1.5)
    assert beyond.status == FAIL and "beyond the estimate's" in beyond.found
    assert beyond.fix.endswith("or launch anyway with --allow memory")


def _fake_package(root: Path, module: str, dist: str, version: str, body: dict[str, str]) -> None:
    """A package that pip would list (its dist-info) with the given module files."""
    info = root / f"{module}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(f"{module}\n")  # transformers maps modules to dists through it
    for name, text in body.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.integration
def test_gpu_packages_are_imported_and_a_broken_build_is_one_row(checkout: Path, tmp_path: Path):
    """A flash-attn built for another torch fails its row naming torch and the fix; a good Liger passes."""
    site = tmp_path / "site"
    broken = 'raise ImportError("flash_attn_2_cuda.so: undefined symbol: _ZN3c104cuda9SetDeviceEi")\n'
    _fake_package(
        site,
        "flash_attn",
        "flash-attn",
        "2.8.3",
        {"flash_attn/__init__.py": "", "flash_attn/flash_attn_interface.py": broken},
    )
    _fake_package(
        site,
        "liger_kernel",
        "liger-kernel",
        "0.8.5",
        {"liger_kernel/__init__.py": "", "liger_kernel/transformers/__init__.py": ""},
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "arpo_train_sft.cli",
            "preflight",
            "yaml/demo_cpu.yaml",
            "flash_attn=fa2",
            "enable_liger_kernel=true",
            "--json",
        ],
        cwd=checkout,
        env=run_env(PYTHONPATH=str(site)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert "Traceback" not in result.stderr
    import torch

    versions = {
        row["found"].split()[0]: row for row in json.loads(result.stdout) if row["check"] == "versions"
    }
    flash = versions["flash-attn"]
    assert flash["status"] == FAIL
    assert flash["found"] == (
        f"flash-attn 2.8.3 does not load with torch {torch.__version__}: ImportError: "
        "flash_attn_2_cuda.so: undefined symbol: _ZN3c104cuda9SetDeviceEi"
    )
    assert flash["fix"].startswith(f"reinstall it built for torch {torch.__version__}")
    assert versions["liger-kernel"]["status"] == OK
    assert versions["liger-kernel"]["found"].endswith(f", loads with torch {torch.__version__}")
    assert sum("flash-attn 2.8.3 does not load" in line for line in result.stderr.splitlines()) == 1
