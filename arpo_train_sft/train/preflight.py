"""Checks that run in seconds before torchrun starts, so a bad config never costs a process group."""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

from ..demo.model import DEMO_MODEL_DIR
from .config import RunConfig

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
ARPO_HUB_FILE = "final_5w4_still.jsonl"
_HUB_SOURCES = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")


def check_keys(cfg: RunConfig, known: set[str]) -> list[str]:
    """Unknown keys, each with the closest known spelling."""
    problems = []
    for key in cfg.values:
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "remove it or check LLaMA-Factory's argument list"
        problems.append(f"{cfg.path}: unknown key '{key}': {hint}")
    return problems


def check_dataset(cfg: RunConfig) -> list[str]:
    """Every dataset in `dataset:` is registered, and every local file it names exists."""
    dataset_dir = Path(str(cfg.values.get("dataset_dir", "data")))
    info_path = dataset_dir / "dataset_info.json"
    names = [n.strip() for n in str(cfg.values.get("dataset", "")).split(",") if n.strip()]
    if not names:
        return [f"{cfg.path}: key 'dataset' is missing; name one from {info_path}"]
    if not info_path.is_file():
        return [f"{cfg.path}: {info_path} not found; run from the repo root or fix 'dataset_dir'"]
    try:
        registry = json.loads(info_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return [f"{info_path}: not valid JSON ({err}); fix the file"]

    problems = []
    for name in names:
        entry = registry.get(name)
        if entry is None:
            close = difflib.get_close_matches(name, registry, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"register it in {info_path}"
            problems.append(f"{cfg.path}: dataset '{name}' is not in {info_path}: {hint}")
        elif not any(key in entry for key in _HUB_SOURCES):
            file_name = entry.get("file_name", "")
            data_path = dataset_dir / file_name
            if not data_path.exists():
                fix = (
                    "download and prepare it: `arpo-sft data download && "
                    "arpo-sft data prepare --model Qwen/Qwen2.5-7B-Instruct`"
                    if file_name == ARPO_HUB_FILE
                    else f"put the file there or fix 'file_name' in {info_path}"
                )
                problems.append(f"{cfg.path}: dataset '{name}': file {data_path} not found; {fix}")
    return problems


def is_demo_model(cfg: RunConfig) -> bool:
    """Whether the config trains the tiny offline model that the launcher can build itself."""
    return Path(str(cfg.values.get("model_name_or_path", ""))) == DEMO_MODEL_DIR


def check_model(cfg: RunConfig) -> list[str]:
    """The model is a local directory with a config.json, or a hub id (`org/name`)."""
    name = str(cfg.values.get("model_name_or_path", ""))
    if not name:
        return [f"{cfg.path}: key 'model_name_or_path' is missing; set a local model dir or a hub id"]
    path = Path(name)
    if is_demo_model(cfg) or (path / "config.json").is_file():
        return []
    if path.is_dir():
        return [f"{cfg.path}: model_name_or_path {path} has no config.json; point it at a model directory"]
    if _HUB_ID.match(name) and not name.startswith(("./", "../")) and not path.parent.is_dir():
        return []
    return [
        f"{cfg.path}: model_name_or_path {path} not found; download it "
        f"(`hf download Qwen/Qwen2.5-7B-Instruct --local-dir {path}`) or use a hub id"
    ]


def check_deepspeed(cfg: RunConfig) -> list[str]:
    """The DeepSpeed JSON exists and parses."""
    value = cfg.values.get("deepspeed")
    if not value:
        return []
    path = Path(str(value))
    if not path.is_file():
        return [f"{cfg.path}: deepspeed config {path} not found; use one of examples/deepspeed/*.json"]
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return [f"{path}: not valid JSON ({err}); fix the file"]
    return []


def check_hardware(cfg: RunConfig, gpus: int) -> list[str]:
    """A GPU config on a machine without GPUs fails here, not an hour into loading."""
    needs = cfg.gpu_only_settings()
    if gpus > 0 or not needs:
        return []
    return [
        f"{cfg.path}: this config needs GPUs ({', '.join(needs)}) but no CUDA device is visible; "
        "run it on a GPU node, or try the CPU demo `bash sft_train.sh yaml/demo_cpu.yaml`"
    ]


def run_checks(cfg: RunConfig, gpus: int) -> list[str]:
    """Every problem found, in a stable order; empty when the run may start."""
    from ..lf.args import training_keys

    return (
        check_keys(cfg, training_keys())
        + check_hardware(cfg, gpus)
        + check_model(cfg)
        + check_dataset(cfg)
        + check_deepspeed(cfg)
    )
