"""Model shapes (from a model's config.json, or Qwen2.5's published ones) and the FLOPs MFU counts on them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a Qwen2-architecture decoder that memory depends on."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool

    @property
    def kv_dim(self) -> int:
        """Width of the key (and of the value) projection: grouped-query attention shares heads."""
        return self.hidden // self.heads * self.kv_heads

    def layer_params(self) -> int:
        """One decoder layer: q/k/v with biases (Qwen2 has them), o without, SwiGLU MLP, two RMSNorms."""
        h, kv = self.hidden, self.kv_dim
        attention = (h * h + h) + 2 * (h * kv + kv) + h * h
        return attention + 3 * h * self.intermediate + 2 * h

    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    def params(self) -> int:
        """All parameters; an untied lm_head is a second vocab x hidden matrix."""
        heads = 1 if self.tied else 2
        return self.layers * self.layer_params() + heads * self.embedding_params() + self.hidden

    def largest_module_params(self) -> int:
        """What ZeRO-3 gathers whole at once: the embedding (or lm_head) or one layer, whichever is bigger."""
        return max(self.embedding_params(), self.layer_params())

    def matmul_params(self) -> int:
        """Parameters that multiply activations: each layer's projections and the lm_head (tied or not).

        The embedding is a lookup, and biases and norms are elementwise, so none of them is counted."""
        h, kv = self.hidden, self.kv_dim
        return self.layers * (2 * h * h + 2 * h * kv + 3 * h * self.intermediate) + self.vocab * h


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


# From each model's config.json on the Hugging Face hub (Qwen/Qwen2.5-{3B,7B,14B}-Instruct; the base models
# share the shapes). Used only when model_name_or_path is a hub id that has not been downloaded.
QWEN25_SHAPES = {
    "Qwen2.5-3B": ModelShape(2048, 11008, 36, 16, 2, 151936, tied=True),
    "Qwen2.5-7B": ModelShape(3584, 18944, 28, 28, 4, 152064, tied=False),
    "Qwen2.5-14B": ModelShape(5120, 13824, 48, 40, 8, 152064, tied=False),
}


def shape_from_config(config: dict) -> ModelShape:
    """The shape a transformers config.json describes."""
    return ModelShape(
        hidden=int(config["hidden_size"]),
        intermediate=int(config["intermediate_size"]),
        layers=int(config["num_hidden_layers"]),
        heads=int(config["num_attention_heads"]),
        kv_heads=int(config.get("num_key_value_heads", config["num_attention_heads"])),
        vocab=int(config["vocab_size"]),
        tied=bool(config.get("tie_word_embeddings", False)),
    )


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
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
            raise UserError(f"{config_path}: cannot read the model shape ({err}); check the file") from None
    base = name.rsplit("/", 1)[-1].removesuffix("-Instruct")
    if name.startswith("Qwen/") and base in QWEN25_SHAPES:
        return QWEN25_SHAPES[base]
    known = ", ".join(f"Qwen/{key}-Instruct" for key in QWEN25_SHAPES)
    raise UserError(
        f"model_name_or_path {name}: no config.json there and not a known hub id ({known}); "
        "download the model (or build the demo one with `arpo-sft demo-model`) first"
    )
