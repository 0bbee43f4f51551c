"""`arpo-sft export` on the CPU demo's ZeRO-3 checkpoint (2 ranks, DEMO_STEPS steps): loads, matches, refuses bad input.

What "matches" means here: LLaMA-Factory's final model in output_dir is the 16-bit gather of the ZeRO-3
parameters at the last step, and this CPU run trains in fp32, so those are exactly the fp32 weights that
DeepSpeed's consolidation rebuilds from the shards. An fp32 export must therefore be bit-identical to
it (weights and logits), which checks the consolidation itself; a bf16 export must be exactly the
round-to-nearest bf16 of it, and its own bf16 forward pass close to the fp32 logits.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from arpo_train_sft.checkpoint import export
from arpo_train_sft.errors import UserError

from ..conftest import DEMO_STEPS, run_env

pytestmark = pytest.mark.integration

SHARD = "zero_pp_rank_{}_mp_rank_00_{}_states.pt"
# The real `arpo-sft` entry point: its error printing and exit code.
CLI = "import sys; from arpo_train_sft import cli; sys.exit(cli.main())"


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    export.add_parser(parser.add_subparsers())
    args = parser.parse_args(["export", *argv])
    return args.func(args)


def user_error(*argv: str) -> list[str]:
    with pytest.raises(UserError) as err:
        run_cli(*argv)
    return err.value.problems


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".partial-" in p.name]


@pytest.fixture(scope="module")
def run_dir(demo_run) -> Path:
    result, output_dir = demo_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output_dir


@pytest.fixture(scope="module")
def exported(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    for dtype in ("bf16", "fp32"):
        assert run_cli(str(run_dir / f"checkpoint-{DEMO_STEPS}"), str(root / dtype), "--dtype", dtype) == 0
    assert leftovers(root) == []
    return {"bf16": root / "bf16", "fp32": root / "fp32"}


@pytest.fixture
def ckpt_copy(run_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the checkpoint to break, inside a run dir without a tokenizer of its own."""
    return shutil.copytree(
        run_dir / f"checkpoint-{DEMO_STEPS}", tmp_path / "run" / f"checkpoint-{DEMO_STEPS}"
    )


