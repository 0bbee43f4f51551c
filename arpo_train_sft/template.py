"""`template: qwen_mask_results`: the qwen template, with inline tool results left out of the loss.

ARPO trajectories carry tool output inside the assistant message (`</python><result>…</result>`).
The tool loop writes those spans at inference time, so training the model to write them teaches it to
invent tool output. This template renders exactly what `template: qwen` renders, token for token;
only the labels differ.

Rules:
- A result span runs from `<result>` to the next `</result>` of an assistant message, tags included.
  Inside a `<python>…</python>` or `<search>…</search>` call the tags are code, not markup: they are
  trained like the rest of the call.
- Tokens are never re-split: the assistant message is tokenized once, as `qwen` does. Qwen's BPE
  merges across tag boundaries (`</python><result>` holds the token `><`), so a token belongs to
  whoever writes its first character: it is ignored by the loss when its first character lies inside a
  span. The model is still trained to close `</python>`, which is what stops generation at inference,
  and is not trained on the tool loop's `</result>`, even when the `<` after it shares that token.
- A row whose spans cannot be read unambiguously (a `<result>` never closed, a `</result>` closing
  nothing, a `<result>` opened inside a result, a `<result>` in a user turn) is trained exactly as
  `qwen` would train it, and logged.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llamafactory.data.processor.processor_utils import infer_seqlen
from llamafactory.data.processor.supervised import SupervisedDatasetProcessor
from llamafactory.data.template import TEMPLATES, Template
from llamafactory.extras.constants import IGNORE_INDEX

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizer

TEMPLATE_NAME = "qwen_mask_results"

_TAG = re.compile(r"<(/?)(python|search|result)>")
_RESULT_OPEN = "<result>"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpanScan:
    """Where the result spans of one text are, or why none can be trusted."""

    spans: list[tuple[int, int]]
    problem: str | None = None


def find_result_spans(text: str) -> SpanScan:
    """Character ranges `[start, end)` of every `<result>…</result>` span in one assistant message."""
    spans: list[tuple[int, int]] = []
    in_call = None  # the tool tag whose block we are in: its text is code, not markup
    span_start = None
    for match in _TAG.finditer(text):
        closing, name = match.group(1) == "/", match.group(2)
        if span_start is not None:
            if name != "result":
                continue  # tool output may print anything
            if not closing:
                return SpanScan([], f"<result> at character {match.start()} opens inside another result")
            spans.append((span_start, match.end()))
            span_start = None
        elif in_call is not None:
            if closing and name == in_call:
                in_call = None
        elif name == "result":
            if closing:
                return SpanScan([], f"</result> at character {match.start()} closes nothing")
            span_start = match.start()
        elif not closing:
            in_call = name
    if span_start is not None:
        return SpanScan([], f"<result> at character {span_start} is never closed")
    return SpanScan(spans)


def user_turn_problem(messages: list[dict[str, str]]) -> str | None:
    """Why a row's user turns make masking ambiguous, if they do."""
    if any(m["role"] == "user" and _RESULT_OPEN in m["content"] for m in messages):
        return "a <result> tag sits in a user turn"
    return None


def unmasked_reason(messages: list[dict[str, str]]) -> str | None:
    """Why `qwen_mask_results` would train this row exactly like `qwen` (no masking), if it would."""
    assistant = (find_result_spans(m["content"]).problem for m in messages if m["role"] == "assistant")
    return user_turn_problem(messages) or next((p for p in assistant if p), None)


def token_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[bool]:
    """True for every token whose first character lies inside a span."""
    return [any(start <= tok_start < end for start, end in spans) for tok_start, _ in offsets]


Turn = tuple[list[int], list[int], list[bool]]


