"""Qwen2 / Qwen2.5, the model family ARPO trains: every fact this package knows about it, in one place.

Its tokenizer (split pattern, added tokens and their ids, EOS and padding), its chat layout, its published
shapes per size, and the decoder shape that memory and FLOPs are counted on. No torch, no transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# config.json's `model_type` of the models the shapes below describe (Qwen2 and Qwen2.5 alike).
MODEL_TYPES = ("qwen2",)

# Qwen2/2.5 split digits one at a time (\p{N}), unlike the cl100k-style \p{N}{1,3} that TikTokenConverter
# defaults to; getting this wrong changes the ids of every number in the math data.
QWEN2_SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

ENDOFTEXT = "<|endoftext|>"  # id 151643: ends a document; also the padding token
IM_START = "<|im_start|>"  # id 151644: opens a chat turn
IM_END = "<|im_end|>"  # id 151645: ends a chat turn, and so an assistant's answer

# Qwen2.5's added tokens in id order, starting right after the 151,643 BPE ranks. (text, special):
# the two tool-call tags are plain added tokens so that decoding with skip_special_tokens keeps them.
QWEN25_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    (ENDOFTEXT, True),
    (IM_START, True),
    (IM_END, True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", True),
    ("<|fim_middle|>", True),
    ("<|fim_suffix|>", True),
    ("<|fim_pad|>", True),
    ("<|repo_name|>", True),
    ("<|file_sep|>", True),
)
QWEN25_FIRST_ADDED_ID = 151643
QWEN25_ADDED_IDS = {text: QWEN25_FIRST_ADDED_ID + i for i, (text, _) in enumerate(QWEN25_ADDED_TOKENS)}
# The embedding matrix is padded past the 151,665 real tokens to a multiple of 128, as in Qwen2.5.
QWEN25_VOCAB_SIZE = 151936
QWEN25_EOS_IDS = [QWEN25_ADDED_IDS[IM_END], QWEN25_ADDED_IDS[ENDOFTEXT]]  # [151645, 151643]
QWEN25_PAD_ID = QWEN25_ADDED_IDS[ENDOFTEXT]  # 151643
QWEN25_MAX_POSITIONS = 32768
QWEN25_ROPE_THETA = 1_000_000.0

DEFAULT_SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# Written for this package; renders the same ChatML layout as Qwen2.5 for system/user/assistant turns.
CHAT_TEMPLATE = (
    "{%- if messages | length == 0 or messages[0]['role'] != 'system' -%}"
    "{{- '" + IM_START + "system\\n" + DEFAULT_SYSTEM_PROMPT + IM_END + "\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{- '" + IM_START + "' + message['role'] + '\\n' + message['content'] + '" + IM_END + "\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '" + IM_START + "assistant\\n' -}}{%- endif -%}"
)


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


# From each model's config.json on the Hugging Face hub (Qwen/Qwen2.5-{3B,7B,14B}-Instruct; the base models
# share the shapes). Used only when model_name_or_path is a hub id that has not been downloaded.
QWEN25_SHAPES = {
    "Qwen2.5-3B": ModelShape(2048, 11008, 36, 16, 2, 151936, tied=True),
    "Qwen2.5-7B": ModelShape(3584, 18944, 28, 28, 4, 152064, tied=False),
    "Qwen2.5-14B": ModelShape(5120, 13824, 48, 40, 8, 152064, tied=False),
}


# The hub ids the table answers for (each base model too, without "-Instruct").
QWEN25_HUB_IDS = tuple(f"Qwen/{size}-Instruct" for size in QWEN25_SHAPES)


def published_shape(repo_id: str) -> ModelShape | None:
    """The table's shape for hub id `repo_id` (Qwen/Qwen2.5-7B-Instruct or Qwen/Qwen2.5-7B), else None."""
    base = repo_id.rsplit("/", 1)[-1].removesuffix("-Instruct")
    return QWEN25_SHAPES.get(base) if repo_id.startswith("Qwen/") else None


class UnknownFamily(ValueError):
    """A config.json of a model family whose memory and FLOPs this package does not model."""

    def __init__(self, family: Any) -> None:
        super().__init__(f"no memory model for {family} (the estimate knows {', '.join(MODEL_TYPES)} only)")


def shape_from_config(config: dict) -> ModelShape:
    """The shape a transformers config.json describes; UnknownFamily for another family's config.

    A config without `model_type` (not one transformers wrote: a test's or a benchmark's) is read by its keys.
    """
    if not isinstance(config, dict):
        raise TypeError(f"expected a JSON object, found {type(config).__name__}")
    family = config.get("model_type", MODEL_TYPES[0])
    if family not in MODEL_TYPES:
        raise UnknownFamily(family)
    return ModelShape(
        hidden=int(config["hidden_size"]),
        intermediate=int(config["intermediate_size"]),
        layers=int(config["num_hidden_layers"]),
        heads=int(config["num_attention_heads"]),
        kv_heads=int(config.get("num_key_value_heads", config["num_attention_heads"])),
        vocab=int(config["vocab_size"]),
        tied=bool(config.get("tie_word_embeddings", False)),
    )
