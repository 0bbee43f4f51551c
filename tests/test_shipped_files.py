"""Every shipped YAML, DeepSpeed JSON and dataset entry, found by globbing: a new file is tested automatically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import yaml

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "yaml").glob("*.yaml"))
DS_CONFIGS = sorted((REPO / "examples" / "deepspeed").glob("*.json"))
DATASET_INFO = REPO / "dataset_info" / "dataset_info.json"
ALL_TAGS = {
    "role_tag",
    "content_tag",
    "user_tag",
    "assistant_tag",
    "observation_tag",
    "function_tag",
    "system_tag",
}
SIZE_PRESETS = ["qwen2.5-3b.yaml", "qwen2.5-7b.yaml", "qwen2.5-14b.yaml"]
# The only keys the 3b/7b/14b presets may disagree on.
SIZE_KEYS = {"model_name_or_path", "output_dir"}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def header(path: Path) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    return "\n".join(
        line for line in lines[: next(i for i, text in enumerate(lines) if not text.startswith("#"))]
    )


def test_globs_found_the_shipped_files():
    names = {p.name for p in PRESETS}
    assert {"sft_config.yaml", "demo_cpu.yaml", *SIZE_PRESETS} <= names
    assert len(PRESETS) >= 8  # + the three appendix variants
    assert {p.name for p in DS_CONFIGS} >= {
        "ds_z0_config.json",
        "ds_z2_config.json",
        "ds_z2_offload_config.json",
        "ds_z3_config.json",
        "ds_z3_offload_config.json",
    }


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_header_names_hardware_and_command(preset: Path):
    text = header(preset)
    assert "Sized for:" in text
    assert f"sft_train.sh yaml/{preset.name}" in text or f"train yaml/{preset.name}" in text


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_parses_with_llamafactory_parser(preset: Path, monkeypatch: pytest.MonkeyPatch):
    """What `llamafactory-cli train` does first: LLaMA-Factory's HfArgumentParser over its own dataclasses."""
    from llamafactory.hparams.parser import _TRAIN_ARGS
    from transformers import HfArgumentParser

    monkeypatch.chdir(REPO)
    values = load(preset)
    # transformers refuses bf16 on a machine without a GPU before anything else is checked;
    # use_cpu stands in for the GPU that the presets are sized for.
    values.setdefault("use_cpu", True)
    model_args, data_args, training_args, finetuning_args, _ = HfArgumentParser(_TRAIN_ARGS).parse_dict(
        values, allow_extra_keys=False
    )
    assert finetuning_args.finetuning_type == "full"
    assert training_args.do_train
    assert data_args.template == "qwen"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_paths_and_datasets_resolve_from_repo_root(preset: Path):
    values = load(preset)
    assert (REPO / values["deepspeed"]).is_file()
    dataset_dir = REPO / values["dataset_dir"]
    registry = json.loads((dataset_dir / "dataset_info.json").read_text())
    for name in values["dataset"].split(","):
        assert name.strip() in registry


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_defaults_that_would_hurt_users_are_fixed(preset: Path):
    values = load(preset)
    assert values["overwrite_output_dir"] is False, "true disables auto-resume"
    assert values["overwrite_cache"] is False, "true re-tokenizes on every launch"
    assert "trust_remote_code" not in values
    assert values["stage"] == "sft" and values["finetuning_type"] == "full"
    assert values["template"] == "qwen"
    assert values["report_to"] == "none"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_trains_arpos_loss_and_says_why(preset: Path):
    """transformers 5 defaults to the global token mean; ARPO's 4.52.4 averaged each rank's token mean."""
    values = load(preset)
    assert values["average_tokens_across_devices"] is False
    assert "transformers 4.52.4" in header(preset) and "average_tokens_across_devices false" in header(preset)
    assert "max_samples" not in values  # 1000000 capped nothing: the dataset has 54,574 rows


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_header_names_no_gpu_that_fails_preflight(preset: Path):
    """bf16 and FlashAttention-2 need compute capability 8.0+; these cards are older."""
    sized_for = header(preset).split("Sized for:", 1)[1].split("# Run")[0]
    for card in ("V100", "T4", "P100", "RTX 20", "Titan"):
        assert f"{card}," not in sized_for and f"{card})" not in sized_for and f"({card}" not in sized_for, (
            card
        )


def test_each_size_preset_header_speaks_of_its_own_size():
    for name, size in (("qwen2.5-3b.yaml", "3B"), ("qwen2.5-7b.yaml", "7B"), ("qwen2.5-14b.yaml", "14B")):
        text = header(REPO / "yaml" / name)
        others = {"3B", "7B", "14B"} - {size}
        assert f"puts {size} at" in text and not any(f"{other} " in text for other in others), name


