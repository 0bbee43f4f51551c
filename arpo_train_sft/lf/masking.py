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

How the labels are made: LLaMA-Factory's own labelling loop runs unchanged (truncation, `mask_history`,
`train_on_prompt`, packing). This template hands it `qwen`'s pairs with each result token's id stood in
for by a marker below every real id and below IGNORE_INDEX; the loop copies ids into `labels` wherever it
trains a token, and the wrapper around it turns each marker back into its id in `input_ids` and into
IGNORE_INDEX in `labels`. Importing this module installs that wrapper and registers the template, so
every process that unpickles the template (spawned or forkserver dataset workers included) has both.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from llamafactory.data.processor.supervised import SupervisedDatasetProcessor
from llamafactory.data.template import TEMPLATES, Template
from llamafactory.extras.constants import IGNORE_INDEX

from ..arpo.tags import find_result_spans, token_mask, user_turn_problem

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizer

TEMPLATE_NAME = "qwen_mask_results"
# Result token `t` travels through LLaMA-Factory's loop as `_MARK - t`: below IGNORE_INDEX and every id.
_MARK = -1000

logger = logging.getLogger(__name__)


def _marked(ids: list[int], mask: list[bool]) -> list[int]:
    return [_MARK - token if masked else token for token, masked in zip(ids, mask, strict=True)]


def unmark(input_ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
    """Real ids back in `input_ids`; IGNORE_INDEX in `labels` wherever a result token was to be trained."""
    ids = [_MARK - token if token <= _MARK else token for token in input_ids]
    kept = [IGNORE_INDEX if label <= _MARK else label for label in labels]
    return ids, kept


class ResultMaskingTemplate(Template):
    """`qwen` rendering whose result tokens come out marked, for the installed wrapper to unmask."""

    def encode_multiturn(
        self,
        tokenizer: PreTrainedTokenizer,
        messages: list[dict[str, str]],
        system: str | None = None,
        tools: str | None = None,
        discarding_history_cot: bool = False,
    ) -> list[tuple[list[int], list[int]]]:
        if SupervisedDatasetProcessor._encode_data_example is not _encode_data_example:
            # Marked ids must never reach a model: refuse rather than train on them.
            raise RuntimeError(f"template '{TEMPLATE_NAME}' needs arpo_train_sft.lf.masking imported")
        turns, problem = self.encode_with_masks(tokenizer, messages, system, tools)
        if problem is not None:
            logger.warning("%s: trained like `qwen` (no masking): %s", TEMPLATE_NAME, problem)
        return [(source, _marked(target, mask)) for source, target, mask in turns]

    def encode_with_masks(
        self,
        tokenizer: PreTrainedTokenizer,
        messages: list[dict[str, str]],
        system: str | None,
        tools: str | None,
    ) -> tuple[list[tuple[list[int], list[int], list[bool]]], str | None]:
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


_original = SupervisedDatasetProcessor._encode_data_example
_llamafactory_encode = getattr(_original, "__wrapped__", _original)  # a reload must not wrap the wrapper


def _encode_data_example(
    self: SupervisedDatasetProcessor, *args: Any, **kwargs: Any
) -> tuple[list[int], list[int]]:
    input_ids, labels = _llamafactory_encode(self, *args, **kwargs)
    if isinstance(self.template, ResultMaskingTemplate):
        return unmark(input_ids, labels)
    return input_ids, labels


_encode_data_example.__wrapped__ = _llamafactory_encode  # type: ignore[attr-defined]
# The plain and the packed supervised processor both label rows through this one method.
SupervisedDatasetProcessor._encode_data_example = _encode_data_example
if TEMPLATE_NAME not in TEMPLATES:
    _qwen = TEMPLATES["qwen"]
    TEMPLATES[TEMPLATE_NAME] = ResultMaskingTemplate(
        **{name: getattr(_qwen, name) for name in _qwen.__dataclass_fields__}
    )
