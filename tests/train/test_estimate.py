"""`arpo-sft estimate`: its terms on known shapes, fits / does not fit, the advice's order, and bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from arpo_train_sft.cli import main
from arpo_train_sft.config import load_run_config
from arpo_train_sft.errors import EXIT_USER_ERROR, UserError
from arpo_train_sft.family import QWEN25_SHAPES, ModelShape
from arpo_train_sft.train.estimate import estimate
from arpo_train_sft.train.estimate.terms import GIB, activation_bytes, logits_bytes, read_setup

REPO = Path(__file__).resolve().parents[2]
GPU_PRESETS = [p for p in sorted((REPO / "yaml").glob("*.yaml")) if p.name != "demo_cpu.yaml"]
HEADER = "# Sized for: one node with 8x 24 GB GPUs, bf16.\n"
BASE = {
    "model_name_or_path": "Qwen/Qwen2.5-7B-Instruct",
    "deepspeed": "examples/deepspeed/ds_z3_offload_config.json",
    "cutoff_len": 15000,
    "per_device_train_batch_size": 1,
    "gradient_accumulation_steps": 2,
    "bf16": True,
    "flash_attn": "fa2",
    "enable_liger_kernel": True,
}


@pytest.fixture(autouse=True)
def at_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the DeepSpeed paths in configs are relative to the repo root


def config(tmp_path: Path, header: str = HEADER, **changes) -> Path:
    path = tmp_path / "run.yaml"
    values = {**BASE, **changes}
    path.write_text(header + "".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items() if v is not None))
    return path


def test_qwen25_parameter_counts_match_the_published_models():
    counts = {name: shape.params() for name, shape in QWEN25_SHAPES.items()}
    assert counts == {"Qwen2.5-3B": 3_085_938_688, "Qwen2.5-7B": 7_615_616_512, "Qwen2.5-14B": 14_770_033_664}


def test_plain_logits_match_the_h200_measurement(tmp_path: Path):
    """BENCHMARKS.md: 29.87 GiB peak for the tiny model's forward + backward at 15,000 tokens, bf16."""
    s = read_setup(load_run_config(config(tmp_path, enable_liger_kernel=False)))
    tiny = ModelShape(64, 128, 2, 4, 2, 151936, tied=True)
    plain = logits_bytes(replace(s, shape=tiny)) / GIB
    assert plain == pytest.approx(29.87, rel=0.02)
    assert logits_bytes(replace(s, shape=tiny, liger=True)) / GIB < 0.16  # measured 0.16 with the model


def test_checkpointing_attention_and_offload_move_the_right_terms(tmp_path: Path):
    s = read_setup(load_run_config(config(tmp_path, per_device_train_batch_size=2)))
    assert activation_bytes(replace(s, checkpointing=False)) > 10 * activation_bytes(s)
    assert activation_bytes(replace(s, attention="sdpa")) > activation_bytes(s)
    offloaded = estimate(load_run_config(config(tmp_path)))
    on_gpu = estimate(load_run_config(config(tmp_path, deepspeed="examples/deepspeed/ds_z3_config.json")))
    assert offloaded.per_gpu_gib["optimizer"] == 0 < on_gpu.per_gpu_gib["optimizer"]
    assert offloaded.host_gib > on_gpu.host_gib + 100  # 16 bytes a parameter of 7.6B moved to the host
    more_gpus = estimate(
        load_run_config(config(tmp_path, deepspeed="examples/deepspeed/ds_z3_config.json")), 16
    )
    assert more_gpus.per_gpu_gib["optimizer"] == pytest.approx(on_gpu.per_gpu_gib["optimizer"] / 2)


def test_json_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["estimate", str(config(tmp_path)), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"per_gpu_gib", "total_gib", "gpu_mem_gib", "fits", "advice", "gpus", "host_gib"}
    terms = {"parameters", "gradients", "optimizer", "activations", "logits", "overhead"}
    assert set(out["per_gpu_gib"]) == terms
    assert out["total_gib"] == pytest.approx(sum(out["per_gpu_gib"].values()), abs=0.05)
    assert (out["gpus"], out["gpu_mem_gib"], out["fits"], out["advice"]) == (8, 24.0, True, [])


