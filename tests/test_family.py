"""family.py: the Qwen2.5 facts agree with each other, and another family is refused by name."""

from __future__ import annotations

import pytest

from arpo_train_sft.family import (
    ENDOFTEXT,
    IM_END,
    IM_START,
    QWEN25_ADDED_IDS,
    QWEN25_EOS_IDS,
    QWEN25_PAD_ID,
    QWEN25_SHAPES,
    UnknownFamily,
    shape_from_config,
)


def test_the_special_token_ids_are_qwen25s():
    assert [QWEN25_ADDED_IDS[t] for t in (ENDOFTEXT, IM_START, IM_END)] == [151643, 151644, 151645]
    assert QWEN25_EOS_IDS == [151645, 151643] and QWEN25_PAD_ID == 151643


def test_a_qwen2_config_gives_its_shape():
    seven = QWEN25_SHAPES["Qwen2.5-7B"]
    config = {
        "model_type": "qwen2",
        "hidden_size": seven.hidden,
        "intermediate_size": seven.intermediate,
        "num_hidden_layers": seven.layers,
        "num_attention_heads": seven.heads,
        "num_key_value_heads": seven.kv_heads,
        "vocab_size": seven.vocab,
        "tie_word_embeddings": seven.tied,
    }
    assert shape_from_config(config) == seven


@pytest.mark.parametrize("family", ["llama", "qwen3", "mistral"])
def test_another_family_is_refused_by_name(family: str):
    config = {"model_type": family, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1}
    with pytest.raises(UnknownFamily, match=f"^no memory model for {family} "):
        shape_from_config(config | {"num_attention_heads": 2, "vocab_size": 32})
