"""The one numeric reader: every config key, environment variable and flag finite, bounded, ASCII digits."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from arpo_train_sft.errors import UserError
from arpo_train_sft.train.hardware import gpu_count, gpu_memory
from arpo_train_sft.train.preflight.arguments import range_problems
from arpo_train_sft.train.values import PORT, Bound, config_problems, json_number, parse_number


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("²", "PORT='²': expected a whole number from 1 to 65,535, in ASCII digits"),
        ("٣", "PORT='٣': expected a whole number from 1 to 65,535, in ASCII digits"),
        ("1.5", "PORT='1.5': expected a whole number from 1 to 65,535, in ASCII digits"),
        ("0", "PORT=0: must be at least 1; expected a whole number from 1 to 65,535"),
        ("65536", "PORT=65536: must be at most 65,535; expected a whole number from 1 to 65,535"),
        ("9" * 5000, "PORT='999"),
    ],
)
def test_text_is_ascii_whole_and_in_range(text: str, line: str):
    with pytest.raises(UserError) as err:
        parse_number("PORT", text, PORT)
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(line)


def test_decimal_text_refuses_non_finite_and_foreign_digits():
    mem = Bound(0, 100, whole=False, above=True)
    assert parse_number("--gpu-mem", " 80.5 ", mem) == 80.5
    for text in ("nan", "inf", "1e999", "８０", "0"):
        with pytest.raises(UserError, match=r"^--gpu-mem "):
            parse_number("--gpu-mem", text, mem)


def test_flags_use_the_reader_and_bound_the_count():
    assert gpu_count("8") == 8 and gpu_memory("80") == 80.0
    for text in ("²", "10000000000", "0", "-2"):
        with pytest.raises(UserError, match=r"^--gpus "):
            gpu_count(text)
    with pytest.raises(UserError, match="must be at most 1,024"):
        gpu_count("2000", most=1024)


@pytest.mark.parametrize(
    ("values", "found"),
    [
        ({"learning_rate": float("inf")}, "learning_rate: inf is not a finite number"),
        ({"learning_rate": float("nan")}, "learning_rate: nan is not a finite number"),
        ({"learning_rate": 0}, "learning_rate: 0 must be above 0"),
        ({"max_grad_norm": float("nan")}, "max_grad_norm: nan is not a finite number"),
        ({"warmup_ratio": 1.5}, "warmup_ratio: 1.5 must be at most 0.999999"),
        ({"warmup_ratio": 1.0}, "warmup_ratio: 1.0 must be at most 0.999999"),
        ({"warmup_steps": 2.5}, "warmup_steps: 2.5 is neither a share below 1 nor a whole number of steps"),
        ({"save_steps": float("inf")}, "save_steps: inf is not a finite number"),
        ({"logging_steps": float("nan")}, "logging_steps: nan is not a finite number"),
        ({"num_train_epochs": float("inf")}, "num_train_epochs: inf is not a finite number"),
        ({"max_steps": 0}, "max_steps: 0 must be at least 1"),
        ({"cutoff_len": 10**12}, "cutoff_len: 1000000000000 must be at most 1,048,576"),
        ({"seed": 2**40}, "seed: 1099511627776 must be at most 4,294,967,295"),
        ({"save_total_limit": 0}, "save_total_limit: 0 must be at least 1"),
    ],
)
def test_config_numbers_are_finite_and_in_range(values: dict, found: str):
    assert [problem[0] for problem in config_problems(values)] == [found]


def test_good_values_and_other_types_pass_the_range_check():
    good = {
        "learning_rate": 7e-6,
        "warmup_ratio": 0.1,
        "warmup_steps": 0.05,
        "max_steps": -1,
        "save_steps": 0.5,
        "cutoff_len": 15000,
        "seed": 42,
        "max_grad_norm": 1.0,
    }
    assert config_problems(good) == []
    # A string, a bool or a float for a whole-number key is the type row's to name: no second line here.
    assert config_problems({"learning_rate": "fast", "cutoff_len": 1e12, "bf16": True, "seed": True}) == []


def test_paths_that_name_no_directory_fail_the_values_row(tmp_path: Path):
    file = tmp_path / "tokenized.bin"
    file.write_bytes(b"x")
    found = [problem[0] for problem in range_problems({"output_dir": None, "tokenized_path": str(file)})]
    assert found == [
        "output_dir: None is not a directory path",
        f"tokenized_path: {file} is a file, not a saved dataset directory",
    ]
    assert [p[0] for p in range_problems({"output_dir": " "})] == ["output_dir: ' ' is not a directory path"]
    assert range_problems({"output_dir": str(tmp_path), "tokenized_path": str(tmp_path)}) == []


def test_json_numbers_accept_sizes_written_as_text():
    assert json_number("ds: reduce_bucket_size", "5e8", Bound(1, 10**15)) == 500_000_000
    assert json_number("ds: reduce_bucket_size", 5e8, Bound(1, 10**15)) == 500_000_000
    for bad in ("lots", [1], None, float("nan"), True):
        with pytest.raises(UserError, match=r"^ds: reduce_bucket_size"):
            json_number("ds: reduce_bucket_size", bad, Bound(1, 10**15))


def test_deepspeed_json_is_checked_as_transformers_fills_it(tmp_path: Path):
    from arpo_train_sft.train.preflight.child import deepspeed_mismatches

    ds = tmp_path / "ds.json"
    ds.write_text(
        json.dumps(
            {
                "train_micro_batch_size_per_gpu": 4,
                "gradient_accumulation_steps": "auto",
                "train_batch_size": "auto",
                "gradient_clipping": 0.5,
                "bf16": {"enabled": True},
            }
        )
    )
    args = SimpleNamespace(
        per_device_train_batch_size=2,
        gradient_accumulation_steps=8,
        max_grad_norm=1.0,
        learning_rate=1e-5,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        weight_decay=0.0,
        save_on_each_node=False,
        fp16_full_eval=False,
        bf16_full_eval=False,
        world_size=1,
    )
    lines = deepspeed_mismatches(ds, args, world_size=16, precision={"bf16": False, "fp16": False})
    assert [line.split(" (")[0] for line in lines] == [
        "ds train_micro_batch_size_per_gpu=4 vs hf per_device_train_batch_size=2",
        "ds gradient_clipping=0.5 vs hf max_grad_norm=1.0",
        "ds bf16.enabled=True vs hf bf16|bf16_full_eval=False",
    ]
    ds.write_text(
        json.dumps(
            {
                "train_micro_batch_size_per_gpu": "auto",
                "train_batch_size": 256,
                "gradient_accumulation_steps": "auto",
                "bf16": {"enabled": "auto"},
            }
        )
    )
    # train_batch_size = world size x micro-batch x accumulation of the launched job (16 x 2 x 8), not one rank's.
    assert deepspeed_mismatches(ds, args, world_size=16, precision={"bf16": True}) == []
    assert deepspeed_mismatches(ds, args, world_size=8, precision={"bf16": True})[0].startswith(
        "ds train_batch_size=256 vs hf train_batch_size (calculated)=128"
    )
