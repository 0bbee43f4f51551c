"""Exact token counts of rows as LLaMA-Factory will train them, measured in batches.

LLaMA-Factory renders each message with its template and calls `tokenizer.encode` once per text
piece, in Python, row by row. Here the same template code renders the same pieces (it runs with a
stand-in tokenizer that only records them), and the pieces of a whole batch go to the fast tokenizer in
one call. The ids are identical by construction; the Rust tokenizer does the work in parallel.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .template import find_result_spans

_TOOL_CALL = re.compile(r"<(python|search)>")
_ANSWER = "<answer>"


@dataclass(frozen=True)
class Conversation:
    """One row in LLaMA-Factory's terms: alternating user/assistant messages and a system prompt."""

    messages: list[dict[str, str]]
    system: str | None = None


@dataclass(frozen=True)
class RowTokens:
    """What training will see of one row."""

    total: int  # tokens before truncation
    prompt: int  # tokens the loss ignores under `qwen` (system, user turns, role headers)
    result: int  # assistant tokens inside <result>…</result> spans (ignored by `qwen_mask_results`)
    answer_cut: bool  # the last <answer> (or the whole answer block) falls beyond the cutoff
    end_cut: bool  # the final <|im_end|> falls beyond the cutoff
    tool_calls: int


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


def load_tokenizer(model: str) -> Any:
    """The tokenizer of `model` (a directory or a hub id), or a one-line error naming it."""
    from transformers import AutoTokenizer

    from .errors import UserError

    try:
        return AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise UserError(f"--model {model}: no tokenizer could be loaded ({err}); pass a model dir") from None


def load_template(tokenizer: Any, name: str) -> Any:
    """LLaMA-Factory's template `name` (ours registered too), with the tokenizer fixed as training does."""
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    import arpo_train_sft

    arpo_train_sft.register()
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


def render(tokenizer: Any, template: Any, rows: list[Conversation]) -> Rendered:
    """Render rows with the template and encode every text piece of the batch in one parallel call."""
    recorder = _Recorder(tokenizer)
    messages = [template._encode(recorder, row.messages, row.system, None) for row in rows]
    # The backend call is what `tokenizer.encode(text, add_special_tokens=False)` runs for each piece.
    encodings = tokenizer.backend_tokenizer.encode_batch(recorder.texts, add_special_tokens=False)
    return Rendered(messages, recorder.texts, encodings)


def _tokens_starting_in(encoding: Any, start: int, end: int) -> int:
    """How many tokens of `encoding` begin at a character in [start, end)."""
    first, last = encoding.char_to_token(start), encoding.char_to_token(end - 1)
    if first is None or last is None:
        return 0
    if encoding.token_to_chars(first)[0] < start:
        first += 1  # it began before the span: it belongs to whoever wrote its first character
    return max(last - first + 1, 0)


def measure(tokenizer: Any, template: Any, rows: list[Conversation], cutoff_len: int) -> list[RowTokens]:
    """RowTokens for each row, truncation simulated exactly as LLaMA-Factory's supervised processor does."""
    from llamafactory.data.processor.processor_utils import infer_seqlen

    batch = render(tokenizer, template, rows)
    results = []
    for row, messages in zip(rows, batch.messages, strict=True):
        lengths = [batch.length(parts) for parts in messages]
        result_tokens = tool_calls = kept = 0
        answer_cut = end_cut = False
        for turn in range(0, len(messages), 2):
            tool_calls += len(_TOOL_CALL.findall(row.messages[turn + 1]["content"]))
            answer_at = None
            for index, position in batch.pieces(messages[turn + 1]):
                text, encoding = batch.texts[index], batch.encodings[index]
                for start, end in find_result_spans(text).spans:
                    result_tokens += _tokens_starting_in(encoding, start, end)
                found = text.rfind(_ANSWER)
                if found != -1 and (token := encoding.char_to_token(found)) is not None:
                    answer_at = position + token
            source_len, target_len = infer_seqlen(lengths[turn], lengths[turn + 1], max(cutoff_len - kept, 0))
            kept += source_len + target_len
            if target_len < lengths[turn + 1]:
                end_cut = True
                answer_cut = answer_cut or (answer_at is not None and answer_at >= target_len)
        prompt = sum(lengths[0::2])
        results.append(RowTokens(sum(lengths), prompt, result_tokens, answer_cut, end_cut, tool_calls))
    return results


def batched(items: Iterable[Any], size: int) -> Iterable[list[Any]]:
    """Consecutive lists of at most `size` items."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