def test_flags_override_the_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["estimate", str(config(tmp_path)), "--gpus", "2", "--gpu-mem", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["gpus"], out["gpu_mem_gib"], out["fits"]) == (2, 4.0, False)
    assert out["advice"]


def test_cheapest_change_first_liger(tmp_path: Path):
    est = estimate(load_run_config(config(tmp_path, enable_liger_kernel=False)))
    assert not est.fits and est.total_gib > 24
    (line,) = est.advice
    assert line.startswith("cheapest change that fits: enable_liger_kernel=true (")


def test_checkpointing_comes_before_a_shorter_cutoff(tmp_path: Path):
    """Both would fit; recomputing activations costs compute, cutting rows costs data."""
    est = estimate(load_run_config(config(tmp_path, disable_gradient_checkpointing=True)))
    assert not est.fits
    assert est.advice[0].startswith("cheapest change that fits: disable_gradient_checkpointing=false (")
    cut = estimate(load_run_config(config(tmp_path, disable_gradient_checkpointing=True, cutoff_len=4096)))
    assert cut.fits  # a shorter cutoff would have fitted too


def test_micro_batch_keeps_the_global_batch(tmp_path: Path):
    est = estimate(load_run_config(config(tmp_path, per_device_train_batch_size=8, cutoff_len=32768)))
    assert not est.fits
    assert "per_device_train_batch_size=" in est.advice[0]
    batch, acc = (int(part.split("=")[1]) for part in est.advice[0].split(": ")[1].split(" (")[0].split())
    assert batch * acc == 8 * 2


def test_no_single_change_names_a_combination(tmp_path: Path):
    est = estimate(
        load_run_config(
            config(
                tmp_path,
                enable_liger_kernel=False,
                disable_gradient_checkpointing=True,
                deepspeed="examples/deepspeed/ds_z2_config.json",
            )
        )
    )
    assert not est.fits
    assert est.advice[0].startswith(
        "no single change fits; together: enable_liger_kernel=true disable_gradient_checkpointing=false"
    ), est.advice


def test_hopeless_config_says_so(tmp_path: Path):
    est = estimate(load_run_config(config(tmp_path, model_name_or_path="Qwen/Qwen2.5-14B-Instruct")), 1, 2.0)
    assert est.advice[0].startswith("does not fit even with ")


@pytest.mark.parametrize("preset", GPU_PRESETS, ids=lambda p: p.name)
def test_every_gpu_preset_fits_the_hardware_its_header_names(preset: Path):
    est = estimate(load_run_config(preset))
    assert est.gpus >= 1 and est.gpu_mem_gib > 0
    assert est.fits, f"{preset.name}: {est.total_gib:.1f} GiB of {est.gpu_mem_gib} ({est.advice})"


def test_the_speed_preset_as_first_shipped_did_not_fit():
    """Why its header says 2 x 2: micro-batch 4 x 32,768 tokens under ZeRO-2 overflows 80 GB."""
    preset = REPO / "yaml" / "qwen2.5-7b-80gb-speed.yaml"
    est = estimate(
        load_run_config(preset, ["per_device_train_batch_size=4", "gradient_accumulation_steps=1"])
    )
    assert not est.fits
    assert est.advice[0].startswith("cheapest change that fits: per_device_train_batch_size=2 ")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--gpus", "abc"], "--gpus 'abc': expected a whole number from 1 to 1,000,000, in ASCII digits"),
        (["--gpus", "²"], "--gpus '²': expected a whole number from 1 to 1,000,000, in ASCII digits"),
        (["--gpus", "0"], "--gpus 0: must be at least 1; expected a whole number from 1 to 1,000,000"),
        (["--gpus", "-2"], "--gpus -2: must be at least 1; expected a whole number from 1 to 1,000,000"),
        (["--gpus", "1.5"], "--gpus '1.5': expected a whole number from 1 to 1,000,000"),
        (["--gpus", "10000000000"], "--gpus 10000000000: must be at most 1,000,000"),
        (
            ["--gpu-mem", "-3"],
            "--gpu-mem -3: must be above 0; expected a number above 0 and at most 1,048,576",
        ),
        (["--gpu-mem", "0"], "--gpu-mem 0: must be above 0"),
        (["--gpu-mem", "nan"], "--gpu-mem 'nan': expected a number above 0"),
        (["--gpu-mem", "lots"], "--gpu-mem 'lots': expected a number above 0 and at most 1,048,576"),
        (["cutoff_len=0"], "key 'cutoff_len' is 0; expected a whole number from 1 to 1,048,576"),
        (
            ["cutoff_len=1000000000000"],
            "key 'cutoff_len' is 1000000000000; expected a whole number from 1 to",
        ),
        (
            ["cutoff_len=1e12"],
            "key 'cutoff_len' is 1000000000000.0; expected a whole number from 1 to 1,048,576",
        ),
        (["per_device_train_batch_size=-1"], "key 'per_device_train_batch_size' is -1; expected a whole"),
    ],
)
def test_bad_numbers_are_one_line_each_exit_2(tmp_path, capsys, flags: list[str], expected: str):
    assert main(["estimate", str(config(tmp_path)), *flags]) == EXIT_USER_ERROR
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith("arpo-sft: error: ") and expected in line
    assert "Traceback" not in captured.err and captured.out == ""


