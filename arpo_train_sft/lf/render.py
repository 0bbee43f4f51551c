"""Rows rendered exactly as LLaMA-Factory's template renders them, every text piece of a batch encoded at once.

LLaMA-Factory renders each message with its template and calls `tokenizer.encode` once per text
piece, in Python, row by row. Here the same template code renders the same pieces (it runs with a
stand-in tokenizer that only records them), and the pieces of a whole batch go to the fast tokenizer in
one call. The ids are identical by construction; the Rust tokenizer does the work in parallel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from llamafactory.data.processor.processor_utils import infer_seqlen
from llamafactory.data.template import get_template_and_fix_tokenizer
from llamafactory.hparams import DataArguments

from . import masking  # noqa: F401  (registers qwen_mask_results)

# How LLaMA-Factory's supervised processor truncates one (source, target) turn to a token budget.
truncated_lengths = infer_seqlen


class Row(Protocol):
    """One row as LLaMA-Factory's ShareGPT converter hands it to the template (data/conversation.py makes them)."""

    messages: list[dict[str, str]]
    system: str | None


class _Recorder:
    """Stands in for the tokenizer inside LLaMA-Factory's template code and records each text piece."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.texts: list[str] = []

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        self.texts.append(text)
        return [-len(self.texts)]  # a marker: minus (1 + index of the recorded text)

    def convert_tokens_to_ids(self, token: str) -> int:
        return self._tokenizer.convert_tokens_to_ids(token)

    @property
    def bos_token_id(self) -> int | None:
        return self._tokenizer.bos_token_id

    @property
    def eos_token_id(self) -> int | None:
        return self._tokenizer.eos_token_id


def load_template(tokenizer: Any, name: str) -> Any:
    """LLaMA-Factory's template `name` (ours registered too), with the tokenizer fixed as training does."""
    return get_template_and_fix_tokenizer(tokenizer, DataArguments(template=name))


@dataclass(frozen=True)
class Rendered:
    """A batch of rows as the template renders them: per row, per message, special ids and text pieces.

    A part >= 0 is a token id the template wrote itself; a part < 0 stands for text piece `-part - 1`,
    whose encoding (a Rust `tokenizers.Encoding`, never expanded into Python lists) is in `encodings`.
    """

    messages: list[list[list[int]]]
    texts: list[str]
    encodings: list[Any]

    def length(self, parts: list[int]) -> int:
        """Tokens in one message."""
        return sum(1 if part >= 0 else len(self.encodings[-part - 1]) for part in parts)

    def ids(self, parts: list[int]) -> list[int]:
        """The token ids of one message, exactly as LLaMA-Factory encodes it."""
        out: list[int] = []
        for part in parts:
            out += [part] if part >= 0 else self.encodings[-part - 1].ids
        return out

    def pieces(self, parts: list[int]) -> list[tuple[int, int]]:
        """(text index, token position in the message where that text starts) for each text piece."""
        out, position = [], 0
        for part in parts:
            if part < 0:
                out.append((-part - 1, position))
            position += 1 if part >= 0 else len(self.encodings[-part - 1])
        return out


def render(tokenizer: Any, template: Any, rows: list[Row]) -> Rendered:
    """Render rows with the template and encode every text piece of the batch in one parallel call."""
    recorder = _Recorder(tokenizer)
    messages = [template._encode(recorder, row.messages, row.system, None) for row in rows]
    # The backend call is what `tokenizer.encode(text, add_special_tokens=False)` runs for each piece.
    encodings = tokenizer.backend_tokenizer.encode_batch(recorder.texts, add_special_tokens=False)
    return Rendered(messages, recorder.texts, encodings)