def logits_and_weights(model_dir: Path, dtype=None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Compute 12 * 34 with <python>."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    with torch.no_grad():
        logits = model(**tokenizer(text, return_tensors="pt")).logits
    return logits.float(), model.state_dict()


def test_fp32_export_is_bit_identical_to_the_final_model(exported: dict[str, Path], run_dir: Path, capsys):
    import torch

    final_logits, final = logits_and_weights(run_dir, torch.float32)
    logits, weights = logits_and_weights(exported["fp32"])
    assert next(iter(weights.values())).dtype == torch.float32
    assert weights.keys() == final.keys()
    assert all(torch.equal(weights[k], final[k]) for k in final)
    assert torch.equal(logits, final_logits)


def test_bf16_export_rounds_the_final_model_and_agrees_on_logits(exported: dict[str, Path], run_dir: Path):
    import torch

    final_logits, final = logits_and_weights(run_dir, torch.float32)
    logits, weights = logits_and_weights(exported["bf16"])  # loads as bf16, from its config
    assert next(iter(weights.values())).dtype == torch.bfloat16
    assert all(torch.equal(weights[k], final[k].to(torch.bfloat16)) for k in final)
    # bf16 keeps 8 significant bits: a 2-layer model's logits stay within a few percent of their range.
    assert (logits - final_logits).abs().max() < 0.03 * final_logits.abs().max()
    assert (logits.argmax(-1) == final_logits.argmax(-1)).float().mean() > 0.9


def test_export_carries_tokenizer_template_and_a_model_card(exported: dict[str, Path], run_dir: Path):
    checkpoint = run_dir / f"checkpoint-{DEMO_STEPS}"
    out = exported["bf16"]
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        assert (out / name).read_bytes() == (checkpoint / name).read_bytes(), name
    card = (out / "README.md").read_text()
    assert f"| global_step | {DEMO_STEPS} |" in card
    assert "| learning_rate | 0.002 |" in card
    assert "| dataset | arpo_sft_demo |" in card and "| cutoff_len | 256 |" in card
    assert "| sequences per step | 4 (2 ranks) |" in card
    assert str(checkpoint.resolve()) in card and "ZeRO-3" in card


def test_training_changed_every_tensor(exported: dict[str, Path], checkout: Path):
    import torch
    from safetensors.torch import load_file

    initial = load_file(checkout / "models" / "arpo-sft-tiny-qwen2" / "model.safetensors")
    trained = load_file(exported["fp32"] / "model.safetensors")
    assert trained.keys() == initial.keys()
    assert [k for k in initial if torch.equal(initial[k], trained[k])] == []


def test_existing_out_dir_is_refused_untouched(run_dir: Path, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    (problem,) = user_error(str(run_dir / f"checkpoint-{DEMO_STEPS}"), str(out))
    assert str(out) in problem and "not empty" in problem
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and leftovers(tmp_path) == []


def test_not_a_checkpoint_is_one_line(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("hello")
    (problem,) = user_error(str(tmp_path), str(tmp_path / "out"))
    assert problem.startswith(f"{tmp_path}: not a checkpoint")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_missing_shard_is_named_before_deepspeed_runs(ckpt_copy: Path, tmp_path: Path):
    missing = ckpt_copy / f"global_step{DEMO_STEPS}" / SHARD.format(1, "model")
    missing.unlink()
    (problem,) = user_error(str(ckpt_copy), str(tmp_path / "out"))
    assert problem.startswith(f"{missing}: missing (2 ranks saved this checkpoint)")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []

    proc = subprocess.run(
        [sys.executable, "-c", CLI, "export", str(ckpt_copy), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=run_env(),
        timeout=300,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"arpo-sft: error: {problem}"]
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_a_rank_gone_entirely_is_found_from_the_recorded_world_size(ckpt_copy: Path, tmp_path: Path):
    tag = ckpt_copy / f"global_step{DEMO_STEPS}"
    for kind in ("model", "optim"):
        (tag / SHARD.format(1, kind)).unlink()
    (ckpt_copy / "rng_state_1.pth").unlink()
    problems = user_error(str(ckpt_copy), str(tmp_path / "out"))
    assert [p.split(":")[0] for p in problems] == [str(tag / SHARD.format(1, k)) for k in ("model", "optim")]


def test_truncated_shard_is_named(ckpt_copy: Path, tmp_path: Path):
    shard = ckpt_copy / f"global_step{DEMO_STEPS}" / SHARD.format(0, "optim")
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    (problem,) = user_error(str(ckpt_copy), str(tmp_path / "out"))
    assert problem.startswith(f"{shard}: not a readable PyTorch file")


def test_tokenizer_comes_from_the_run_dir_else_both_places_are_named(
    ckpt_copy: Path, run_dir: Path, tmp_path: Path
):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (ckpt_copy / name).unlink()
    (problem,) = user_error(str(ckpt_copy), str(tmp_path / "out"))
    assert f"no tokenizer in {ckpt_copy} or its parent {ckpt_copy.parent}" in problem
    # A finished run keeps its tokenizer in output_dir, next to the checkpoints: that one is used.
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(run_dir / name, ckpt_copy.parent / name)
    assert export.inspect_source(ckpt_copy).tokenizer_dir == ckpt_copy.parent


def test_failure_after_consolidation_leaves_no_partial_dir(ckpt_copy: Path, tmp_path: Path):
    config_file = ckpt_copy / "config.json"
    config = json.loads(config_file.read_text())
    config["num_hidden_layers"] += 1  # a valid config, but one layer more than the shards hold
    config["layer_types"].append("full_attention")
    config_file.write_text(json.dumps(config))
    (problem,) = user_error(str(ckpt_copy), str(tmp_path / "out"))
    assert problem.startswith(f"{ckpt_copy}: the weights do not match config.json (missing ['model.layers.2.")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_unreadable_config_is_named(ckpt_copy: Path, tmp_path: Path):
    (ckpt_copy / "config.json").write_text('{"model_type": "qwen2", ')
    (problem,) = user_error(str(ckpt_copy), str(tmp_path / "out"))
    assert problem.startswith(f"{ckpt_copy / 'config.json'}: ")