def test_sft_config_keeps_reference_hyperparameters():
    values = load(REPO / "yaml" / "sft_config.yaml")
    expected = {
        "model_name_or_path": "Qwen/Qwen2.5-7B-Instruct",
        "template": "qwen",
        "cutoff_len": 15000,
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 2,
        "learning_rate": 7.0e-6,
        "num_train_epochs": 3.0,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.1,
        "bf16": True,
        "save_steps": 2000,
        "plot_loss": True,
        "dataset": "final_5w4_still",
    }
    assert {key: values[key] for key in expected} == expected
    assert load(REPO / values["deepspeed"])["zero_optimization"]["stage"] == 3


def test_size_presets_differ_only_where_model_size_does():
    presets = {name: load(REPO / "yaml" / name) for name in SIZE_PRESETS}
    base = presets["qwen2.5-7b.yaml"]
    for name, values in presets.items():
        assert values.keys() == base.keys(), name
        differing = {key for key in values if values[key] != base[key]}
        assert differing <= SIZE_KEYS, f"{name} differs in {differing - SIZE_KEYS}"
    assert len({v["model_name_or_path"] for v in presets.values()}) == 3
    assert len({v["output_dir"] for v in presets.values()}) == 3


def test_every_preset_writes_to_its_own_output_dir():
    dirs = [load(p)["output_dir"] for p in PRESETS]
    assert len(dirs) == len(set(dirs))


@pytest.mark.parametrize("ds_config", DS_CONFIGS, ids=lambda p: p.name)
def test_deepspeed_config_is_valid_for_deepspeed(ds_config: Path):
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    config = json.loads(ds_config.read_text())
    zero = DeepSpeedZeroConfig(**config["zero_optimization"])  # rejects unknown or mistyped keys
    stage = int(ds_config.name.split("_")[1][1:])
    assert zero.stage == stage
    offloaded = zero.offload_optimizer is not None and zero.offload_optimizer.device == "cpu"
    assert offloaded == ("offload" in ds_config.name)
    # The trainer decides these from the YAML; a number here would silently disagree with it.
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        assert config[key] == "auto"
    assert config["bf16"]["enabled"] == "auto"
    if stage == 3:
        assert zero.gather_16bit_weights_on_model_save, "the final save would be empty shards otherwise"


def test_dataset_info_entries_are_complete():
    registry = json.loads(DATASET_INFO.read_text())
    assert {"final_5w4_still", "final_sft_edition9", "arpo_sft_demo"} <= registry.keys()
    assert any(entry.get("hf_hub_url") == "dongguanting/ARPO-SFT-54K" for entry in registry.values())
    for name, entry in registry.items():
        assert entry["formatting"] == "sharegpt", name
        # A partial tags dict turns every missing tag into None inside LLaMA-Factory.
        assert set(entry["tags"]) == ALL_TAGS, name
        assert entry["columns"] == {"messages": "conversations", "system": "system"}, name
    assert registry["final_5w4_still"]["file_name"] == "final_5w4_still.jsonl"
    assert registry["final_5w4_still"]["tags"]["user_tag"] == "human"
    assert registry["final_5w4_still"]["tags"]["assistant_tag"] == "gpt"
    assert registry["final_sft_edition9"]["tags"]["user_tag"] == "user"
    assert registry["final_sft_edition9"]["tags"]["assistant_tag"] == "assistant"
    assert (DATASET_INFO.parent / registry["arpo_sft_demo"]["file_name"]).is_file()


def test_dataset_info_loads_in_llamafactory(monkeypatch: pytest.MonkeyPatch):
    """LLaMA-Factory's own registry parser reads every entry with all tags set (none turned into None)."""
    from llamafactory.data.parser import get_dataset_list

    monkeypatch.chdir(REPO)
    registry = json.loads(DATASET_INFO.read_text())
    for attr in get_dataset_list(list(registry), "dataset_info"):
        assert attr.formatting == "sharegpt"
        assert None not in (attr.user_tag, attr.assistant_tag, attr.system_tag, attr.observation_tag)
        assert attr.system == "system"


def test_the_slurm_example_parses_and_runs_one_launcher_per_node_with_a_warning_signal():
    import subprocess

    script = REPO / "examples" / "slurm" / "arpo_sft.sbatch"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "#SBATCH --ntasks-per-node=1" in text and "#SBATCH --signal=TERM@" in text
    assert 'NODE_RANK="$SLURM_NODEID" exec bash sft_train.sh' in text
    assert 'MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"' in text


@pytest.mark.parametrize("config", DS_CONFIGS, ids=lambda p: p.name)
def test_zero_1_2_configs_leave_round_robin_gradients_off(config: Path):
    """DeepSpeed 0.19.8 converts a round-robin ZeRO-1/2 checkpoint of several ranks with its parameters
    mislabelled (checkpoint/reshape.py), so a shipped config must not save one."""
    zero = json.loads(config.read_text())["zero_optimization"]
    if zero["stage"] in (1, 2):
        assert zero.get("round_robin_gradients") is not True
