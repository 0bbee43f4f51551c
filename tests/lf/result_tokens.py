"""An oracle for `qwen_mask_results`, independent of its code: which tokens of an encoded sequence are results.

It reads only the token ids LLaMA-Factory produced (as raw bytes) and the full assistant messages of the
rows. The special tokens cut a sequence into regions; the part of a region where an assistant message
starts (right after `assistant\n`, or anywhere once truncation has cut that header off the prompt) runs
to the region's end and is a byte prefix of one full message, truncated or not. A token is a result token
when its first byte lies inside a `<result>…</result>` span of that full message.
"""

from __future__ import annotations

import itertools
import unicodedata
from dataclasses import dataclass

from arpo_train_sft.arpo.tags import find_result_spans

HEADER = b"assistant\n"
# A truncated prompt can end anywhere; a match this short that does not follow the header is chance.
MIN_HEADERLESS_MATCH = 8


@dataclass(frozen=True)
class Found:
    """Positions of result tokens in one sequence, and how many segments were cut inside a result span."""

    positions: set[int]
    cut_inside_span: int


def _byte_level_table() -> dict[str, int]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}


def token_bytes(tokenizer, ids: list[int]) -> list[bytes]:
    """The exact bytes each token stands for (byte-level BPE pieces, or an added token's text)."""
    table = _byte_level_table()
    added = tokenizer.added_tokens_decoder
    return [
        added[i].content.encode() if i in added else bytes(table[char] for char in token)
        for i, token in zip(ids, tokenizer.convert_ids_to_tokens(ids), strict=True)
    ]


def _byte_spans(content: str) -> list[tuple[int, int]]:
    scan = find_result_spans(content)
    assert scan.problem is None, f"oracle rows must be unambiguous: {scan.problem}"
    return [(len(content[:start].encode()), len(content[:end].encode())) for start, end in scan.spans]


def _message_start(region: bytes, cuts: list[int], contents: list[bytes]) -> int | None:
    """The first token boundary of a region from which the rest of it is a prefix of an assistant message."""
    for cut in cuts:
        tail = region[cut:]
        after_header = region[:cut] == HEADER
        if (after_header or len(tail) >= MIN_HEADERLESS_MATCH) and any(c.startswith(tail) for c in contents):
            return cut
    return None


def result_tokens(tokenizer, ids: list[int], assistant_messages: list[str]) -> Found:
    """Which positions of `ids` hold result tokens, read from the bytes alone."""
    contents = [unicodedata.normalize("NFC", text).encode() for text in assistant_messages]
    spans = {content: _byte_spans(content.decode()) for content in contents}
    special = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    pieces = token_bytes(tokenizer, ids)
    starts = list(itertools.accumulate((len(piece) for piece in pieces), initial=0))
    stream = b"".join(pieces)
    positions: set[int] = set()
    cuts = 0
    edges = [-1] + [i for i, token in enumerate(ids) if token in special] + [len(ids)]
    for left, right in itertools.pairwise(edges):
        first, last = left + 1, right  # the region's tokens: ids[first:last]
        region = stream[starts[first] : starts[last]]
        boundaries = [starts[i] - starts[first] for i in range(first, last)]
        begin = _message_start(region, boundaries, contents)
        if begin is None:
            continue
        segment = region[begin:]
        readings = set()
        for content in (c for c in contents if c.startswith(segment)):
            inside = frozenset(
                i
                for i in range(first, last)
                if any(s <= starts[i] - starts[first] - begin < e for s, e in spans[content])
            )
            readings.add((inside, len(segment) < len(content)))
        assert len(readings) == 1, f"segment matches {len(readings)} readings: {segment[:60]!r}"
        inside, truncated = readings.pop()
        positions |= inside
        cuts += int(truncated and last - 1 in inside)
    return Found(positions, cuts)
