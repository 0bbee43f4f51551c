"""Build an offline, random-init Qwen2.5-shaped model with the real Qwen2.5 tokenizer for demos and tests."""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..family import (
    CHAT_TEMPLATE,
    ENDOFTEXT,
    IM_END,
    QWEN2_SPLIT_PATTERN,
    QWEN25_ADDED_TOKENS,
    QWEN25_EOS_IDS,
    QWEN25_MAX_POSITIONS,
    QWEN25_PAD_ID,
    QWEN25_ROPE_THETA,
    QWEN25_VOCAB_SIZE,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

DEMO_MODEL_DIR = Path("models/arpo-sft-tiny-qwen2")


def qwen_tiktoken_path() -> Path:
    """Return the path of the Qwen BPE ranks file shipped inside the dashscope package."""
    # find_spec locates the package without importing it: dashscope's __init__ pulls in its whole SDK.
    spec = importlib.util.find_spec("dashscope")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package 'dashscope' is not installed; run `pip install dashscope`")
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall dashscope (`pip install -U dashscope`)")
    return path


def build_qwen_tokenizer() -> PreTrainedTokenizerFast:
    """Rebuild the Qwen2.5 tokenizer offline from dashscope's qwen.tiktoken ranks."""
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    backend = TikTokenConverter(vocab_file=str(qwen_tiktoken_path()), pattern=QWEN2_SPLIT_PATTERN).converted()
    # Qwen2.5's tokenizer.json NFC-normalises before splitting; the tiktoken ranks alone do not say so.
    backend.normalizer = normalizers.NFC()
    # Added one by one so each lands on the next id, which keeps family.py's table the single source of ids.
    for text, special in QWEN25_ADDED_TOKENS:
        token = AddedToken(text, special=special, normalized=False)
        if special:
            backend.add_special_tokens([token])
        else:
            backend.add_tokens([token])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        model_max_length=QWEN25_MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )


def _save_tiny_model(out_dir: Path, seed: int) -> None:
    """Write a random-init tiny Qwen2ForCausalLM and its generation config into out_dir."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=QWEN25_VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=QWEN25_MAX_POSITIONS,
        rope_parameters={"rope_type": "default", "rope_theta": QWEN25_ROPE_THETA},
        # Tied embeddings store the 151,936-row matrix once, which is most of the file.
        tie_word_embeddings=True,
        bos_token_id=QWEN25_PAD_ID,
        eos_token_id=QWEN25_EOS_IDS[0],
        dtype="float32",
    )
    # fork_rng keeps the caller's global RNG untouched while making the weights a function of seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=QWEN25_PAD_ID, eos_token_id=QWEN25_EOS_IDS, pad_token_id=QWEN25_PAD_ID
    )
    model.save_pretrained(out_dir)


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Build the tiny model, tokenizer and generation config at out_dir and return out_dir."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"{out_dir}: exists and is not empty; delete it or pass another --out")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # A sibling on the same filesystem makes the final rename atomic, so an interrupted build never leaves
    # a directory that looks like a model.
    # (mkdir rather than tempfile.mkdtemp, whose 0700 mode would follow the model into place.)
    staging = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:8]}.partial"
    staging.mkdir()
    try:
        _save_tiny_model(staging, seed)
        build_qwen_tokenizer().save_pretrained(staging)
        staging.replace(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def ensure_demo_model(path: Path) -> bool:
    """Build the tiny model at path unless path/config.json exists; return True if it was built."""
    if (Path(path) / "config.json").is_file():
        return False
    try:
        build_tiny_model(Path(path))
    except (OSError, UserError):
        if (Path(path) / "config.json").is_file():
            return (
                False  # another launcher (a node on the same storage) finished first: the same seeded model
            )
        raise
    return True


def run(args: argparse.Namespace) -> int:
    """Build the tiny random-init Qwen2 model on the real Qwen2.5 vocabulary."""
    out = build_tiny_model(Path(args.out), seed=args.seed)
    print(f"tiny Qwen2 model written to {out}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `demo-model` to the command tree."""
    parser = subparsers.add_parser(
        "demo-model",
        help="build the tiny offline Qwen2 model used by yaml/demo_cpu.yaml",
        epilog=f"example:\n  arpo-sft demo-model --out {DEMO_MODEL_DIR}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default=str(DEMO_MODEL_DIR), help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    parser.set_defaults(func=run)
