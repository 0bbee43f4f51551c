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
    kept: int  # tokens left after cutoff_len truncation
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


def load_template(tokenizer: Any, name: str) -> Any:
    """LLaMA-Factory's template `name` (ours registered too), with the tokenizer fixed as training does."""
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    import arpo_train_sft

    arpo_train_sft.register()
    return get_template_and_fix_tokenizer(tokenizer, DataArguments(template=name))


Encoded = list[list[tuple[list[int], list]]]


def encode_batch(tokenizer: Any, template: Any, rows: list[Conversation]) -> tuple[Encoded, list[str]]:
    """Per row, per message: (ids, per-token (text index, start, end) or None), and the rendered texts."""
    recorder = _Recorder(tokenizer)
    rendered = [template._encode(recorder, row.messages, row.system, None) for row in rows]
    if not recorder.texts:
        return [[([], []) for _ in messages] for messages in rendered], []
    pieces = tokenizer(recorder.texts, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for messages in rendered:
        row_out = []
        for marked in messages:
            ids: list[int] = []
            offsets: list = []
            for token in marked:
                if token >= 0:
                    ids.append(token)
                    offsets.append(None)
                    continue
                index = -token - 1
                ids += pieces["input_ids"][index]
                offsets += [(index, start, end) for start, end in pieces["offset_mapping"][index]]
            row_out.append((ids, offsets))
        out.append(row_out)
    return out, recorder.texts


def measure(tokenizer: Any, template: Any, rows: list[Conversation], cutoff_len: int) -> list[RowTokens]:
    """RowTokens for each row, truncation simulated exactly as LLaMA-Factory's supervised processor does."""
    from llamafactory.data.processor.processor_utils import infer_seqlen

    encoded, texts = encode_batch(tokenizer, template, rows)
    results = []
    for row, messages in zip(rows, encoded, strict=True):
        total = sum(len(ids) for ids, _ in messages)
        prompt = sum(len(messages[i][0]) for i in range(0, len(messages), 2))
        result_tokens = tool_calls = 0
        kept = 0
        answer_cut = end_cut = False
        for turn in range(0, len(messages), 2):
            (source, _), (target, offsets) = messages[turn], messages[turn + 1]
            content = row.messages[turn + 1]["content"]
            tool_calls += len(_TOOL_CALL.findall(content))
            in_result = _result_token_flags(offsets, texts)
            result_tokens += sum(in_result)
            source_len, target_len = infer_seqlen(len(source), len(target), max(cutoff_len - kept, 0))
            kept += source_len + target_len
            if target_len < len(target):
                end_cut = True
                answer_at = _token_index_of(offsets, texts, _ANSWER)
                answer_cut = answer_cut or (answer_at is not None and answer_at >= target_len)
        results.append(RowTokens(total, prompt, result_tokens, kept, answer_cut, end_cut, tool_calls))
    return results


def _result_token_flags(offsets: list, texts: list[str]) -> list[bool]:
    spans_by_text: dict[int, list[tuple[int, int]]] = {}
    flags = []
    for offset in offsets:
        if offset is None:
            flags.append(False)
            continue
        index, start, _ = offset
        if index not in spans_by_text:
            spans_by_text[index] = find_result_spans(texts[index]).spans
        flags.append(any(a <= start < b for a, b in spans_by_text[index]))
    return flags


def _token_index_of(offsets: list, texts: list[str], needle: str) -> int | None:
    """Index of the token holding the start of the last `needle` in the message, if any."""
    found: dict[int, int] = {}
    for position in range(len(offsets) - 1, -1, -1):
        if offsets[position] is None:
            continue
        index, start, end = offsets[position]
        if index not in found:
            found[index] = texts[index].rfind(needle)
        if found[index] != -1 and start <= found[index] < max(end, start + 1):
            return position
    return None


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
