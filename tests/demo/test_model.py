"""Offline checks that the rebuilt Qwen2.5 tokenizer and the tiny demo model match the real layout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from arpo_train_sft.demo.model import (
    build_tiny_model,
    ensure_demo_model,
    qwen_tiktoken_path,
)
from arpo_train_sft.errors import UserError
from arpo_train_sft.family import QWEN2_SPLIT_PATTERN

# Written out independently of the module's table so that a reordering there is caught here.
EXPECTED_ADDED_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646,
    "<|object_ref_end|>": 151647,
    "<|box_start|>": 151648,
    "<|box_end|>": 151649,
    "<|quad_start|>": 151650,
    "<|quad_end|>": 151651,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
    "<tool_call>": 151657,
    "</tool_call>": 151658,
    "<|fim_prefix|>": 151659,
    "<|fim_middle|>": 151660,
    "<|fim_suffix|>": 151661,
    "<|fim_pad|>": 151662,
    "<|repo_name|>": 151663,
    "<|file_sep|>": 151664,
}
NOT_SPECIAL = {"<tool_call>", "</tool_call>"}
DEFAULT_SYSTEM = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
)

SAMPLE_TEXTS = [
    "Hello world",
    "The answer is 12345, not 1,234.5 or 3.14159e-10.",
    "I'm sure they'RE right; DON'T you think we'll see?",
    "def f(x):\n    if x > 0:\n        return x ** 2\n\treturn -x  \n\n\n",
    "line one\r\nline two\r\n   trailing   ",
    "今天天气很好，我们去公园散步吧。数学题：求 x² + 2x + 1 = 0 的解。",
    "Emoji: 🚀🔥👍🏽 and 👨‍👩‍👧 family",
    "<think>\nLet me compute.\n</think>\n<python>\nprint(6 * 7)\n</python>\n<result>\n42\n</result>",
    "So the final answer is \\boxed{42}.",
    'End of turn<|im_end|>\n<|im_start|>assistant\n<tool_call>{"name": "search"}</tool_call>',
    "",
]


@pytest.fixture(scope="module")
def tokenizer(qwen_tokenizer):
    return qwen_tokenizer  # the session's build_qwen_tokenizer(); these tests only read it


@pytest.fixture(scope="module")
def reference_encoding():
    """A tiktoken Encoding over the same ranks and pattern: the ground truth for the HF conversion."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    return tiktoken.Encoding(
        name="qwen2.5-reference",
        pat_str=QWEN2_SPLIT_PATTERN,
        mergeable_ranks=load_tiktoken_bpe(str(qwen_tiktoken_path())),
        special_tokens=EXPECTED_ADDED_IDS,
    )


@pytest.fixture(scope="module")
def model_dir(tiny_model: Path) -> Path:
    return tiny_model  # the session's build_tiny_model(dir, seed=0)


def _weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def test_added_token_ids_and_specialness(tokenizer) -> None:
    assert len(tokenizer) == 151665
    assert {text: tokenizer.convert_tokens_to_ids(text) for text in EXPECTED_ADDED_IDS} == EXPECTED_ADDED_IDS
    decoder = tokenizer.added_tokens_decoder
    for text, token_id in EXPECTED_ADDED_IDS.items():
        assert decoder[token_id].content == text
        assert decoder[token_id].special is (text not in NOT_SPECIAL), text


def test_special_token_roles(tokenizer) -> None:
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token is None
    assert tokenizer.model_max_length == 32768


def test_known_qwen_ids(tokenizer) -> None:
    assert tokenizer.encode("Hello world", add_special_tokens=False) == [9707, 1879]
    assert tokenizer.encode("a<|im_end|>b", add_special_tokens=False)[1:-1] == [151645]
    assert tokenizer.encode("<|im_end|>", add_special_tokens=False) == [151645]
    # Qwen2.5 splits numbers into single digits.
    assert len(tokenizer.encode("12345", add_special_tokens=False)) == 5


@pytest.mark.parametrize("text", SAMPLE_TEXTS)
def test_matches_tiktoken(tokenizer, reference_encoding, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert ids == reference_encoding.encode(text, allowed_special="all")
    assert tokenizer.decode(ids) == text


def test_chat_template_with_system(tokenizer) -> None:
    messages = [
        {"role": "system", "content": "You are a careful math tutor."},
        {"role": "user", "content": "What is 6 * 7?"},
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nYou are a careful math tutor.<|im_end|>\n"
        "<|im_start|>user\nWhat is 6 * 7?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chat_template_default_system(tokenizer) -> None:
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>\nGreet back.\n</think>\nHello!"},
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == (
        DEFAULT_SYSTEM
        + "<|im_start|>user\nHi<|im_end|>\n"
        + "<|im_start|>assistant\n<think>\nGreet back.\n</think>\nHello!<|im_end|>\n"
    )


def test_model_dir_loads_and_runs(model_dir: Path, tokenizer) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded_tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.config.vocab_size == 151936
    assert model.get_input_embeddings().weight.shape == (151936, 64)
    assert model.config.tie_word_embeddings
    assert model.generation_config.eos_token_id == [151645, 151643]
    assert model.generation_config.pad_token_id == 151643

    text = SAMPLE_TEXTS[7]
    assert loaded_tokenizer.encode(text) == tokenizer.encode(text)
    assert loaded_tokenizer.chat_template == tokenizer.chat_template
    inputs = loaded_tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], 151936)


def test_same_seed_same_weights_via_ensure(model_dir: Path, tmp_path: Path) -> None:
    import torch

    again = tmp_path / "again"
    assert ensure_demo_model(again) is True
    assert ensure_demo_model(again) is False
    first, second = _weights(model_dir), _weights(again)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_other_seed_other_weights(model_dir: Path, tmp_path: Path) -> None:
    import torch

    other = build_tiny_model(tmp_path / "other", seed=1)
    name = "model.embed_tokens.weight"
    assert not torch.equal(_weights(model_dir)[name], _weights(other)[name])


def test_refuses_non_empty_dir_and_leaves_no_partial(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not empty"):
        build_tiny_model(target)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert (target / "notes.txt").read_text() == "keep me"


def test_import_is_light() -> None:
    probe = (
        "import sys, arpo_train_sft.demo.model; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
