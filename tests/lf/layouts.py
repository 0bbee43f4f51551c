"""The Qwen2.5 BPE in the two tokenizer.json layouts that hold it, both built from dashscope's tiktoken ranks.

- converted: what transformers' TikTokenConverter writes (`build_qwen_tokenizer`): every split of a token
  into two tokens is a merge rule, and pieces that are whole tokens skip merging (`ignore_merges`).
- published: what Qwen2.5's checkpoints ship and `Qwen2Tokenizer` loads: one rule per token of rank >= 256,
  the split that BPE over the lower ranks makes of its bytes (the standard way tiktoken ranks become HF
  merges), merges written as "left right" strings, and no `ignore_merges`.
"""

from __future__ import annotations

import json
from pathlib import Path

BYTE_TOKENS = 256


def bpe_parts(vocab: dict[str, int], token: str) -> list[str]:
    """The parts BPE leaves of `token` merging its bytes lowest rank first, using only ranks below its own."""
    # Byte-level tokens hold one character per byte, so strings split as the bytes do.
    parts = list(token)
    while True:
        ranked = [(vocab.get(a + b), i) for i, (a, b) in enumerate(zip(parts, parts[1:], strict=False))]
        rank, at = min(((r, i) for r, i in ranked if r is not None), default=(None, None))
        if rank is None or rank >= vocab[token]:
            return parts
        parts[at : at + 2] = [parts[at] + parts[at + 1]]


def published_merges(vocab: dict[str, int]) -> list[str]:
    """One merge rule per token of rank >= 256, in rank order, as Qwen2.5's tokenizer.json writes them."""
    merges = []
    for token, rank in sorted(vocab.items(), key=lambda item: item[1]):
        if rank >= BYTE_TOKENS:
            parts = bpe_parts(vocab, token)
            assert len(parts) == 2, f"rank {rank} is not reached by one merge: {parts}"
            merges.append(" ".join(parts))
    return merges


def published_checkpoint(converted, folder: Path) -> Path:
    """A tokenizer folder in Qwen2.5's published layout, holding the same ranks as `converted`."""
    converted.save_pretrained(folder)
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    spec["model"].update(
        merges=published_merges(spec["model"]["vocab"]),
        ignore_merges=False,
        continuing_subword_prefix="",
        end_of_word_suffix="",
    )
    (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["tokenizer_class"] = "Qwen2Tokenizer"
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder
