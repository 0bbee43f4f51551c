"""Exact token counts of rows as LLaMA-Factory will train them, measured a batch at a time."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..arpo.tags import find_result_spans
from ..errors import UserError
from .conversation import Conversation

_TOOL_CALL = re.compile(r"<(python|search)>")
_ANSWER = "<answer>"
_PROBE = "Hello, world: 42 数学"


@dataclass(frozen=True)
class RowTokens:
    """What training will see of one row."""

    total: int  # tokens before truncation
    trained: int  # assistant tokens left after LLaMA-Factory's truncation: what the loss can learn from
    prompt: int  # tokens the loss ignores under `qwen` (system, user turns, role headers)
    result: int  # assistant tokens inside <result>…</result> spans (ignored by `qwen_mask_results`)
    answer_cut: bool  # the last <answer> (or the whole answer block) falls beyond the cutoff
    end_cut: bool  # the final <|im_end|> falls beyond the cutoff
    prompt_cut: bool  # a prompt turn loses its tail too (infer_seqlen gives the answer its share first)
    tool_calls: int


def load_tokenizer(model: str) -> Any:
    """The tokenizer of `model` (a directory or a hub id), or a one-line error naming it."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise UserError(f"--model {model}: no tokenizer could be loaded ({err}); pass a model dir") from None
    # A dir with config.json but no tokenizer files still "loads": an empty vocabulary that turns any text
    # into nothing. Only a tokenizer that gives text back from its ids can count tokens.
    ids = tokenizer.encode(_PROBE, add_special_tokens=False)
    if not ids or tokenizer.decode(ids) != _PROBE:
        raise UserError(
            f"--model {model}: the tokenizer loaded from it cannot encode text (a vocabulary of "
            f"{len(tokenizer)} tokens; are tokenizer.json or vocab.json + merges.txt missing?); "
            "fix: pass a model dir that has its tokenizer files"
        )
    return tokenizer


def load_template(tokenizer: Any, name: str) -> Any:
    """LLaMA-Factory's template `name` for this tokenizer, or a one-line error for an unknown name."""
    from ..lf.render import load_template as load

    try:
        return load(tokenizer, name)
    except ValueError as err:
        if "does not exist" not in str(err):
            raise
        raise UserError(
            f"--template {name}: LLaMA-Factory has no such template; fix: use qwen (ARPO's) or "
            "qwen_mask_results"
        ) from None


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
    from ..lf.render import render, truncated_lengths

    batch = render(tokenizer, template, rows)
    results = []
    for row, messages in zip(rows, batch.messages, strict=True):
        lengths = [batch.length(parts) for parts in messages]
        result_tokens = tool_calls = kept = trained = 0
        answer_cut = end_cut = prompt_cut = False
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
            source_len, target_len = truncated_lengths(
                lengths[turn], lengths[turn + 1], max(cutoff_len - kept, 0)
            )
            kept += source_len + target_len
            prompt_cut = prompt_cut or source_len < lengths[turn]
            trained += target_len
            if target_len < lengths[turn + 1]:
                end_cut = True
                answer_cut = answer_cut or (answer_at is not None and answer_at >= target_len)
        prompt = sum(lengths[0::2])
        results.append(
            RowTokens(
                sum(lengths), trained, prompt, result_tokens, answer_cut, end_cut, prompt_cut, tool_calls
            )
        )
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
