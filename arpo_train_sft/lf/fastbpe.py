"""Qwen2.5's BPE through tiktoken, for LLaMA-Factory's per-piece `encode`: exact, or not used at all.

LLaMA-Factory's template calls `tokenizer.encode(piece, add_special_tokens=False)` once per text piece
of every row, in Python; on long trajectories that call is most of the preprocessing time. tiktoken runs
the same byte-level BPE several times faster. `accelerate(tokenizer)` swaps that one call for tiktoken
built from the tokenizer's *own* vocabulary, after proving from its files that the two give the same ids:

- the normalizer is NFC and the pre-tokenizer is Qwen2's split pattern then byte-level, as Qwen2.5 ships;
- the model is plain BPE (no dropout, byte fallback or affixes), every byte is a token, every longer
  token has a merge rule, the rules are ordered as their results' ids (tiktoken's ranks), and each token
  has the rule tiktoken's own merging reaches it by. Under those conditions both algorithms pick the
  same pair at every step (tiktoken merges the lowest-ranked adjacent pair whose join is a token, HF the
  lowest-ranked rule, and every such join has a rule of the same rank);
- added tokens are matched on the raw text, leftmost-longest, with no stripping, as the tokenizer does.

Each piece is split at added tokens; a segment Python calls NFC-normalised goes to tiktoken, any other
(rare: decomposed accents) to the tokenizer itself, so normalisation is never re-implemented. Any other
call (`add_special_tokens=True`, pairs, tensors) goes to the tokenizer unchanged. Whatever fails a
check keeps the tokenizer as it is, and the reason is returned.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from ..family import QWEN2_SPLIT_PATTERN

USED = "tiktoken (Qwen2.5 BPE, checked exact against the tokenizer's files)"


class FastEncode:
    """Stands in for `tokenizer.encode` on one tokenizer; pickles with it into dataset workers."""

    def __init__(self, tokenizer: Any, encoding: Any, added: dict[str, int]) -> None:
        self.tokenizer = tokenizer
        self.encoding = encoding
        self.added = added
        self.split = re.compile("(" + "|".join(map(re.escape, sorted(added, key=len, reverse=True))) + ")")

    def __call__(self, text: Any, *args: Any, add_special_tokens: bool = True, **kwargs: Any) -> list[int]:
        if args or kwargs or add_special_tokens or not isinstance(text, str):
            return type(self.tokenizer).encode(
                self.tokenizer, text, *args, add_special_tokens=add_special_tokens, **kwargs
            )
        ids: list[int] = []
        # re.split with a group keeps the separators at the odd positions.
        for index, part in enumerate(self.split.split(text) if self.added else [text]):
            if index % 2:
                ids.append(self.added[part])
            elif part and unicodedata.is_normalized("NFC", part):
                ids += self.encoding.encode_ordinary(part)
            elif part:
                ids += type(self.tokenizer).encode(self.tokenizer, part, add_special_tokens=False)
        return ids


def accelerate(tokenizer: Any) -> str | None:
    """Route `tokenizer.encode(text, add_special_tokens=False)` through tiktoken; None, or why it was not."""
    try:
        import tiktoken
    except ImportError:
        return "tiktoken is not installed"
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return "not a fast (Rust) tokenizer"
    if getattr(tokenizer, "split_special_tokens", False):
        return "split_special_tokens is set"
    spec = json.loads(backend.to_str())
    problem = _pipeline_problem(spec)
    if problem is None:
        added, problem = _added_tokens(spec.get("added_tokens") or [])
    if problem is None:
        ranks, problem = _checked_ranks(spec["model"])  # last: the slow one (seconds)
    if problem is not None:
        return problem
    encoding = tiktoken.Encoding(
        name="qwen2.5-bpe", pat_str=QWEN2_SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens={}
    )
    tokenizer.encode = FastEncode(tokenizer, encoding, added)
    return None


def _pipeline_problem(spec: dict[str, Any]) -> str | None:
    normalizer = spec.get("normalizer") or {}
    if normalizer.get("type") != "NFC":
        return f"normalizer is {normalizer.get('type')}, not NFC"
    steps = (spec.get("pre_tokenizer") or {}).get("pretokenizers") or []
    if len(steps) != 2 or steps[0].get("type") != "Split" or steps[1].get("type") != "ByteLevel":
        return "pre-tokenizer is not a split pattern followed by byte-level"
    split, byte_level = steps
    if split.get("pattern", {}).get("Regex") != QWEN2_SPLIT_PATTERN or split.get("behavior") != "Isolated":
        return "pre-tokenizer's split pattern is not Qwen2's"
    if split.get("invert") or byte_level.get("add_prefix_space") or byte_level.get("use_regex"):
        return "pre-tokenizer settings differ from Qwen2's"
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or model.get("dropout") or model.get("byte_fallback"):
        return "model is not plain BPE"
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        return "BPE uses word affixes"
    return None


def _checked_ranks(model: dict[str, Any]) -> tuple[dict[bytes, int], str | None]:
    """tiktoken's ranks (bytes -> id) from the vocabulary, and the first reason they are not exact if any."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    try:
        ranks = {bytes(byte_of[char] for char in token): rank for token, rank in model["vocab"].items()}
    except KeyError:
        return {}, "vocabulary has tokens outside the byte-level alphabet"
    if len(ranks) != len(model["vocab"]) or not all(bytes([b]) in ranks for b in range(256)):
        return {}, "vocabulary lacks a byte or repeats a token"
    rules: dict[bytes, set[tuple[bytes, bytes]]] = {}
    last = -1
    for rule in model["merges"]:
        left, right = rule.split(" ") if isinstance(rule, str) else rule
        pair = (bytes(byte_of[c] for c in left), bytes(byte_of[c] for c in right))
        rank = ranks.get(pair[0] + pair[1])
        if rank is None or rank < last:
            return {}, "merge rules are not ordered as their results' ids"
        last = rank
        rules.setdefault(pair[0] + pair[1], set()).add(pair)
    for token, rank in ranks.items():
        if len(token) > 1 and _tiktoken_split(token, rank, ranks) not in rules.get(token, ()):
            return {}, "a token's merge rule differs from the one tiktoken's merging reaches it by"
    return ranks, None


def _tiktoken_split(token: bytes, rank: int, ranks: dict[bytes, int]) -> tuple[bytes, ...]:
    """The parts tiktoken's merging leaves of `token` using only ranks below its own."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best, at = rank, -1
        for i in range(len(parts) - 1):
            joined = ranks.get(parts[i] + parts[i + 1], rank)
            if joined < best:
                best, at = joined, i
        if at < 0:
            break
        parts[at : at + 2] = [parts[at] + parts[at + 1]]
    return tuple(parts)


def _added_tokens(tokens: list[dict[str, Any]]) -> tuple[dict[str, int], str | None]:
    for token in tokens:
        if token.get("normalized") or token.get("lstrip") or token.get("rstrip") or token.get("single_word"):
            return {}, f"added token {token.get('content')!r} is normalised or stripped"
    return {token["content"]: token["id"] for token in tokens}, None
