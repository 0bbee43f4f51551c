"""A model's shape (its config.json, or Qwen2.5's published ones: family.py) and the FLOPs MFU counts on it."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from ..family import QWEN25_HUB_IDS, ModelShape, UnknownFamily, published_shape, shape_from_config


def training_flops(shape: ModelShape, tokens: float, squares: float) -> float:
    """Model FLOPs to train on rows of lengths n_i, given tokens = sum n_i and squares = sum n_i^2.

    Convention (model FLOPs, as MFU counts them): forward + backward = 3 x forward, a multiply-add is
    2 FLOPs, recomputation by gradient checkpointing is not counted. Matmuls: 6 x matmul_params per token.
    Attention is causal: the token at position i scores and mixes i keys, 2 x 2 x hidden x i FLOPs per
    layer forward, so a row of n tokens costs 2 x hidden x n^2 per layer forward, 6 x hidden x n^2 to
    train: half of PaLM's 12 x layers x hidden x seq_len per token (appendix B), which counts the full square.
    """
    return 6 * shape.matmul_params() * tokens + 6 * shape.layers * shape.hidden * squares


def flops_per_token(shape: ModelShape, seq_len: int) -> float:
    """Training FLOPs per token of seq_len-token rows: 6 x matmul_params + 6 x layers x hidden x seq_len."""
    # One token whose attention spans seq_len: the same formula as training_flops, per token.
    return training_flops(shape, tokens=1, squares=seq_len)


def cached_hub_config(repo_id: str) -> Path | None:
    """The config.json of hub id `repo_id` in the local Hugging Face cache, if it was downloaded."""
    if Path(repo_id).is_dir() or repo_id.count("/") != 1:
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id
        return None
    return Path(found) if isinstance(found, str) else None


def model_shape(name: str) -> ModelShape:
    """The shape of `model_name_or_path`: its config.json (a local dir or the hub cache), else the table."""
    config_path = Path(name) / "config.json"
    if not config_path.is_file():
        config_path = cached_hub_config(name) or config_path
    if config_path.is_file():
        try:
            return shape_from_config(json.loads(config_path.read_text(encoding="utf-8")))
        except UnknownFamily as err:  # never another family's numbers under Qwen2's formulas
            raise UserError(f"{config_path}: {err}") from None
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
            raise UserError(f"{config_path}: cannot read the model shape ({err}); check the file") from None
    published = published_shape(name)
    if published is not None:
        return published
    known = ", ".join(QWEN25_HUB_IDS)
    raise UserError(
        f"model_name_or_path {name}: no config.json there and not a known hub id ({known}); "
        "download the model (or build the demo one with `arpo-sft demo-model`) first"
    )
