"""How big the model is, and so how much disk one checkpoint of a full fine-tune takes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Parameter counts of the hub models the presets train, for when no config.json is at hand (Qwen's cards).
KNOWN_PARAMS = {"Qwen/Qwen2.5-3B-Instruct": 3.09e9, "Qwen/Qwen2.5-7B-Instruct": 7.62e9,
                "Qwen/Qwen2.5-14B-Instruct": 14.77e9}  # fmt: skip
# A DeepSpeed checkpoint of a bf16 full fine-tune: bf16 weights (2) + fp32 master copy, Adam m and v (12)
# + bf16 module states (2), per parameter.
CHECKPOINT_BYTES_PER_PARAM = 16
# The model saved at the end of training: bf16 safetensors.
FINAL_MODEL_BYTES_PER_PARAM = 2


def params_from_config(config: dict[str, Any]) -> int:
    """Parameters of a Qwen2/Llama-style decoder, counted from its config.json."""
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv = config.get("num_key_value_heads", heads) * head_dim
    attention = (
        2 * hidden * heads * head_dim + 2 * hidden * kv + heads * head_dim + 2 * kv
    )  # q, o, k, v; biases
    mlp = 3 * hidden * config["intermediate_size"]
    embeddings = config["vocab_size"] * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return layers * (attention + mlp + 2 * hidden) + embeddings + hidden


def _hub_config(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    if Path(repo_id).is_dir() or repo_id.count("/") != 1:
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id
        return None
    return Path(found) if isinstance(found, str) else None


def model_params(name: str) -> tuple[float | None, str]:
    """(parameter count or None, where it came from) for a local model dir or a hub id."""
    config_path = Path(name) / "config.json"
    if not config_path.is_file():
        config_path = _hub_config(name) or config_path
    if config_path.is_file():
        try:
            return params_from_config(json.loads(config_path.read_text(encoding="utf-8"))), str(config_path)
        except (KeyError, TypeError, ValueError):
            pass
    if name in KNOWN_PARAMS:
        return KNOWN_PARAMS[name], "built-in table"
    return None, "unknown"


def count_rows(path: Path) -> int:
    """Rows of a JSON-lines file, counted by newlines without parsing them."""
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 24), b""))