class ResultMaskingTemplate(Template):
    """`qwen` rendering; `encode_with_masks` also says which target tokens are tool results."""

    def encode_multiturn(self, *args: Any, **kwargs: Any) -> Any:
        # Reaching this means the processor was not patched in this process, so the labels would
        # silently include tool results: refuse instead.
        raise RuntimeError(
            f"template '{TEMPLATE_NAME}' needs arpo_train_sft.register() in every training process; "
            "launch with `arpo-sft train` or `bash sft_train.sh`"
        )

    def encode_with_masks(
        self,
        tokenizer: PreTrainedTokenizer,
        messages: list[dict[str, str]],
        system: str | None,
        tools: str | None,
    ) -> tuple[list[Turn], str | None]:
        """(source, target, target_mask) per turn, ids identical to `qwen`, and the problem found if any."""
        encoded = self._encode(tokenizer, messages, system, tools)
        problem = user_turn_problem(messages)
        masks = []
        for index in range(1, len(messages), 2):
            mask, turn_problem = self._assistant_mask(tokenizer, messages[index], encoded[index])
            masks.append(mask)
            problem = problem or turn_problem
        if problem is not None:
            masks = [[False] * len(encoded[i]) for i in range(1, len(encoded), 2)]
        turns = [(encoded[i], encoded[i + 1], masks[i // 2]) for i in range(0, len(encoded), 2)]
        return turns, problem

    def _assistant_mask(
        self, tokenizer: PreTrainedTokenizer, message: dict[str, str], ids: list[int]
    ) -> tuple[list[bool], str | None]:
        if message["role"] != "assistant":
            return [False] * len(ids), None
        mask: list[bool] = []
        problem = None
        for element in self.format_assistant.apply(content=message["content"]):
            if not isinstance(element, str):
                mask += [False] * len(self._convert_elements_to_ids(tokenizer, [element]))
                continue
            scan = find_result_spans(element)
            problem = problem or scan.problem
            piece = tokenizer(element, add_special_tokens=False, return_offsets_mapping=True)
            mask += token_mask(piece["offset_mapping"], scan.spans)
        if len(mask) != len(ids):
            raise RuntimeError("result mask and qwen encoding disagree on the number of tokens")
        return mask, problem


def encode_masked_example(
    processor: SupervisedDatasetProcessor,
    messages: list[dict[str, str]],
    system: str | None,
    tools: str | None,
) -> tuple[list[int], list[int]]:
    """LLaMA-Factory's supervised encoding (same truncation, same flags), with result tokens ignored."""
    args, template = processor.data_args, processor.template
    turns, problem = template.encode_with_masks(processor.tokenizer, messages, system, tools)
    if problem is not None:
        logger.warning("%s: trained like `qwen` (no masking): %s", TEMPLATE_NAME, problem)
    if args.mask_history:
        turns = turns[::-1]  # the last turns are kept first

    input_ids: list[int] = []
    labels: list[int] = []
    total = 0
    for index, (source, target, mask) in enumerate(turns):
        if total >= args.cutoff_len:
            break
        source_len, target_len = infer_seqlen(len(source), len(target), args.cutoff_len - total)
        source, target, mask = source[:source_len], target[:target_len], mask[:target_len]
        total += source_len + target_len
        source_labels = source if args.train_on_prompt else [IGNORE_INDEX] * source_len
        if args.mask_history and index != 0:
            target_labels = [IGNORE_INDEX] * target_len
        else:
            target_labels = [
                IGNORE_INDEX if masked else token for token, masked in zip(target, mask, strict=True)
            ]
        if args.mask_history:
            input_ids, labels = source + target + input_ids, source_labels + target_labels + labels
        else:
            input_ids, labels = input_ids + source + target, labels + source_labels + target_labels
    return input_ids, labels


_original_encode = SupervisedDatasetProcessor._encode_data_example


def _encode_data_example(
    self: SupervisedDatasetProcessor, prompt, response, system, tools, images, videos, audios
) -> tuple[list[int], list[int]]:
    if not isinstance(self.template, ResultMaskingTemplate):
        return _original_encode(self, prompt, response, system, tools, images, videos, audios)
    if images or videos or audios:
        raise ValueError(f"template '{TEMPLATE_NAME}' is text-only")
    return encode_masked_example(self, prompt + response, system, tools)


def register_template() -> None:
    """Register `qwen_mask_results` (a copy of LLaMA-Factory's `qwen`) and its label hook; idempotent."""
    # The supervised processors (plain and packed) get labels from this one method; no hook exists.
    SupervisedDatasetProcessor._encode_data_example = _encode_data_example
    if TEMPLATE_NAME not in TEMPLATES:
        qwen = TEMPLATES["qwen"]
        fields = {name: getattr(qwen, name) for name in qwen.__dataclass_fields__}
        TEMPLATES[TEMPLATE_NAME] = ResultMaskingTemplate(**fields)