def test_header_without_hardware_needs_the_flags(tmp_path: Path):
    path = config(tmp_path, header="# Sized for: any machine\n")
    with pytest.raises(UserError, match="pass --gpus N and --gpu-mem GIB"):
        estimate(load_run_config(path))
    assert estimate(load_run_config(path), 8, 24.0).fits


def test_unknown_hub_model_names_the_fix(tmp_path: Path):
    with pytest.raises(UserError, match="not a known hub id .*download the model"):
        estimate(load_run_config(config(tmp_path, model_name_or_path="someone/Llama-9B")))


LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "vocab_size": 32000,
}


def llama_run(tmp_path: Path) -> Path:
    """A run whose model is another family: no Qwen2 numbers may come out for it."""
    model = tmp_path / "llama"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(LLAMA))
    return config(tmp_path, model_name_or_path=str(model))


def test_another_family_is_one_line_not_qwen2_numbers(tmp_path: Path, capsys):
    path = llama_run(tmp_path)
    with pytest.raises(UserError) as err:
        estimate(load_run_config(path))
    (line,) = err.value.problems
    assert line.startswith(f"{tmp_path / 'llama' / 'config.json'}: no memory model for llama")
    assert main(["estimate", str(path)]) == EXIT_USER_ERROR
    (shown,) = capsys.readouterr().err.splitlines()
    assert shown.startswith("arpo-sft: error: ") and "no memory model for llama" in shown


def test_preflight_skips_the_memory_row_of_another_family_without_blocking(tmp_path: Path):
    from arpo_train_sft.train.preflight.memory import check_memory
    from arpo_train_sft.train.preflight.rows import SKIP, Gpu, Plan

    plan = Plan(cfg=load_run_config(llama_run(tmp_path)), gpus=[Gpu("H100", 80.0)] * 8, env={})
    (row,) = check_memory(plan)
    assert row.status == SKIP and "no estimate: " in row.found and "no memory model for llama" in row.found


def test_local_config_json_is_read(tmp_path: Path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps(
            {
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "vocab_size": 151936,
                "tie_word_embeddings": True,
            }
        )
    )
    est = estimate(load_run_config(config(tmp_path, model_name_or_path=str(model))))
    assert est.params == 151936 * 64 + 2 * (64 * 64 * 2 + 64 * 32 * 2 + 64 + 2 * 32 + 3 * 64 * 128 + 128) + 64


@pytest.mark.parametrize(
    ("zero", "expected"),
    [
        ({"stage": "three"}, "zero_optimization.stage='three': expected a whole number from 0 to 3"),
        ({"stage": 3, "reduce_bucket_size": "big"}, "zero_optimization.reduce_bucket_size='big': expected"),
        ({"stage": 3, "stage3_max_live_parameters": [1]}, "zero_optimization.stage3_max_live_parameters=[1]"),
    ],
)
def test_non_numeric_deepspeed_values_are_one_line_exit_2(tmp_path, capsys, zero: dict, expected: str):
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": zero}))
    assert main(["estimate", str(config(tmp_path)), f"deepspeed={ds}", "--gpus", "2", "--gpu-mem", "80"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert expected in line and str(ds) in line
