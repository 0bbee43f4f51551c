"""`arpo-sft preflight`: a good config passes; guardrails warn; what each row checks.

Bad keys, values and flags, one named line and exit 2: tests/bad_input/test_train.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from arpo_train_sft.cli import main
from arpo_train_sft.errors import EXIT_USER_ERROR, UserError
from arpo_train_sft.train.preflight import SKIP_FLAG, report
from arpo_train_sft.train.preflight.repro import departures
from arpo_train_sft.train.preflight.rows import FAIL, OK, WARN, Row
from arpo_train_sft.train.topology import free_port

from ..conftest import REPO, run_env

# The check names the table must show for the CPU demo, in table order.
DEMO_CHECKS = [
    "keys",
    "values",
    "template",
    "llamafactory",
    "deepspeed schema",
    "versions",
    "gpus",
    "memory",
    "topology",
    "ddp_timeout",
    "stop_timeout",
    "model",
    "dataset",
    "deepspeed",
    "output_dir",
    "disk",
    "resume",
    "ARPO run",
]


def test_llamafactory_and_deepspeed_refusals_come_from_their_own_checks(in_checkout: Path, capsys):
    config = json.loads((in_checkout / "examples" / "deepspeed" / "ds_z3_config.json").read_text())
    config["zero_optimization"].update(stage=7)
    bad = in_checkout / "examples" / "deepspeed" / "bad_stage.json"
    bad.write_text(json.dumps(config))
    assert main(["preflight", "yaml/demo_cpu.yaml", "do_predict=true", f"deepspeed={bad}"]) == EXIT_USER_ERROR
    assert capsys.readouterr().err.splitlines() == [
        "arpo-sft: error: yaml/demo_cpu.yaml: LLaMA-Factory refuses it: Please enable `predict_with_generate` "
        "to save model predictions: change the setting it names",
        f"arpo-sft: error: {bad}: zero_optimization.stage: Input should be 0, 1, 2, 3 or 3: "
        "use one of examples/deepspeed/*.json as a base",
    ]


def test_demo_config_passes_with_every_check_in_the_table(in_checkout: Path, capsys):
    assert main(["preflight", "yaml/demo_cpu.yaml"]) == 0
    out = capsys.readouterr().out
    table_checks = [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")]
    assert list(dict.fromkeys(name for name in table_checks if name)) == DEMO_CHECKS
    assert " fail " not in out
    assert "all passed" in out


def test_train_stops_before_torchrun_and_names_the_bypass(in_checkout: Path, capsys):
    assert main(["train", "yaml/demo_cpu.yaml", "cutoff_len=-1"]) == EXIT_USER_ERROR
    captured = capsys.readouterr()
    assert "torch.distributed.run" not in captured.out
    lines = captured.err.splitlines()
    assert "cutoff_len: -1 must be at least 1" in lines[0]
    assert SKIP_FLAG in lines[-1] and "torchrun was not started" in lines[-1]


def test_skip_preflight_skips_the_checks(in_checkout: Path, capsys, monkeypatch: pytest.MonkeyPatch):
    # The launcher still refuses a port it cannot use, but no longer as a preflight failure.
    monkeypatch.setenv("MASTER_PORT", "99999")
    assert main(["train", SKIP_FLAG, "yaml/demo_cpu.yaml", "cutoff_len=-1"]) == EXIT_USER_ERROR
    captured = capsys.readouterr()
    assert f"{SKIP_FLAG}: launching without the preflight checks" in captured.out
    assert "preflight failed" not in captured.err
    assert captured.err.splitlines() == [
        "arpo-sft: error: MASTER_PORT=99999: must be at most 65,535; expected a whole number from 1 to 65,535"
    ]


def test_json_rows_and_failures(capsys):
    rows = [
        Row("keys", OK, "25 keys"),
        Row("values", FAIL, "cutoff_len: -1 must be above 0", "fix", "a.yaml"),
    ]
    with pytest.raises(UserError) as err:
        report(rows, as_json=True, title="t")
    assert err.value.problems == ["a.yaml: cutoff_len: -1 must be above 0: fix"]
    assert [row["check"] for row in json.loads(capsys.readouterr().out)] == ["keys", "values"]


ARPO = {
    "per_device_train_batch_size": 1,
    "gradient_accumulation_steps": 2,
    "learning_rate": 7.0e-6,
    "num_train_epochs": 3.0,
    "cutoff_len": 15000,
    "template": "qwen",
    "average_tokens_across_devices": False,
}


def test_arpo_values_raise_no_warning():
    assert departures(ARPO, world_size=8) == []


@pytest.mark.parametrize(
    ("change", "world", "named"),
    [
        ({}, 16, "global batch 32 = 1 per device x 2 accumulation x 16 ranks"),
        ({"per_device_train_batch_size": 4}, 8, "global batch 64"),
        ({"learning_rate": 5e-6}, 8, "learning_rate 5e-06"),
        ({"num_train_epochs": 5.0}, 8, "num_train_epochs 5.0"),
        ({"max_steps": 100}, 8, "max_steps 100"),
        ({"cutoff_len": 8192}, 8, "cutoff_len 8192"),
        ({"template": "qwen_mask_results"}, 8, "template qwen_mask_results: masking on"),
        ({"template": "llama3"}, 8, "template llama3"),
        ({"average_tokens_across_devices": True}, 8, "average_tokens_across_devices True: the loss is"),
        ({"enable_liger_kernel": True}, 8, "enable_liger_kernel true: Liger's fused"),
    ],
)
def test_each_departure_from_arpo_is_named(change: dict, world: int, named: str):
    found = departures({**ARPO, **change}, world_size=world)
    assert len(found) == 1 and found[0][0].startswith(named), found


def test_the_loss_departure_names_the_key_and_arpos_value_also_when_the_key_is_unset():
    unset = {key: value for key, value in ARPO.items() if key != "average_tokens_across_devices"}
    [(found, why)] = departures(unset, world_size=8)
    assert found.startswith("average_tokens_across_devices unset (true in transformers 5)")
    assert "4.52.4 defaulted to false" in why and why.endswith(
        "set average_tokens_across_devices: false to train ARPO's loss"
    )
    [(_, liger)] = departures({**ARPO, "enable_liger_kernel": True}, world_size=8)
    assert "same token count" in liger and "bench/gpu_check.sh" in liger


def test_guardrails_warn_but_do_not_fail(in_checkout: Path, monkeypatch: pytest.MonkeyPatch):
    from argparse import Namespace

    from arpo_train_sft.train.preflight import make_plan
    from arpo_train_sft.train.preflight.repro import check_reproduction

    monkeypatch.setenv("NPROC_PER_NODE", "8")
    args = Namespace(
        config="yaml/qwen2.5-7b-quality.yaml", overrides=["template=qwen_mask_results"], gpus="8"
    )
    rows = check_reproduction(make_plan(args))
    assert {row.status for row in rows} == {WARN}
    assert [row.found for row in rows] == [
        "learning_rate 5e-06",
        "num_train_epochs 5.0",
        "enable_liger_kernel true: Liger's fused linear + cross-entropy loss",
        "template qwen_mask_results: masking on",
    ]


_EVERY_YAML = """
import json, sys
from pathlib import Path
from arpo_train_sft.config import load_run_config
from arpo_train_sft.train.preflight.rows import Plan
from arpo_train_sft.train.preflight.arguments import child_values
from arpo_train_sft.train.preflight.child import deepspeed_mismatches, deepspeed_problems, llamafactory_problem
verdicts = {}
for path in sorted(Path("yaml").glob("*.yaml")):
    plan = Plan(cfg=load_run_config(path), gpus=[], env={})
    values, _ = child_values(plan)
    problem, args = llamafactory_problem(values)
    ds = Path(values["deepspeed"])
    # The JSON against the config as written (precision included), as the launched job fills it.
    precision = {key: bool(plan.cfg.values.get(key)) for key in ("bf16", "fp16")}
    verdicts[path.name] = [problem, deepspeed_problems(ds) + deepspeed_mismatches(ds, args, 8, precision)]
print("VERDICTS " + json.dumps(verdicts))
"""


def test_every_shipped_yaml_passes_llamafactorys_own_parser():
    # One process for all of them (the import is the slow part), set up as one torchrun rank, like preflight.
    env = run_env(
        WORLD_SIZE="1",
        RANK="0",
        LOCAL_RANK="0",
        LOCAL_WORLD_SIZE="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
    )
    result = subprocess.run(
        [sys.executable, "-c", _EVERY_YAML], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    marked = [line for line in result.stdout.splitlines() if line.startswith("VERDICTS ")]
    assert marked, result.stderr[-2000:]
    verdicts = json.loads(marked[0].removeprefix("VERDICTS "))
    assert sorted(verdicts) == sorted(path.name for path in (REPO / "yaml").glob("*.yaml"))
    assert verdicts == {name: [None, []] for name in verdicts}


def plan_for(values: dict, gpus: list | None = None, env: dict | None = None, declared: bool = False):
    """A Plan over `values` as if read from x.yaml, for calling one check directly (no child process)."""
    from arpo_train_sft.config import RunConfig
    from arpo_train_sft.train.preflight.rows import Plan

    cfg = RunConfig(path=Path("x.yaml"), overrides=(), values=values)
    return Plan(cfg=cfg, gpus=gpus or [], env=env or {}, declared=declared)


def test_port_in_use_on_node_zero_fails():
    import socket

    from arpo_train_sft.train.preflight.environment import check_topology

    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rows = check_topology(plan_for({}, env={"MASTER_PORT": str(port)}))
    assert [row.found for row in rows if row.status == FAIL] == [
        f"MASTER_PORT={port} is already in use on this node"
    ]


@pytest.mark.parametrize(
    ("env", "values", "named"),
    [
        ({"NNODES": "2", "NODE_RANK": "2", "MASTER_ADDR": "n0"}, {}, "NODE_RANK=2 must be below NNODES=2"),
        ({"NNODES": "2"}, {}, "set MASTER_ADDR"),
        ({}, {"ddp_timeout": 0}, "ddp_timeout: 0 s"),
    ],
)
def test_topology_and_timeout_problems_fail(env: dict, values: dict, named: str):
    from arpo_train_sft.train.preflight.environment import check_topology

    failed = [row.found for row in check_topology(plan_for(values, env=env)) if row.status == FAIL]
    assert len(failed) == 1 and named in failed[0]


def test_short_ddp_timeout_only_warns():
    from arpo_train_sft.train.preflight.environment import check_topology

    rows = check_topology(plan_for({"ddp_timeout": 60}))
    assert [row.status for row in rows if row.check == "ddp_timeout"] == [WARN]


def test_gpu_capability_and_count():
    from arpo_train_sft.train.preflight.environment import check_gpus
    from arpo_train_sft.train.preflight.rows import Gpu

    v100 = [Gpu("Tesla V100", 32.0, (7, 0))] * 4
    rows = check_gpus(plan_for({"bf16": True, "flash_attn": "fa2"}, gpus=v100, env={"NPROC_PER_NODE": "8"}))
    failed = {row.check: row.found for row in rows if row.status == FAIL}
    assert failed["gpus"] == "NPROC_PER_NODE=8 but 4 GPUs are visible"
    assert "compute capability 8.0+" in failed["bf16"] and "7.0" in failed["flash_attn"]
    h100 = [Gpu("H100", 80.0, (9, 0))] * 8
    assert {row.status for row in check_gpus(plan_for({"bf16": True, "flash_attn": "fa2"}, gpus=h100))} == {
        OK
    }


def test_logging_backend_and_kernels_are_version_checked():
    from arpo_train_sft.train.preflight.environment import check_versions

    rows = check_versions(plan_for({"report_to": ["wandb", "tensorboard"], "enable_liger_kernel": True}))
    found = " | ".join(row.found for row in rows)
    assert "torch " in found and "transformers 5.5.4" in found and "llamafactory 0.9.5" in found
    for name, why in (
        ("wandb", "report_to: wandb"),
        ("tensorboard", "report_to: tensorboard"),
        ("liger-kernel", "enable_liger_kernel: true"),
    ):
        row = next(row for row in rows if row.found.startswith(f"{name} "))
        assert row.status == OK or row.found == f"{name} is not installed ({why})"


QWEN7B = {
    "hidden_size": 3584,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "intermediate_size": 18944,
    "vocab_size": 152064,
    "tie_word_embeddings": False,
}


def test_disk_size_counts_the_published_qwen_7b_parameters(tmp_path: Path):
    from arpo_train_sft.train.preflight.sizes import model_params

    (tmp_path / "config.json").write_text(json.dumps(QWEN7B))
    assert model_params(str(tmp_path))[0] == model_params("Qwen/Qwen2.5-7B-Instruct")[0] == 7_615_616_512


def test_disk_counts_the_checkpoints_kept(tmp_path: Path):
    import shutil

    from arpo_train_sft.train.preflight.files import check_output_dir

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(QWEN7B))
    values = {
        "model_name_or_path": str(tmp_path / "model"),
        "output_dir": str(tmp_path / "out"),
        "max_steps": 300,
        "save_steps": 100,
        "save_total_limit": 2,
    }
    rows = {row.check: row for row in check_output_dir(plan_for(values))}
    need = 7.615e9 * (2 * 16 + 2)
    assert "2 checkpoint(s) x 121.8 GB" in rows["disk"].found
    assert rows["disk"].status == (OK if need <= shutil.disk_usage(tmp_path).free else FAIL)
    assert rows["resume"].found.startswith("starts at step 0")
    # save_strategy "no" writes no checkpoint, however many steps and save_steps say (the GPU benchmark).
    values.update(max_steps=1_000_000, save_steps=1, save_total_limit=None, save_strategy="no")
    assert "(0 checkpoint(s) x 121.8 GB" in check_output_dir(plan_for(values))[1].found


def test_saved_model_without_checkpoint_is_refused(tmp_path: Path):
    from dataclasses import replace

    from arpo_train_sft.train.preflight.files import resume_row

    (tmp_path / "model.safetensors").write_bytes(b"")
    plan = plan_for({"output_dir": str(tmp_path)})
    assert resume_row(plan).status == FAIL and "--fresh" in resume_row(plan).fix
    # The row is the launcher's own decision: --fresh moves the earlier run (a saved model too) aside.
    fresh = resume_row(replace(plan, fresh=True))
    assert fresh.status == OK
    assert fresh.found == "--fresh: starts at step 0; the earlier run (model.safetensors) is moved aside"
    assert resume_row(plan_for({"output_dir": str(tmp_path), "overwrite_output_dir": True})).status == WARN


def test_memory_row_is_the_estimate_for_the_planned_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from dataclasses import replace

    monkeypatch.chdir(tmp_path)
    Path("x.yaml").write_text("# no 'Sized for:' header: the GPUs come from the plan\n")
    from arpo_train_sft.train.preflight.memory import check_memory
    from arpo_train_sft.train.preflight.rows import SKIP, Gpu

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
    assert check_memory(replace(plan, gpus=[]))[0].status == SKIP
    fits = check_memory(replace(plan, gpus=[Gpu("H100", 80.0)] * 8))[0]
    assert fits.status == OK and "ZeRO-3" in fits.found and "8 GPUs" in fits.found
    small = check_memory(
        replace(
            plan,
            gpus=[Gpu("T4", 16.0)] * 8,
            cfg=replace(plan.cfg, values={**plan.cfg.values, "enable_liger_kernel": False}),
        )
    )[0]
    assert small.status == FAIL and "does not fit" in small.found and small.fix


def test_a_check_child_that_crashes_is_one_failed_row_and_the_rest_say_why_they_did_not_run(monkeypatch):
    from arpo_train_sft.train.preflight import arguments, server
    from arpo_train_sft.train.preflight.rows import SKIP

    monkeypatch.setattr(server.sys, "executable", "/bin/false")  # exits 1 and prints nothing
    rows = arguments.check_config(plan_for({"template": "qwen", "cutoff_len": 0}))
    assert [(row.check, row.status) for row in rows] == [
        ("keys", SKIP),
        ("values", FAIL),
        ("template", SKIP),
        ("llamafactory", FAIL),
        ("deepspeed schema", SKIP),
    ]
    assert rows[1].found == "cutoff_len: 0 must be at least 1"  # our own range check still has its verdict
    assert rows[3].found == "the check itself crashed (exit 1): no output"


def test_declared_gpus_need_a_memory_size(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from arpo_train_sft.train import preflight
    from arpo_train_sft.train.preflight import environment

    monkeypatch.setattr(environment, "detect_gpus", lambda: [])
    bare = tmp_path / "bare.yaml"
    bare.write_text("stage: sft\n")
    with pytest.raises(UserError, match=r"^--gpus 8: no GPU memory to plan with .* pass --gpu-mem GIB"):
        preflight.gpus_for("8", None, bare)
    sized = tmp_path / "sized.yaml"
    sized.write_text("# Sized for: one node with 8x 24 GB GPUs\nstage: sft\n")
    gpus, declared = preflight.gpus_for("8", None, sized)
    assert declared and len(gpus) == 8 and {gpu.mem_gib for gpu in gpus} == {24.0}
    assert {gpu.mem_gib for gpu in preflight.gpus_for("2", "80", sized)[0]} == {80.0}


def test_nul_bytes_in_config_values_are_one_line(tmp_path: Path):
    config = tmp_path / "run.yaml"
    config.write_text('stage: sft\noutput_dir: "out\\0dir"\n')
    from arpo_train_sft.config import load_run_config

    with pytest.raises(UserError) as err:
        load_run_config(config)
    assert err.value.problems == [f"{config}: key 'output_dir' holds a NUL byte; remove it"]
